//! Entity lifecycles (docs/entities.md): every event is checked against
//! the state of its lead, deal or customer. A re-sent webhook is a
//! duplicate, a reopen moves a deal's outcome, a correction revises it,
//! gauges follow the entities' state and never go negative, and open
//! deals and active customers are never forgotten by the TTL.

mod common;

use common::*;
use salespulse::engine::state::{DUPLICATE_REASONS, DUP_TRANSITION};
use salespulse::engine::Engine;
use salespulse::output::KpiRecord;
use serde_json::json;

/// Day and month windows; a day is final one hour after it ends.
const CFG: &str = r#"
[time]
out_of_orderness = "1m"
grace = "1h"
[windows]
calendar = ["day", "month"]
rolling = []
"#;

fn t(s: &str) -> i64 {
    ms(s)
}

struct Stream {
    lines: Vec<Vec<u8>>,
    n: usize,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            lines: Vec::new(),
            n: 0,
        }
    }
    /// An event with a fresh id (a re-sent webhook gets a new id too).
    fn push(&mut self, ty: &str, at: &str, data: serde_json::Value) -> &mut Stream {
        self.n += 1;
        let id = format!("e{}", self.n);
        self.lines.push(ce_at(&id, ty, t(at), data));
        self
    }
}

fn run(cfg: &str, s: &Stream) -> (Engine, Vec<KpiRecord>) {
    let mut e = engine(cfg);
    let recs = run_all(&mut e, &s.lines);
    (e, recs)
}

fn month(recs: &[KpiRecord], kpi: &str, label: &str) -> Option<f64> {
    value(recs, kpi, "month", label, &[])
}

/// A gauge series ("all" unless `dims`) in the newest gauge emission of
/// `recs`: `None` when that emission has no such series (no open deal).
fn gauge(recs: &[KpiRecord], kpi: &str, dims: &[(&str, &str)]) -> Option<f64> {
    let rev = recs
        .iter()
        .filter(|r| r.window.kind == "gauge")
        .map(|r| r.revision)
        .max()?;
    let latest: Vec<KpiRecord> = recs
        .iter()
        .filter(|r| r.window.kind == "gauge" && r.revision == rev)
        .cloned()
        .collect();
    find(&latest, kpi, "gauge", "current", dims).and_then(|r| r.value)
}

fn repeats(e: &Engine) -> u64 {
    assert_eq!(DUPLICATE_REASONS[DUP_TRANSITION], "repeated_transition");
    e.state.stats.duplicates[DUP_TRANSITION]
}

#[test]
fn a_resent_win_is_a_duplicate_not_more_revenue() {
    let mut s = Stream::new();
    s.push(
        "crm.deal.created",
        "2026-01-02T09:00:00Z",
        json!({"deal_id": "A", "rep": "Ann", "amount": 1000.0, "stage": "proposal"}),
    )
    .push(
        "crm.deal.won",
        "2026-01-10T09:00:00Z",
        json!({"deal_id": "A", "amount": 1000.0}),
    )
    // the webhook of A's win, re-sent five minutes later with a new id
    .push(
        "crm.deal.won",
        "2026-01-10T09:05:00Z",
        json!({"deal_id": "A", "amount": 1000.0}),
    )
    .push(
        "crm.deal.won",
        "2026-01-11T09:00:00Z",
        json!({"deal_id": "B", "amount": 500.0}),
    )
    // B (never created) re-sent too: an unknown deal's outcome is remembered
    .push(
        "crm.deal.won",
        "2026-01-11T10:00:00Z",
        json!({"deal_id": "B", "amount": 500.0}),
    );
    let (e, recs) = run(CFG, &s);
    assert_eq!(month(&recs, "revenue", "2026-01"), Some(1500.0));
    assert_eq!(month(&recs, "deals_won", "2026-01"), Some(2.0));
    assert_eq!(
        value(&recs, "revenue", "month", "2026-01", &[("rep", "Ann")]),
        Some(1000.0)
    );
    assert_eq!(repeats(&e), 2);
    assert_eq!(gauge(&recs, "pipeline_value", &[]), Some(0.0));
}

#[test]
fn a_reopened_deal_counts_once_by_its_latest_outcome() {
    let mut s = Stream::new();
    for (id, rep) in [("A", "Ann"), ("B", "Bob")] {
        s.push(
            "crm.deal.created",
            "2026-01-02T09:00:00Z",
            json!({"deal_id": id, "rep": rep, "amount": 800.0, "stage": "negotiation"}),
        );
    }
    s.push(
        "crm.deal.lost",
        "2026-01-04T10:00:00Z",
        json!({"deal_id": "A", "amount": 800.0, "competitor": "Acme"}),
    )
    .push(
        "crm.deal.won",
        "2026-01-04T11:00:00Z",
        json!({"deal_id": "B", "amount": 800.0}),
    )
    // reopened and won the same day, while Jan 4 is open
    .push(
        "crm.deal.won",
        "2026-01-04T16:00:00Z",
        json!({"deal_id": "A", "amount": 900.0}),
    );
    let (e, recs) = run(CFG, &s);
    assert_eq!(
        month(&recs, "win_rate", "2026-01"),
        Some(1.0),
        "2/2, not 3/4"
    );
    assert_eq!(month(&recs, "deals_won", "2026-01"), Some(2.0));
    assert_eq!(month(&recs, "revenue", "2026-01"), Some(1700.0));
    let lost = find(&recs, "win_rate", "month", "2026-01", &[]).unwrap();
    assert_eq!(lost.denominator, Some(2.0), "the loss is withdrawn");
    assert_eq!(month(&recs, "win_rate_with_competitor", "2026-01"), None);
    // the negotiation stage was left twice (once per deal), both to a win
    let st = recs
        .iter()
        .rev()
        .find(|r| {
            r.kpi == "stage_conversion_rate"
                && r.window.kind == "month"
                && r.dimensions.get("stage").map(String::as_str) == Some("negotiation")
                && r.dimensions.len() == 1
        })
        .unwrap();
    assert_eq!((st.numerator, st.denominator), (Some(2.0), Some(2.0)));
    assert_eq!(e.state.stats.outcomes_revised, [1, 0]);
    // both cycles are counted once: 2d 7h (A, the later win) and 2d 2h (B)
    let cyc = find(&recs, "sales_cycle_seconds_avg", "month", "2026-01", &[]).unwrap();
    assert_eq!(cyc.denominator, Some(2.0));
    assert_eq!(
        cyc.numerator,
        Some((2.0 * 86400.0 + 7.0 * 3600.0) + (2.0 * 86400.0 + 2.0 * 3600.0))
    );
}

#[test]
fn a_reopen_after_the_window_is_final_keeps_the_final_window_and_counts_anew() {
    let mut s = Stream::new();
    s.push(
        "crm.deal.created",
        "2026-01-02T09:00:00Z",
        json!({"deal_id": "A", "rep": "Ann", "amount": 800.0, "stage": "proposal"}),
    )
    .push(
        "crm.deal.lost",
        "2026-01-20T10:00:00Z",
        json!({"deal_id": "A", "amount": 800.0}),
    )
    // the clock moves on: January is final
    .push(
        "crm.lead.created",
        "2026-02-02T10:00:00Z",
        json!({"lead_id": "L", "channel": "web"}),
    )
    // February: reopened (back in the pipeline), then won
    .push(
        "crm.deal.stage_changed",
        "2026-02-03T10:00:00Z",
        json!({"deal_id": "A", "from": "proposal", "to": "negotiation", "amount": 950.0}),
    );
    let mut e = engine(CFG);
    for l in &s.lines {
        e.process_json(l).unwrap();
    }
    e.emit_updates();
    let mid = e.take_records();
    assert_eq!(
        gauge(&mid, "pipeline_value", &[]),
        Some(950.0),
        "reopened: back in the pipeline"
    );
    assert_eq!(
        gauge(&mid, "pipeline_value", &[("stage", "negotiation")]),
        Some(950.0)
    );
    let won = ce_at(
        "w",
        "crm.deal.won",
        t("2026-02-10T10:00:00Z"),
        json!({"deal_id": "A", "amount": 950.0}),
    );
    let recs = run_all(&mut e, &[won]);
    let all: Vec<KpiRecord> = mid.into_iter().chain(recs).collect();
    assert_eq!(month(&all, "win_loss_ratio", "2026-01"), Some(0.0));
    let jan = find(&all, "win_rate", "month", "2026-01", &[]).unwrap();
    assert_eq!(jan.denominator, Some(1.0), "January keeps its loss");
    assert_eq!(month(&all, "win_rate", "2026-01"), Some(0.0));
    assert_eq!(month(&all, "deals_won", "2026-02"), Some(1.0));
    assert_eq!(month(&all, "revenue", "2026-02"), Some(950.0));
    assert_eq!(gauge(&all, "pipeline_value", &[]), Some(0.0));
    assert_eq!(e.state.stats.outcomes_revised, [0, 1]);
}

#[test]
fn a_corrected_amount_revises_the_win() {
    let mut s = Stream::new();
    s.push(
        "crm.deal.created",
        "2026-01-02T09:00:00Z",
        json!({"deal_id": "A", "rep": "Ann", "amount": 1000.0, "stage": "proposal"}),
    )
    .push(
        "crm.deal.won",
        "2026-01-10T09:00:00Z",
        json!({"deal_id": "A", "amount": 1000.0}),
    )
    // corrected the same day: the win is revised in place
    .push(
        "crm.deal.won",
        "2026-01-10T12:00:00Z",
        json!({"deal_id": "A", "amount": 1200.0}),
    )
    .push(
        "crm.deal.won",
        "2026-01-20T09:00:00Z",
        json!({"deal_id": "B", "rep": "Bob", "amount": 300.0}),
    )
    .push(
        "crm.lead.created",
        "2026-02-01T10:00:00Z",
        json!({"lead_id": "L", "channel": "web"}),
    )
    // corrected in February: January is final, February gets the difference
    .push(
        "crm.deal.won",
        "2026-02-02T09:00:00Z",
        json!({"deal_id": "B", "amount": 350.0}),
    );
    let (e, recs) = run(CFG, &s);
    assert_eq!(month(&recs, "revenue", "2026-01"), Some(1500.0));
    assert_eq!(month(&recs, "deals_won", "2026-01"), Some(2.0));
    assert_eq!(month(&recs, "revenue", "2026-02"), Some(50.0));
    assert_eq!(month(&recs, "deals_won", "2026-02"), Some(0.0));
    assert_eq!(
        value(&recs, "revenue", "month", "2026-02", &[("rep", "Bob")]),
        Some(50.0)
    );
    let day = find(&recs, "revenue", "day", "2026-01-10", &[]).unwrap();
    assert!(day.is_final);
    assert_eq!(day.value, Some(1200.0));
    assert_eq!(e.state.stats.outcomes_revised, [1, 1]);
    // the cycle of A is counted once, from its creation to its (first) win time
    let cyc = find(&recs, "sales_cycle_seconds_avg", "day", "2026-01-10", &[]).unwrap();
    assert_eq!(cyc.denominator, Some(1.0));
    assert_eq!(cyc.value, Some(8.0 * 86400.0));
}

#[test]
fn a_customer_cancelled_twice_churns_once_and_active_customers_never_go_negative() {
    let mut s = Stream::new();
    s.push(
        "crm.customer.acquired",
        "2026-01-02T09:00:00Z",
        json!({"customer_id": "C1", "channel": "web"}),
    )
    .push(
        "crm.customer.acquired",
        "2026-01-02T09:00:00Z",
        json!({"customer_id": "C2", "channel": "web"}),
    )
    .push(
        "crm.customer.cancelled",
        "2026-02-05T09:00:00Z",
        json!({"customer_id": "C1"}),
    )
    .push(
        "crm.customer.cancelled",
        "2026-02-05T09:10:00Z",
        json!({"customer_id": "C1"}),
    )
    // unknown customers (acquired before the stream began) cancel too:
    // counted in "all", never below what the known customers give
    .push(
        "crm.customer.cancelled",
        "2026-02-06T09:00:00Z",
        json!({"customer_id": "C8"}),
    )
    .push(
        "crm.customer.cancelled",
        "2026-02-06T09:00:00Z",
        json!({"customer_id": "C9"}),
    )
    .push(
        "crm.customer.cancelled",
        "2026-02-07T09:00:00Z",
        json!({"customer_id": "C9"}),
    );
    let (e, recs) = run(CFG, &s);
    let churn = find(&recs, "churn_rate", "month", "2026-02", &[]).unwrap();
    assert_eq!(churn.numerator, Some(3.0), "C1 once, C8 and C9 once each");
    assert_eq!(churn.denominator, Some(2.0));
    let web = find(
        &recs,
        "churn_rate",
        "month",
        "2026-02",
        &[("channel", "web")],
    )
    .unwrap();
    assert_eq!(web.numerator, Some(1.0));
    assert_eq!(gauge(&recs, "active_customers", &[]), Some(1.0));
    assert_eq!(
        gauge(&recs, "active_customers", &[("channel", "web")]),
        Some(1.0)
    );
    for r in recs.iter().filter(|r| r.window.kind == "gauge") {
        assert!(r.value.unwrap_or(0.0) >= 0.0, "negative gauge {r:?}");
    }
    assert_eq!(repeats(&e), 2);
}

#[test]
fn a_cancelled_customer_who_comes_back_is_acquired_again() {
    let mut s = Stream::new();
    s.push(
        "crm.customer.acquired",
        "2026-01-02T09:00:00Z",
        json!({"customer_id": "C1", "channel": "web"}),
    )
    .push(
        "crm.customer.acquired",
        "2026-01-03T09:00:00Z",
        json!({"customer_id": "C1", "channel": "web"}),
    )
    .push(
        "crm.customer.cancelled",
        "2026-01-10T09:00:00Z",
        json!({"customer_id": "C1"}),
    )
    .push(
        "crm.customer.acquired",
        "2026-02-10T09:00:00Z",
        json!({"customer_id": "C1"}),
    );
    let (e, recs) = run(CFG, &s);
    let acq = |m: &str| {
        find(&recs, "customer_acquisition_cost", "month", m, &[])
            .unwrap()
            .denominator
    };
    assert_eq!(
        acq("2026-01"),
        Some(1.0),
        "the repeat is not a second acquisition"
    );
    assert_eq!(acq("2026-02"), Some(1.0), "reactivated");
    assert_eq!(
        gauge(&recs, "active_customers", &[("channel", "web")]),
        Some(1.0)
    );
    assert_eq!(repeats(&e), 1);
}

#[test]
fn repeated_lead_steps_count_once_and_are_counted_as_duplicates() {
    let mut s = Stream::new();
    let lead = json!({"lead_id": "L1", "channel": "web"});
    s.push("crm.lead.created", "2026-01-02T09:00:00Z", lead.clone())
        .push(
            "crm.lead.created",
            "2026-01-02T09:30:00Z",
            json!({"lead_id": "L1", "channel": "ads"}),
        )
        .push(
            "crm.lead.contacted",
            "2026-01-02T10:00:00Z",
            json!({"lead_id": "L1", "rep": "Ann"}),
        )
        .push(
            "crm.lead.contacted",
            "2026-01-02T11:00:00Z",
            json!({"lead_id": "L1", "rep": "Ann"}),
        )
        .push(
            "crm.lead.qualified",
            "2026-01-03T10:00:00Z",
            json!({"lead_id": "L1", "level": "sql"}),
        )
        .push(
            "crm.lead.qualified",
            "2026-01-03T11:00:00Z",
            json!({"lead_id": "L1", "level": "mql"}),
        )
        .push(
            "crm.lead.converted",
            "2026-01-04T10:00:00Z",
            json!({"lead_id": "L1"}),
        )
        .push(
            "crm.lead.converted",
            "2026-01-04T10:05:00Z",
            json!({"lead_id": "L1"}),
        );
    let (e, recs) = run(CFG, &s);
    assert_eq!(month(&recs, "leads_created", "2026-01"), Some(1.0));
    assert_eq!(
        value(
            &recs,
            "leads_created",
            "month",
            "2026-01",
            &[("channel", "web")]
        ),
        Some(1.0)
    );
    assert!(find(
        &recs,
        "leads_created",
        "month",
        "2026-01",
        &[("channel", "ads")]
    )
    .is_none());
    assert_eq!(month(&recs, "lead_conversion_rate", "2026-01"), Some(1.0));
    assert_eq!(month(&recs, "mql_to_sql_rate", "2026-01"), Some(1.0));
    let resp = find(
        &recs,
        "lead_response_time_seconds_avg",
        "month",
        "2026-01",
        &[],
    )
    .unwrap();
    assert_eq!((resp.value, resp.denominator), (Some(3600.0), Some(1.0)));
    assert_eq!(repeats(&e), 4);
}

/// Issue 25's scenario: a deal quiet for longer than the TTL is still
/// open, and its win takes it out of the pipeline.
#[test]
fn an_open_deal_outlives_the_ttl_and_its_win_empties_the_pipeline() {
    let cfg = format!("{CFG}\n[state]\nentity_ttl = \"2d\"\ndedup_horizon = \"2d\"\n");
    let mut s = Stream::new();
    s.push(
        "crm.deal.created",
        "2026-01-01T09:00:00Z",
        json!({"deal_id": "D", "rep": "Ann", "amount": 1000.0, "stage": "proposal", "channel": "web"}),
    )
    // a customer active for longer than the TTL, then cancelled
    .push(
        "crm.customer.acquired",
        "2026-01-02T09:00:00Z",
        json!({"customer_id": "C", "channel": "web"}),
    )
    .push(
        "crm.activity.logged",
        "2026-01-04T09:00:00Z",
        json!({"rep": "Ann", "kind": "call", "deal_id": "D"}),
    )
    .push(
        "crm.activity.logged",
        "2026-01-08T09:00:00Z",
        json!({"rep": "Ann", "kind": "call", "deal_id": "D"}),
    )
    .push(
        "crm.deal.won",
        "2026-01-09T09:00:00Z",
        json!({"deal_id": "D", "amount": 1000.0}),
    )
    .push(
        "crm.lead.created",
        "2026-01-20T09:00:00Z",
        json!({"lead_id": "L", "channel": "web"}),
    )
    .push(
        "crm.customer.cancelled",
        "2026-02-01T09:00:00Z",
        json!({"customer_id": "C"}),
    );
    let (e, recs) = run(&cfg, &s);
    assert_eq!(month(&recs, "revenue", "2026-01"), Some(1000.0));
    assert_eq!(gauge(&recs, "pipeline_value", &[]), Some(0.0));
    assert_eq!(gauge(&recs, "pipeline_value", &[("rep", "Ann")]), None);
    let cyc = find(&recs, "sales_cycle_seconds_avg", "month", "2026-01", &[]).unwrap();
    assert_eq!(cyc.value, Some(8.0 * 86400.0), "the cycle is kept");
    let churn = find(
        &recs,
        "churn_rate",
        "month",
        "2026-02",
        &[("channel", "web")],
    )
    .unwrap();
    assert_eq!(churn.numerator, Some(1.0));
    assert_eq!(churn.denominator, Some(1.0));
    let life = find(
        &recs,
        "customer_lifetime_seconds_avg",
        "month",
        "2026-02",
        &[],
    )
    .unwrap();
    assert_eq!(life.value, Some(30.0 * 86400.0));
    assert_eq!(gauge(&recs, "active_customers", &[]), Some(0.0));
    assert_eq!(e.state.stats.unknown_entity, [0, 0, 0]);
    // what is closed is forgotten after the TTL, visibly
    let ev = e.state.stats.evicted;
    assert_eq!(ev[1], 1, "the won deal was swept after the TTL: {ev:?}");
}

/// `pipeline.max_open_age`: a stale open deal leaves the pipeline gauges
/// and enters `deals_expired` in the same emission.
#[test]
fn a_stale_deal_expires_by_rule_in_one_emission() {
    let cfg = format!("{CFG}\n[pipeline]\nmax_open_age = \"30d\"\n");
    let mut e = engine(&cfg);
    let mut s = Stream::new();
    s.push(
        "crm.deal.created",
        "2026-01-01T09:00:00Z",
        json!({"deal_id": "D", "rep": "Ann", "amount": 1000.0, "stage": "proposal"}),
    )
    .push(
        "crm.deal.created",
        "2026-01-01T09:00:00Z",
        json!({"deal_id": "K", "rep": "Bob", "amount": 400.0, "stage": "proposal"}),
    );
    for day in 2..=30 {
        s.push(
            "crm.lead.created",
            &format!("2026-01-{day:02}T06:00:00Z"),
            json!({"lead_id": format!("L{day}"), "channel": "web"}),
        );
        if day == 25 {
            // K is kept alive by activity
            s.push(
                "crm.activity.logged",
                "2026-01-25T09:00:00Z",
                json!({"rep": "Bob", "kind": "email", "deal_id": "K"}),
            );
        }
    }
    for l in &s.lines {
        e.process_json(l).unwrap();
    }
    e.emit_updates();
    let before = e.take_records();
    assert_eq!(gauge(&before, "pipeline_value", &[]), Some(1400.0));
    // Jan 31 09:00 passes: D expires at its deadline
    for (i, at) in [
        "2026-01-31T08:00:00Z",
        "2026-01-31T12:00:00Z",
        "2026-02-01T12:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let l = ce_at(
            &format!("x{i}"),
            "crm.lead.created",
            t(at),
            json!({"lead_id": format!("X{i}"), "channel": "web"}),
        );
        e.process_json(&l).unwrap();
    }
    e.emit_updates();
    let batch = e.take_records();
    assert_eq!(gauge(&batch, "pipeline_value", &[]), Some(400.0));
    assert_eq!(gauge(&batch, "pipeline_value", &[("rep", "Ann")]), None);
    assert_eq!(
        gauge(&batch, "pipeline_value", &[("rep", "Bob")]),
        Some(400.0)
    );
    assert_eq!(
        value(&batch, "deals_expired", "month", "2026-01", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &batch,
            "deals_expired",
            "month",
            "2026-01",
            &[("rep", "Ann")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&batch, "expired_pipeline_value", "day", "2026-01-31", &[]),
        Some(1000.0)
    );
    assert_eq!(e.state.stats.deals_expired, 1);
    // a late win of the expired deal still counts, with its dimensions and cycle
    let won = ce_at(
        "w",
        "crm.deal.won",
        t("2026-02-03T09:00:00Z"),
        json!({"deal_id": "D", "amount": 1000.0}),
    );
    let recs = run_all(&mut e, &[won]);
    assert_eq!(
        value(&recs, "revenue", "month", "2026-02", &[("rep", "Ann")]),
        Some(1000.0)
    );
    assert_eq!(
        value(&recs, "sales_cycle_seconds_avg", "month", "2026-02", &[]),
        Some(33.0 * 86400.0)
    );
    assert!(
        find(&recs, "deals_expired", "month", "2026-01", &[]).is_none(),
        "January is final and not revised"
    );
    assert_eq!(
        value(&recs, "deals_expired", "month", "2026-02", &[]),
        Some(0.0)
    );
    assert_eq!(gauge(&recs, "pipeline_value", &[]), Some(400.0));
}

#[test]
fn a_max_open_age_within_lateness_is_refused_with_the_field_named() {
    let err = salespulse::config::Config::from_toml(
        "[time]\ngrace = \"7d\"\n[pipeline]\nmax_open_age = \"2d\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pipeline.max_open_age"), "{err}");
}

/// Issue's case with the default configuration (grace 1 day): lost on
/// Jan 4, won on Jan 5 — the loss is withdrawn from the open Jan 4.
#[test]
fn lost_one_day_and_won_the_next_counts_one_win_with_the_default_config() {
    let mut s = Stream::new();
    for id in ["A", "B"] {
        s.push(
            "crm.deal.created",
            "2026-01-02T09:00:00Z",
            json!({"deal_id": id, "rep": "Ann", "amount": 500.0, "stage": "proposal"}),
        );
    }
    s.push(
        "crm.deal.lost",
        "2026-01-04T10:00:00Z",
        json!({"deal_id": "A", "amount": 500.0}),
    )
    .push(
        "crm.deal.won",
        "2026-01-04T15:00:00Z",
        json!({"deal_id": "B", "amount": 500.0}),
    )
    .push(
        "crm.deal.won",
        "2026-01-05T09:00:00Z",
        json!({"deal_id": "A", "amount": 500.0}),
    );
    let (e, recs) = run("", &s);
    let wr = find(&recs, "win_rate", "month", "2026-01", &[]).unwrap();
    assert_eq!((wr.numerator, wr.denominator), (Some(2.0), Some(2.0)));
    let day4 = find(&recs, "win_rate", "day", "2026-01-04", &[]).unwrap();
    assert_eq!((day4.numerator, day4.denominator), (Some(1.0), Some(1.0)));
    assert!(day4.is_final);
    assert_eq!(e.state.stats.outcomes_revised, [1, 0]);
}

/// Expiry by `pipeline.max_open_age` survives a checkpoint: an engine
/// restored mid-stream (its expiry index rebuilt from the open deals)
/// emits what an uninterrupted one does, and deals do expire.
#[test]
fn expiry_is_the_same_after_a_restore() {
    use salespulse::demo::generator::{GenConfig, Generator};
    use salespulse::engine::state::State;
    use salespulse::engine::Settings;
    let cfg = salespulse::config::Config::from_toml(
        "[pipeline]\nmax_open_age = \"3d\"\n[windows]\nrolling = [\"7d\"]\n",
    )
    .unwrap();
    let lines: Vec<String> = Generator::new(GenConfig {
        seed: 5,
        start: ms("2026-01-01T00:00:00Z"),
        events_per_day: 300,
        reps: 6,
    })
    .take(40_000)
    .map(|e| salespulse::decode::json::encode(&e))
    .collect();
    let mut straight = Engine::from_config(&cfg);
    for l in &lines {
        straight.process_json(l.as_bytes()).unwrap();
    }
    straight.finish();
    let want = straight.take_records();
    assert!(
        straight.state.stats.deals_expired > 10,
        "{}",
        straight.state.stats.deals_expired
    );

    let mut first = Engine::from_config(&cfg);
    let mut got = Vec::new();
    for l in &lines[..23_000] {
        first.process_json(l.as_bytes()).unwrap();
    }
    got.extend(first.take_records());
    let saved = postcard::to_stdvec(&first.state).unwrap();
    drop(first);
    let state: State = postcard::from_bytes(&saved).unwrap();
    let mut second = Engine::from_state(Settings::from_config(&cfg), state);
    for l in &lines[23_000..] {
        second.process_json(l.as_bytes()).unwrap();
    }
    second.finish();
    got.extend(second.take_records());
    assert_eq!(
        second.state.stats.deals_expired,
        straight.state.stats.deals_expired
    );
    assert_eq!(got, want);
}
