//! Soak benchmark: streams CRM events for N distinct entities (leads,
//! deals, customers; 10 million by default) over D simulated days through
//! JSON decode and the engine, and reports the state and the process's
//! resident memory as it goes. Memory must level off once entities start
//! to pass `state.entity_ttl`, closed windows are dropped and the dedup
//! memory keeps its horizon; the run fails (exit 1) if the peak RSS goes
//! over the ceiling.
//!
//! ```text
//! cargo run --release --example soak -- [ENTITIES] [DAYS] [CEILING_MIB]
//! cargo run --release --example soak -- 10000000 730 1536     # docs/performance.md figures
//! SALESPULSE_STATE__ENTITY_TTL=90d cargo run --release --example soak
//! ```
//!
//! The configuration is the default one, with `SALESPULSE_*` variables
//! applied (see docs/configuration.md). Each lead story, all ids
//! distinct: `crm.lead.created`; 5 days later one lead in five is
//! converted into a deal (`crm.lead.converted` + `crm.deal.created`);
//! 20 days after that one deal in five is won (`crm.deal.won`,
//! `crm.customer.acquired`, `crm.order.placed`), two in five are lost and
//! the rest stay open for good (open deals are never forgotten by the TTL:
//! `SALESPULSE_PIPELINE__MAX_OPEN_AGE=180d` expires them); 60 days after a
//! win one customer in five cancels. 1.24 entities and 1.61 events per lead;
//! 50 reps, 5 channels, 3 products, 4 regions.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use salespulse::config::Config;
use salespulse::decode::json::format_time;
use salespulse::engine::Engine;
use std::time::Instant;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const CHANNELS: [&str; 5] = ["web", "paid_search", "referral", "outbound", "events"];
const PRODUCTS: [&str; 3] = ["Basic", "Pro", "Enterprise"];
const REGIONS: [&str; 4] = ["EMEA", "NA", "LATAM", "APAC"];
const REPS: u64 = 50;
const CONVERT_AFTER: i64 = 5;
const CLOSE_AFTER: i64 = 20;
const CANCEL_AFTER: i64 = 60;

/// `/proc/self/status` field in KiB (VmRSS, VmHWM).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Day {
    events: Vec<(i64, String)>,
    seq: u64,
}

impl Day {
    fn push(&mut self, t: i64, ty: &str, data: String) {
        self.seq += 1;
        let json = format!(
            r#"{{"specversion":"1.0","id":"e{}","source":"soak","type":"{ty}","time":"{}","data":{data}}}"#,
            self.seq,
            format_time(t)
        );
        self.events.push((t, json));
    }
}

/// Time of lead `i` of a day, spread evenly over the day.
fn at(day: i64, i: u64, per_day: u64) -> i64 {
    T0 + day * DAY + ((i % per_day) as i64 * DAY) / per_day as i64
}

fn rep(i: u64) -> String {
    format!("rep-{:02}", i % REPS)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target: u64 = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("ENTITIES"));
    let days: i64 = args.next().map_or(730, |a| a.parse().expect("DAYS"));
    let ceiling_mib: f64 = args
        .next()
        .map_or(1536.0, |a| a.parse().expect("CEILING_MIB"));
    let mut cfg = Config::load(None).unwrap_or_else(|e| panic!("config: {e}"));
    // Simulated time runs past the wall clock.
    cfg.time.max_future_skew = salespulse::config::Dur(std::time::Duration::ZERO);
    if let Err(errs) = cfg.validate() {
        panic!("config: {errs:?}");
    }
    // 1.24 entities per lead (1 lead + 1/5 deal + 1/25 customer).
    let per_day = ((target as f64 / 1.24) / days as f64).ceil() as u64;
    println!(
        "soak: {target} distinct entities over {days} days ({per_day} leads/day); entity_ttl {}, dedup_horizon {}, dedup_max_entries {}; ceiling {ceiling_mib} MiB",
        cfg.state.entity_ttl, cfg.state.dedup_horizon, cfg.state.dedup_max_entries
    );
    let mut e = Engine::from_config(&cfg);
    let base_kib = status_kib("VmRSS:");
    let start = Instant::now();
    let (mut events, mut records, mut rejected) = (0u64, 0u64, 0u64);
    let (mut leads, mut deals, mut customers) = (0u64, 0u64, 0u64);
    let mut day_buf = Day {
        events: Vec::new(),
        seq: 0,
    };
    println!(
        "{:>5} {:>11} {:>11} {:>27} {:>9} {:>8} {:>9}",
        "day",
        "events",
        "entities",
        "live leads/deals/customers",
        "dedup ids",
        "buckets",
        "RSS MiB"
    );
    // Days past the last lead's: the stories of the last leads finish.
    for day in 0..days + CONVERT_AFTER + CLOSE_AFTER + CANCEL_AFTER + 1 {
        let new_leads = if day < days { per_day } else { 0 };
        let first = |d: i64| d as u64 * per_day;
        for i in first(day)..first(day) + new_leads {
            let t = at(day, i, per_day);
            let data = format!(
                r#"{{"lead_id":"lead-{i}","channel":"{}","rep":"{}","region":"{}"}}"#,
                CHANNELS[(i % 5) as usize],
                rep(i),
                REGIONS[(i % 4) as usize]
            );
            day_buf.push(t, "crm.lead.created", data);
            leads += 1;
        }
        let conv = day - CONVERT_AFTER;
        if (0..days).contains(&conv) {
            for i in (first(conv)..first(conv) + per_day).filter(|i| i % 5 == 0) {
                let t = at(day, i, per_day);
                day_buf.push(
                    t,
                    "crm.lead.converted",
                    format!(r#"{{"lead_id":"lead-{i}","deal_id":"deal-{i}"}}"#),
                );
                let data = format!(
                    r#"{{"deal_id":"deal-{i}","rep":"{}","amount":{}.50,"stage":"prospecting","channel":"{}","product":"{}","lead_id":"lead-{i}","region":"{}"}}"#,
                    rep(i),
                    1_000 + i % 9_000,
                    CHANNELS[(i % 5) as usize],
                    PRODUCTS[(i % 3) as usize],
                    REGIONS[(i % 4) as usize]
                );
                day_buf.push(t + 1, "crm.deal.created", data);
                deals += 1;
            }
        }
        let close = day - CONVERT_AFTER - CLOSE_AFTER;
        if (0..days).contains(&close) {
            for i in (first(close)..first(close) + per_day).filter(|i| i % 5 == 0) {
                let t = at(day, i, per_day);
                let amount = 1_000 + i % 9_000;
                match i % 25 {
                    0 => {
                        day_buf.push(
                            t,
                            "crm.deal.won",
                            format!(r#"{{"deal_id":"deal-{i}","amount":{amount}.50}}"#),
                        );
                        let ch = CHANNELS[(i % 5) as usize];
                        day_buf.push(
                            t + 1,
                            "crm.customer.acquired",
                            format!(r#"{{"customer_id":"cust-{i}","channel":"{ch}"}}"#),
                        );
                        day_buf.push(
                            t + 2,
                            "crm.order.placed",
                            format!(
                                r#"{{"order_id":"order-{i}","customer_id":"cust-{i}","amount":{amount}.50,"kind":"new"}}"#
                            ),
                        );
                        customers += 1;
                    }
                    5 | 10 => day_buf.push(
                        t,
                        "crm.deal.lost",
                        format!(r#"{{"deal_id":"deal-{i}","amount":{amount}.50}}"#),
                    ),
                    _ => {}
                }
            }
        }
        let cancel = day - CONVERT_AFTER - CLOSE_AFTER - CANCEL_AFTER;
        if (0..days).contains(&cancel) {
            for i in (first(cancel)..first(cancel) + per_day).filter(|i| i % 125 == 0) {
                let t = at(day, i, per_day);
                day_buf.push(
                    t,
                    "crm.customer.cancelled",
                    format!(r#"{{"customer_id":"cust-{i}","reason":"price"}}"#),
                );
            }
        }
        day_buf.events.sort_by_key(|(t, _)| *t);
        for (_, json) in day_buf.events.drain(..) {
            events += 1;
            if e.process_json(json.as_bytes()).is_err() {
                rejected += 1;
            }
        }
        records += e.take_records().len() as u64;
        e.take_leaderboards();
        if day % 30 == 29 {
            let [l, d, c] = e.entity_counts();
            println!(
                "{:>5} {:>11} {:>11} {:>27} {:>9} {:>8} {:>9.0}",
                day + 1,
                events,
                leads + deals + customers,
                format!("{l}/{d}/{c}"),
                e.state.dedup.order.len(),
                e.bucket_count(),
                mib(status_kib("VmRSS:"))
            );
        }
    }
    e.finish();
    records += e.take_records().len() as u64;
    let secs = start.elapsed().as_secs_f64();
    let peak = mib(status_kib("VmHWM:"));
    let entities = leads + deals + customers;
    let [l, d, c] = e.entity_counts();
    println!(
        "{entities} distinct entities ({leads} leads, {deals} deals, {customers} customers), {events} events ({rejected} rejected), {records} records in {secs:.0} s ({:.0} events/s)",
        events as f64 / secs
    );
    println!(
        "at the end: {l}/{d}/{c} leads/deals/customers remembered, {} evicted by the TTL; peak RSS {peak:.0} MiB (at start {:.0} MiB); ceiling {ceiling_mib} MiB",
        e.state.stats.evicted.iter().sum::<u64>(),
        mib(base_kib)
    );
    assert_eq!(rejected, 0, "the soak's events are all valid");
    if peak > ceiling_mib {
        eprintln!("FAIL: peak RSS {peak:.0} MiB is over the ceiling of {ceiling_mib} MiB");
        std::process::exit(1);
    }
    println!("OK: peak RSS {peak:.0} MiB ≤ {ceiling_mib} MiB");
}
