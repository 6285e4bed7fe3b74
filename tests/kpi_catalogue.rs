//! The rest of the KPI catalogue on hand-computed cases: MQL→SQL, stage
//! conversion, orders (AOV, upsell, cross-sell), CLV with its fallback,
//! CAC and LTV ÷ CAC, channel effectiveness, NPS and CSAT, revenue per
//! employee, market share, competitive pricing, A/B test, leaderboards,
//! lead cohorts, the new dimensions and the series cap.

mod common;
use common::*;
use salespulse::output::LeaderboardRecord;
use serde_json::json;

const MONTHS: &str = r#"
[windows]
calendar = ["month", "year"]
rolling = ["24h"]
"#;

/// Feeds the lines in event-time order (stable), finishes, returns the records.
fn run_sorted(
    e: &mut salespulse::engine::Engine,
    lines: &[Vec<u8>],
) -> Vec<salespulse::output::KpiRecord> {
    let mut l = lines.to_vec();
    l.sort_by_key(|b| {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        ms(v["time"].as_str().unwrap())
    });
    run_all(e, &l)
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn mql_to_sql_counts_each_lead_once_and_sql_implies_mql() {
    let mut l = Vec::new();
    for i in 0..10 {
        let channel = if i < 5 { "web" } else { "events" };
        l.push(ce(
            &format!("c{i}"),
            "crm.lead.created",
            "2026-11-02T09:00:00Z",
            json!({"lead_id": format!("L{i}"), "channel": channel}),
        ));
    }
    // L0..L7 reach MQL (L0 twice: counted once); L0, L1, L5 reach SQL;
    // L8 goes straight to SQL, so it reached MQL too.
    for i in 0..8 {
        l.push(ce(
            &format!("m{i}"),
            "crm.lead.qualified",
            "2026-11-05T09:00:00Z",
            json!({"lead_id": format!("L{i}"), "level": "mql"}),
        ));
    }
    l.push(ce(
        "m0-again",
        "crm.lead.qualified",
        "2026-11-06T09:00:00Z",
        json!({"lead_id": "L0", "level": "mql"}),
    ));
    for i in [0, 1, 5, 8] {
        l.push(ce(
            &format!("s{i}"),
            "crm.lead.qualified",
            "2026-11-09T09:00:00Z",
            json!({"lead_id": format!("L{i}"), "level": "sql"}),
        ));
    }
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &l);
    let r = find(&recs, "mql_to_sql_rate", "month", "2026-11", &[]).unwrap();
    // SQL 4 ÷ MQL 9
    assert_eq!(
        (r.numerator, r.denominator, r.sample_size),
        (Some(4.0), Some(9.0), 9)
    );
    assert!(close(r.value, 4.0 / 9.0));
    // web: MQL L0..L4 (5), SQL L0, L1 (2); events: MQL L5, L6, L7, L8 (4), SQL L5, L8 (2)
    let web = [("channel", "web")];
    assert_eq!(
        value(&recs, "mql_to_sql_rate", "month", "2026-11", &web),
        Some(0.4)
    );
    let ev = [("channel", "events")];
    assert_eq!(
        value(&recs, "mql_to_sql_rate", "month", "2026-11", &ev),
        Some(0.5)
    );
    // by qualification time: the last 24 h hold the 4 SQLs but only L8's MQL
    assert_eq!(
        value(&recs, "mql_to_sql_rate", "rolling_24h", "", &[]),
        Some(4.0)
    );
}

const STAGES: &str = r#"
[windows]
calendar = ["month"]
rolling = []
[[pipeline.stages]]
name = "prospecting"
probability = 0.1
[[pipeline.stages]]
name = "qualification"
probability = 0.3
[[pipeline.stages]]
name = "proposal"
probability = 0.5
[[pipeline.stages]]
name = "negotiation"
probability = 0.7
"#;

#[test]
fn stage_conversion_is_deals_moving_to_the_next_stage_over_deals_leaving() {
    let mut l = Vec::new();
    let mut n = 0;
    let mut ev = |ty: &str, day: u32, data: serde_json::Value| {
        n += 1;
        l.push(ce(
            &format!("e{n}"),
            ty,
            &format!("2026-11-{day:02}T10:00:00Z"),
            data,
        ));
    };
    for d in ["D1", "D2", "D3", "D4"] {
        ev(
            "crm.deal.created",
            1,
            json!({"deal_id": d, "rep": "Ana", "amount": 100.0, "stage": "prospecting"}),
        );
    }
    let mv = |d: &str, from: &str, to: &str| json!({"deal_id": d, "from": from, "to": to});
    // D1 goes all the way and is won
    ev(
        "crm.deal.stage_changed",
        2,
        mv("D1", "prospecting", "qualification"),
    );
    ev(
        "crm.deal.stage_changed",
        3,
        mv("D1", "qualification", "proposal"),
    );
    ev(
        "crm.deal.stage_changed",
        4,
        mv("D1", "proposal", "negotiation"),
    );
    ev("crm.deal.won", 5, json!({"deal_id": "D1", "amount": 100.0}));
    // D2 qualifies, then is lost
    ev(
        "crm.deal.stage_changed",
        2,
        mv("D2", "prospecting", "qualification"),
    );
    ev(
        "crm.deal.lost",
        6,
        json!({"deal_id": "D2", "amount": 100.0}),
    );
    // D3 skips qualification (leaves prospecting, not for the next stage) and stays open
    ev(
        "crm.deal.stage_changed",
        2,
        mv("D3", "prospecting", "proposal"),
    );
    // D4 is lost in prospecting
    ev(
        "crm.deal.lost",
        7,
        json!({"deal_id": "D4", "amount": 100.0}),
    );
    let mut e = engine(STAGES);
    let recs = run_sorted(&mut e, &l);
    let at = |stage: &str| {
        find(
            &recs,
            "stage_conversion_rate",
            "month",
            "2026-11",
            &[("stage", stage)],
        )
        .unwrap()
    };
    // prospecting: left by D1, D2 (next), D3 (skip), D4 (lost) → 2 / 4
    let p = at("prospecting");
    assert_eq!(
        (p.value, p.numerator, p.denominator),
        (Some(0.5), Some(2.0), Some(4.0))
    );
    // qualification: D1 → proposal, D2 lost → 1 / 2
    assert_eq!(at("qualification").value, Some(0.5));
    // proposal: D1 → negotiation; D3 still open → 1 / 1
    assert_eq!(at("proposal").value, Some(1.0));
    // negotiation is the last stage: won counts as moving on
    assert_eq!(at("negotiation").value, Some(1.0));
    // per rep too
    let r = find(
        &recs,
        "stage_conversion_rate",
        "month",
        "2026-11",
        &[("stage", "prospecting"), ("rep", "Ana")],
    )
    .unwrap();
    assert_eq!(r.value, Some(0.5));
}

/// Customers C1–C4 acquired in October on `web`; November: orders, one
/// cancellation with a known lifetime, spend, one new customer. December:
/// one cancellation of a customer whose acquisition was never seen.
fn customer_story() -> Vec<Vec<u8>> {
    let mut l = Vec::new();
    let mut n = 0;
    let mut ev = |ty: &str, t: &str, data: serde_json::Value| {
        n += 1;
        l.push(ce(&format!("e{n}"), ty, t, data));
    };
    for c in ["C1", "C2", "C3", "C4"] {
        ev(
            "crm.customer.acquired",
            "2026-10-02T00:00:00Z",
            json!({"customer_id": c, "channel": "web", "segment": "SMB"}),
        );
    }
    let order = |c: &str, o: &str, amount: f64, kind: &str| json!({"order_id": o, "customer_id": c, "amount": amount, "kind": kind});
    ev(
        "crm.order.placed",
        "2026-11-03T10:00:00Z",
        order("C1", "O1", 100.0, "new"),
    );
    ev(
        "crm.order.placed",
        "2026-11-04T10:00:00Z",
        order("C1", "O2", 50.0, "upsell"),
    );
    ev(
        "crm.order.placed",
        "2026-11-05T10:00:00Z",
        order("C2", "O3", 30.0, "cross_sell"),
    );
    ev(
        "crm.order.placed",
        "2026-11-06T10:00:00Z",
        order("C3", "O4", 20.0, "renewal"),
    );
    // C4 leaves after exactly 45 days
    ev(
        "crm.customer.cancelled",
        "2026-11-16T00:00:00Z",
        json!({"customer_id": "C4", "reason": "price"}),
    );
    ev(
        "crm.spend.recorded",
        "2026-11-07T10:00:00Z",
        json!({"channel": "web", "amount": 300.0, "category": "marketing"}),
    );
    ev(
        "crm.spend.recorded",
        "2026-11-08T10:00:00Z",
        json!({"channel": "web", "amount": 100.0, "category": "sales"}),
    );
    ev(
        "crm.customer.acquired",
        "2026-11-10T10:00:00Z",
        json!({"customer_id": "C5", "channel": "web", "segment": "SMB"}),
    );
    // December: an order, and a cancellation of an unknown customer
    ev(
        "crm.order.placed",
        "2026-12-02T10:00:00Z",
        order("C2", "O5", 80.0, "new"),
    );
    ev(
        "crm.customer.cancelled",
        "2026-12-03T10:00:00Z",
        json!({"customer_id": "X"}),
    );
    l
}

#[test]
fn orders_clv_cac_and_ltv_to_cac_on_a_hand_computed_month() {
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &customer_story());
    let nov = |k: &str| value(&recs, k, "month", "2026-11", &[]);
    // orders: 4, revenue 200 → AOV 50; buyers C1, C2, C3 → PF 4/3
    assert_eq!(nov("orders"), Some(4.0));
    assert_eq!(nov("average_order_value"), Some(50.0));
    assert!(close(nov("purchase_frequency"), 4.0 / 3.0));
    // orders from existing customers: upsell, cross-sell, renewal
    assert!(close(nov("upsell_rate"), 1.0 / 3.0));
    assert!(close(nov("cross_sell_rate"), 1.0 / 3.0));
    // churn: 1 of 4 active at the start; lifetime 45 days in a 30-day month = 1.5 months
    assert_eq!(nov("churn_rate"), Some(0.25));
    assert_eq!(nov("customer_lifetime_seconds_avg"), Some(45.0 * 86400.0));
    assert_eq!(nov("customer_lifetime_periods"), Some(1.5));
    // CLV = APV 50 × PF 4/3 × CL 1.5 = 100
    let clv = find(&recs, "customer_lifetime_value", "month", "2026-11", &[]).unwrap();
    assert!(close(clv.value, 100.0), "{clv:?}");
    assert_eq!(clv.sample_size, 3);
    // CAC = (300 + 100) ÷ 1 new customer; LTV ÷ CAC = 100 / 400
    assert_eq!(nov("acquisition_spend"), Some(400.0));
    assert_eq!(nov("customer_acquisition_cost"), Some(400.0));
    assert!(close(nov("ltv_to_cac_ratio"), 0.25));
    // by channel: every customer is on web, so the same numbers
    let web = [("channel", "web")];
    assert!(close(
        value(&recs, "customer_lifetime_value", "month", "2026-11", &web),
        100.0
    ));
    assert_eq!(
        value(&recs, "customer_acquisition_cost", "month", "2026-11", &web),
        Some(400.0)
    );
    // and by segment
    assert_eq!(
        value(
            &recs,
            "average_order_value",
            "month",
            "2026-11",
            &[("segment", "SMB")]
        ),
        Some(50.0)
    );

    // December: no observed lifetime (X's acquisition was never seen):
    // CL falls back to 1 ÷ churn = 1 ÷ (1/4) = 4 months; CLV = 80 × 4
    let dec = |k: &str| value(&recs, k, "month", "2026-12", &[]);
    assert_eq!(dec("churn_rate"), Some(0.25));
    let cl = find(&recs, "customer_lifetime_periods", "month", "2026-12", &[]).unwrap();
    assert_eq!((cl.value, cl.numerator), (Some(4.0), None));
    assert!(close(dec("customer_lifetime_value"), 320.0));
    // on web nobody left in December: no lifetime, no fallback → no CLV
    assert_eq!(
        value(&recs, "customer_lifetime_value", "month", "2026-12", &web),
        None
    );
}

#[test]
fn channel_effectiveness_puts_conversion_cac_and_revenue_side_by_side() {
    let mut l = customer_story();
    for (i, ch) in ["web", "web", "referral", "web"].iter().enumerate() {
        l.push(ce(
            &format!("lc{i}"),
            "crm.lead.created",
            "2026-11-02T09:00:00Z",
            json!({"lead_id": format!("L{i}"), "channel": ch}),
        ));
    }
    l.push(ce(
        "lv0",
        "crm.lead.converted",
        "2026-11-03T09:00:00Z",
        json!({"lead_id": "L0", "deal_id": "D0"}),
    ));
    l.push(ce(
        "dc0",
        "crm.deal.created",
        "2026-11-03T09:00:01Z",
        json!({"deal_id": "D0", "rep": "Ana", "amount": 900.0, "stage": "prospecting", "lead_id": "L0"}),
    ));
    l.push(ce(
        "dw0",
        "crm.deal.won",
        "2026-11-20T09:00:00Z",
        json!({"deal_id": "D0", "amount": 900.0}),
    ));
    l.sort_by_key(|b| {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        ms(v["time"].as_str().unwrap())
    });
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &l);
    let web = [("channel", "web")];
    let at = |k: &str| value(&recs, k, "month", "2026-11", &web);
    // the deal takes its lead's channel
    assert_eq!(at("lead_conversion_rate"), Some(1.0 / 3.0));
    assert_eq!(at("customer_acquisition_cost"), Some(400.0));
    assert_eq!(at("revenue"), Some(900.0));
    let referral = [("channel", "referral")];
    assert_eq!(
        value(&recs, "lead_conversion_rate", "month", "2026-11", &referral),
        Some(0.0)
    );
}

#[test]
fn nps_is_promoters_minus_detractors_and_csat_is_the_mean() {
    let mut l = vec![ce(
        "a",
        "crm.customer.acquired",
        "2026-11-01T00:00:00Z",
        json!({"customer_id": "C1", "channel": "web"}),
    )];
    // promoters 10, 10, 9, 9, 9; passives 8, 7; detractors 6, 3, 0
    for (i, nps) in [10, 10, 9, 9, 9, 8, 7, 6, 3, 0].iter().enumerate() {
        let mut d = json!({"customer_id": "C1", "nps": nps});
        if i < 4 {
            d["csat"] = json!([5.0, 4.0, 4.0, 3.0][i]);
        }
        l.push(ce(
            &format!("s{i}"),
            "crm.survey.answered",
            "2026-11-10T10:00:00Z",
            d,
        ));
    }
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &l);
    let r = find(&recs, "nps", "month", "2026-11", &[]).unwrap();
    assert_eq!(
        (r.value, r.numerator, r.denominator),
        (Some(0.2), Some(2.0), Some(10.0))
    );
    assert_eq!(r.unit, "ratio");
    let s = find(&recs, "nps_score", "month", "2026-11", &[]).unwrap();
    assert_eq!((s.value, s.unit.as_ref()), (Some(20.0), "score"));
    assert_eq!(value(&recs, "csat_avg", "month", "2026-11", &[]), Some(4.0));
    assert_eq!(
        find(&recs, "csat_avg", "month", "2026-11", &[])
            .unwrap()
            .sample_size,
        4
    );
    assert_eq!(
        value(&recs, "nps", "month", "2026-11", &[("channel", "web")]),
        Some(0.2)
    );
    assert_eq!(value(&recs, "nps", "rolling_24h", "", &[]), Some(0.2));
}

fn won(id: &str, t: &str, rep: &str, team: &str, product: &str, amount: f64) -> [Vec<u8>; 2] {
    [
        ce(
            &format!("{id}-c"),
            "crm.deal.created",
            t,
            json!({"deal_id": id, "rep": rep, "team": team, "amount": amount, "stage": "prospecting", "product": product}),
        ),
        ce(
            &format!("{id}-w"),
            "crm.deal.won",
            t,
            json!({"deal_id": id, "amount": amount}),
        ),
    ]
}

#[test]
fn revenue_per_employee_and_market_share_from_events_and_config() {
    let cfg = format!(
        "{MONTHS}\n[targets]\nteam_headcount = {{ Hunters = 2 }}\nmarket_size = 120000.0\n"
    );
    let mut l = Vec::new();
    l.extend(won(
        "D1",
        "2026-11-05T10:00:00Z",
        "Ana",
        "Hunters",
        "Pro",
        1000.0,
    ));
    l.extend(won(
        "D2",
        "2026-11-06T10:00:00Z",
        "Ben",
        "Farmers",
        "Starter",
        500.0,
    ));
    l.push(ce(
        "h1",
        "crm.headcount.set",
        "2026-11-01T00:00:00Z",
        json!({"count": 10}),
    ));
    l.push(ce(
        "h2",
        "crm.headcount.set",
        "2026-11-01T00:00:00Z",
        json!({"count": 5, "team": "Farmers"}),
    ));
    l.push(ce(
        "m1",
        "crm.market.size_set",
        "2026-11-01T00:00:00Z",
        json!({"amount": 36500.0, "product": "Pro"}),
    ));
    l.sort_by_key(|b| {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        ms(v["time"].as_str().unwrap())
    });
    let mut e = engine(&cfg);
    let recs = run_sorted(&mut e, &l);
    let rpe =
        |dims: &[(&str, &str)]| value(&recs, "revenue_per_employee", "month", "2026-11", dims);
    // company: 1500 ÷ 10 (event); Hunters: 1000 ÷ 2 (config); Farmers: 500 ÷ 5 (event)
    assert_eq!(rpe(&[]), Some(150.0));
    assert_eq!(rpe(&[("team", "Hunters")]), Some(500.0));
    assert_eq!(rpe(&[("team", "Farmers")]), Some(100.0));
    // market: 120,000 a year (config); November is 30 of 365 days
    assert!(close(
        value(&recs, "market_share", "month", "2026-11", &[]),
        1500.0 / (120_000.0 * 30.0 / 365.0)
    ));
    assert!(close(
        value(&recs, "market_share", "year", "2026", &[]),
        1500.0 / 120_000.0
    ));
    // Pro: 36,500 a year (event) → 3,000 in November
    assert!(close(
        value(
            &recs,
            "market_share",
            "month",
            "2026-11",
            &[("product", "Pro")]
        ),
        1000.0 / 3000.0
    ));
    assert!(find(
        &recs,
        "market_share",
        "month",
        "2026-11",
        &[("product", "Starter")]
    )
    .is_none());
}

#[test]
fn competitive_pricing_win_rates_discount_and_price_index() {
    let mut l = Vec::new();
    let mut n = 0;
    let mut close_deal = |won: bool,
                          product: &str,
                          competitor: Option<&str>,
                          list: f64,
                          amount: f64| {
        n += 1;
        let id = format!("D{n}");
        l.push(ce(
            &format!("{id}-c"),
            "crm.deal.created",
            "2026-11-02T10:00:00Z",
            json!({"deal_id": id, "rep": "Ana", "amount": list, "stage": "prospecting", "product": product}),
        ));
        let mut d = json!({"deal_id": id, "amount": amount, "list_price": list});
        if let Some(c) = competitor {
            d["competitor"] = json!(c);
        }
        let ty = if won { "crm.deal.won" } else { "crm.deal.lost" };
        l.push(ce(&format!("{id}-x"), ty, "2026-11-12T10:00:00Z", d));
    };
    // with Acme: won 2, lost 1; without: won 1, lost 3
    close_deal(true, "Pro", Some("Acme"), 1000.0, 800.0);
    close_deal(true, "Pro", Some("Acme"), 500.0, 500.0);
    close_deal(false, "Pro", Some("Acme"), 700.0, 700.0);
    close_deal(true, "Enterprise", None, 2000.0, 1500.0);
    for _ in 0..3 {
        close_deal(false, "Enterprise", None, 100.0, 100.0);
    }
    let obs = |i: u32, product: &str, comp: &str, ours: f64, theirs: f64| {
        ce(
            &format!("p{i}"),
            "crm.competitor.price_observed",
            "2026-11-20T10:00:00Z",
            json!({"product": product, "competitor": comp, "price": theirs, "our_price": ours}),
        )
    };
    l.push(obs(1, "Pro", "Acme", 100.0, 80.0));
    l.push(obs(2, "Pro", "Acme", 100.0, 120.0));
    l.push(obs(3, "Pro", "Globex", 100.0, 125.0));
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &l);
    let v = |k: &str, dims: &[(&str, &str)]| value(&recs, k, "month", "2026-11", dims);
    assert!(close(v("win_rate_with_competitor", &[]), 2.0 / 3.0));
    assert_eq!(v("win_rate_without_competitor", &[]), Some(0.25));
    // the competitor is a dimension: win rate against Acme
    assert!(close(v("win_rate", &[("competitor", "Acme")]), 2.0 / 3.0));
    // discount over won deals: Pro (1000 → 800, 500 → 500), Enterprise (2000 → 1500)
    assert!(close(v("discount_ratio", &[]), 700.0 / 3500.0));
    assert!(close(v("average_discount", &[]), 700.0 / 3.0));
    assert!(close(
        v("discount_ratio", &[("product", "Pro")]),
        200.0 / 1500.0
    ));
    assert_eq!(v("average_discount", &[("product", "Pro")]), Some(100.0));
    assert_eq!(
        v("discount_ratio", &[("product", "Enterprise")]),
        Some(0.25)
    );
    // price index per product and competitor: Σ ours ÷ Σ theirs
    let pair = |c: &str| v("price_index", &[("product", "Pro"), ("competitor", c)]);
    assert_eq!(pair("Acme"), Some(1.0));
    assert_eq!(pair("Globex"), Some(0.8));
    assert!(close(
        v("price_index", &[("product", "Pro")]),
        300.0 / 325.0
    ));
    assert!(close(v("price_index", &[("competitor", "Globex")]), 0.8));
}

#[test]
fn ab_test_reports_lift_and_a_two_proportion_z_test_p_value() {
    let mut l = Vec::new();
    for (variant, leads, converted) in [("A", 200, 20), ("B", 200, 36)] {
        for i in 0..leads {
            let id = format!("{variant}{i}");
            l.push(ce(
                &format!("{id}-c"),
                "crm.lead.created",
                "2026-11-02T09:00:00Z",
                json!({"lead_id": id, "channel": "web", "variant": variant, "campaign": "spring"}),
            ));
            if i < converted {
                l.push(ce(
                    &format!("{id}-v"),
                    "crm.lead.converted",
                    "2026-11-09T09:00:00Z",
                    json!({"lead_id": id}),
                ));
            }
        }
    }
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &l);
    let b = [("variant", "B"), ("control", "A")];
    let p = find(&recs, "ab_test_p_value", "month", "2026-11", &b).unwrap();
    // reference values: p0 = 0.10, p1 = 0.18, pooled 0.14, n = 200 each
    // z = 0.08 / sqrt(0.14 · 0.86 · 2/200) = 2.30556…, p = erfc(z/√2) (Python's math.erfc)
    assert!(
        (p.numerator.unwrap() - 2.305_561_670_816_94).abs() < 1e-9,
        "{p:?}"
    );
    assert!(
        (p.value.unwrap() - 0.021_135_137_067_571_49).abs() < 1e-9,
        "{p:?}"
    );
    assert_eq!(p.sample_size, 400);
    let lift = find(&recs, "ab_conversion_lift", "month", "2026-11", &b).unwrap();
    assert!(close(lift.value, 0.8));
    // conversion by variant, with its sample size
    let a = find(
        &recs,
        "lead_conversion_rate",
        "month",
        "2026-11",
        &[("variant", "A")],
    )
    .unwrap();
    assert_eq!((a.value, a.sample_size), (Some(0.1), 200));
    assert_eq!(
        value(
            &recs,
            "lead_conversion_rate",
            "month",
            "2026-11",
            &[("campaign", "spring")]
        ),
        Some(0.14)
    );
    // the control is configurable
    let mut e = engine(&format!("{MONTHS}\n[kpis]\nab_control_variant = \"B\"\n"));
    let recs = run_sorted(&mut e, &l);
    let a = [("variant", "A"), ("control", "B")];
    let lift = find(&recs, "ab_conversion_lift", "month", "2026-11", &a).unwrap();
    assert!(close(lift.value, (0.10 - 0.18) / 0.18));
    assert!(find(&recs, "ab_test_p_value", "month", "2026-11", &a).is_some());
}

#[test]
fn leaderboards_rank_reps_by_revenue_win_rate_and_activities() {
    let cfg = format!("{MONTHS}\n[kpis]\nleaderboard_size = 2\nleaderboard_min_sample = 2\n");
    let mut l = Vec::new();
    let t = "2026-11-05T10:00:00Z";
    for (i, amount) in [100.0, 100.0, 100.0].iter().enumerate() {
        l.extend(won(&format!("A{i}"), t, "Ana", "H", "Pro", *amount));
    }
    l.extend(won("B0", t, "Ben", "H", "Pro", 500.0));
    l.extend(won("D0", t, "Dee", "H", "Pro", 100.0));
    l.extend(won("E0", t, "Eve", "H", "Pro", 300.0));
    for i in 0..2 {
        l.push(ce(
            &format!("cy{i}-c"),
            "crm.deal.created",
            t,
            json!({"deal_id": format!("C{i}"), "rep": "Cy", "amount": 50.0, "stage": "prospecting"}),
        ));
        l.push(ce(
            &format!("cy{i}-l"),
            "crm.deal.lost",
            t,
            json!({"deal_id": format!("C{i}"), "amount": 50.0}),
        ));
    }
    for (rep, n) in [("Ana", 2), ("Cy", 5), ("Ben", 1)] {
        for i in 0..n {
            l.push(ce(
                &format!("act-{rep}-{i}"),
                "crm.activity.logged",
                t,
                json!({"rep": rep, "kind": "call"}),
            ));
        }
    }
    let mut e = engine(&cfg);
    let _ = run_sorted(&mut e, &l);
    let boards: Vec<LeaderboardRecord> = e.take_leaderboards();
    let board = |b: &str| -> Vec<(u32, String, f64, u64)> {
        let r = boards
            .iter()
            .rev()
            .find(|r| r.board == b && r.window.kind == "month" && r.window.label == "2026-11")
            .unwrap_or_else(|| panic!("no {b} board"));
        assert!(r.is_final);
        assert_eq!(r.record, "leaderboard");
        r.entries
            .iter()
            .map(|e| (e.rank, e.rep.clone(), e.value, e.sample_size))
            .collect()
    };
    // revenue: Ben 500, then Ana and Eve tie at 300 → by name; only 2 entries
    assert_eq!(
        board("revenue"),
        [(1, "Ben".into(), 500.0, 1), (2, "Ana".into(), 300.0, 3)]
    );
    // win rate, ≥ 2 closed deals: Ana 3/3, Cy 0/2 (Ben, Dee, Eve have 1)
    assert_eq!(
        board("win_rate"),
        [(1, "Ana".into(), 1.0, 3), (2, "Cy".into(), 0.0, 2)]
    );
    assert_eq!(
        board("activities"),
        [(1, "Cy".into(), 5.0, 5), (2, "Ana".into(), 2.0, 2)]
    );
    // rolling windows have boards too, and the JSON says what it is
    let rolling = boards
        .iter()
        .find(|r| r.window.kind == "rolling_24h")
        .unwrap();
    let v = serde_json::to_value(rolling).unwrap();
    assert_eq!(v["record"], "leaderboard");
    assert!(v["entries"][0]["rep"].is_string());
}

#[test]
fn lead_cohort_conversion_keeps_updating_a_closed_window_as_new_revisions() {
    let cfg = r#"
[time]
out_of_orderness = "1h"
grace = "1h"
[windows]
calendar = ["month"]
rolling = []
"#;
    let mut e = engine(cfg);
    let feed = |e: &mut salespulse::engine::Engine, lines: &[Vec<u8>]| {
        for l in lines {
            e.process_json(l).unwrap();
        }
        e.emit_updates();
        e.take_records()
    };
    let mut nov = Vec::new();
    for i in 0..10 {
        nov.push(ce(
            &format!("c{i}"),
            "crm.lead.created",
            "2026-11-20T09:00:00Z",
            json!({"lead_id": format!("L{i}"), "channel": "web"}),
        ));
    }
    for i in 0..2 {
        nov.push(ce(
            &format!("v{i}"),
            "crm.lead.converted",
            "2026-11-25T09:00:00Z",
            json!({"lead_id": format!("L{i}")}),
        ));
    }
    let first = feed(&mut e, &nov);
    let c1 = find(
        &first,
        "lead_cohort_conversion_rate",
        "month",
        "2026-11",
        &[],
    )
    .unwrap();
    assert_eq!((c1.value, c1.revision, c1.is_final), (Some(0.2), 1, false));
    // December: three more of November's leads convert, after November closed
    let mut dec = Vec::new();
    for i in 2..5 {
        dec.push(ce(
            &format!("v{i}"),
            "crm.lead.converted",
            "2026-12-10T09:00:00Z",
            json!({"lead_id": format!("L{i}")}),
        ));
    }
    let second = feed(&mut e, &dec);
    let closed = find(&second, "lead_conversion_rate", "month", "2026-11", &[]).unwrap();
    assert!(closed.is_final, "November closed");
    assert_eq!(
        closed.value,
        Some(0.2),
        "by event time, November converted 2 of 10"
    );
    let pos = |r: &salespulse::output::KpiRecord| second.iter().position(|x| x == r).unwrap();
    let c2 = find(
        &second,
        "lead_cohort_conversion_rate",
        "month",
        "2026-11",
        &[],
    )
    .unwrap();
    assert_eq!((c2.value, c2.revision), (Some(0.5), 2));
    assert!(
        pos(c2) > pos(closed),
        "the cohort record comes after the window closed"
    );
    assert_eq!(
        value(
            &second,
            "lead_cohort_conversion_rate",
            "month",
            "2026-11",
            &[("channel", "web")]
        ),
        Some(0.5)
    );
    // December's conversions count in December's conversion rate (no leads created there)
    assert_eq!(
        find(&second, "lead_conversion_rate", "month", "2026-12", &[]).map(|r| r.numerator),
        Some(Some(3.0))
    );
    e.finish();
    let last = e.take_records();
    let c3 = find(
        &last,
        "lead_cohort_conversion_rate",
        "month",
        "2026-11",
        &[],
    )
    .unwrap();
    assert_eq!((c3.value, c3.revision, c3.is_final), (Some(0.5), 3, true));
}

#[test]
fn new_dimensions_follow_the_lead_into_its_deal() {
    let l = vec![
        ce(
            "c",
            "crm.lead.created",
            "2026-11-02T09:00:00Z",
            json!({"lead_id": "L1", "channel": "web", "campaign": "black-friday", "variant": "B", "segment": "SMB"}),
        ),
        ce(
            "d",
            "crm.deal.created",
            "2026-11-03T09:00:00Z",
            json!({"deal_id": "D1", "rep": "Ana", "amount": 100.0, "stage": "prospecting", "lead_id": "L1"}),
        ),
        ce(
            "w",
            "crm.deal.won",
            "2026-11-04T09:00:00Z",
            json!({"deal_id": "D1", "amount": 100.0, "competitor": "Acme"}),
        ),
    ];
    let mut e = engine(MONTHS);
    let recs = run_sorted(&mut e, &l);
    for dims in [
        [("campaign", "black-friday")],
        [("variant", "B")],
        [("segment", "SMB")],
        [("channel", "web")],
        [("competitor", "Acme")],
    ] {
        assert_eq!(
            value(&recs, "revenue", "month", "2026-11", &dims),
            Some(100.0),
            "{dims:?}"
        );
    }
}

#[test]
fn series_beyond_the_cap_fold_into_other_and_are_counted() {
    let cfg = format!("{MONTHS}\n[kpis]\nmax_series_per_dimension = 2\n");
    let mut l = Vec::new();
    for (i, campaign) in ["c1", "c2", "c3", "c4", "c3", "c1"].iter().enumerate() {
        l.push(ce(
            &format!("l{i}"),
            "crm.lead.created",
            "2026-11-02T09:00:00Z",
            json!({"lead_id": format!("L{i}"), "channel": "web", "campaign": campaign}),
        ));
    }
    let mut e = engine(&cfg);
    let recs = run_sorted(&mut e, &l);
    let leads = |c: &str| {
        find(
            &recs,
            "leads_created",
            "month",
            "2026-11",
            &[("campaign", c)],
        )
        .and_then(|r| r.value)
    };
    assert_eq!(leads("c1"), Some(2.0));
    assert_eq!(leads("c2"), Some(1.0));
    assert_eq!(leads("other"), Some(3.0), "c3, c4, c3");
    assert_eq!(leads("c3"), None);
    assert_eq!(leads("c4"), None);
    // "all" is untouched
    assert_eq!(
        value(&recs, "leads_created", "month", "2026-11", &[]),
        Some(6.0)
    );
    let folded = &e.state.stats.folded;
    assert_eq!(folded[salespulse::engine::state::CAMPAIGN], 3);
    assert_eq!(folded.iter().sum::<u64>(), 3);
    // and the metric says so
    let m = salespulse::metrics::Metrics::new();
    m.sync(&e);
    assert!(m
        .render()
        .contains("salespulse_series_folded_total{dimension=\"campaign\"} 3"));
}

#[test]
fn every_kpi_and_leaderboard_has_data_in_the_default_demo() {
    use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
    let d = salespulse::config::Config::default();
    let g = Generator::new(GenConfig {
        seed: d.generator.seed,
        start: DEFAULT_START,
        events_per_day: d.generator.events_per_day,
        reps: d.generator.reps,
    });
    let mut e = salespulse::engine::Engine::from_config(&d);
    let mut recs = Vec::new();
    let mut boards = Vec::new();
    // about four simulated months
    for (i, ev) in g.take(120_000).enumerate() {
        e.apply(&ev).unwrap();
        if i % 10_000 == 0 {
            e.emit_updates();
            recs.extend(e.take_records());
            boards.extend(e.take_leaderboards());
        }
    }
    e.finish();
    recs.extend(e.take_records());
    boards.extend(e.take_leaderboards());
    for def in salespulse::kpi::CATALOGUE {
        assert!(
            recs.iter()
                .any(|r| r.kpi == def.name && r.value.is_some_and(f64::is_finite)),
            "the demo gives no value for {}",
            def.name
        );
    }
    for board in ["revenue", "win_rate", "activities"] {
        assert!(
            boards
                .iter()
                .any(|b| b.board == board && !b.entries.is_empty()),
            "no {board} leaderboard"
        );
    }
    for dim in salespulse::engine::state::DIMS {
        assert!(
            recs.iter().any(|r| r.dimensions.contains_key(dim)),
            "no series by {dim}"
        );
    }
}

/// `kpis.dimensions` leaves a dimension's series out and changes no
/// value of the others: the "all" series and the per-rep series of a run
/// with five dimensions equal those of the default nine.
#[test]
fn dimensions_left_out_drop_their_series_and_change_nothing_else() {
    use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
    let lines: Vec<Vec<u8>> = Generator::new(GenConfig {
        seed: 3,
        start: DEFAULT_START,
        events_per_day: 1000,
        reps: 8,
    })
    .take(30_000)
    .map(|e| salespulse::decode::json::encode(&e).into_bytes())
    .collect();
    let five = "[kpis]\ndimensions = [\"rep\", \"team\", \"region\", \"channel\", \"product\"]\n";
    let all = run_all(&mut engine(""), &lines);
    let some = run_all(&mut engine(five), &lines);
    let kept = [
        "rep",
        "team",
        "region",
        "channel",
        "product",
        "stage",
        "activity_kind",
        "rfm_segment",
        "category",
    ];
    for r in &some {
        assert!(
            r.dimensions.keys().all(|k| kept.contains(&k.as_str())),
            "{} has {:?}",
            r.kpi,
            r.dimensions
        );
    }
    assert!(all
        .iter()
        .any(|r| r.dimensions.contains_key("campaign") || r.dimensions.contains_key("variant")));
    let key = |r: &salespulse::output::KpiRecord| {
        format!(
            "{} {} {} {:?} {:?} {:?} {:?} {}",
            r.kpi,
            r.window.kind,
            r.window.start,
            r.dimensions,
            r.value,
            r.numerator,
            r.denominator,
            r.is_final
        )
    };
    let shared = |recs: &[salespulse::output::KpiRecord]| -> std::collections::BTreeSet<String> {
        recs.iter()
            .filter(|r| {
                r.dimensions
                    .keys()
                    .all(|k| ["rep", "stage", "activity_kind"].contains(&k.as_str()))
            })
            .map(key)
            .collect()
    };
    let (a, b) = (shared(&all), shared(&some));
    assert!(a.len() > 5_000, "{}", a.len());
    assert_eq!(
        a.difference(&b).take(5).collect::<Vec<_>>(),
        Vec::<&String>::new()
    );
    assert_eq!(a, b);
    assert!(some.len() < all.len(), "{} vs {}", some.len(), all.len());
}

#[test]
fn kpis_dimensions_are_checked_at_start_up() {
    let err = |toml: &str| {
        salespulse::config::Config::from_toml(toml)
            .unwrap_err()
            .to_string()
    };
    let e = err("[kpis]\ndimensions = [\"rep\", \"colour\"]\n");
    assert!(
        e.contains("kpis.dimensions[1]") && e.contains("\"colour\" is not a dimension"),
        "{e}"
    );
    assert!(e.contains("use any of rep, team, region"), "{e}");
    let e = err("[kpis]\ndimensions = [\"rep\", \"team\", \"team\"]\n");
    assert!(
        e.contains("kpis.dimensions[2]") && e.contains("listed twice"),
        "{e}"
    );
    let e = err("[kpis]\ndimensions = [\"channel\"]\n");
    assert!(
        e.contains("kpis.dimensions") && e.contains("rep is missing"),
        "{e}"
    );
    assert!(e.contains("keep \"rep\" in the list"), "{e}");
}
