//! Dirty time and order (docs/time.md): one far-future or far-ahead event,
//! a genuine gap, events before the entity they name, and shuffles within
//! the out-of-orderness bound — on a generated stream and on the Maven
//! CRM replay (public data this project did not write).

mod common;

use common::*;
use proptest::prelude::*;
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::decode::RejectReason;
use salespulse::demo::generator::{GenConfig, Generator};
use salespulse::engine::state::DECODED_CAP;
use salespulse::engine::{Engine, Settings};
use salespulse::output::KpiRecord;
use salespulse::window::CalendarKind;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

const DAY: i64 = 86_400_000;

/// Final records by series and window, without revisions.
type Finals = BTreeMap<String, (Option<f64>, Option<f64>, Option<f64>, u64)>;

fn finals(recs: &[KpiRecord]) -> Finals {
    recs.iter()
        .filter(|r| r.is_final)
        .map(|r| {
            (
                format!(
                    "{} {} {} {:?}",
                    r.kpi, r.window.kind, r.window.label, r.dimensions
                ),
                (r.value, r.numerator, r.denominator, r.sample_size),
            )
        })
        .collect()
}

/// An engine on the system's wall clock (the streams here are in its past).
fn wall_engine(toml: &str) -> Engine {
    Engine::from_config(&Config::from_toml(toml).unwrap())
}

/// Runs `lines`; returns the records and the reasons of the rejected ones.
fn run(mut e: Engine, lines: &[String]) -> (Vec<KpiRecord>, Vec<RejectReason>, Engine) {
    let mut rejected = Vec::new();
    for l in lines {
        if let Err(r) = e.process_json(l.as_bytes()) {
            rejected.push(r.reason);
        }
    }
    e.finish();
    (e.take_records(), rejected, e)
}

fn generated(start: &str, n: usize) -> Vec<String> {
    Generator::new(GenConfig {
        seed: 19,
        start: ms(start),
        events_per_day: 400,
        reps: 6,
    })
    .take(n)
    .map(|e| cej::encode(&e))
    .collect()
}

fn maven() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/maven-crm");
    let (events, _) = salespulse::demo::maven::convert(&dir).unwrap();
    events.iter().map(cej::encode).collect()
}

fn lead_at(t: i64) -> String {
    String::from_utf8(ce_at(
        "outlier-1",
        "crm.lead.created",
        t,
        json!({"lead_id": "OUTLIER-LEAD", "channel": "web", "rep": "Zed"}),
    ))
    .unwrap()
}

/// Time of a JSON event line.
fn time_of(l: &str) -> i64 {
    ms(
        serde_json::from_str::<serde_json::Value>(l).unwrap()["time"]
            .as_str()
            .unwrap(),
    )
}

/// The calendar windows (kind, label) containing `t`.
fn windows_of(e: &Engine, t: i64) -> Vec<(String, String)> {
    let cal = e.settings.cal;
    CalendarKind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str().to_string(),
                cal.label(*k, cal.bounds(*k, t).start),
            )
        })
        .collect()
}

/// (a) one event dated 2099, (b) one two years ahead of its neighbours
/// (in the wall clock's past), (c) a genuine three-month gap.
fn outliers_change_nothing_else(clean: Vec<String>, name: &str) {
    let at = clean.len() / 3;
    let (base, _, e0) = run(wall_engine(""), &clean);
    let base = finals(&base);
    assert!(base.len() > 1000, "{name}: {} final records", base.len());

    // (a) 2099: rejected as `future`, the clock never sees it.
    let mut dirty = clean.clone();
    dirty.insert(at, lead_at(ms("2099-01-01T00:00:00Z")));
    let (recs, rejected, _) = run(wall_engine(""), &dirty);
    assert_eq!(rejected, [RejectReason::Future], "{name}");
    assert_eq!(finals(&recs), base, "{name}: 2099");

    // (b) two years ahead of its neighbours: held, counted alone at the
    // end; every other final record is the clean run's.
    let t = time_of(&clean[at]) + 730 * DAY;
    let mut dirty = clean.clone();
    dirty.insert(at, lead_at(t));
    let (recs, rejected, e) = run(wall_engine(""), &dirty);
    assert!(rejected.is_empty(), "{name}: {rejected:?}");
    assert_eq!(e.state.stats.outliers, [1, 0, 0, 1], "{name}");
    assert_eq!(e.state.stats.jumps, 0);
    let own = windows_of(&e, t);
    let mut got = finals(&recs);
    let theirs: Vec<String> = got
        .keys()
        .filter(|k| {
            own.iter()
                .any(|(kind, l)| k.contains(&format!(" {kind} {l} ")))
        })
        .cloned()
        .collect();
    assert!(
        !theirs.is_empty(),
        "{name}: the outlier counts in its own windows"
    );
    assert!(
        theirs
            .iter()
            .any(|k| k.starts_with("leads_created year ") && k.ends_with("{}")),
        "{theirs:?}"
    );
    for k in &theirs {
        got.remove(k);
    }
    // The outlier is a lead nobody contacted: it waits for a first
    // contact like any other (its SLA deadline is two years ahead).
    let awaiting = |m: &Finals| -> Vec<String> {
        m.keys()
            .filter(|k| k.starts_with("leads_awaiting_first_contact "))
            .cloned()
            .collect()
    };
    let mut base = base.clone();
    for k in awaiting(&got).into_iter().chain(awaiting(&base)) {
        let g = got.remove(&k).and_then(|v| v.0).unwrap_or(0.0);
        let b = base.remove(&k).and_then(|v| v.0).unwrap_or(0.0);
        assert!(g == b || g == b + 1.0, "{name}: {k}: {g} vs {b}");
    }
    assert_eq!(got, base, "{name}: two years ahead");
    assert_eq!(e.state.max_time, e0.state.max_time);

    // (c) a genuine three-month gap: the clock waits for
    // time.jump_confirmations events, then moves on; the records are
    // those of a run without the outlier hold.
    let gap: Vec<String> = clean
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i < at {
                return l.clone();
            }
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let t = time_of(l) + 92 * DAY;
            v["time"] = json!(cej::format_time(t));
            v.to_string()
        })
        .collect();
    let (plain, _, _) = run(wall_engine("[time]\nmax_jump = \"0s\"\n"), &gap);
    let (recs, rejected, e) = run(wall_engine(""), &gap);
    assert!(rejected.is_empty(), "{name}: {rejected:?}");
    assert_eq!(e.state.stats.jumps, 1, "{name}");
    assert_eq!(e.state.stats.outliers, [32, 32, 0, 0], "{name}");
    assert_eq!(finals(&recs), finals(&plain), "{name}: gap");
}

#[test]
fn one_outlier_changes_nothing_else_on_a_generated_stream() {
    outliers_change_nothing_else(generated("2023-01-01T00:00:00Z", 30_000), "generated");
}

#[test]
fn one_outlier_changes_nothing_else_on_the_maven_replay() {
    outliers_change_nothing_else(maven(), "maven");
}

/// A lone outlier in a live stream: the clock catches up with it and it
/// counts then, in order; a genuine jump needs events in a row.
#[test]
fn an_outlier_counts_once_the_clock_catches_up() {
    let mut s = Settings::from_config(&Config::default());
    s.now = Some(ms(TEST_NOW));
    let mut e = Engine::new(s);
    let lead = |i: usize, t: &str| {
        ce(
            &format!("l{i}"),
            "crm.lead.created",
            t,
            json!({"lead_id": format!("L{i}"), "channel": "web"}),
        )
    };
    e.process_json(&lead(0, "2024-01-01T00:00:00Z")).unwrap();
    e.process_json(&lead(1, "2024-03-01T00:00:00Z")).unwrap();
    assert_eq!(e.waiting_counts(), [0, 1], "60 days ahead: held");
    assert_eq!(e.state.max_time, ms("2024-01-01T00:00:00Z"));
    // the stream moves on: events in between end the run
    for (i, d) in ["2024-01-10", "2024-01-20", "2024-01-31"]
        .iter()
        .enumerate()
    {
        e.process_json(&lead(i + 2, &format!("{d}T00:00:00Z")))
            .unwrap();
    }
    assert_eq!(e.waiting_counts(), [0, 0], "within 30 days of the clock");
    assert_eq!(e.state.stats.outliers, [1, 0, 1, 0]);
    assert_eq!(e.state.max_time, ms("2024-03-01T00:00:00Z"));
    e.finish();
    let recs = e.take_records();
    assert_eq!(
        value(&recs, "leads_created", "month", "2024-03", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&recs, "leads_created", "quarter", "2024-Q1", &[]),
        Some(5.0)
    );
}

const GRACE_CFG: &str = r#"
[time]
out_of_orderness = "1h"
grace = "1d"
[windows]
calendar = ["day", "month"]
rolling = []
"#;

fn sum_over(recs: &[KpiRecord], kpi: &str, label: &str, dim: &str) -> f64 {
    recs.iter()
        .filter(|r| r.is_final && r.kpi == kpi && r.window.label == label)
        .filter(|r| r.dimensions.len() == 1 && r.dimensions.contains_key(dim))
        .filter_map(|r| r.value)
        .sum()
}

/// Events that arrive before the lead, deal or customer they name count
/// with its dimensions when it comes within grace; the others count in
/// the `unknown` series; "all" is the sum of any dimension's series.
#[test]
fn facts_before_their_entity_take_its_dimensions() {
    let mut e = engine(GRACE_CFG);
    let lines = [
        // conversion and contact before the lead (the lead is dated later)
        ce(
            "c1",
            "crm.lead.converted",
            "2026-03-02T10:00:00Z",
            json!({"lead_id": "L1"}),
        ),
        ce(
            "c2",
            "crm.lead.contacted",
            "2026-03-02T09:00:00Z",
            json!({"lead_id": "L1", "rep": "Ann"}),
        ),
        ce(
            "c3",
            "crm.lead.created",
            "2026-03-02T20:00:00Z",
            json!({"lead_id": "L1", "channel": "web", "campaign": "spring"}),
        ),
        // a win synced before its deal
        ce(
            "d1",
            "crm.deal.won",
            "2026-03-03T12:00:00Z",
            json!({"deal_id": "D1", "amount": 500}),
        ),
        ce(
            "d2",
            "crm.deal.created",
            "2026-03-03T08:00:00Z",
            json!({"deal_id": "D1", "rep": "Ann", "team": "Hunters", "region": "EMEA", "stage": "prospecting", "amount": 400, "channel": "web", "product": "Pro"}),
        ),
        // an order and a cancellation before the customer
        ce(
            "o1",
            "crm.order.placed",
            "2026-03-04T12:00:00Z",
            json!({"order_id": "O1", "customer_id": "C1", "amount": 80, "kind": "new"}),
        ),
        ce(
            "x1",
            "crm.customer.cancelled",
            "2026-03-05T12:00:00Z",
            json!({"customer_id": "C1"}),
        ),
        ce(
            "a1",
            "crm.customer.acquired",
            "2026-03-04T11:00:00Z",
            json!({"customer_id": "C1", "channel": "ads", "segment": "smb"}),
        ),
        // a win whose deal never comes
        ce(
            "d3",
            "crm.deal.won",
            "2026-03-06T12:00:00Z",
            json!({"deal_id": "D9", "amount": 70}),
        ),
        // a later event closes everything
        ce(
            "z",
            "crm.lead.created",
            "2026-03-20T00:00:00Z",
            json!({"lead_id": "L2", "channel": "ads"}),
        ),
    ];
    for l in &lines {
        e.process_json(l).unwrap();
    }
    assert_eq!(e.waiting_counts(), [0, 0], "every wait is over");
    assert_eq!(e.state.stats.waited, [6, 5, 1]);
    assert_eq!(e.state.stats.unknown_entity, [0, 1, 0]);
    e.finish();
    let recs = e.take_records();
    // "unknown" is a series, never a rep on a leaderboard
    let boards = e.take_leaderboards();
    let revenue = boards
        .iter()
        .find(|b| b.board == "revenue" && b.window.label == "2026-03")
        .unwrap();
    let reps: Vec<&str> = revenue.entries.iter().map(|x| x.rep.as_str()).collect();
    assert_eq!(reps, ["Ann"]);
    let m = |kpi: &str, dims: &[(&str, &str)]| {
        find(&recs, kpi, "month", "2026-03", dims)
            .unwrap_or_else(|| panic!("{kpi} {dims:?}"))
            .clone()
    };
    // the lead's conversion is web's and spring's
    assert_eq!(
        m("lead_conversion_rate", &[("channel", "web")]).numerator,
        Some(1.0)
    );
    assert_eq!(
        m("lead_conversion_rate", &[("campaign", "spring")]).numerator,
        Some(1.0)
    );
    // the win is Ann's, web's, Pro's, with its cycle from the deal's creation
    assert_eq!(m("deals_won", &[("rep", "Ann")]).value, Some(1.0));
    assert_eq!(m("revenue", &[("product", "Pro")]).value, Some(500.0));
    assert_eq!(
        m("sales_cycle_seconds_avg", &[("rep", "Ann")]).value,
        Some(4.0 * 3600.0)
    );
    // the deal that never came: in "unknown"
    assert_eq!(m("revenue", &[("rep", "unknown")]).value, Some(70.0));
    assert_eq!(m("revenue", &[]).value, Some(570.0));
    // the customer's order and churn are the ads channel's; none is active
    assert_eq!(m("orders", &[("channel", "ads")]).value, Some(1.0));
    let gauge = find(&recs, "active_customers", "gauge", "current", &[]).unwrap();
    assert_eq!(gauge.value, Some(0.0));
    // "all" = Σ series for every dimension, at every final window
    for kpi in ["leads_created", "deals_won", "revenue", "orders"] {
        for (kind, label) in [
            ("month", "2026-03"),
            ("day", "2026-03-03"),
            ("day", "2026-03-06"),
        ] {
            let all = find(&recs, kpi, kind, label, &[])
                .and_then(|r| r.value)
                .unwrap_or(0.0);
            for dim in salespulse::engine::state::DIMS {
                assert_eq!(
                    sum_over(&recs, kpi, label, dim),
                    all,
                    "{kpi} {label} by {dim}"
                );
            }
        }
    }
}

/// An entity that comes more than `time.grace` after an event naming it
/// does not take it: whether an event is attributed depends on the event
/// times only, not on arrival order.
#[test]
fn an_entity_later_than_grace_does_not_take_the_event() {
    // 24 h 30 min after the conversion: too late for it (grace is 1 d)
    let mut e = engine(GRACE_CFG);
    e.process_json(&ce(
        "c1",
        "crm.lead.converted",
        "2026-03-02T10:00:00Z",
        json!({"lead_id": "L1"}),
    ))
    .unwrap();
    e.process_json(&ce(
        "c2",
        "crm.lead.created",
        "2026-03-03T10:30:00Z",
        json!({"lead_id": "L1", "channel": "web"}),
    ))
    .unwrap();
    assert_eq!(e.state.stats.waited, [1, 0, 1]);
    let recs = run_all(&mut e, &[]);
    assert_eq!(
        find(
            &recs,
            "leads_created",
            "month",
            "2026-03",
            &[("channel", "unknown")]
        ),
        None
    );
    assert_eq!(
        find(
            &recs,
            "lead_conversion_rate",
            "month",
            "2026-03",
            &[("channel", "web")]
        )
        .unwrap()
        .numerator,
        Some(0.0)
    );
}

/// More events wait than the engine keeps decoded (`DECODED_CAP`: the
/// rest are held as protobuf bytes, and all of them come back as bytes
/// from a checkpoint): the records are those of the same events in
/// entity-first order.
#[test]
fn more_waiting_events_than_are_kept_decoded_count_as_in_entity_order() {
    const CFG: &str = r#"
[time]
out_of_orderness = "1h"
grace = "1d"
[windows]
calendar = ["day"]
rolling = []
[kpis]
dimensions = ["rep"]
"#;
    let n = DECODED_CAP + 4_000;
    let t0 = common::ms("2026-03-02T00:00:00Z");
    let at = |i: usize| t0 + i as i64 * 1_000;
    let won = |i: usize| {
        let data = json!({"deal_id": format!("D{i}"), "amount": (i % 97 + 1) as f64});
        ce_at(&format!("w{i}"), "crm.deal.won", at(i), data)
    };
    let created = |i: usize| {
        let data = json!({"deal_id": format!("D{i}"), "rep": format!("R{}", i % 7),
                          "amount": 10.0, "stage": "prospecting"});
        ce_at(&format!("c{i}"), "crm.deal.created", at(i) - 500, data)
    };
    let has_deal = |i: &usize| i % 5 == 0;
    let feed = |e: &mut Engine, lines: &mut dyn Iterator<Item = Vec<u8>>| {
        for l in lines {
            e.process_json(&l).unwrap();
        }
    };

    // Entity first: each deal before its win (the wins of deals that
    // never come wait, fewer than the cap).
    let mut ordered = engine(CFG);
    feed(
        &mut ordered,
        &mut (0..n).flat_map(|i| has_deal(&i).then(|| created(i)).into_iter().chain([won(i)])),
    );
    ordered.finish();
    let ordered = finals(&ordered.take_records());

    // Wins first: every win waits, more than the cap; then the deals.
    let mut early = engine(CFG);
    feed(&mut early, &mut (0..n).map(won));
    assert_eq!(early.waiting_counts()[0], n, "every win waits for its deal");
    let state = postcard::to_stdvec(&early.state).unwrap();
    feed(&mut early, &mut (0..n).filter(has_deal).map(created));
    early.finish();
    let early = finals(&early.take_records());

    // The same, restored from a checkpoint taken while they wait.
    let settings = Settings::from_config(&Config::from_toml(CFG).unwrap());
    let mut restored = Engine::from_state(
        Settings {
            now: Some(common::ms(TEST_NOW)),
            ..settings
        },
        postcard::from_bytes(&state).unwrap(),
    );
    feed(&mut restored, &mut (0..n).filter(has_deal).map(created));
    restored.finish();
    let restored = finals(&restored.take_records());

    let rep = |f: &Finals, r: &str| {
        f.iter()
            .filter(|(k, _)| {
                k.starts_with("deals_won day") && k.contains(&format!("\"rep\": \"{r}\""))
            })
            .map(|(_, v)| v.0.unwrap_or(0.0))
            .sum::<f64>()
    };
    let r0 = (0..n).filter(|i| has_deal(i) && i % 7 == 0).count() as f64;
    assert_eq!(rep(&ordered, "R0"), r0, "attributed wins of R0");
    assert_eq!(
        rep(&ordered, "unknown"),
        (0..n).filter(|i| !has_deal(i)).count() as f64
    );
    let differ = |f: &Finals| {
        let keys = f.keys().chain(ordered.keys());
        let d: std::collections::BTreeSet<_> =
            keys.filter(|k| f.get(*k) != ordered.get(*k)).collect();
        d.into_iter().take(5).cloned().collect::<Vec<_>>()
    };
    assert_eq!(
        differ(&early),
        Vec::<String>::new(),
        "wins first, more than the cap waiting"
    );
    assert_eq!(
        differ(&restored),
        Vec::<String>::new(),
        "restored while they wait"
    );
}

#[path = "common/dirty.rs"]
mod dirty;

/// "all" = Σ the series of any one dimension, for additive KPIs, in every
/// final calendar record.
fn assert_all_is_the_sum(recs: &[KpiRecord]) -> Result<(), TestCaseError> {
    let kpis = ["leads_created", "deals_won", "revenue", "orders"];
    let mut all: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut by: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    for r in recs
        .iter()
        .filter(|r| r.is_final && kpis.contains(&&*r.kpi))
    {
        let k = (
            r.kpi.to_string(),
            r.window.kind.clone(),
            r.window.label.clone(),
        );
        let v = r.value.unwrap_or(0.0);
        match r.dimensions.len() {
            0 => *all.entry(k).or_default() += v,
            1 => {
                let dim = r.dimensions.keys().next().unwrap().clone();
                *by.entry((k.0, k.1, k.2, dim)).or_default() += v;
            }
            _ => {}
        }
    }
    prop_assert!(!all.is_empty());
    for ((kpi, kind, label), v) in &all {
        if kind == "gauge" || kind.starts_with("rolling") {
            continue;
        }
        for dim in salespulse::engine::state::DIMS {
            let s = by
                .get(&(kpi.clone(), kind.clone(), label.clone(), dim.to_string()))
                .copied()
                .unwrap_or(0.0);
            prop_assert!(
                (s - v).abs() < 1e-6,
                "{} {} {}: all {} but Σ {} = {}",
                kpi,
                kind,
                label,
                v,
                dim,
                s
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any arrival order within the out-of-orderness bound, with events
    /// before the entity they name, gives the sorted run's final records.
    #[test]
    fn shuffles_within_the_bound_give_the_sorted_runs_records(seed in any::<u64>(), order in any::<u64>()) {
        let lines = dirty::stream(seed, 150, ms("2025-06-01T00:00:00Z"));
        let cfg = dirty::config_toml();
        let sorted: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
        let (a, rejected, ea) = run(engine(&cfg), &sorted);
        prop_assert!(rejected.is_empty(), "{:?}", rejected);
        let (b, rejected, eb) = run(engine(&cfg), &dirty::shuffle(&lines, order));
        prop_assert!(rejected.is_empty(), "{:?}", rejected);
        prop_assert!(ea.state.stats.waited[0] > 0 && eb.state.stats.waited[0] > 0);
        prop_assert_eq!(ea.state.stats.unknown_entity, eb.state.stats.unknown_entity, "the same events count without their entity");
        prop_assert_eq!(finals(&a), finals(&b));
        assert_all_is_the_sum(&a)?;
    }
}
