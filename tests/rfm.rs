//! RFM segments: recency, frequency and monetary quintile scores among
//! the active customers that ordered, the segment grid, ties at the
//! quintile edges, the value per segment, and no customer id in any
//! record.

mod common;

use common::*;
use salespulse::engine::Engine;
use salespulse::output::KpiRecord;
use serde_json::json;

fn feed(e: &mut Engine, lines: &[Vec<u8>]) {
    for l in lines {
        e.process_json(l).expect("accepted");
    }
}

/// The newest gauge emission, by (kpi, rfm_segment) for "all".
fn get(recs: &[KpiRecord], kpi: &str, seg: &str) -> Option<f64> {
    find(recs, kpi, "gauge", "current", &[("rfm_segment", seg)]).and_then(|r| r.value)
}

/// Customer `i` (1-based): acquired on web, `i` orders of 100 × i each,
/// the last on day `i` of February.
fn customer(i: usize, name: &str) -> Vec<Vec<u8>> {
    let id = format!("cust-secret-{name}");
    let mut out = vec![ce(
        &format!("{id}-a"),
        "crm.customer.acquired",
        "2026-01-20T09:00:00Z",
        json!({"customer_id": id, "channel": "web", "segment": "SMB"}),
    )];
    for k in 0..i {
        out.push(ce(
            &format!("{id}-o{k}"),
            "crm.order.placed",
            &format!("2026-02-{:02}T0{k}:00:00Z", i),
            json!({"order_id": format!("{id}-{k}"), "customer_id": id, "amount": 100.0 * i as f64, "kind": "new"}),
        ));
    }
    out
}

#[test]
fn customers_fall_into_segments_by_quintile_scores_with_ties_sharing_the_lower_score() {
    let mut e = engine("");
    // Every acquisition first (in time order), then the orders.
    let all: Vec<Vec<u8>> = (1..=6)
        .flat_map(|i| customer(i.min(5), &i.to_string()))
        .collect();
    let (acq, orders): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|l| String::from_utf8_lossy(l).contains("crm.customer.acquired"));
    feed(&mut e, &acq);
    let (six, orders): (Vec<_>, Vec<_>) = orders
        .into_iter()
        .partition(|l| String::from_utf8_lossy(l).contains("cust-secret-6"));
    feed(&mut e, &orders);
    // Scores (R, F, M) = (i, i, i): lost, hibernating, need attention, loyal, champions.
    // (the sixth is acquired but has not ordered: not scored)
    let r = latest_gauges(&mut e);
    for (seg, n) in [
        ("lost", 1.0),
        ("hibernating", 1.0),
        ("need_attention", 1.0),
        ("loyal", 1.0),
        ("champions", 1.0),
        ("at_risk", 0.0),
    ] {
        assert_eq!(get(&r, "customers_by_rfm_segment", seg), Some(n), "{seg}");
    }
    assert_eq!(
        get(&r, "customer_value_by_rfm_segment", "champions"),
        Some(2500.0),
        "5 × 500"
    );
    assert_eq!(
        get(&r, "customer_value_by_rfm_segment", "lost"),
        Some(100.0)
    );
    assert_eq!(
        get(&r, "customer_value_by_rfm_segment", "at_risk"),
        None,
        "no customer"
    );
    // By the customers' dimensions too.
    assert_eq!(
        find(
            &r,
            "customers_by_rfm_segment",
            "gauge",
            "current",
            &[("channel", "web"), ("rfm_segment", "loyal")]
        )
        .and_then(|x| x.value),
        Some(1.0)
    );

    // A sixth customer tied with the fifth: 4 of 6 below them → 1 + ⌊20 / 6⌋ = 4 for both.
    feed(&mut e, &six);
    let r = latest_gauges(&mut e);
    // c5, c6 (4,4) loyal; c4: 3 below → 1 + ⌊15/6⌋ = 3: need attention;
    // c3: 1 + ⌊10/6⌋ = 2: hibernating; c2, c1: 1: lost.
    for (seg, n) in [
        ("champions", 0.0),
        ("loyal", 2.0),
        ("need_attention", 1.0),
        ("hibernating", 1.0),
        ("lost", 2.0),
    ] {
        assert_eq!(
            get(&r, "customers_by_rfm_segment", seg),
            Some(n),
            "{seg} with the tie"
        );
    }

    // A cancelled customer leaves the segments; an erased one too.
    feed(
        &mut e,
        &[
            ce(
                "x1",
                "crm.customer.cancelled",
                "2026-02-10T09:00:00Z",
                json!({"customer_id": "cust-secret-1"}),
            ),
            ce(
                "x2",
                "crm.subject.erased",
                "2026-02-10T10:00:00Z",
                json!({"customer_id": "cust-secret-2"}),
            ),
        ],
    );
    let r = latest_gauges(&mut e);
    let total: f64 = [
        "champions",
        "loyal",
        "potential_loyalists",
        "new_customers",
        "promising",
        "need_attention",
        "about_to_sleep",
        "at_risk",
        "cant_lose",
        "hibernating",
        "lost",
    ]
    .iter()
    .map(|s| get(&r, "customers_by_rfm_segment", s).unwrap())
    .sum();
    assert_eq!(total, 4.0, "six customers, one cancelled, one erased");
    assert!(!e
        .state
        .rfm
        .contains_key(&e.settings.ids.entity("cust-secret-2")));

    // Customer ids appear in no record.
    for rec in &r {
        assert!(
            rec.dimensions.values().all(|v| !v.contains("cust-secret")),
            "{rec:?}"
        );
    }
}
