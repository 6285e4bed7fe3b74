//! Slippage: `expected_close` on deal events. A move to a later month
//! counts in `deals_pushed` / `slipped_pipeline_value`; an open deal past
//! the end of its expected close day (local to `time.zone`, by the
//! watermark) is in the `overdue_deals` / `overdue_pipeline_value`
//! gauges until it closes or gets a later date; equal through a restore.

mod common;

use common::*;
use salespulse::engine::state::State;
use salespulse::engine::Engine;
use serde_json::{json, Value};

/// Berlin (CEST from 2026-03-29: the local day 03-31 ends at 22:00 UTC);
/// out-of-orderness 1 h.
const CFG: &str = r#"
[time]
zone = "Europe/Berlin"
out_of_orderness = "1h"

[windows]
calendar = ["day", "month"]

[[pipeline.stages]]
name = "talk"
probability = 0.2

[[pipeline.stages]]
name = "sign"
probability = 0.8
"#;

fn created(id: &str, amount: f64, close: Option<&str>, t: &str) -> Vec<u8> {
    let mut d = json!({"deal_id": id, "rep": "ann", "stage": "talk", "amount": amount});
    if let Some(c) = close {
        d["expected_close"] = json!(c);
    }
    ce(&format!("{id}-c-{t}"), "crm.deal.created", t, d)
}

fn moved(ev: &str, id: &str, to: &str, close: Option<&str>, t: &str) -> Vec<u8> {
    let mut d: Value = json!({"deal_id": id, "from": "talk", "to": to});
    if let Some(c) = close {
        d["expected_close"] = json!(c);
    }
    ce(ev, "crm.deal.stage_changed", t, d)
}

/// An event of another deal (no expected close) that moves the clock to `t`.
fn tick(t: &str) -> Vec<u8> {
    created(&format!("tick-{t}"), 1.0, None, t)
}

fn feed(e: &mut Engine, lines: &[Vec<u8>]) {
    for l in lines {
        e.process_json(l).expect("accepted");
    }
}

#[test]
fn a_deal_is_overdue_from_the_end_of_its_local_close_day_not_a_second_before() {
    let mut e = engine(CFG);
    feed(
        &mut e,
        &[
            created("d1", 1000.0, Some("2026-03-31"), "2026-03-02T09:00:00Z"),
            created("d2", 400.0, Some("2026-04-30"), "2026-03-02T10:00:00Z"),
            created("d3", 50.0, None, "2026-03-02T11:00:00Z"),
        ],
    );
    // The local day 03-31 ends at 22:00 UTC; the watermark is the clock − 1 h.
    feed(&mut e, &[tick("2026-03-31T22:59:59Z")]);
    assert_eq!(
        gauge(&mut e, "overdue_deals", &[]),
        0.0,
        "one second before"
    );
    feed(&mut e, &[tick("2026-03-31T23:00:00Z")]);
    assert_eq!(gauge(&mut e, "overdue_deals", &[]), 1.0, "at the deadline");
    assert_eq!(gauge(&mut e, "overdue_pipeline_value", &[]), 1000.0);
    assert_eq!(
        gauge(&mut e, "overdue_deals", &[("stage", "talk")]),
        1.0,
        "by stage"
    );
    assert_eq!(gauge(&mut e, "overdue_deals", &[("rep", "ann")]), 1.0);

    // A stage change keeps it overdue, under its new stage.
    feed(
        &mut e,
        &[moved("m1", "d1", "sign", None, "2026-04-01T08:00:00Z")],
    );
    assert_eq!(gauge(&mut e, "overdue_deals", &[("stage", "talk")]), 0.0);
    assert_eq!(gauge(&mut e, "overdue_deals", &[("stage", "sign")]), 1.0);

    // Through a checkpoint: d2 becomes overdue at the same instant in the restored engine.
    let st: State = postcard::from_bytes(&postcard::to_stdvec(&e.state).unwrap()).unwrap();
    let mut r = Engine::from_state(e.settings.clone(), st);
    assert_eq!(gauge(&mut r, "overdue_deals", &[]), 1.0);
    feed(&mut r, &[tick("2026-04-30T22:59:59Z")]);
    assert_eq!(gauge(&mut r, "overdue_pipeline_value", &[]), 1000.0);
    feed(&mut r, &[tick("2026-04-30T23:00:00Z")]);
    assert_eq!(gauge(&mut r, "overdue_deals", &[]), 2.0);
    assert_eq!(gauge(&mut r, "overdue_pipeline_value", &[]), 1400.0);

    // A later date takes d1 out; a win takes d2 out.
    feed(
        &mut r,
        &[
            moved(
                "m2",
                "d1",
                "sign",
                Some("2026-05-20"),
                "2026-05-01T08:00:00Z",
            ),
            ce(
                "w2",
                "crm.deal.won",
                "2026-05-01T09:00:00Z",
                json!({"deal_id": "d2", "amount": 400.0}),
            ),
        ],
    );
    assert_eq!(gauge(&mut r, "overdue_deals", &[]), 0.0);
    assert_eq!(gauge(&mut r, "overdue_pipeline_value", &[]), 0.0);
    // …and d1 is overdue again when the new date passes; erased, it leaves.
    feed(&mut r, &[tick("2026-05-21T00:00:00Z")]);
    assert_eq!(gauge(&mut r, "overdue_deals", &[]), 1.0);
    feed(
        &mut r,
        &[ce(
            "x1",
            "crm.subject.erased",
            "2026-05-21T01:00:00Z",
            json!({"deal_id": "d1"}),
        )],
    );
    assert_eq!(gauge(&mut r, "overdue_deals", &[]), 0.0);
    assert!(r.state.slip.expected.is_empty() && r.state.slip.overdue.is_empty());
}

#[test]
fn a_push_counts_when_the_expected_close_moves_to_a_later_month() {
    let mut e = engine(CFG);
    let recs = run_all(
        &mut e,
        &[
            created("d1", 1000.0, Some("2026-03-31"), "2026-03-02T09:00:00Z"),
            // 03-31 → 04-01: across the month boundary, a push.
            moved(
                "m1",
                "d1",
                "talk",
                Some("2026-04-01"),
                "2026-03-10T09:00:00Z",
            ),
            // Within April: no push. Earlier: no push.
            moved(
                "m2",
                "d1",
                "talk",
                Some("2026-04-15"),
                "2026-03-11T09:00:00Z",
            ),
            moved(
                "m3",
                "d1",
                "talk",
                Some("2026-03-20"),
                "2026-03-12T09:00:00Z",
            ),
            // March → May, with a stage change: a push.
            moved(
                "m4",
                "d1",
                "sign",
                Some("2026-05-02"),
                "2026-04-02T09:00:00Z",
            ),
            // The same change again (a re-sent webhook) is a repeated transition.
            moved(
                "m5",
                "d1",
                "sign",
                Some("2026-05-02"),
                "2026-04-03T09:00:00Z",
            ),
            // A deal's first date is never a push.
            created("d2", 300.0, Some("2026-06-30"), "2026-04-04T09:00:00Z"),
        ],
    );
    let month = |kpi: &str, label: &str| {
        find(&recs, kpi, "month", label, &[])
            .and_then(|r| r.value)
            .unwrap_or(0.0)
    };
    assert_eq!(month("deals_pushed", "2026-03"), 1.0);
    assert_eq!(month("slipped_pipeline_value", "2026-03"), 1000.0);
    assert_eq!(month("deals_pushed", "2026-04"), 1.0);
    assert_eq!(month("slipped_pipeline_value", "2026-04"), 1000.0);
    let day = find(
        &recs,
        "deals_pushed",
        "day",
        "2026-03-10",
        &[("rep", "ann")],
    )
    .and_then(|r| r.value);
    assert_eq!(
        day,
        Some(1.0),
        "by the deal's dimensions, on the day of the push"
    );
    assert_eq!(
        e.state.stats.duplicates[1], 1,
        "the re-sent change repeats what was counted"
    );
}

#[test]
fn a_bad_expected_close_is_dead_lettered_with_its_reason() {
    let mut e = engine(CFG);
    for (v, reason) in [
        ("2026-02-30", "invalid_value"),
        ("31/03/2026", "invalid_value"),
        ("2150-01-01", "absurd_time"),
    ] {
        let err = e
            .process_json(&created("d9", 10.0, Some(v), "2026-03-02T09:00:00Z"))
            .expect_err("rejected");
        assert_eq!(err.reason.as_str(), reason, "{v}");
        assert!(err.to_string().contains("expected_close"), "{err}");
    }
    // Protobuf carries it too.
    let line = created("d9", 10.0, Some("2026-03-31"), "2026-03-02T09:00:00Z");
    let ev = salespulse::decode::json::decode(&line).expect("decodes");
    let pb = salespulse::decode::proto::from_event(&ev);
    let back = salespulse::decode::proto::to_event(&pb).expect("round trip");
    assert_eq!(back, ev, "expected_close survives protobuf");
}
