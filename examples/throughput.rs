//! One pass of decode + engine over generated events, timed, and steady
//! enough to count instructions under valgrind (wall time on a shared
//! virtual machine varies by ±30 % from run to run; instruction counts do
//! not):
//!
//! ```text
//! cargo build --release --example throughput
//! target/release/examples/throughput json 200000          # events/s
//! valgrind --tool=callgrind --toggle-collect='*process_json*' \
//!     target/release/examples/throughput json 100000      # instructions
//! ```
//!
//! Arguments: stage (`json`: decode + engine; `live`: the same plus
//! provisional records of every open window after every 1,024 events;
//! `decode`: decode and validation only; `gen`: neither, the setup
//! alone; `warm`: as `json`, timing the second half of the events only),
//! number of events,
//! generated events per day (default 1,000). With `THROUGHPUT_LINES=FILE`
//! the events are read from that JSON-lines file instead of generated
//! (so that a profiler sees the timed part only); `THROUGHPUT_CONFIG=FILE`
//! replaces the default configuration.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use salespulse::config::Config;
use salespulse::decode::{json, validate};
use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
use salespulse::engine::Engine;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let stage = args.next().unwrap_or_else(|| "json".into());
    let n: usize = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let per_day: u32 = args
        .next()
        .map_or(1000, |s| s.parse().expect("events per day"));
    let lines: Vec<String> = match std::env::var_os("THROUGHPUT_LINES") {
        Some(path) => std::fs::read_to_string(path)
            .expect("THROUGHPUT_LINES file")
            .lines()
            .take(n)
            .map(str::to_owned)
            .collect(),
        None => generated(n, per_day),
    };
    let n = lines.len();
    // The default config (or `THROUGHPUT_CONFIG`), with SALESPULSE_* variables applied.
    let path = std::env::var_os("THROUGHPUT_CONFIG").map(std::path::PathBuf::from);
    let mut config = Config::load(path.as_deref()).expect("config");
    // Generated events run on simulated time, past the wall clock.
    config.time.max_future_skew = salespulse::config::Dur(std::time::Duration::ZERO);
    let mut engine = Engine::from_config(&config);
    // `warm`: the first half of the events goes in untimed, as in a
    // running service whose tables have their size; the second is timed.
    let lines = if stage == "warm" {
        let (first, second) = lines.split_at(n / 2);
        for l in first {
            engine.process_json(l.as_bytes()).unwrap();
        }
        black_box(engine.take_records());
        second
    } else {
        &lines[..]
    };
    let n = lines.len();
    let t = Instant::now();
    match stage.as_str() {
        "gen" => {}
        "write" => {
            // The generated lines, for THROUGHPUT_LINES.
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for l in lines {
                writeln!(out, "{l}").unwrap();
            }
        }
        "decode" => {
            for l in lines {
                let e = json::decode(l.as_bytes()).unwrap();
                validate(&e).unwrap();
                black_box(&e);
            }
        }
        "json" | "warm" => {
            for chunk in lines.chunks(1024) {
                for l in chunk {
                    engine.process_json(l.as_bytes()).unwrap();
                }
                black_box(engine.take_records());
            }
        }
        "live" => {
            // Provisional records of every open window after every batch.
            for chunk in lines.chunks(1024) {
                for l in chunk {
                    engine.process_json(l.as_bytes()).unwrap();
                }
                engine.emit_updates();
                black_box(engine.take_records());
            }
        }
        other => panic!("unknown stage {other}"),
    }
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{stage}: {n} events in {s:.3} s = {:.0} events/s",
        n as f64 / s
    );
}

fn generated(n: usize, per_day: u32) -> Vec<String> {
    Generator::new(GenConfig {
        seed: 42,
        start: DEFAULT_START,
        events_per_day: per_day,
        reps: 12,
    })
    .take(n)
    .map(|e| json::encode(&e))
    .collect()
}
