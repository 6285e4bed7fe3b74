//! Checkpoint size, write time and restore time per million entities:
//! opens N leads and N deals (2N entities, with the dedup memory of their
//! 2N events), then writes a checkpoint and reads it back.
//!
//! `cargo run --release --example checkpoint_size -- 1000000 /tmp/sp.ckpt`

use salespulse::checkpoint::{Checkpoint, CheckpointRef, InputPosition};
use salespulse::config::Config;
use salespulse::engine::Engine;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let path = std::path::PathBuf::from(args.next().unwrap_or("salespulse-bench.ckpt".into()));
    let mut cfg = Config::default();
    cfg.state.dedup_horizon = salespulse::config::Dur(std::time::Duration::from_secs(400 * 86_400));
    let mut e = Engine::from_config(&cfg);
    let t0 = 1_767_225_600_000i64;
    for i in 0..n {
        // 20 s apart: N = 1 M spans about 230 days, inside the entity TTL.
        let t = salespulse::decode::json::format_time(t0 + i as i64 * 20_000);
        let l = format!(
            r#"{{"specversion":"1.0","id":"l{i}","source":"m","type":"crm.lead.created","time":"{t}","data":{{"lead_id":"lead-{i:010}","channel":"web","rep":"Ana"}}}}"#
        );
        e.process_json(l.as_bytes()).unwrap();
        let d = format!(
            r#"{{"specversion":"1.0","id":"d{i}","source":"m","type":"crm.deal.created","time":"{t}","data":{{"deal_id":"deal-{i:010}","rep":"Ana","amount":1000,"stage":"prospecting","product":"Pro"}}}}"#
        );
        e.process_json(d.as_bytes()).unwrap();
        if i % 4096 == 0 {
            e.take_records();
        }
    }
    e.take_records();
    let [leads, deals, _] = e.entity_counts();
    let pos = InputPosition::Generator { events: 2 * n };
    let w = Instant::now();
    let bytes = CheckpointRef::new(&e.settings, &pos, Default::default(), &e.state)
        .write(&path)
        .unwrap();
    let write_s = w.elapsed().as_secs_f64();
    let r = Instant::now();
    let c = Checkpoint::read(&path).unwrap().unwrap();
    let restored = Engine::from_state(e.settings.clone(), c.state);
    let read_s = r.elapsed().as_secs_f64();
    assert_eq!(restored.entity_counts(), e.entity_counts());
    let entities = (leads + deals) as f64;
    println!(
        "{leads} leads + {deals} deals, {} dedup ids: checkpoint {:.1} MB ({:.0} bytes per entity incl. its event id), write {:.2} s, restore {:.2} s; per million entities: {:.1} MB, write {:.2} s, restore {:.2} s",
        restored.state.dedup.order.len(),
        bytes as f64 / 1e6,
        bytes as f64 / entities,
        write_s,
        read_s,
        bytes as f64 / entities,
        write_s / entities * 1e6,
        read_s / entities * 1e6,
    );
    let _ = std::fs::remove_file(&path);
}
