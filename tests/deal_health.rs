//! Deal health timers: stalled deals (no event for the stage's
//! `max_days`) in the `stalled_deals` / `stalled_pipeline_value` gauges,
//! exactly from the deadline (by the watermark), revived by an activity,
//! left by a close, restarted by a reopen, and equal through a restore.

mod common;

use common::*;
use salespulse::engine::state::State;
use salespulse::engine::Engine;
use serde_json::json;

/// Two stages: `talk` stalls after 2 days, `sign` never; out-of-orderness 1 h.
const CFG: &str = r#"
[time]
out_of_orderness = "1h"

[[pipeline.stages]]
name = "talk"
probability = 0.2
max_days = 2

[[pipeline.stages]]
name = "sign"
probability = 0.8
"#;

fn created(id: &str, rep: &str, stage: &str, amount: f64, t: &str) -> Vec<u8> {
    ce(
        &format!("{id}-c"),
        "crm.deal.created",
        t,
        json!({"deal_id": id, "rep": rep, "stage": stage, "amount": amount}),
    )
}

/// An event of another deal (in the stage that never stalls) that moves the clock to `t`.
fn tick(t: &str) -> Vec<u8> {
    created(&format!("tick-{t}"), "zed", "sign", 1.0, t)
}

fn feed(e: &mut Engine, lines: &[Vec<u8>]) {
    for l in lines {
        e.process_json(l).expect("accepted");
    }
}

#[test]
fn a_deal_stalls_when_the_watermark_passes_its_deadline_not_a_second_before() {
    let mut e = engine(CFG);
    feed(
        &mut e,
        &[
            created("d1", "ann", "talk", 1000.0, "2026-03-02T09:00:00Z"),
            created("d2", "bob", "talk", 500.0, "2026-03-02T12:00:00Z"),
        ],
    );
    // Deadline of d1: 03-04 09:00. The watermark is the clock − 1 h.
    feed(&mut e, &[tick("2026-03-04T09:59:59Z")]);
    assert_eq!(
        gauge(&mut e, "stalled_deals", &[]),
        0.0,
        "one second before"
    );
    feed(&mut e, &[tick("2026-03-04T10:00:00Z")]);
    assert_eq!(gauge(&mut e, "stalled_deals", &[]), 1.0, "at the deadline");
    assert_eq!(gauge(&mut e, "stalled_pipeline_value", &[]), 1000.0);
    assert_eq!(
        gauge(&mut e, "stalled_deals", &[("stage", "talk")]),
        1.0,
        "by stage"
    );
    assert_eq!(gauge(&mut e, "stalled_deals", &[("rep", "ann")]), 1.0);
    assert_eq!(gauge(&mut e, "stalled_deals", &[("rep", "bob")]), 0.0);
    // The pipeline still holds both (stalled deals are open deals).
    assert_eq!(gauge(&mut e, "pipeline_value", &[]), 1500.0 + 2.0);
    let ratio = gauge(&mut e, "stalled_pipeline_ratio", &[]);
    assert!((ratio - 1000.0 / 1502.0).abs() < 1e-12, "{ratio}");
    assert_eq!(
        gauge(&mut e, "stalled_pipeline_ratio", &[("stage", "sign")]),
        0.0
    );

    // An activity revives d1 (a new 2-day deadline: 03-06 11:00); d2 stalls at 03-04 12:00.
    feed(
        &mut e,
        &[
            ce(
                "a1",
                "crm.activity.logged",
                "2026-03-04T11:00:00Z",
                json!({"deal_id": "d1", "rep": "ann", "kind": "call"}),
            ),
            tick("2026-03-04T13:00:00Z"),
        ],
    );
    assert_eq!(gauge(&mut e, "stalled_deals", &[("rep", "ann")]), 0.0);
    assert_eq!(gauge(&mut e, "stalled_deals", &[("rep", "bob")]), 1.0);
    assert_eq!(gauge(&mut e, "stalled_pipeline_value", &[]), 500.0);

    // d2 is won: it leaves the gauges; d1 moves to `sign`: it never stalls.
    feed(
        &mut e,
        &[
            ce(
                "w2",
                "crm.deal.won",
                "2026-03-04T14:00:00Z",
                json!({"deal_id": "d2", "amount": 500.0}),
            ),
            ce(
                "s1",
                "crm.deal.stage_changed",
                "2026-03-04T14:00:00Z",
                json!({"deal_id": "d1", "from": "talk", "to": "sign"}),
            ),
            tick("2026-03-20T00:00:00Z"),
        ],
    );
    assert_eq!(gauge(&mut e, "stalled_deals", &[]), 0.0);
    assert_eq!(gauge(&mut e, "stalled_pipeline_value", &[]), 0.0);
}

#[test]
fn a_stage_change_restarts_the_clock_and_a_reopened_deal_can_stall_again() {
    let mut e = engine(CFG);
    feed(
        &mut e,
        &[
            created("d1", "ann", "sign", 800.0, "2026-03-02T09:00:00Z"),
            // Back to `talk` on 03-05: stalls at 03-07 09:00.
            ce(
                "s1",
                "crm.deal.stage_changed",
                "2026-03-05T09:00:00Z",
                json!({"deal_id": "d1", "from": "sign", "to": "talk"}),
            ),
            tick("2026-03-07T09:59:59Z"),
        ],
    );
    assert_eq!(gauge(&mut e, "stalled_deals", &[]), 0.0);
    feed(&mut e, &[tick("2026-03-07T10:00:00Z")]);
    assert_eq!(gauge(&mut e, "stalled_deals", &[]), 1.0);
    // Lost, then reopened in `talk` on 03-08: stalls again on 03-10 09:00.
    feed(
        &mut e,
        &[
            ce(
                "l1",
                "crm.deal.lost",
                "2026-03-07T10:30:00Z",
                json!({"deal_id": "d1", "amount": 800.0}),
            ),
            ce(
                "r1",
                "crm.deal.stage_changed",
                "2026-03-08T09:00:00Z",
                json!({"deal_id": "d1", "from": "talk", "to": "talk", "amount": 900.0}),
            ),
            tick("2026-03-09T00:00:00Z"),
        ],
    );
    assert_eq!(
        gauge(&mut e, "stalled_deals", &[]),
        0.0,
        "lost, then reopened"
    );
    // Through a checkpoint: the restored engine stalls it at the same instant.
    let st: State = postcard::from_bytes(&postcard::to_stdvec(&e.state).unwrap()).unwrap();
    let mut r = Engine::from_state(e.settings.clone(), st);
    feed(&mut r, &[tick("2026-03-10T09:59:59Z")]);
    assert_eq!(gauge(&mut r, "stalled_deals", &[]), 0.0);
    feed(&mut r, &[tick("2026-03-10T10:00:00Z")]);
    assert_eq!(gauge(&mut r, "stalled_deals", &[]), 1.0);
    assert_eq!(gauge(&mut r, "stalled_pipeline_value", &[]), 900.0);
    // …and a stalled deal stays stalled through a restore, until its next event.
    let st: State = postcard::from_bytes(&postcard::to_stdvec(&r.state).unwrap()).unwrap();
    let mut r2 = Engine::from_state(r.settings.clone(), st);
    feed(&mut r2, &[tick("2026-03-11T00:00:00Z")]);
    assert_eq!(gauge(&mut r2, "stalled_deals", &[]), 1.0);
    feed(
        &mut r2,
        &[ce(
            "a9",
            "crm.activity.logged",
            "2026-03-11T01:00:00Z",
            json!({"deal_id": "d1", "rep": "ann", "kind": "email"}),
        )],
    );
    assert_eq!(gauge(&mut r2, "stalled_deals", &[]), 0.0);
}

/// Speed-to-lead SLA of 1 h (the watermark is the clock − 1 h).
fn sla_cfg() -> String {
    format!("{CFG}\n[sla]\nfirst_contact = \"1h\"\n")
}

fn lead(id: &str, t: &str) -> Vec<u8> {
    ce(
        &format!("{id}-c"),
        "crm.lead.created",
        t,
        json!({"lead_id": id, "channel": "web"}),
    )
}

fn contacted(id: &str, t: &str) -> Vec<u8> {
    ce(
        &format!("{id}-t"),
        "crm.lead.contacted",
        t,
        json!({"lead_id": id, "rep": "ann"}),
    )
}

/// The provisional `first_contact_sla_breaches` of day 2026-03-02.
fn breaches_today(e: &mut Engine) -> f64 {
    e.emit_updates();
    let recs = e.take_records();
    find(
        &recs,
        "first_contact_sla_breaches",
        "day",
        "2026-03-02",
        &[],
    )
    .and_then(|r| r.value)
    .unwrap_or(0.0)
}

#[test]
fn first_contact_sla_breaches_at_the_deadline_and_counts_compliance() {
    let mut e = engine(&sla_cfg());
    // L1 at 09:00: its deadline is 10:00.
    feed(&mut e, &[lead("L1", "2026-03-02T09:00:00Z")]);
    feed(&mut e, &[tick("2026-03-02T10:59:59Z")]);
    assert_eq!(gauge(&mut e, "leads_awaiting_first_contact", &[]), 1.0);
    assert_eq!(breaches_today(&mut e), 0.0, "one second before");
    feed(&mut e, &[tick("2026-03-02T11:00:00Z")]);
    assert_eq!(breaches_today(&mut e), 1.0, "when the watermark reaches it");
    assert_eq!(
        gauge(
            &mut e,
            "leads_awaiting_first_contact",
            &[("channel", "web")]
        ),
        1.0,
        "breached, still awaiting"
    );
    feed(
        &mut e,
        &[
            // L1 contacted late: out of the gauge, no second count.
            contacted("L1", "2026-03-02T11:30:00Z"),
            // L2 contacted exactly at its deadline: met.
            lead("L2", "2026-03-02T12:00:00Z"),
            contacted("L2", "2026-03-02T13:00:00Z"),
            // L3 contacted one second late, before the watermark saw the
            // deadline: breached at the contact.
            lead("L3", "2026-03-02T13:00:00Z"),
            contacted("L3", "2026-03-02T14:00:01Z"),
            // L4 converted without a contact event, in time: met.
            lead("L4", "2026-03-02T14:30:00Z"),
            ce(
                "L4-v",
                "crm.lead.converted",
                "2026-03-02T14:40:00Z",
                json!({"lead_id": "L4"}),
            ),
            // L5 still waits at the end of the day.
            lead("L5", "2026-03-02T23:30:00Z"),
        ],
    );
    assert_eq!(gauge(&mut e, "leads_awaiting_first_contact", &[]), 1.0);
    e.finish();
    let recs = e.take_records();
    let day = |k: &str| value(&recs, k, "day", "2026-03-02", &[]);
    // L1 and L3 breached, L2 and L4 met; L5's deadline (03-03 00:30)
    // is after the last event: not a breach at the end of the input.
    assert_eq!(day("first_contact_sla_breaches"), Some(2.0));
    assert_eq!(day("first_contact_sla_compliance_ratio"), Some(0.5));
    assert!(find(
        &recs,
        "first_contact_sla_breaches",
        "day",
        "2026-03-03",
        &[]
    )
    .is_none());
    assert_eq!(
        value(
            &recs,
            "first_contact_sla_breaches",
            "day",
            "2026-03-02",
            &[("channel", "web")]
        ),
        Some(2.0)
    );
}

#[test]
fn working_hours_stop_the_sla_clock_overnight_weekends_and_across_dst() {
    let w = salespulse::config::Config::from_toml(
        "[sla]\nfirst_contact = \"1h\"\nworking_hours = \"09:00-18:00\"\n",
    )
    .unwrap()
    .sla
    .working()
    .unwrap();
    let tz: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let d = |t: &str| salespulse::engine::sla_deadline(ms(t), 3_600_000, w, tz);
    // Tuesday 10:00 Paris (09:00Z): 11:00 Paris.
    assert_eq!(d("2026-03-03T09:00:00Z"), ms("2026-03-03T10:00:00Z"));
    // Tuesday 17:30 Paris: 30 min left that day, then 09:30 Wednesday.
    assert_eq!(d("2026-03-03T16:30:00Z"), ms("2026-03-04T08:30:00Z"));
    // Friday 17:30 Paris: Monday 09:30.
    assert_eq!(d("2026-03-06T16:30:00Z"), ms("2026-03-09T08:30:00Z"));
    // Saturday night: Monday 10:00.
    assert_eq!(d("2026-03-07T22:00:00Z"), ms("2026-03-09T09:00:00Z"));
    // Friday 17:30 before the switch to summer time (29 March): Monday
    // 09:30 CEST, which is 07:30Z.
    assert_eq!(d("2026-03-27T16:30:00Z"), ms("2026-03-30T07:30:00Z"));
    // Without working hours: an hour later, whatever the day.
    assert_eq!(
        salespulse::engine::sla_deadline(ms("2026-03-07T22:00:00Z"), 3_600_000, None, tz),
        ms("2026-03-07T23:00:00Z")
    );
    let err = salespulse::config::Config::from_toml("[sla]\nworking_hours = \"18:00-09:00\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sla.working_hours"), "{err}");
    let err = salespulse::config::Config::from_toml(
        "[sla]\nworking_hours = \"09:00-18:00\"\nworking_days = [\"mon\", \"funday\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sla.working_days") && err.contains("funday"),
        "{err}"
    );
}

/// A contact dated before the deadline that arrives after the watermark
/// passed it: the breach is withdrawn, so the day's counts are those of
/// the stream in time order (as in Kafka mode, where each partition has
/// its own watermark).
#[test]
fn a_contact_in_time_that_arrives_late_withdraws_the_breach() {
    let stream = |contact_last: bool| {
        let mut lines = vec![lead("L1", "2026-03-02T09:00:00Z")];
        let c = contacted("L1", "2026-03-02T09:50:00Z");
        if !contact_last {
            lines.push(c.clone());
        }
        lines.push(tick("2026-03-02T11:00:00Z"));
        if contact_last {
            lines.push(c);
        }
        lines
    };
    let mut finals = Vec::new();
    for contact_last in [false, true] {
        let mut e = engine(&sla_cfg());
        let lines = stream(contact_last);
        feed(&mut e, &lines[..2]);
        if contact_last {
            assert_eq!(
                breaches_today(&mut e),
                1.0,
                "breached when the watermark passed 10:00"
            );
        }
        feed(&mut e, &lines[2..]);
        e.finish();
        let recs = e.take_records();
        let v = |k: &str| value(&recs, k, "day", "2026-03-02", &[]);
        finals.push((
            v("first_contact_sla_breaches"),
            v("first_contact_sla_compliance_ratio"),
        ));
    }
    assert_eq!(finals[0], (Some(0.0), Some(1.0)));
    assert_eq!(finals[1], finals[0], "arrival order does not matter");
}
