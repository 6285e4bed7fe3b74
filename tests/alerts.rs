//! Alert rules: lifecycle (pending, firing, resolved), hysteresis,
//! minimum sample, `for`, change vs the previous window, re-notify,
//! per-series instances, state that survives a restore, texts in English
//! and French, and config validation.

mod common;

use common::*;
use salespulse::alert::{text, NoteState, Notification, Phase, Rules};
use salespulse::config::alerts::Language;
use salespulse::config::Config;
use salespulse::engine::state::State;
use salespulse::engine::Engine;
use salespulse::output::{KpiRecord, WindowInfo};
use std::collections::BTreeMap;
use std::sync::Arc;

const DAY: i64 = 86_400_000;

fn rules(toml: &str) -> Rules {
    Rules::new(&Config::from_toml(toml).expect("valid rules").alerts)
}

/// A `lead_conversion_rate` record of day `d` (0-based from 2026-03-01).
fn rec(d: i64, value: f64, sample: u64, is_final: bool, dims: &[(&str, &str)]) -> KpiRecord {
    let start = ms("2026-03-01T00:00:00Z") + d * DAY;
    KpiRecord {
        kpi: "lead_conversion_rate".into(),
        unit: "ratio".into(),
        window: Arc::new(WindowInfo {
            kind: "day".into(),
            start: salespulse::decode::json::format_time(start),
            end: salespulse::decode::json::format_time(start + DAY),
            label: format!("2026-03-{:02}", d + 1),
            start_ms: start,
        }),
        dimensions: Arc::new(
            dims.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        value: Some(value),
        numerator: Some(value * sample as f64),
        denominator: Some(sample as f64),
        sample_size: sample,
        is_final,
        revision: 1,
    }
}

/// Feeds one final record per day with these values (sample 100), each
/// evaluated at the end of its day; returns (day, state) of every notification.
fn run_days(
    r: &Rules,
    st: &mut salespulse::alert::AlertState,
    from: i64,
    values: &[f64],
) -> Vec<(i64, NoteState)> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let d = from + i as i64;
        let now = ms("2026-03-01T00:00:00Z") + (d + 1) * DAY;
        for n in r.evaluate(st, &[rec(d, *v, 100, true, &[])], now) {
            out.push((d, n.state));
        }
    }
    out
}

const BELOW: &str = CONVERSION_LOW;

#[test]
fn drop_stay_low_recover_fires_once_and_resolves_once() {
    let r = rules(BELOW);
    let mut st = Default::default();
    let got = run_days(&r, &mut st, 0, &[0.3, 0.3, 0.1, 0.1, 0.12, 0.1, 0.3, 0.3]);
    assert_eq!(got, vec![(2, NoteState::Firing), (6, NoteState::Resolved)]);
}

#[test]
fn hysteresis_band_gives_no_notification() {
    let r = rules(BELOW);
    let mut st = Default::default();
    // Never below 0.15: inside the band (0.15 … 0.18) nothing happens.
    assert!(run_days(&r, &mut st, 0, &[0.16, 0.17, 0.15, 0.179, 0.16]).is_empty());
    // Firing, then flapping between 0.14 and 0.17: no resolve until ≥ 0.18.
    let got = run_days(
        &r,
        &mut st,
        5,
        &[0.14, 0.17, 0.14, 0.16, 0.149, 0.175, 0.18],
    );
    assert_eq!(got, vec![(5, NoteState::Firing), (11, NoteState::Resolved)]);
}

#[test]
fn a_sample_below_the_minimum_is_not_evaluated() {
    let r = rules(BELOW);
    let mut st = Default::default();
    let now = ms("2026-03-02T00:00:00Z");
    assert!(r
        .evaluate(&mut st, &[rec(0, 0.0, 9, true, &[])], now)
        .is_empty());
    let n = r.evaluate(&mut st, &[rec(1, 0.0, 10, true, &[])], now + DAY);
    assert_eq!(n.len(), 1, "10 = min_sample is evaluated");
    // While firing, a small sample cannot resolve it either.
    assert!(r
        .evaluate(&mut st, &[rec(2, 0.9, 3, true, &[])], now + 2 * DAY)
        .is_empty());
}

#[test]
fn for_evaluations_and_for_span_hold_before_firing() {
    let r = rules(&format!("{BELOW}for_evaluations = 3\n"));
    let mut st = Default::default();
    // Two low days then a good one: pending, back to inactive, nothing sent.
    assert!(run_days(&r, &mut st, 0, &[0.1, 0.1, 0.3]).is_empty());
    let fp = st.instances.values().next().unwrap();
    assert_eq!(fp.phase, Phase::Inactive);
    let got = run_days(&r, &mut st, 3, &[0.1, 0.1, 0.1]);
    assert_eq!(got, vec![(5, NoteState::Firing)]);

    // `for` in event time: 36h of low values before firing.
    let r = rules(&format!("{BELOW}for = \"36h\"\n"));
    let mut st = Default::default();
    let got = run_days(&r, &mut st, 0, &[0.1, 0.1, 0.1]);
    assert_eq!(
        got,
        vec![(2, NoteState::Firing)],
        "pending at day 0's end, fires 2 days later"
    );
    let pending = rules(&format!("{BELOW}for = \"36h\"\n"));
    let mut st = Default::default();
    assert!(run_days(&pending, &mut st, 0, &[0.1]).is_empty());
    assert_eq!(st.instances.values().next().unwrap().phase, Phase::Pending);
}

#[test]
fn change_against_the_previous_window() {
    let r = rules(
        r#"
[[alerts.rules]]
name = "conversion_down"
kpi = "lead_conversion_rate"
window = "day"
change_below = -0.2
clear = -0.1
"#,
    );
    let mut st = Default::default();
    // 0.30 → 0.25 is −16.7 %: no; → 0.19 is −24 %: fires; → 0.18 is −5 %
    // (in the band −20 … −10 %)… no, −5 % ≥ −10 %: resolves.
    let got = run_days(&r, &mut st, 0, &[0.30, 0.25, 0.19, 0.18]);
    assert_eq!(got, vec![(2, NoteState::Firing), (3, NoteState::Resolved)]);
    // The notification carries baseline and change.
    let mut st = Default::default();
    let now = ms("2026-03-03T00:00:00Z");
    r.evaluate(&mut st, &[rec(0, 0.5, 100, true, &[])], now);
    let n = r.evaluate(&mut st, &[rec(1, 0.3, 100, true, &[])], now + DAY);
    assert_eq!(n[0].baseline, Some(0.5));
    assert!((n[0].change.unwrap() + 0.4).abs() < 1e-12);
    // A provisional record of the next day compares with the newest final (day 1).
    // A provisional record of the next day compares with the newest final
    // (day 1): 0.3 vs 0.3 is a change of 0, past the clear level −10 %.
    let n = r.evaluate(&mut st, &[rec(2, 0.3, 100, false, &[])], now + DAY + 1);
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].state, n[0].baseline, n[0].change),
        (NoteState::Resolved, Some(0.3), Some(0.0))
    );
}

/// `change_below` against a baseline: the mean of the last 4 final values,
/// or of the last 4 of the same weekday (`baseline_season = "7d"`).
#[test]
fn change_vs_baseline_of_the_last_windows_and_of_the_same_weekday() {
    let rule = |extra: &str| {
        rules(&format!(
            r#"
[[alerts.rules]]
name = "conversion_down"
kpi = "lead_conversion_rate"
window = "day"
change_below = -0.2
min_sample = 10
baseline_windows = 4
{extra}
"#
        ))
    };
    // Four weeks: every 7th day (days 0, 7, 14, 21: the Sundays of March
    // 2026) 0.36, the other days 0.20; then day 28 (a Sunday) at 0.27.
    // (The day after a Sunday is 0.20 against (3 × 0.20 + 0.36) / 4 = 0.24:
    // −16.7 %, no alert.)
    let mut days: Vec<f64> = (0..28)
        .map(|d| if d % 7 == 0 { 0.36 } else { 0.20 })
        .collect();
    days.push(0.27);

    // Last 4 days (24–27: 0.20 each): 0.27 is +35 %, nothing fires.
    let mut st = Default::default();
    assert!(run_days(&rule(""), &mut st, 0, &days).is_empty());

    // Last 4 Sundays (0.36 each): 0.27 is −25 %, it fires on day 28 only.
    // Before day 28 there are fewer than 4 Sundays before any Sunday,
    // and the other days' 20 % is their own weekday's mean: nothing.
    let r = rule("baseline_season = \"7d\"");
    let mut st = Default::default();
    let got = run_days(&r, &mut st, 0, &days);
    assert_eq!(got, vec![(28, NoteState::Firing)]);
    let mut st = Default::default();
    run_days(&r, &mut st, 0, &days[..28]);
    let now = ms("2026-03-30T00:00:00Z");
    let n = r.evaluate(&mut st, &[rec(28, 0.27, 100, true, &[])], now);
    assert!((n[0].baseline.unwrap() - 0.36).abs() < 1e-12);
    assert!((n[0].change.unwrap() + 0.25).abs() < 1e-9);
    assert_eq!(
        (n[0].baseline_windows, n[0].baseline_season.as_deref()),
        (Some(4), Some("7days"))
    );
    assert!(
        n[0].summary
            .contains("vs the mean of the last 4 windows 7days apart"),
        "{}",
        n[0].summary
    );

    // Hand-computed mean: Sundays 0.40, 0.40, 0.30 (sample 100) and one
    // with a sample of 9 (below min_sample, skipped: the fifth-newest
    // Sunday, 0.50, takes its place): (0.40 + 0.40 + 0.30 + 0.50) / 4 = 0.40.
    let mut st = Default::default();
    let sundays = [
        (0.50, 100),
        (0.40, 100),
        (0.40, 100),
        (0.30, 100),
        (0.10, 9),
    ];
    for (w, (v, n)) in sundays.iter().enumerate() {
        let d = 7 * w as i64;
        r.evaluate(
            &mut st,
            &[rec(d, *v, *n, true, &[])],
            ms("2026-03-01T00:00:00Z") + (d + 1) * DAY,
        );
    }
    let n = r.evaluate(
        &mut st,
        &[rec(35, 0.31, 100, true, &[])],
        ms("2026-04-06T00:00:00Z"),
    );
    assert_eq!(n.len(), 1);
    assert!((n[0].baseline.unwrap() - 0.40).abs() < 1e-12);
    assert!((n[0].change.unwrap() + 0.225).abs() < 1e-9);

    // A window an hour off the season (a day after a DST change) is
    // still the same weekday; baseline keys need a change condition.
    let mut st = Default::default();
    for w in 0..4 {
        let mut r0 = rec(7 * w, 0.36, 100, true, &[]);
        Arc::make_mut(&mut r0.window).start_ms -= 3_600_000;
        r.evaluate(
            &mut st,
            &[r0],
            ms("2026-03-01T00:00:00Z") + (7 * w + 1) * DAY,
        );
    }
    let n = r.evaluate(&mut st, &[rec(28, 0.27, 100, true, &[])], now);
    assert_eq!(n.len(), 1, "an hour off still counts as the same weekday");
    assert!(salespulse::config::Config::from_toml(
        "[[alerts.rules]]\nname = \"x\"\nkpi = \"lead_conversion_rate\"\nwindow = \"day\"\nbelow = 0.1\nbaseline_windows = 4\n"
    )
    .is_err_and(|e| e.to_string().contains("baseline_windows")));
}

#[test]
fn renotify_repeats_while_firing_at_the_interval_only() {
    let r = rules(&format!("{BELOW}renotify = \"2d\"\n"));
    let mut st = Default::default();
    let got = run_days(&r, &mut st, 0, &[0.1, 0.1, 0.1, 0.1, 0.1, 0.3]);
    assert_eq!(
        got,
        vec![
            (0, NoteState::Firing),
            (2, NoteState::Firing),
            (4, NoteState::Firing),
            (5, NoteState::Resolved)
        ]
    );
}

#[test]
fn one_instance_per_series_with_filter_and_group_by() {
    let r = rules(
        r#"
[[alerts.rules]]
name = "rep_conversion_low"
kpi = "lead_conversion_rate"
window = "day"
below = 0.2
group_by = ["rep"]
labels = { team = "sales-ops" }

[[alerts.rules]]
name = "web_conversion_low"
kpi = "lead_conversion_rate"
window = "day"
below = 0.2
filter = { channel = "web" }
"#,
    );
    let mut st = Default::default();
    let now = ms("2026-03-02T00:00:00Z");
    let notes = r.evaluate(
        &mut st,
        &[
            rec(0, 0.1, 50, true, &[("rep", "ann")]),
            rec(0, 0.1, 50, true, &[("rep", "bob")]),
            rec(0, 0.5, 50, true, &[("rep", "cy")]),
            rec(0, 0.1, 50, true, &[("channel", "web")]),
            rec(0, 0.1, 50, true, &[("channel", "event")]),
            rec(0, 0.1, 50, true, &[]),
        ],
        now,
    );
    let got: Vec<(String, BTreeMap<String, String>)> = notes
        .iter()
        .map(|n| (n.rule.clone(), n.labels.clone()))
        .collect();
    let l = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        got,
        vec![
            (
                "rep_conversion_low".into(),
                l(&[("rep", "ann"), ("team", "sales-ops")])
            ),
            (
                "rep_conversion_low".into(),
                l(&[("rep", "bob"), ("team", "sales-ops")])
            ),
            ("web_conversion_low".into(), l(&[("channel", "web")])),
        ]
    );
    assert_ne!(notes[0].fingerprint, notes[1].fingerprint);
    assert_eq!(
        notes[0].fingerprint,
        salespulse::alert::fingerprint("rep_conversion_low", &l(&[("rep", "ann")]))
    );
}

#[test]
fn final_only_rules_ignore_provisional_values_and_old_windows_are_not_evaluated() {
    let r = rules(&format!("{BELOW}evaluate = \"final\"\n"));
    let mut st = Default::default();
    let now = ms("2026-03-01T12:00:00Z");
    assert!(r
        .evaluate(&mut st, &[rec(0, 0.0, 100, false, &[])], now)
        .is_empty());
    assert_eq!(
        r.evaluate(&mut st, &[rec(0, 0.0, 100, true, &[])], now + DAY)
            .len(),
        1
    );

    // Update rules: a record of an older window than one already seen is skipped.
    let r = rules(BELOW);
    let mut st = Default::default();
    assert!(r
        .evaluate(&mut st, &[rec(1, 0.3, 100, false, &[])], now + DAY)
        .is_empty());
    assert!(r
        .evaluate(&mut st, &[rec(0, 0.0, 100, true, &[])], now + DAY)
        .is_empty());
}

/// The scripted stream through a real engine: day windows, conversion
/// 0.30, then 0.10 for four days, one day in the band, back to 0.30.
fn scenario() -> Vec<Vec<u8>> {
    conversion_days(
        "s",
        "2026-03-01T00:00:00Z",
        &[
            (20, 6),
            (20, 6),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 6),
            (20, 6),
            (4, 0),
            (20, 6),
        ],
    )
}

fn engine_rules() -> String {
    format!("{DAY_WINDOWS}{CONVERSION_LOW}")
}

#[test]
fn engine_emits_notifications_for_the_scripted_stream() {
    let mut e = engine(&engine_rules());
    let recs = run_all(&mut e, &scenario());
    assert_eq!(
        value(&recs, "lead_conversion_rate", "day", "2026-03-03", &[]),
        Some(0.1)
    );
    let notes = e.take_notifications();
    let got: Vec<(NoteState, String)> = notes
        .iter()
        .map(|n| (n.state, n.window.label.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (NoteState::Firing, "2026-03-03".into()),
            (NoteState::Resolved, "2026-03-09".into())
        ]
    );
    let f = &notes[0];
    assert_eq!((f.value, f.threshold, f.sample_size), (0.1, 0.15, 20));
    // Day 3 closes at the first event of day 4 (09:00), day 9 at the first of day 10.
    assert_eq!(f.started_at, "2026-03-04T09:00:00Z");
    assert_eq!(notes[1].ended_at.as_deref(), Some("2026-03-10T09:00:00Z"));
    assert_eq!(notes[1].started_at, f.started_at);
    assert_eq!(notes[1].fingerprint, f.fingerprint);
    assert_eq!(
        e.state.alerts.instances[&f.fingerprint].phase,
        Phase::Inactive
    );
}

#[test]
fn alert_state_survives_a_restore_without_refiring_or_forgetting() {
    let cfg = Config::from_toml(&engine_rules()).unwrap();
    let lines = scenario();
    // Cut after day 6 (0-based 5): the alert is firing.
    let cut = lines
        .iter()
        .position(|l| String::from_utf8_lossy(l).contains("s-d6-"))
        .unwrap();
    let mut a = Engine::from_config(&cfg);
    for l in &lines[..cut] {
        a.process_json(l).unwrap();
    }
    a.take_records();
    assert_eq!(a.take_notifications().len(), 1);
    let saved = serde_json::to_string(&a.state).unwrap();
    let restored: State = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored.alerts, a.state.alerts);
    let mut b = Engine::from_state(salespulse::engine::Settings::from_config(&cfg), restored);
    let recs = run_all(&mut b, &lines[cut..]);
    assert!(!recs.is_empty());
    let notes = b.take_notifications();
    assert_eq!(
        notes.iter().map(|n| n.state).collect::<Vec<_>>(),
        vec![NoteState::Resolved],
        "the restored engine resolves the firing alert and does not fire it again"
    );
}

fn sample_note(state: NoteState) -> Notification {
    let mut e = engine(&engine_rules());
    run_all(&mut e, &scenario());
    e.take_notifications()
        .into_iter()
        .find(|n| n.state == state)
        .unwrap()
}

#[test]
fn texts_in_english_and_french() {
    let f = sample_note(NoteState::Firing);
    assert_eq!(
        text::summary(&f, Language::En),
        "[FIRING] conversion_low: Lead conversion rate (day 2026-03-03, all) is 10.0 %, below 15.0 % (sample 20)"
    );
    assert_eq!(
        text::summary(&f, Language::Fr),
        "[DÉCLENCHÉE] conversion_low: Taux de conversion des leads (day 2026-03-03, tous) est à 10,0 %, en dessous de 15,0 % (échantillon 20)"
    );
    let r = sample_note(NoteState::Resolved);
    assert_eq!(
        text::summary(&r, Language::En),
        "[RESOLVED] conversion_low: Lead conversion rate (day 2026-03-09, all) is 30.0 %, back past the clear level 18.0 % (sample 20)"
    );
    let (subject, body) = text::message(&r, Language::Fr);
    assert!(subject.starts_with("[RÉSOLUE]"), "{subject}");
    assert!(
        body.contains("Active depuis: 2026-03-04T09:00:00Z"),
        "{body}"
    );
    assert!(body.contains("Résolue le: "), "{body}");
    let link = text::dashboard_link(
        "http://grafana/d/sp?var-window={window}&rule={rule}&kpi={kpi}",
        &f,
    );
    assert_eq!(
        link.as_deref(),
        Some("http://grafana/d/sp?var-window=day&rule=conversion_low&kpi=lead_conversion_rate")
    );
}

#[test]
fn invalid_rules_and_routes_name_the_field_and_the_fix() {
    let e = Config::from_toml(
        r#"
[[alerts.rules]]
name = "x"
kpi = "no_such_kpi"
window = "fortnight"
below = 0.1
above = 0.2
routes = ["nowhere"]

[[alerts.rules]]
name = "y"
kpi = "win_rate"
window = "month"
below = 0.3
clear = 0.2
labels = { "bad-label" = "1" }

[[alerts.routes]]
name = "mail"
kind = "email"
from = "not an address"

[[alerts.routes]]
name = "slack"
kind = "slack"
url_env = "SALESPULSE_TEST_UNSET_SLACK_URL"

[[alerts.routes]]
name = "hook"
kind = "webhook"
url = "ftp://example.com"
smtp_host = "smtp.example.com"
"#,
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "alerts.rules[0].kpi: \"no_such_kpi\" is not a KPI",
        "alerts.rules[0].window: \"fortnight\" is not a configured window",
        "use one of: day, week, month, quarter, year, rolling_24h, rolling_7d, rolling_30d, gauge",
        "alerts.rules[0].above: 2 conditions are given",
        "alerts.rules[0].routes: \"nowhere\" is not a route",
        "alerts.rules[1].clear: 0.2 is on the firing side",
        "alerts.rules[1].labels: \"bad-label\" is not a label name",
        "alerts.routes[0].smtp_host: missing",
        "alerts.routes[0].from: \"not an address\" is not an e-mail address",
        "alerts.routes[0].to: no recipient",
        "alerts.routes[1].url_env: the environment variable SALESPULSE_TEST_UNSET_SLACK_URL is not set",
        "alerts.routes[2].url: is not an http(s) URL",
        "alerts.routes[2].smtp_host: is only for kind = \"email\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    // Unknown keys are caught by the parser, with the path.
    let e = Config::from_toml("[[alerts.rules]]\nname = \"x\"\nkpi = \"win_rate\"\nwindow = \"month\"\nbelow = 0.1\nthreshold = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("threshold"), "{e}");
}
