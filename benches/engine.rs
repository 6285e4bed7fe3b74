//! Throughput of the JSON decode, the engine's per-event update, and the
//! two together on generated events; plus memory per open entity.
//!
//! Run with `cargo bench --bench engine`. Criterion reports time per
//! iteration; each iteration processes `N` events, so events/s = N ÷ time.

/// mimalloc, as in the `salespulse` binary: KPI records are many small
/// allocations, which it serves markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use salespulse::config::Config;
use salespulse::decode::{json, proto, validate};
use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
use salespulse::engine::Engine;
use std::hint::black_box;

const N: usize = 200_000;
/// Records are taken (and dropped) every this many events, as the
/// pipeline does after each batch it reads.
const BATCH: usize = 1024;

fn generated(events_per_day: u32) -> Vec<String> {
    Generator::new(GenConfig {
        seed: 42,
        start: DEFAULT_START,
        events_per_day,
        reps: 12,
    })
    .take(N)
    .map(|e| json::encode(&e))
    .collect()
}

fn bench(c: &mut Criterion) {
    let lines = generated(1000);
    let avg = lines.iter().map(String::len).sum::<usize>() / lines.len();
    eprintln!("{N} generated events, {avg} bytes per JSON event on average");
    let cfg = Config::default();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);

    g.bench_function("decode_json", |b| {
        b.iter(|| {
            for l in &lines {
                let e = json::decode(l.as_bytes()).unwrap();
                validate(&e).unwrap();
                black_box(&e);
            }
        })
    });

    let events: Vec<_> = lines
        .iter()
        .map(|l| json::decode(l.as_bytes()).unwrap())
        .collect();
    g.bench_function("engine_update", |b| {
        b.iter_batched(
            || Engine::from_config(&cfg),
            |mut e| {
                for chunk in events.chunks(BATCH) {
                    for ev in chunk {
                        e.apply(ev).unwrap();
                    }
                    black_box(e.take_records());
                }
                e
            },
            BatchSize::PerIteration,
        )
    });

    // Decode + engine. Besides the cost per event there is one per window:
    // closing it and its records. At 1,000 events a day a day's records
    // are a large part of each event's cost; at 100,000 a day (a CRM big
    // enough to need the throughput) they are not. And the five
    // dimensions of the core KPIs instead of the default nine.
    let dense = generated(100_000);
    let core = Config::from_toml(
        "[kpis]\ndimensions = [\"rep\", \"team\", \"region\", \"channel\", \"product\"]\n",
    )
    .unwrap();
    for (name, input, cfg) in [
        ("decode_and_engine", &lines, &cfg),
        ("decode_and_engine_100k_per_day", &dense, &cfg),
        ("decode_and_engine_core_dimensions", &lines, &core),
        (
            "decode_and_engine_core_dimensions_100k_per_day",
            &dense,
            &core,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Engine::from_config(cfg),
                |mut e| {
                    for chunk in input.chunks(BATCH) {
                        for l in chunk {
                            e.process_json(l.as_bytes()).unwrap();
                        }
                        black_box(e.take_records());
                    }
                    e
                },
                BatchSize::PerIteration,
            )
        });
    }

    let pb: Vec<Vec<u8>> = events
        .iter()
        .map(|e| prost::Message::encode_to_vec(&proto::from_event(e)))
        .collect();
    g.bench_function("decode_protobuf_and_engine", |b| {
        b.iter_batched(
            || Engine::from_config(&cfg),
            |mut e| {
                for chunk in pb.chunks(BATCH) {
                    for m in chunk {
                        e.process_protobuf(m).unwrap();
                    }
                    black_box(e.take_records());
                }
                e
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("whole_pipeline_with_emission", |b| {
        b.iter_batched(
            || Engine::from_config(&cfg),
            |mut e| {
                for chunk in lines.chunks(BATCH) {
                    for l in chunk {
                        e.process_json(l.as_bytes()).unwrap();
                    }
                    black_box(e.take_records());
                }
                e.emit_updates();
                e.finish();
                black_box(e.take_records());
                e
            },
            BatchSize::PerIteration,
        )
    });
    // The Kafka path's own work without a broker: three partitions, each
    // with its source engine; after every batch each source exports its
    // partials (encoded, decoded), which the merger absorbs before it
    // moves its clock and emits (`--to-end`'s cadence: a batch is
    // `input.batch_size` messages across the partitions).
    let parts: Vec<usize> = lines
        .iter()
        .map(|l| {
            let e = json::decode(l.as_bytes()).unwrap();
            (xxhash_rust::xxh3::xxh3_64(e.partition_key().as_bytes()) % 3) as usize
        })
        .collect();
    let new_sources = || -> Vec<Engine> {
        (0..3)
            .map(|_| {
                let mut e = Engine::from_config(&cfg);
                e.set_source_mode();
                e
            })
            .collect()
    };
    // `_local_merger`: the merger on the sources' instance, as the Kafka
    // loop runs it: it takes each export in as it is sent
    // (`absorb_items`) and, from the copy read back, only the progress.
    for (bench, local) in [
        ("scaleout_3_sources_and_merger", false),
        ("scaleout_3_sources_and_local_merger", true),
    ] {
        g.bench_function(bench, |b| {
            use salespulse::engine::merge::{MergeState, Partial, Progress};
            let name = |p: usize| format!("crm.events/{p}");
            b.iter_batched(
                || {
                    let sources = new_sources();
                    let mut merger = Engine::from_config(&cfg);
                    merger.set_merge_mode(MergeState::default(), (0..3).map(name).collect());
                    (sources, merger)
                },
                |(mut sources, mut merger)| {
                    let mut offsets = [0i64; 3];
                    let round =
                        |sources: &mut [Engine], merger: &mut Engine, at: [i64; 3], at_end| {
                            for (p, s) in sources.iter_mut().enumerate() {
                                let progress = Progress {
                                    clock: s.state.clock,
                                    max_time: s.state.max_time,
                                    idle: false,
                                    at_end,
                                };
                                for (part, bytes) in
                                    s.export_encoded(&name(p), at[p], progress, 1 << 20)
                                {
                                    if local {
                                        let (v, pr) = (part.version, part.progress);
                                        merger.absorb_items(part);
                                        merger.absorb_progress(&name(p), v, pr);
                                        black_box(bytes);
                                    } else {
                                        merger.absorb(Partial::decode(&bytes).unwrap());
                                    }
                                }
                            }
                            merger.merge_advance();
                            black_box(merger.take_records());
                        };
                    for (chunk, pchunk) in lines.chunks(BATCH).zip(parts.chunks(BATCH)) {
                        for (l, p) in chunk.iter().zip(pchunk) {
                            sources[*p].process_json(l.as_bytes()).unwrap();
                            offsets[*p] += 1;
                        }
                        round(&mut sources, &mut merger, offsets, false);
                    }
                    sources.iter_mut().for_each(Engine::end_of_input);
                    round(&mut sources, &mut merger, offsets, true);
                    merger.finish();
                    black_box(merger.take_records());
                    (sources, merger)
                },
                BatchSize::PerIteration,
            )
        });
    }
    // An instance whose merger is elsewhere: three sources export after
    // every batch and send only bytes. `_copied`: each export also copies
    // its accumulators into partials (`export_encoded`, what a merger on
    // the instance takes); `_bytes`: encoded from the state (`export_bytes`).
    for (bench, copied) in [
        ("scaleout_3_sources_export_copied", true),
        ("scaleout_3_sources_export_bytes", false),
    ] {
        g.bench_function(bench, |b| {
            use salespulse::engine::merge::Progress;
            let name = |p: usize| format!("crm.events/{p}");
            b.iter_batched(
                new_sources,
                |mut sources| {
                    let mut offsets = [0i64; 3];
                    for (chunk, pchunk) in lines.chunks(BATCH).zip(parts.chunks(BATCH)) {
                        for (l, p) in chunk.iter().zip(pchunk) {
                            sources[*p].process_json(l.as_bytes()).unwrap();
                            offsets[*p] += 1;
                        }
                        for (p, s) in sources.iter_mut().enumerate() {
                            let progress = Progress {
                                clock: s.state.clock,
                                max_time: s.state.max_time,
                                idle: false,
                                at_end: false,
                            };
                            let at = offsets[p];
                            if copied {
                                for (_, bytes) in s.export_encoded(&name(p), at, progress, 1 << 20)
                                {
                                    black_box(bytes);
                                }
                            } else {
                                black_box(s.export_bytes(&name(p), at, progress, 1 << 20));
                            }
                        }
                    }
                    sources
                },
                BatchSize::PerIteration,
            )
        });
    }
    // Live mode's worst case for alerts: provisional records after every
    // batch, each evaluated by the five default rules of the example config.
    let with_rules = Config::from_toml(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/salespulse.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    for (name, cfg) in [
        ("live_updates_no_alert_rules", &cfg),
        ("live_updates_default_alert_rules", &with_rules),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Engine::from_config(cfg),
                |mut e| {
                    for chunk in events.chunks(BATCH) {
                        for ev in chunk {
                            e.apply(ev).unwrap();
                        }
                        e.emit_updates();
                        black_box(e.take_records());
                        black_box(e.take_notifications());
                    }
                    e
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// KPI records as JSON lines (file mode's output, the KPI topic's
/// payloads): `serde_json` record by record, and the writer that encodes
/// an emission's shared window and dimensions once into a reused buffer
/// (`output::JsonRecords`). The records are those of the generated events
/// (every window, emitted after each batch), written into a 64 KiB
/// buffer handed on when full, as the file sink does.
fn records(c: &mut Criterion) {
    use salespulse::output::JsonRecords;
    let lines = generated(1000);
    let mut e = Engine::from_config(&Config::default());
    let mut recs = Vec::new();
    for chunk in lines[..50_000].chunks(BATCH) {
        for l in chunk {
            e.process_json(l.as_bytes()).unwrap();
        }
        recs.extend(e.take_records());
    }
    eprintln!("{} records", recs.len());
    let mut g = c.benchmark_group("records_json");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.sample_size(10);
    g.bench_function("serde_json", |b| {
        let mut out: Vec<u8> = Vec::with_capacity(1 << 17);
        b.iter(|| {
            for r in &recs {
                serde_json::to_writer(&mut out, r).unwrap();
                out.push(b'\n');
                if out.len() >= 1 << 16 {
                    black_box(&out);
                    out.clear();
                }
            }
        })
    });
    g.bench_function("json_records_writer", |b| {
        let mut out: Vec<u8> = Vec::with_capacity(1 << 17);
        b.iter(|| {
            let mut w = JsonRecords::default();
            for r in &recs {
                w.write(r, &mut out);
                out.push(b'\n');
                if out.len() >= 1 << 16 {
                    black_box(&out);
                    out.clear();
                }
            }
        })
    });
    g.finish();
}

/// `/metrics` with `n` KPI series (every KPI of the catalogue in the
/// month window, for "all" and for reps): the text the scrape gets, and
/// its gzip.
fn render(c: &mut Criterion) {
    use salespulse::output::{KpiRecord, WindowInfo};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let mut g = c.benchmark_group("prometheus_render");
    for n in [10_000usize, 100_000] {
        let mut cfg = Config::default();
        cfg.prometheus.max_series = 1_000_000;
        let m = salespulse::metrics::Metrics::for_config(&cfg);
        let window = Arc::new(WindowInfo {
            kind: "month".into(),
            start: "2026-11-01T00:00:00Z".into(),
            end: "2026-12-01T00:00:00Z".into(),
            label: "2026-11".into(),
            start_ms: 1_793_491_200_000,
        });
        let kpis = salespulse::kpi::CATALOGUE;
        let per_kpi = n / kpis.len();
        let mut records = Vec::with_capacity(n);
        for def in kpis {
            for i in 0..per_kpi {
                let mut dims = BTreeMap::new();
                if i > 0 {
                    dims.insert("rep".to_string(), format!("Rep number {i}"));
                }
                records.push(KpiRecord {
                    kpi: def.name.into(),
                    unit: def.unit.as_str().into(),
                    window: window.clone(),
                    dimensions: Arc::new(dims),
                    value: Some(i as f64 * 1.37),
                    numerator: None,
                    denominator: None,
                    sample_size: i as u64,
                    is_final: false,
                    revision: 1,
                });
            }
        }
        m.observe(&records, &[]);
        let shown = m.kpis.series().0;
        assert!(shown >= n * 9 / 10, "{shown} series shown");
        g.throughput(Throughput::Elements(shown as u64));
        g.bench_function(format!("text_{}k_series", n / 1000), |b| {
            b.iter(|| black_box(m.render()))
        });
        g.bench_function(format!("text_gzip_{}k_series", n / 1000), |b| {
            b.iter(|| {
                use std::io::Write;
                let text = m.render();
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(text.as_bytes()).unwrap();
                black_box(z.finish().unwrap())
            })
        });
    }
    g.finish();
}

/// The forecast's Monte Carlo: 10,000 draws over 10,000 open deals (the
/// cost of one forecast with `forecast.draws = 10000`; the default 2,000
/// costs a fifth of it), with the default spread.
fn forecast(c: &mut Criterion) {
    let mut g = c.benchmark_group("forecast");
    g.sample_size(10);
    let deals: Vec<(f64, i64)> = (0..10_000)
        .map(|i| {
            (
                ((i * 7919) % 1000) as f64 / 1000.0,
                10_000 + (i * 104_729) % 5_000_000,
            )
        })
        .collect();
    g.throughput(Throughput::Elements(10_000 * 10_000));
    g.bench_function("monte_carlo_10k_draws_10k_deals", |b| {
        b.iter(|| {
            black_box(salespulse::engine::forecast::simulate(
                &deals, 10_000, 0.3, 1,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench, records, render, forecast);
criterion_main!(benches);
