//! Mergeability and serializability of the engine's state.

mod common;
use common::*;
use proptest::prelude::*;
use salespulse::agg::{sketch_config, small_quantiles, Acc, Dist};
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::demo::generator::{GenConfig, Generator};
use salespulse::engine::state::State;
use salespulse::engine::{Engine, Settings};

fn acc_strategy() -> impl Strategy<Value = Vec<(u8, i64)>> {
    proptest::collection::vec((0u8..16, 0i64..10_000_000_000), 0..60)
}

/// Applies a list of (operation, value) to an accumulator.
fn build(ops: &[(u8, i64)]) -> Acc {
    let mut a = Acc::default();
    for &(op, v) in ops {
        match op {
            0 => a.leads_created += 1,
            1 => a.leads_converted += 1,
            2 => a.response.add(v),
            3 => {
                a.deals_won += 1;
                a.revenue_cents += v;
                a.cycle.add(v / 7);
            }
            4 => a.deals_lost += 1,
            5 => a.customers_acquired += 1,
            6 => a.customers_cancelled += 1,
            7 => a.activities[(v % 4) as usize] += 1,
            8 => {
                a.leads_mql += 1;
                a.leads_sql += (v % 2) as u64;
            }
            9 => a.stage_exit((v % 5) as u8, v % 3 == 0),
            10 => {
                a.orders[(v % 4) as usize] += 1;
                a.order_revenue_cents += v;
                a.buyers.insert((v % 97) as u64);
            }
            11 => {
                a.lifetimes += 1;
                a.lifetime_ms += i128::from(v);
                a.spend_cents[(v % 2) as usize] += v;
            }
            12 => {
                a.nps[(v % 3) as usize] += 1;
                a.csat_count += 1;
                a.csat_milli += v % 5000;
            }
            13 => {
                a.won_vs_competitor += 1;
                a.lost_vs_competitor += (v % 2) as u64;
            }
            14 => {
                a.priced_won += 1;
                a.list_cents += v;
                a.priced_amount_cents += v / 2;
            }
            _ => {
                a.price_obs += 1;
                a.our_price_cents += v;
                a.their_price_cents += v / 3;
            }
        }
    }
    a
}

proptest! {
    #[test]
    fn merge_of_parts_equals_aggregate_of_whole(a in acc_strategy(), b in acc_strategy(), c in acc_strategy()) {
        let whole: Vec<_> = a.iter().chain(&b).chain(&c).copied().collect();
        let mut merged = build(&a);
        merged.merge(&build(&b));
        merged.merge(&build(&c));
        prop_assert_eq!(&merged, &build(&whole));
        // and in another order
        let mut other = build(&c);
        other.merge(&build(&a));
        other.merge(&build(&b));
        prop_assert_eq!(&other, &build(&whole));
    }

    /// The quantiles of a short list computed without a sketch are those
    /// of a real DDSketch fed the values in their order (negative, zero,
    /// sub-millisecond and huge durations included).
    #[test]
    fn small_quantiles_equal_a_real_sketch(
        xs in proptest::collection::vec(prop_oneof![-5_000i64..5_000, 0i64..2, 1i64..4_000_000_000_000], 1..=16),
        qs in proptest::collection::vec(prop_oneof![Just(0.0), Just(1.0), Just(0.5), Just(0.9), -0.5f64..1.5], 4),
    ) {
        let mut s = sketches_ddsketch::DDSketch::new(sketch_config());
        xs.iter().for_each(|&x| s.add(x as f64 / 1000.0));
        let want: Vec<_> = qs.iter().map(|&q| s.quantile(q).ok().flatten()).collect();
        let got = small_quantiles(&xs, [qs[0], qs[1], qs[2], qs[3]]);
        prop_assert_eq!(&got[..], &want[..]);
        // And through a Dist, which keeps up to 16 values without a sketch.
        let mut d = Dist::default();
        xs.iter().for_each(|&x| d.add(x));
        prop_assert_eq!(&d.quantiles_seconds([qs[0], qs[1], qs[2], qs[3]])[..], &want[..]);
    }

    /// Beyond 16 values a Dist keeps DDSketch's bins itself: its
    /// quantiles are those of a real DDSketch fed the same values (no
    /// collapsing happens at these spans).
    #[test]
    fn dist_bins_equal_a_real_sketch(
        xs in proptest::collection::vec(prop_oneof![0i64..2, 1i64..5_000, 1i64..40_000_000_000], 17..300),
        qs in proptest::collection::vec(prop_oneof![Just(0.0), Just(1.0), Just(0.5), Just(0.9), 0.0f64..1.0], 4),
    ) {
        let mut s = sketches_ddsketch::DDSketch::new(sketch_config());
        let mut d = Dist::default();
        for &x in &xs {
            s.add(x as f64 / 1000.0);
            d.add(x);
        }
        let want: Vec<_> = qs.iter().map(|&q| s.quantile(q).ok().flatten()).collect();
        prop_assert_eq!(&d.quantiles_seconds([qs[0], qs[1], qs[2], qs[3]])[..], &want[..]);
    }

    /// Taking values out (a withdrawn win's cycle) leaves the count, the
    /// sum and every quantile strictly between 0 and 1 of the values left.
    #[test]
    fn dist_remove_equals_never_added(
        xs in proptest::collection::vec(prop_oneof![0i64..2, 1i64..5_000, 1i64..40_000_000_000], 1..120),
        gone in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
        qs in proptest::collection::vec(0.001f64..0.999, 4),
    ) {
        let mut d = Dist::default();
        xs.iter().for_each(|&x| d.add(x));
        let mut left = xs.clone();
        for g in &gone {
            if left.is_empty() {
                break;
            }
            let x = left.swap_remove(g.index(left.len()));
            prop_assert!(d.remove(x));
        }
        prop_assert!(!d.remove(-7), "a value never added is not removed");
        let mut fresh = Dist::default();
        left.iter().for_each(|&x| fresh.add(x));
        prop_assert_eq!(d.count, fresh.count);
        prop_assert_eq!(d.sum_ms, fresh.sum_ms);
        let q = [qs[0], qs[1], qs[2], qs[3]];
        prop_assert_eq!(d.quantiles_seconds(q), fresh.quantiles_seconds(q));
    }

    #[test]
    fn dist_quantiles_merge_exactly(xs in proptest::collection::vec(0i64..1_000_000_000, 1..200), split in 0usize..200) {
        let split = split.min(xs.len());
        let (mut l, mut r, mut all) = (Dist::default(), Dist::default(), Dist::default());
        xs[..split].iter().for_each(|&x| l.add(x));
        xs[split..].iter().for_each(|&x| r.add(x));
        xs.iter().for_each(|&x| all.add(x));
        l.merge(&r);
        prop_assert_eq!(l, all);
    }
}

fn demo_lines(n: usize) -> Vec<String> {
    Generator::new(GenConfig {
        seed: 3,
        start: ms("2026-01-01T00:00:00Z"),
        events_per_day: 400,
        reps: 6,
    })
    .take(n)
    .map(|e| cej::encode(&e))
    .collect()
}

#[test]
fn state_survives_a_serde_round_trip_mid_stream() {
    let cfg = Config::default();
    let lines = demo_lines(30_000);
    let mut straight = Engine::from_config(&cfg);
    for l in &lines {
        straight.process_json(l.as_bytes()).unwrap();
    }
    straight.finish();
    let want = straight.take_records();

    let mut first = Engine::from_config(&cfg);
    let mut got = Vec::new();
    for l in &lines[..17_000] {
        first.process_json(l.as_bytes()).unwrap();
    }
    got.extend(first.take_records());
    let saved = serde_json::to_vec(&first.state).unwrap();
    drop(first);
    let state: State = serde_json::from_slice(&saved).unwrap();
    let mut second = Engine::from_state(Settings::from_config(&cfg), state);
    for l in &lines[17_000..] {
        second.process_json(l.as_bytes()).unwrap();
    }
    second.finish();
    got.extend(second.take_records());
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // replaying the tail after a restore counts nothing twice: recent ids
    // are remembered, older ones are past the dedup horizon and so late
    let dup = second
        .process_json(lines.last().unwrap().as_bytes())
        .unwrap();
    assert_eq!(dup, salespulse::engine::Outcome::Duplicate);
    let old = second.process_json(lines[20_000].as_bytes()).unwrap_err();
    assert_eq!(old.reason, salespulse::decode::RejectReason::Late);
}

#[test]
fn entity_state_stays_under_200_bytes_per_open_entity() {
    let mut e = Engine::from_config(&Config::default());
    let n = 200_000;
    for i in 0..n {
        let l = ce_at(
            &format!("e{i}"),
            "crm.lead.created",
            ms("2026-01-01T00:00:00Z") + i,
            serde_json::json!({"lead_id": format!("lead-{i:08}"), "channel": "web", "rep": "Ana"}),
        );
        e.process_json(&l).unwrap();
    }
    assert_eq!(e.entity_counts()[0], n as usize);
    // serialized size is a lower bound of the heap size; the bench reports the resident figure
    let leads = serde_json::to_vec(&e.state.leads).unwrap().len();
    assert!(
        leads / n as usize <= 200,
        "{} bytes per lead serialized",
        leads / n as usize
    );
}

/// Events only update day buckets; weeks, months, quarters and years are
/// built from their days. Check them against a direct count over the
/// events, provisional values mid-stream included, and that leaving days
/// out of the configured kinds changes nothing else.
#[test]
fn longer_windows_built_from_days_match_a_direct_count() {
    use salespulse::window::{Calendar, CalendarKind};
    let lines = demo_lines(25_000);
    let events: Vec<_> = lines
        .iter()
        .map(|l| cej::decode(l.as_bytes()).unwrap())
        .collect();
    let zone = "Europe/Paris";
    let cal = Calendar::new(zone.parse().unwrap(), 1);
    // events of type `ty` in [start, end), and Σ amount of the won ones
    let count = |start: i64, end: i64, ty: &str| -> (u64, f64) {
        let mut n = 0;
        let mut sum = 0.0;
        for e in &events {
            if e.payload.event_type().as_str() == ty && start <= e.time && e.time < end {
                n += 1;
                if let salespulse::event::Payload::DealWon(d) = &e.payload {
                    sum += d.amount;
                }
            }
        }
        (n, sum)
    };

    let all = format!("[time]\nzone = \"{zone}\"\n");
    let no_days =
        format!("{all}[windows]\ncalendar = [\"week\", \"month\", \"quarter\", \"year\"]\n");
    let mut a = engine(&all);
    let mut b = engine(&no_days);
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let half = 12_345;
    for (i, l) in lines.iter().enumerate() {
        a.process_json(l.as_bytes()).unwrap();
        b.process_json(l.as_bytes()).unwrap();
        if i + 1 == half {
            a.emit_updates();
            let recs = a.take_records();
            // every open month's provisional count equals the events so far
            let months: Vec<_> = recs
                .iter()
                .filter(|r| {
                    r.kpi == "leads_created"
                        && r.window.kind == "month"
                        && r.dimensions.is_empty()
                        && !r.is_final
                })
                .collect();
            assert!(!months.is_empty(), "no provisional month record");
            for r in months {
                let start = r.window.start_ms;
                let end = cal.bounds(CalendarKind::Month, start).end;
                let seen = events[..half]
                    .iter()
                    .filter(|e| {
                        e.payload.event_type().as_str() == "crm.lead.created"
                            && start <= e.time
                            && e.time < end
                    })
                    .count();
                assert_eq!(r.value, Some(seen as f64), "{}", r.window.label);
            }
            ra.extend(recs);
        }
    }
    a.finish();
    b.finish();
    ra.extend(a.take_records());
    rb.extend(b.take_records());

    let mut checked = 0;
    for kind in ["week", "month", "quarter", "year"] {
        let k = match kind {
            "week" => CalendarKind::Week,
            "month" => CalendarKind::Month,
            "quarter" => CalendarKind::Quarter,
            _ => CalendarKind::Year,
        };
        for r in ra
            .iter()
            .filter(|r| r.is_final && r.window.kind == kind && r.dimensions.is_empty())
        {
            let end = cal.bounds(k, r.window.start_ms).end;
            let (ty, want) = match &*r.kpi {
                "leads_created" => ("crm.lead.created", None),
                "deals_won" => ("crm.deal.won", None),
                "revenue" => ("crm.deal.won", Some(())),
                _ => continue,
            };
            let (n, sum) = count(r.window.start_ms, end, ty);
            match want {
                None => assert_eq!(r.value, Some(n as f64), "{kind} {}", r.window.label),
                Some(()) => assert!(
                    (r.value.unwrap() - sum).abs() < 0.005,
                    "{kind} {} revenue {:?} vs {sum}",
                    r.window.label,
                    r.value
                ),
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} window values checked");

    // Without days configured: no day record, and every other final record is the same.
    assert!(rb.iter().all(|r| r.window.kind != "day"));
    let finals = |rs: &[salespulse::output::KpiRecord]| -> Vec<salespulse::output::KpiRecord> {
        rs.iter()
            .filter(|r| r.is_final && r.window.kind != "day")
            .cloned()
            .map(|mut r| {
                r.revision = 0;
                r
            })
            .collect()
    };
    assert_eq!(finals(&ra), finals(&rb));
}
