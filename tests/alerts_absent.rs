//! `absent_for` rules: a series (events with the filter dimensions, one
//! instance per group_by value, or the whole input) silent for the span
//! fires exactly at the deadline and resolves when an event comes; a
//! quiet live input fires them by wall time; state survives a restore.
//! (Through the real routes and Kafka: tests/alert_routes.rs.)

mod common;

use common::*;
use salespulse::alert::{NoteState, Notification};
use salespulse::engine::state::State;
use salespulse::engine::Engine;
use serde_json::json;

/// The web-leads rule, with a per-rep rule that the leads (without a rep)
/// do not wake.
const WEB_AND_REPS: &str = r#"
[[alerts.rules]]
name = "web_leads_absent"
absent_for = "2h"
events = ["crm.lead.created"]
filter = { channel = "web" }

[[alerts.rules]]
name = "rep_silent"
absent_for = "1d"
group_by = ["rep"]
"#;

const RULES: &str = r#"
[[alerts.rules]]
name = "web_leads_absent"
absent_for = "2h"
events = ["crm.lead.created"]
filter = { channel = "web" }

[[alerts.rules]]
name = "rep_silent"
absent_for = "1d"
group_by = ["rep"]

[[alerts.rules]]
name = "input_silent"
absent_for = "30m"
"#;

fn lead(id: &str, channel: &str, t: &str) -> Vec<u8> {
    ce(
        id,
        "crm.lead.created",
        t,
        json!({"lead_id": id, "channel": channel}),
    )
}

fn deal(id: &str, rep: &str, t: &str) -> Vec<u8> {
    ce(
        id,
        "crm.deal.created",
        t,
        json!({"deal_id": id, "rep": rep, "stage": "qualification", "amount": 100.0}),
    )
}

/// Feeds `lines` and returns the notifications they made (rule, state, started_at, ended_at).
fn feed(e: &mut Engine, lines: &[Vec<u8>]) -> Vec<Notification> {
    for l in lines {
        e.process_json(l).expect("accepted");
    }
    e.take_records();
    e.take_notifications()
}

fn brief(n: &[Notification]) -> Vec<(String, NoteState, String, Option<String>)> {
    n.iter()
        .map(|n| {
            (
                n.rule.clone(),
                n.state,
                n.started_at.clone(),
                n.ended_at.clone(),
            )
        })
        .collect()
}

#[test]
fn a_silent_series_fires_at_its_deadline_not_a_second_before_and_resolves_when_events_return() {
    let mut e = engine(WEB_AND_REPS);
    // A web lead at 09:00, then only other channels: the deadline is 11:00.
    let n = feed(
        &mut e,
        &[
            lead("w1", "web", "2026-03-02T09:00:00Z"),
            lead("e1", "event", "2026-03-02T09:20:00Z"),
            lead("e2", "event", "2026-03-02T09:40:00Z"),
            lead("e3", "event", "2026-03-02T10:05:00Z"),
            lead("e4", "event", "2026-03-02T10:30:00Z"),
            lead("e5", "event", "2026-03-02T10:59:59Z"),
        ],
    );
    assert!(brief(&n).is_empty(), "one second before: {:?}", brief(&n));
    let n = feed(&mut e, &[lead("e6", "event", "2026-03-02T11:00:00Z")]);
    assert_eq!(
        brief(&n),
        vec![(
            "web_leads_absent".into(),
            NoteState::Firing,
            "2026-03-02T11:00:00Z".into(),
            None
        )]
    );
    assert_eq!(n[0].condition, "absent");
    assert_eq!((n[0].threshold, n[0].value), (7200.0, 7200.0));
    assert_eq!(n[0].window.start, "2026-03-02T09:00:00Z", "silent since");
    assert_eq!(
        n[0].dimensions,
        [("channel".to_string(), "web".to_string())].into()
    );
    assert_eq!(
        n[0].summary,
        "[FIRING] web_leads_absent: no event (crm.lead.created; channel=web) since 2026-03-02T09:00:00Z: 2.0 h, at least 2.0 h"
    );
    // Still silent: nothing more (no renotify configured).
    assert!(feed(&mut e, &[lead("e7", "event", "2026-03-02T11:30:00Z")]).is_empty());
    let n = feed(&mut e, &[lead("w2", "web", "2026-03-02T12:15:00Z")]);
    assert_eq!(
        brief(&n),
        vec![(
            "web_leads_absent".into(),
            NoteState::Resolved,
            "2026-03-02T11:00:00Z".into(),
            Some("2026-03-02T12:15:00Z".into())
        )]
    );
    assert_eq!(n[0].value, 3.0 * 3600.0 + 900.0, "silent 09:00 → 12:15");
    assert!(n[0]
        .summary
        .starts_with("[RESOLVED] web_leads_absent: events again"));
}

const REP_SILENT: &str = r#"
[[alerts.rules]]
name = "rep_silent"
absent_for = "1d"
group_by = ["rep"]
"#;

const INPUT_SILENT: &str = r#"
[[alerts.rules]]
name = "input_silent"
absent_for = "30m"
"#;

#[test]
fn one_instance_per_group_value() {
    let mut e = engine(REP_SILENT);
    let n = feed(
        &mut e,
        &[
            deal("d1", "ann", "2026-03-02T09:00:00Z"),
            deal("d2", "bob", "2026-03-02T09:00:00Z"),
            deal("d3", "ann", "2026-03-02T20:00:00Z"),
        ],
    );
    assert!(brief(&n).is_empty(), "{:?}", brief(&n));
    // Bob's last deal was 09:00: silent for a day at 2026-03-03T09:00;
    // Ann's (20:00) is not due yet.
    let n = feed(&mut e, &[deal("d4", "ann", "2026-03-03T09:00:00Z")]);
    assert_eq!(
        brief(&n),
        vec![(
            "rep_silent".into(),
            NoteState::Firing,
            "2026-03-03T09:00:00Z".into(),
            None
        )]
    );
    assert_eq!(n[0].dimensions.get("rep").map(String::as_str), Some("bob"));
    let n = feed(&mut e, &[deal("d5", "bob", "2026-03-03T10:00:00Z")]);
    assert_eq!(
        brief(&n),
        vec![(
            "rep_silent".into(),
            NoteState::Resolved,
            "2026-03-03T09:00:00Z".into(),
            Some("2026-03-03T10:00:00Z".into())
        )]
    );
}

#[test]
fn a_gap_in_a_replay_fires_and_resolves_whatever_the_batches() {
    // The input is silent 09:10 → 10:00 (50 minutes > 30): fired at
    // 09:40 and resolved by the 10:00 event, in one batch or one event
    // per batch alike.
    let lines = [
        deal("d1", "ann", "2026-03-02T09:00:00Z"),
        deal("d2", "ann", "2026-03-02T09:10:00Z"),
        deal("d3", "bob", "2026-03-02T10:00:00Z"),
        deal("d4", "bob", "2026-03-02T10:20:00Z"),
    ];
    let want = vec![
        (
            "input_silent".to_string(),
            NoteState::Firing,
            "2026-03-02T09:40:00Z".to_string(),
            None,
        ),
        (
            "input_silent".into(),
            NoteState::Resolved,
            "2026-03-02T09:40:00Z".into(),
            Some("2026-03-02T10:00:00Z".into()),
        ),
    ];
    let mut e = engine(INPUT_SILENT);
    assert_eq!(brief(&feed(&mut e, &lines)), want);
    let mut e = engine(INPUT_SILENT);
    let mut got = Vec::new();
    for l in &lines {
        got.extend(brief(&feed(&mut e, std::slice::from_ref(l))));
    }
    assert_eq!(got, want);
}

#[test]
fn a_quiet_live_input_fires_by_wall_time_and_an_event_resolves_it() {
    let mut e = engine(INPUT_SILENT);
    assert!(feed(&mut e, &[deal("d1", "ann", "2026-03-03T09:00:00Z")]).is_empty());
    // Live mode: the input has been quiet for 29, then 30 minutes of wall time.
    e.evaluate_quiet(29 * 60_000);
    assert!(e.take_notifications().is_empty(), "29 minutes of 30");
    e.evaluate_quiet(30 * 60_000);
    let n = e.take_notifications();
    assert_eq!(
        brief(&n),
        vec![(
            "input_silent".into(),
            NoteState::Firing,
            "2026-03-03T09:30:00Z".into(),
            None
        )]
    );
    // The clock (09:00) is behind the quiet time already counted: the
    // next evaluation at the clock does not resolve it; an event does.
    e.take_records();
    assert!(e.take_notifications().is_empty());
    let n = feed(&mut e, &[deal("d2", "bob", "2026-03-03T09:40:00Z")]);
    assert_eq!(
        brief(&n),
        vec![(
            "input_silent".into(),
            NoteState::Resolved,
            "2026-03-03T09:30:00Z".into(),
            Some("2026-03-03T09:40:00Z".into())
        )]
    );
}

#[test]
fn a_rule_without_group_by_fires_even_if_its_series_never_had_an_event() {
    let mut e = engine(RULES);
    // Only event-channel leads: the web series never had an event; it is
    // watched from the first evaluation (09:00) and fires at 11:00.
    let n = feed(&mut e, &[lead("e1", "event", "2026-03-02T09:00:00Z")]);
    assert!(n.is_empty());
    let n = feed(&mut e, &[lead("e2", "event", "2026-03-02T11:00:00Z")]);
    assert_eq!(
        brief(&n)
            .iter()
            .filter(|b| b.0 == "web_leads_absent")
            .count(),
        1
    );
}

#[test]
fn absence_state_survives_a_restore() {
    let mut e = engine(RULES);
    feed(
        &mut e,
        &[
            lead("w1", "web", "2026-03-02T09:00:00Z"),
            lead("e1", "event", "2026-03-02T11:30:00Z"),
        ],
    );
    let bytes = postcard::to_stdvec(&e.state).unwrap();
    let st: State = postcard::from_bytes(&bytes).unwrap();
    let mut r = Engine::from_state(e.settings.clone(), st);
    // Already firing: not again; an event resolves it.
    assert!(feed(&mut r, &[lead("e2", "event", "2026-03-02T12:00:00Z")]).is_empty());
    let n = feed(&mut r, &[lead("w2", "web", "2026-03-02T12:30:00Z")]);
    assert_eq!(brief(&n)[0].1, NoteState::Resolved);
}

#[test]
fn invalid_absent_rules_name_the_field_and_the_fix() {
    let bad = |extra: &str| {
        salespulse::config::Config::from_toml(&format!(
            "[[alerts.rules]]\nname = \"x\"\nabsent_for = \"2h\"\n{extra}\n"
        ))
        .unwrap_err()
        .to_string()
    };
    let e = bad("kpi = \"win_rate\"");
    assert!(
        e.contains("alerts.rules[0].kpi") && e.contains("not used by absent_for"),
        "{e}"
    );
    let e = bad("events = [\"crm.lead.made\"]");
    assert!(
        e.contains("alerts.rules[0].events[0]") && e.contains("crm.lead.created"),
        "{e}"
    );
    let e = bad("group_by = [\"colour\"]");
    assert!(
        e.contains("alerts.rules[0].group_by") && e.contains("channel"),
        "{e}"
    );
    let e = bad("below = 0.1");
    assert!(e.contains("2 conditions are given"), "{e}");
    let e = salespulse::config::Config::from_toml(
        "[[alerts.rules]]\nname = \"x\"\nkpi = \"win_rate\"\nwindow = \"day\"\nbelow = 0.1\nevents = [\"crm.deal.won\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("alerts.rules[0].events") && e.contains("only for absent_for"),
        "{e}"
    );
}
