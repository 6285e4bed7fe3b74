//! Measures resident memory per open entity: opens N leads and N deals
//! (never closed) and reports the growth of the process's RSS.
//!
//! `cargo run --release --example entity_memory -- 1000000`

use salespulse::config::Config;
use salespulse::engine::Engine;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut cfg = Config::default();
    // Only the entity state is measured: keep dedup memory out of it.
    cfg.state.dedup_max_entries = 1;
    let mut e = Engine::from_config(&cfg);
    let t0 = 1_767_225_600_000i64;
    let before = rss_bytes();
    for i in 0..n {
        // One second apart: the hourly sweep keeps the dedup memory at its 1-entry cap.
        let t = t0 + i as i64 * 1000;
        let l = format!(
            r#"{{"specversion":"1.0","id":"l{i}","source":"m","type":"crm.lead.created","time":"{}","data":{{"lead_id":"lead-{i:010}","channel":"web","rep":"Ana"}}}}"#,
            salespulse::decode::json::format_time(t)
        );
        e.process_json(l.as_bytes()).unwrap();
        let d = format!(
            r#"{{"specversion":"1.0","id":"d{i}","source":"m","type":"crm.deal.created","time":"{}","data":{{"deal_id":"deal-{i:010}","rep":"Ana","amount":1000,"stage":"prospecting","product":"Pro"}}}}"#,
            salespulse::decode::json::format_time(t)
        );
        e.process_json(d.as_bytes()).unwrap();
    }
    let after = rss_bytes();
    let entities = e.entity_counts().iter().sum::<usize>() as u64;
    println!(
        "{entities} open entities: RSS grew {:.1} MiB, {:.0} bytes per entity (ids are kept as 16-byte hashes, whatever their length)",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / entities as f64
    );
}
