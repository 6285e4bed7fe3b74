//! Every KPI formula of the core engine on hand-computed cases.

mod common;
use common::*;
use serde_json::json;

const UTC_MONTHS: &str = r#"
[windows]
calendar = ["day", "month", "quarter", "year"]
rolling = ["24h"]
"#;

#[test]
fn lead_conversion_200_leads_50_converted_is_a_quarter() {
    let mut lines = Vec::new();
    for i in 0..200 {
        let channel = if i < 100 { "web" } else { "referral" };
        lines.push(ce(
            &format!("c{i}"),
            "crm.lead.created",
            "2026-11-02T10:00:00Z",
            json!({"lead_id": format!("L{i}"), "channel": channel, "rep": "Ana"}),
        ));
    }
    // 50 conversions: 40 web, 10 referral
    for i in (0..80).step_by(2).chain(100..110) {
        lines.push(ce(
            &format!("v{i}"),
            "crm.lead.converted",
            "2026-11-20T10:00:00Z",
            json!({"lead_id": format!("L{i}")}),
        ));
    }
    let mut e = engine(UTC_MONTHS);
    let recs = run_all(&mut e, &lines);
    let r = find(&recs, "lead_conversion_rate", "month", "2026-11", &[]).unwrap();
    assert_eq!(r.value, Some(0.25));
    assert_eq!(
        (r.numerator, r.denominator, r.sample_size),
        (Some(50.0), Some(200.0), 200)
    );
    assert!(r.is_final);
    assert_eq!(
        value(
            &recs,
            "lead_conversion_rate",
            "month",
            "2026-11",
            &[("channel", "web")]
        ),
        Some(0.4)
    );
    assert_eq!(
        value(
            &recs,
            "lead_conversion_rate",
            "month",
            "2026-11",
            &[("channel", "referral")]
        ),
        Some(0.1)
    );
    assert_eq!(
        value(
            &recs,
            "lead_conversion_rate",
            "month",
            "2026-11",
            &[("rep", "Ana")]
        ),
        Some(0.25)
    );
    assert_eq!(
        value(&recs, "leads_created", "quarter", "2026-Q4", &[]),
        Some(200.0)
    );
    // in the day windows, creations and conversions fall on different days
    assert_eq!(
        value(&recs, "lead_conversion_rate", "day", "2026-11-02", &[]),
        Some(0.0)
    );
}

#[test]
fn response_time_avg_and_quantiles() {
    let mut lines = Vec::new();
    // response times 1h, 2h, …, 10h
    for i in 1..=10 {
        lines.push(ce(
            &format!("c{i}"),
            "crm.lead.created",
            "2026-03-02T00:00:00Z",
            json!({"lead_id": format!("L{i}"), "channel": "web"}),
        ));
        let t = ms("2026-03-02T00:00:00Z") + i * 3_600_000;
        lines.push(ce_at(
            &format!("k{i}"),
            "crm.lead.contacted",
            t,
            json!({"lead_id": format!("L{i}"), "rep": "Ben"}),
        ));
        // a second contact does not count again
        lines.push(ce_at(
            &format!("k2{i}"),
            "crm.lead.contacted",
            t + 1000,
            json!({"lead_id": format!("L{i}"), "rep": "Ben"}),
        ));
    }
    let recs = run_all(&mut engine(UTC_MONTHS), &lines);
    let avg = find(
        &recs,
        "lead_response_time_seconds_avg",
        "month",
        "2026-03",
        &[],
    )
    .unwrap();
    assert_eq!(avg.value, Some(5.5 * 3600.0));
    assert_eq!(avg.sample_size, 10);
    let p50 = value(
        &recs,
        "lead_response_time_seconds_p50",
        "month",
        "2026-03",
        &[],
    )
    .unwrap();
    let p90 = value(
        &recs,
        "lead_response_time_seconds_p90",
        "month",
        "2026-03",
        &[("rep", "Ben")],
    )
    .unwrap();
    // lower-rank quantiles: rank ⌊0.5·9⌋ = 4 → 5h, ⌊0.9·9⌋ = 8 → 9h, within the sketch's 1 %
    assert!((p50 / (5.0 * 3600.0) - 1.0).abs() <= 0.01, "p50 {p50}");
    assert!((p90 / (9.0 * 3600.0) - 1.0).abs() <= 0.01, "p90 {p90}");
}

fn deal(id: &str, rep: &str, amount: f64, t: &str, product: &str) -> Vec<u8> {
    ce(
        &format!("{id}-c"),
        "crm.deal.created",
        t,
        json!({"deal_id": id, "rep": rep, "amount": amount, "stage": "prospecting", "product": product, "channel": "web"}),
    )
}

#[test]
fn win_rate_revenue_deal_size_cycle_and_entity_fill_in() {
    let lines = vec![
        deal("D1", "Ana", 1000.0, "2026-05-01T00:00:00Z", "Pro"),
        deal("D2", "Ana", 2000.0, "2026-05-01T00:00:00Z", "Pro"),
        deal("D3", "Ben", 3000.0, "2026-05-01T00:00:00Z", "Starter"),
        deal("D4", "Ben", 4000.0, "2026-05-01T00:00:00Z", "Starter"),
        // won after 10, 20, 30 days; one lost. The won events carry no rep: it comes from deal.created.
        ce(
            "w1",
            "crm.deal.won",
            "2026-05-11T00:00:00Z",
            json!({"deal_id": "D1", "amount": 1100.5}),
        ),
        ce(
            "w2",
            "crm.deal.won",
            "2026-05-21T00:00:00Z",
            json!({"deal_id": "D2", "amount": 1899.5}),
        ),
        ce(
            "w3",
            "crm.deal.won",
            "2026-05-31T00:00:00Z",
            json!({"deal_id": "D3", "amount": 3000}),
        ),
        ce(
            "l4",
            "crm.deal.lost",
            "2026-05-31T00:00:00Z",
            json!({"deal_id": "D4", "amount": 0, "competitor": "Globex"}),
        ),
    ];
    let recs = run_all(&mut engine(UTC_MONTHS), &lines);
    let m = |k: &str, d: &[(&str, &str)]| value(&recs, k, "month", "2026-05", d);
    assert_eq!(m("win_rate", &[]), Some(0.75));
    assert_eq!(m("win_loss_ratio", &[]), Some(3.0));
    assert_eq!(m("revenue", &[]), Some(6000.0));
    assert_eq!(m("average_deal_size", &[]), Some(2000.0));
    assert_eq!(m("sales_cycle_seconds_avg", &[]), Some(20.0 * 86400.0));
    assert_eq!(m("win_rate", &[("rep", "Ana")]), Some(1.0));
    assert_eq!(m("win_rate", &[("rep", "Ben")]), Some(0.5));
    assert_eq!(m("revenue", &[("rep", "Ana")]), Some(3000.0));
    assert_eq!(m("revenue", &[("product", "Starter")]), Some(3000.0));
    assert_eq!(
        m("win_loss_ratio", &[("rep", "Ana")]),
        None,
        "no loss: ratio undefined"
    );
    // all deals closed: the pipeline is empty
    let p = find(&recs, "pipeline_value", "gauge", "current", &[]).unwrap();
    assert_eq!((p.value, p.sample_size), (Some(0.0), 0));
}

#[test]
fn pipeline_value_by_stage_and_weighted() {
    let cfg = r#"
[[pipeline.stages]]
name = "Prospecting"
probability = 0.1
[[pipeline.stages]]
name = "Proposal"
probability = 0.5
"#;
    let lines = vec![
        deal("D1", "Ana", 1000.0, "2026-05-01T00:00:00Z", "Pro"),
        deal("D2", "Ana", 2000.0, "2026-05-01T00:00:00Z", "Pro"),
        deal("D3", "Ben", 4000.0, "2026-05-01T00:00:00Z", "Pro"),
        ce(
            "s2",
            "crm.deal.stage_changed",
            "2026-05-02T00:00:00Z",
            json!({"deal_id": "D2", "from": "prospecting", "to": "Proposal", "amount": 2500}),
        ),
        ce(
            "s3",
            "crm.deal.stage_changed",
            "2026-05-02T00:00:00Z",
            json!({"deal_id": "D3", "from": "prospecting", "to": "proposal"}),
        ),
        ce(
            "l1",
            "crm.deal.lost",
            "2026-05-03T00:00:00Z",
            json!({"deal_id": "D1", "amount": 0}),
        ),
    ];
    let recs = run_all(&mut engine(cfg), &lines);
    let g = |k: &str, d: &[(&str, &str)]| value(&recs, k, "gauge", "current", d);
    assert_eq!(g("pipeline_value", &[]), Some(6500.0));
    assert_eq!(g("pipeline_value", &[("stage", "proposal")]), Some(6500.0));
    assert_eq!(g("pipeline_value_weighted", &[]), Some(3250.0));
    assert_eq!(g("pipeline_value", &[("rep", "Ben")]), Some(4000.0));
    assert_eq!(
        g(
            "pipeline_value_weighted",
            &[("rep", "Ana"), ("stage", "proposal")]
        ),
        Some(1250.0)
    );
    assert!(find(
        &recs,
        "pipeline_value",
        "gauge",
        "current",
        &[("stage", "prospecting")]
    )
    .is_none_or(|r| r.value == Some(0.0)));
}

#[test]
fn quota_attainment_share_at_target_and_sales_progress() {
    let reps = r#"
[windows]
calendar = ["month"]
rolling = []
[[reps]]
name = "Ana"
team = "Hunters"
[[reps]]
name = "Ben"
team = "Hunters"
[[reps]]
name = "Cy"
team = "Farmers"
"#;
    let mut lines = vec![];
    for (rep, q) in [("Ana", 1000.0), ("Ben", 2000.0), ("Cy", 4000.0)] {
        lines.push(ce(
            &format!("q{rep}10"),
            "crm.quota.set",
            "2026-10-01T00:00:00Z",
            json!({"rep": rep, "period": "2026-10", "amount": q}),
        ));
    }
    // October: Ana 500
    lines.push(deal("D0", "Ana", 500.0, "2026-10-01T00:00:00Z", "Pro"));
    lines.push(ce(
        "w0",
        "crm.deal.won",
        "2026-10-10T00:00:00Z",
        json!({"deal_id": "D0", "amount": 500}),
    ));
    for (rep, q) in [("Ana", 1000.0), ("Ben", 2000.0), ("Cy", 4000.0)] {
        lines.push(ce(
            &format!("q{rep}"),
            "crm.quota.set",
            "2026-11-01T00:00:00Z",
            json!({"rep": rep, "period": "2026-11", "amount": q}),
        ));
    }
    // November: Ana 1200 (≥ quota), Ben 1000 (50 %), Cy 0; all by Nov 16 00:00 (half of the month elapsed… until the end)
    for (id, rep, amt) in [("D1", "Ana", 1200.0), ("D2", "Ben", 1000.0)] {
        lines.push(deal(id, rep, amt, "2026-11-01T00:00:00Z", "Pro"));
    }
    for (id, amt) in [("D1", 1200.0), ("D2", 1000.0)] {
        lines.push(ce(
            &format!("w{id}"),
            "crm.deal.won",
            "2026-11-10T00:00:00Z",
            json!({"deal_id": id, "amount": amt}),
        ));
    }
    let recs = run_all(&mut engine(reps), &lines);
    let m = |k: &str, d: &[(&str, &str)]| value(&recs, k, "month", "2026-11", d);
    assert_eq!(m("quota_attainment_ratio", &[("rep", "Ana")]), Some(1.2));
    assert_eq!(m("quota_attainment_ratio", &[("rep", "Ben")]), Some(0.5));
    assert_eq!(m("quota_attainment_ratio", &[("rep", "Cy")]), Some(0.0));
    assert_eq!(m("quota_attainment_ratio", &[]), Some(2200.0 / 7000.0));
    let share = find(&recs, "quota_reps_at_target_ratio", "month", "2026-11", &[]).unwrap();
    assert_eq!(
        (share.value, share.numerator, share.denominator),
        (Some(1.0 / 3.0), Some(1.0), Some(3.0))
    );
    assert_eq!(
        m("quota_reps_at_target_ratio", &[("team", "Hunters")]),
        Some(0.5)
    );
    assert_eq!(
        m("quota_attainment_ratio", &[("team", "Hunters")]),
        Some(2200.0 / 3000.0)
    );
    // progress: Σ quotas is the target when none is configured
    assert_eq!(m("sales_progress_ratio", &[]), Some(2200.0 / 7000.0));
    // a final month: the run-rate projection is the revenue itself
    assert_eq!(m("sales_run_rate_projection", &[]), Some(2200.0));
    // growth vs October (500 → 2200)
    assert_eq!(m("revenue_growth_mom_ratio", &[]), Some(1700.0 / 500.0));
    assert_eq!(
        m("revenue_growth_mom_ratio", &[("rep", "Ana")]),
        Some(700.0 / 500.0)
    );
}

#[test]
fn run_rate_projection_mid_month() {
    let mut e = engine(
        "[windows]\ncalendar = [\"month\"]\nrolling = []\n[targets]\nmonthly_revenue = 10000\n",
    );
    for l in [
        deal("D1", "Ana", 3000.0, "2026-11-01T00:00:00Z", "Pro"),
        ce(
            "w1",
            "crm.deal.won",
            "2026-11-15T23:59:59.999Z",
            json!({"deal_id": "D1", "amount": 3000}),
        ),
    ] {
        e.process_json(&l).unwrap();
    }
    e.emit_updates();
    let recs = e.take_records();
    // 15 of 30 days elapsed: 3000 → 6000 projected
    let r = find(&recs, "sales_run_rate_projection", "month", "2026-11", &[]).unwrap();
    assert!(!r.is_final);
    assert!((r.value.unwrap() - 6000.0).abs() < 1e-6, "{:?}", r.value);
    assert_eq!(
        value(&recs, "sales_progress_ratio", "month", "2026-11", &[]),
        Some(0.3)
    );
}

#[test]
fn churn_and_retention() {
    let mut lines = vec![];
    // 10 customers acquired in October (6 web, 4 referral)
    for i in 0..10 {
        let ch = if i < 6 { "web" } else { "referral" };
        lines.push(ce(
            &format!("a{i}"),
            "crm.customer.acquired",
            "2026-10-05T00:00:00Z",
            json!({"customer_id": format!("C{i}"), "channel": ch}),
        ));
    }
    // November: 2 cancel (one web, one referral), 5 new
    lines.push(ce(
        "x0",
        "crm.customer.cancelled",
        "2026-11-03T00:00:00Z",
        json!({"customer_id": "C0"}),
    ));
    lines.push(ce(
        "x9",
        "crm.customer.cancelled",
        "2026-11-04T00:00:00Z",
        json!({"customer_id": "C9", "reason": "price"}),
    ));
    for i in 10..15 {
        lines.push(ce(
            &format!("a{i}"),
            "crm.customer.acquired",
            "2026-11-10T00:00:00Z",
            json!({"customer_id": format!("C{i}"), "channel": "web"}),
        ));
    }
    let recs = run_all(
        &mut engine("[windows]\ncalendar = [\"month\"]\nrolling = []\n"),
        &lines,
    );
    let m = |k: &str, d: &[(&str, &str)]| value(&recs, k, "month", "2026-11", d);
    assert_eq!(m("churn_rate", &[]), Some(0.2));
    assert_eq!(
        find(&recs, "churn_rate", "month", "2026-11", &[])
            .unwrap()
            .sample_size,
        10
    );
    // (end − new) ÷ start = (13 − 5) ÷ 10
    assert_eq!(m("retention_rate", &[]), Some(0.8));
    assert_eq!(m("churn_rate", &[("channel", "web")]), Some(1.0 / 6.0));
    assert_eq!(m("churn_rate", &[("channel", "referral")]), Some(0.25));
    // October: nobody active at its start
    assert_eq!(value(&recs, "churn_rate", "month", "2026-10", &[]), None);
    assert_eq!(
        value(&recs, "active_customers", "gauge", "current", &[]),
        Some(13.0)
    );
    assert_eq!(
        value(
            &recs,
            "active_customers",
            "gauge",
            "current",
            &[("channel", "web")]
        ),
        Some(10.0)
    );
}

#[test]
fn activity_volume_per_rep_and_kind() {
    let mut lines = vec![];
    let kinds = ["call", "call", "call", "email", "meeting", "demo", "email"];
    for (i, k) in kinds.iter().enumerate() {
        let rep = if i % 2 == 0 { "Ana" } else { "Ben" };
        lines.push(ce(
            &format!("a{i}"),
            "crm.activity.logged",
            "2026-11-03T09:00:00Z",
            json!({"rep": rep, "kind": k}),
        ));
    }
    let recs = run_all(&mut engine(UTC_MONTHS), &lines);
    let a = |kind: &str, extra: &[(&str, &str)]| {
        let mut d = vec![("activity_kind", kind)];
        d.extend_from_slice(extra);
        value(&recs, "activities", "day", "2026-11-03", &d)
    };
    assert_eq!(a("call", &[]), Some(3.0));
    assert_eq!(a("email", &[]), Some(2.0));
    assert_eq!(a("call", &[("rep", "Ana")]), Some(2.0));
    assert_eq!(a("demo", &[("rep", "Ben")]), Some(1.0));
    assert_eq!(a("meeting", &[("rep", "Ana")]), Some(1.0));
}

#[test]
fn rolling_window_is_current_at_every_event() {
    let mut e = engine("[windows]\ncalendar = []\nrolling = [\"24h\"]\n");
    let t0 = ms("2026-11-03T00:00:00Z");
    for h in 0..48 {
        let l = ce_at(
            &format!("l{h}"),
            "crm.lead.created",
            t0 + h * 3_600_000,
            json!({"lead_id": format!("L{h}"), "channel": "web"}),
        );
        e.process_json(&l).unwrap();
    }
    e.emit_updates();
    let recs = e.take_records();
    let r = find(&recs, "leads_created", "rolling_24h", "rolling", &[])
        .unwrap_or_else(|| panic!("{:#?}", &recs[..recs.len().min(3)]));
    assert_eq!(r.value, Some(24.0), "one lead per hour, the last 24 hours");
    assert_eq!(r.window.end, "2026-11-05T00:00:00Z");
}
