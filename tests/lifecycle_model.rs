//! Random entity lifecycles (re-sent steps, reopens, corrections,
//! reactivations, interleaved across entities) through the engine and
//! through a plain model of the lifecycle table of docs/entities.md:
//! every final deal and churn record and every gauge after every event
//! agree, and no gauge is ever negative.

mod common;

use common::*;
use proptest::prelude::*;
use salespulse::engine::state::DUP_TRANSITION;
use salespulse::engine::Engine;
use salespulse::output::KpiRecord;
use serde_json::json;
use std::collections::BTreeMap;

/// Events about an unknown deal count at once (`max_waiting = 0`): the
/// table of docs/entities.md without waiting (tests/disorder.rs covers that).
const CFG: &str = r#"
[time]
out_of_orderness = "1m"
grace = "1h"
[state]
max_waiting = 0
[windows]
calendar = ["day", "month"]
rolling = []
"#;

/// The same with rolling windows: 24 h in 1 h sub-buckets stages events
/// for 7 d in 7 h ones.
const CFG_ROLLING: &str = r#"
[time]
out_of_orderness = "1m"
grace = "1h"
[state]
max_waiting = 0
[windows]
calendar = ["day", "month"]
rolling = ["24h", "7d"]
"#;

const DAY: i64 = 86_400_000;
const CUTOFF_LAG: i64 = 60_000 + 3_600_000;
const STAGES: [&str; 3] = ["prospecting", "proposal", "negotiation"];
const REPS: [&str; 3] = ["Ann", "Bob", "Cy"];
const CHANNELS: [&str; 2] = ["web", "ads"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        deal: u16,
        stage: u8,
        amount: i64,
    },
    Stage {
        deal: u16,
        stage: u8,
        amount: Option<i64>,
    },
    Won {
        deal: u16,
        amount: i64,
    },
    Lost {
        deal: u16,
        amount: i64,
    },
    Acquire {
        cust: u16,
    },
    Cancel {
        cust: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let deal = 0u16..6;
    let amount = prop_oneof![Just(100i64), Just(200), Just(300)];
    prop_oneof![
        (deal.clone(), 0u8..3, amount.clone()).prop_map(|(deal, stage, amount)| Op::Create {
            deal,
            stage,
            amount
        }),
        (deal.clone(), 0u8..3, proptest::option::of(amount.clone())).prop_map(
            |(deal, stage, amount)| Op::Stage {
                deal,
                stage,
                amount
            }
        ),
        (deal.clone(), amount.clone()).prop_map(|(deal, amount)| Op::Won { deal, amount }),
        (deal, amount).prop_map(|(deal, amount)| Op::Lost { deal, amount }),
        (0u16..4).prop_map(|cust| Op::Acquire { cust }),
        (0u16..4).prop_map(|cust| Op::Cancel { cust }),
    ]
}

/// Steps between events: minutes (same window) to two days (a day or
/// more is final by the next event).
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..120, 600i64..3000].prop_map(|m| m * 60_000)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Won,
    Lost,
}

#[derive(Debug, Clone)]
struct Outcome {
    kind: Kind,
    at: i64,
    /// Revenue counted at `at` (the whole amount, or a difference).
    amount: i64,
    /// The deal itself was counted (won / lost count), not just an amount.
    counted: bool,
}

#[derive(Debug, Clone)]
struct Deal {
    rep: Option<&'static str>,
    stage: u8,
    amount: i64,
    outcome: Option<Outcome>,
}

/// The plain model: entity states, and per (day, rep or "") the won,
/// lost and revenue counted there.
#[derive(Default)]
struct Model {
    deals: BTreeMap<u16, Deal>,
    /// Customer → (channel, active).
    customers: BTreeMap<u16, (&'static str, bool)>,
    /// (event time, rep or "") → [won, lost, revenue] counted there.
    cells: BTreeMap<(i64, &'static str), [i64; 3]>,
    churn: BTreeMap<i64, i64>,
    repeats: u64,
    clock: i64,
}

impl Model {
    fn count(&mut self, at: i64, rep: Option<&'static str>, o: &Outcome, sign: i64) {
        // a deal without a rep counts in rep "unknown"
        for r in ["", rep.unwrap_or("unknown")] {
            let c = self.cells.entry((at, r)).or_default();
            match o.kind {
                Kind::Won => {
                    c[0] += sign * i64::from(o.counted);
                    c[2] += sign * o.amount;
                }
                Kind::Lost => c[1] += sign * i64::from(o.counted),
            }
        }
    }

    fn apply(&mut self, t: i64, op: &Op) {
        let cutoff = self.clock - CUTOFF_LAG;
        match *op {
            Op::Create {
                deal,
                stage,
                amount,
            } => match self.deals.get_mut(&deal) {
                None => {
                    self.deals.insert(
                        deal,
                        Deal {
                            rep: Some(REPS[deal as usize % 3]),
                            stage,
                            amount,
                            outcome: None,
                        },
                    );
                }
                Some(d) if d.outcome.is_none() && (d.stage, d.amount) != (stage, amount) => {
                    d.stage = stage;
                    d.amount = amount;
                }
                Some(_) => self.repeats += 1,
            },
            Op::Stage {
                deal,
                stage,
                amount,
            } => {
                let Some(d) = self.deals.get_mut(&deal) else {
                    return;
                };
                let amount = amount.unwrap_or(d.amount);
                if d.outcome.is_none() && (d.stage, d.amount) == (stage, amount) {
                    self.repeats += 1;
                    return;
                }
                d.stage = stage;
                d.amount = amount;
                // a stage change of a closed deal reopens it
                if let Some(o) = d.outcome.take() {
                    let rep = d.rep;
                    if o.at >= cutoff {
                        self.count(o.at, rep, &o, -1);
                    }
                }
            }
            Op::Won { deal, amount } | Op::Lost { deal, amount } => {
                let kind = if matches!(op, Op::Won { .. }) {
                    Kind::Won
                } else {
                    Kind::Lost
                };
                let d = self.deals.entry(deal).or_insert(Deal {
                    rep: None,
                    stage: 0,
                    amount,
                    outcome: None,
                });
                let rep = d.rep;
                let mut new = Outcome {
                    kind,
                    at: t,
                    amount,
                    counted: true,
                };
                match d.outcome.clone() {
                    Some(p) if p.kind == kind && (kind == Kind::Lost || d.amount == amount) => {
                        self.repeats += 1;
                        return;
                    }
                    Some(p) if p.kind == Kind::Won && kind == Kind::Won => {
                        // a correction of the amount
                        if p.at >= cutoff {
                            new = Outcome {
                                kind,
                                at: p.at,
                                amount: amount - (d.amount - p.amount),
                                counted: p.counted,
                            };
                            self.count(p.at, rep, &p, -1);
                        } else {
                            new.amount = amount - d.amount;
                            new.counted = false;
                        }
                    }
                    // a reopen: the earlier outcome leaves its window if open
                    Some(p) if p.at >= cutoff => self.count(p.at, rep, &p, -1),
                    Some(_) | None => {}
                }
                let d = self.deals.get_mut(&deal).unwrap();
                d.amount = amount;
                d.outcome = Some(new.clone());
                self.count(new.at, rep, &new, 1);
            }
            Op::Acquire { cust } => match self.customers.get_mut(&cust) {
                Some((_, true)) => self.repeats += 1,
                Some((_, active)) => *active = true,
                None => {
                    self.customers
                        .insert(cust, (CHANNELS[cust as usize % 2], true));
                }
            },
            Op::Cancel { cust } => {
                let month = month_start(t);
                match self.customers.get_mut(&cust) {
                    Some((_, false)) => self.repeats += 1,
                    Some((_, active)) => {
                        *active = false;
                        *self.churn.entry(month).or_default() += 1;
                    }
                    None => {
                        self.customers.insert(cust, ("", false));
                        *self.churn.entry(month).or_default() += 1;
                    }
                }
            }
        }
    }

    /// [won, lost, revenue] counted in [start, end) for `rep` ("" = all).
    fn sum(&self, start: i64, end: i64, rep: &str) -> [i64; 3] {
        let mut out = [0; 3];
        for ((_, r), v) in self.cells.range((start, "")..(end, "")) {
            if *r == rep {
                for i in 0..3 {
                    out[i] += v[i];
                }
            }
        }
        out
    }

    fn pipeline(&self, rep: Option<&str>) -> i64 {
        self.deals
            .values()
            .filter(|d| d.outcome.is_none() && (rep.is_none() || d.rep == rep))
            .map(|d| d.amount)
            .sum()
    }

    fn active(&self) -> i64 {
        self.customers.values().filter(|c| c.1).count() as i64
    }
}

fn month_start(t: i64) -> i64 {
    use chrono::{Datelike, TimeZone};
    let d = chrono::Utc.timestamp_millis_opt(t).unwrap();
    chrono::Utc
        .with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis()
}

fn line(i: usize, t: i64, op: &Op) -> Vec<u8> {
    let id = format!("e{i}");
    let deal = |d: u16| format!("D{d}");
    match *op {
        Op::Create {
            deal: d,
            stage,
            amount,
        } => ce_at(
            &id,
            "crm.deal.created",
            t,
            json!({"deal_id": deal(d), "rep": REPS[d as usize % 3], "stage": STAGES[stage as usize], "amount": amount as f64}),
        ),
        Op::Stage {
            deal: d,
            stage,
            amount,
        } => {
            let mut data =
                json!({"deal_id": deal(d), "from": STAGES[0], "to": STAGES[stage as usize]});
            if let Some(a) = amount {
                data["amount"] = json!(a as f64);
            }
            ce_at(&id, "crm.deal.stage_changed", t, data)
        }
        Op::Won { deal: d, amount } => ce_at(
            &id,
            "crm.deal.won",
            t,
            json!({"deal_id": deal(d), "amount": amount as f64}),
        ),
        Op::Lost { deal: d, amount } => ce_at(
            &id,
            "crm.deal.lost",
            t,
            json!({"deal_id": deal(d), "amount": amount as f64}),
        ),
        Op::Acquire { cust } => ce_at(
            &id,
            "crm.customer.acquired",
            t,
            json!({"customer_id": format!("C{cust}"), "channel": CHANNELS[cust as usize % 2]}),
        ),
        Op::Cancel { cust } => ce_at(
            &id,
            "crm.customer.cancelled",
            t,
            json!({"customer_id": format!("C{cust}")}),
        ),
    }
}

/// Won, lost and revenue (cents) by (kind, window label, rep or "") from final records.
fn deal_cells(recs: &[KpiRecord]) -> BTreeMap<(String, String, String), [i64; 3]> {
    let mut out: BTreeMap<(String, String, String), [i64; 3]> = BTreeMap::new();
    for r in recs
        .iter()
        .filter(|r| r.is_final && !r.window.kind.starts_with("rolling"))
    {
        let rep = match (r.dimensions.len(), r.dimensions.get("rep")) {
            (0, _) => String::new(),
            (1, Some(rep)) => rep.clone(),
            _ => continue,
        };
        let key = (r.window.kind.to_string(), r.window.label.to_string(), rep);
        let num = r.numerator.unwrap_or(0.0).round() as i64;
        match &*r.kpi {
            "deals_won" => out.entry(key).or_default()[0] = num,
            "win_rate" => {
                out.entry(key).or_default()[1] = r.denominator.unwrap_or(0.0) as i64 - num;
            }
            "revenue" => {
                out.entry(key).or_default()[2] = (r.numerator.unwrap_or(0.0) * 100.0).round() as i64
            }
            _ => {}
        }
    }
    out.retain(|_, v| *v != [0; 3]);
    out
}

fn model_cells(m: &Model, e: &Engine) -> BTreeMap<(String, String, String), [i64; 3]> {
    let cal = e.settings.cal;
    let mut out: BTreeMap<(String, String, String), [i64; 3]> = BTreeMap::new();
    for ((at, rep), v) in &m.cells {
        let day = at.div_euclid(DAY) * DAY;
        for kind in [
            salespulse::window::CalendarKind::Day,
            salespulse::window::CalendarKind::Month,
        ] {
            let b = cal.bounds(kind, day);
            let label = cal.label(kind, b.start);
            let k = if kind == salespulse::window::CalendarKind::Day {
                "day"
            } else {
                "month"
            };
            let c = out
                .entry((k.to_string(), label, rep.to_string()))
                .or_default();
            for i in 0..3 {
                c[i] += v[i] * if i == 2 { 100 } else { 1 };
            }
        }
    }
    out.retain(|_, v| *v != [0; 3]);
    out
}

/// Every rolling record of `recs` (deals won, win rate, revenue for "all"
/// and each rep) equals the model's sum over the record's own bounds.
fn check_rolling(recs: &[KpiRecord], m: &Model) -> Result<(), TestCaseError> {
    for r in recs.iter().filter(|r| r.window.kind.starts_with("rolling")) {
        let rep = match (r.dimensions.len(), r.dimensions.get("rep")) {
            (0, _) => "",
            (1, Some(rep)) => rep.as_str(),
            _ => continue,
        };
        let end = ms(&r.window.end);
        let want = m.sum(r.window.start_ms, end, rep);
        let num = r.numerator.unwrap_or(0.0).round() as i64;
        let got = match &*r.kpi {
            "deals_won" => Some((num, want[0])),
            "win_rate" => Some((r.denominator.unwrap_or(0.0) as i64, want[0] + want[1])),
            "revenue" => Some((
                (r.numerator.unwrap_or(0.0) * 100.0).round() as i64,
                want[2] * 100,
            )),
            _ => None,
        };
        if let Some((g, w)) = got {
            prop_assert_eq!(
                g,
                w,
                "{} {} {:?} [{}, {})",
                r.kpi,
                r.window.kind,
                rep,
                r.window.start,
                r.window.end
            );
        }
    }
    Ok(())
}

/// The newest value of each gauge series ("" rep = all), from emissions so far.
#[derive(Default)]
struct Gauges {
    latest: Vec<KpiRecord>,
}

impl Gauges {
    fn take(&mut self, recs: &[KpiRecord]) {
        let g: Vec<KpiRecord> = recs
            .iter()
            .filter(|r| r.window.kind == "gauge")
            .cloned()
            .collect();
        if let Some(rev) = g.iter().map(|r| r.revision).max() {
            self.latest = g.into_iter().filter(|r| r.revision == rev).collect();
        }
    }
    fn get(&self, kpi: &str, dims: &[(&str, &str)]) -> f64 {
        find(&self.latest, kpi, "gauge", "current", dims)
            .and_then(|r| r.value)
            .unwrap_or(0.0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn engine_follows_the_lifecycle_table(ops in proptest::collection::vec((step(), op()), 1..120), rolling in any::<bool>()) {
        let mut e = engine(if rolling { CFG_ROLLING } else { CFG });
        let mut m = Model::default();
        let mut gauges = Gauges::default();
        let mut recs = Vec::new();
        let mut t = ms("2026-03-01T08:00:00Z");
        for (i, (dt, op)) in ops.iter().enumerate() {
            t += dt;
            e.process_json(&line(i, t, op)).unwrap();
            m.apply(t, op);
            m.clock = t;
            e.emit_updates();
            let out = e.take_records();
            check_rolling(&out, &m)?;
            gauges.take(&out);
            recs.extend(out);
            for r in gauges.latest.iter() {
                prop_assert!(r.value.unwrap_or(0.0) >= 0.0, "negative gauge {:?} after {:?}", r, op);
            }
            prop_assert_eq!(gauges.get("pipeline_value", &[]), m.pipeline(None) as f64, "pipeline after {:?}", op);
            for rep in REPS {
                prop_assert_eq!(gauges.get("pipeline_value", &[("rep", rep)]), m.pipeline(Some(rep)) as f64, "pipeline of {} after {:?}", rep, op);
            }
            prop_assert_eq!(gauges.get("active_customers", &[]), m.active() as f64, "active after {:?}", op);
        }
        e.finish();
        recs.extend(e.take_records());
        prop_assert_eq!(deal_cells(&recs), model_cells(&m, &e));
        let churn: BTreeMap<String, i64> = recs
            .iter()
            .filter(|r| r.is_final && r.kpi == "churn_rate" && r.window.kind == "month" && r.dimensions.is_empty())
            .map(|r| (r.window.label.to_string(), r.numerator.unwrap_or(0.0) as i64))
            .filter(|(_, n)| *n != 0)
            .collect();
        let cal = e.settings.cal;
        let want: BTreeMap<String, i64> = m
            .churn
            .iter()
            .map(|(s, n)| (cal.label(salespulse::window::CalendarKind::Month, *s), *n))
            .collect();
        prop_assert_eq!(churn, want);
        prop_assert_eq!(e.state.stats.duplicates[DUP_TRANSITION], m.repeats);
    }
}

/// A multi-year stream of long-lived deals and customers: deals open
/// every few hours and close (won or lost) after a day to two years, or
/// never; some move through stages or are reopened; customers stay up
/// to three years.
fn long_lived_stream(seed: u64, years: i64) -> Vec<(i64, Vec<u8>, Op)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let t0 = ms("2024-01-01T00:00:00Z");
    let end = t0 + years * 365 * DAY;
    let mut evs: Vec<(i64, Op)> = Vec::new();
    let (mut t, mut deal, mut cust) = (t0, 0u32, 0u32);
    while t < end {
        t += rng.i64(1..12) * 3_600_000;
        if rng.bool() {
            let d = deal as u16;
            deal += 1;
            let amount = rng.i64(1..20) * 100;
            evs.push((
                t,
                Op::Create {
                    deal: d,
                    stage: rng.u8(0..3),
                    amount,
                },
            ));
            let mut at = t;
            for _ in 0..rng.usize(0..3) {
                at += rng.i64(1..200) * DAY;
                evs.push((
                    at,
                    Op::Stage {
                        deal: d,
                        stage: rng.u8(0..3),
                        amount: None,
                    },
                ));
            }
            match rng.u8(0..10) {
                0..=5 => evs.push((at + rng.i64(1..730) * DAY, Op::Won { deal: d, amount })),
                6..=8 => evs.push((at + rng.i64(1..400) * DAY, Op::Lost { deal: d, amount })),
                _ => {} // open for good
            }
        } else {
            let c = cust as u16;
            cust += 1;
            evs.push((t, Op::Acquire { cust: c }));
            if rng.bool() {
                evs.push((t + rng.i64(1..1100) * DAY, Op::Cancel { cust: c }));
            }
        }
    }
    evs.retain(|(at, _)| *at < end);
    evs.sort_by_key(|(at, _)| *at);
    evs.into_iter()
        .enumerate()
        .map(|(i, (at, op))| (at, line(i, at, &op), op))
        .collect()
}

/// Feeds [`long_lived_stream`] and compares every gauge with the model's
/// open deals and active customers at every month end.
fn gauges_at_every_month_end(ttl: &str, seed: u64) {
    let cfg = CFG.replace(
        "max_waiting = 0",
        &format!("max_waiting = 0\nentity_ttl = \"{ttl}\"\ndedup_horizon = \"2h\""),
    );
    let mut e = engine(&cfg);
    let mut m = Model::default();
    let mut gauges = Gauges::default();
    let stream = long_lived_stream(seed, 3);
    let mut month = month_start(stream[0].0);
    let mut checked = 0;
    let check = |e: &mut Engine, m: &Model, gauges: &mut Gauges, when: i64| {
        e.emit_updates();
        gauges.take(&e.take_records());
        let at = salespulse::decode::json::format_time(when);
        assert_eq!(
            gauges.get("pipeline_value", &[]),
            m.pipeline(None) as f64,
            "pipeline at {at}"
        );
        for rep in REPS {
            assert_eq!(
                gauges.get("pipeline_value", &[("rep", rep)]),
                m.pipeline(Some(rep)) as f64,
                "pipeline of {rep} at {at}"
            );
        }
        let mut weighted = 0.0;
        for (i, st) in STAGES.iter().enumerate() {
            let open: i64 = m
                .deals
                .values()
                .filter(|d| d.outcome.is_none() && d.stage == i as u8)
                .map(|d| d.amount)
                .sum();
            assert_eq!(
                gauges.get("pipeline_value", &[("stage", st)]),
                open as f64,
                "{st} at {at}"
            );
            weighted += open as f64 * [0.1, 0.5, 0.7][i];
        }
        let w = gauges.get("pipeline_value_weighted", &[]);
        assert!(
            (w - weighted).abs() < 1e-6,
            "weighted pipeline {w} ≠ {weighted} at {at}"
        );
        assert_eq!(
            gauges.get("active_customers", &[]),
            m.active() as f64,
            "active at {at}"
        );
        for ch in CHANNELS {
            let n = m.customers.values().filter(|c| c.1 && c.0 == ch).count();
            assert_eq!(
                gauges.get("active_customers", &[("channel", ch)]),
                n as f64,
                "active {ch} at {at}"
            );
        }
        for r in &gauges.latest {
            assert!(r.value.unwrap_or(0.0) >= 0.0, "negative gauge {r:?}");
        }
    };
    for (t, l, op) in &stream {
        if month_start(*t) != month {
            check(&mut e, &m, &mut gauges, *t);
            checked += 1;
            month = month_start(*t);
        }
        e.process_json(l).unwrap();
        m.apply(*t, op);
        m.clock = *t;
    }
    check(&mut e, &m, &mut gauges, stream.last().unwrap().0);
    assert!(checked >= 35, "{checked} month ends");
    let [_, closed_deals, cancelled] = e.state.stats.evicted;
    if ttl == "5d" {
        assert!(
            closed_deals > 0 && cancelled > 0,
            "the TTL swept what is closed"
        );
    }
    let open_old = e
        .state
        .deals
        .values()
        .filter(|d| d.is_open() && d.seen < stream.last().unwrap().0 - 400 * DAY)
        .count();
    assert!(
        open_old > 0,
        "deals quiet for longer than any TTL stay open"
    );
}

#[test]
fn every_gauge_equals_a_recomputation_at_every_month_end_with_a_short_ttl() {
    for seed in [1, 2] {
        gauges_at_every_month_end("5d", seed);
    }
}

#[test]
fn every_gauge_equals_a_recomputation_at_every_month_end_with_the_default_ttl() {
    gauges_at_every_month_end("400d", 3);
}
