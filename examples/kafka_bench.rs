//! Kafka benchmark (not a test): run it with `scripts/bench-kafka.sh`,
//! which starts tansu, creates the topics and calls
//! `kafka_bench BOOTSTRAP N RATE SECONDS`.
//!
//! 1. Throughput: N generated events are produced to `bench.events`
//!    (3 partitions); then a bare rdkafka consume loop reads them all, and
//!    the full salespulse pipeline (decode, every KPI, records produced to
//!    `bench.kpis`, commits) consumes them `--to-end`. Reported per CPU
//!    second of this process (events/s per core) and as their ratio.
//! 2. Latency: events are produced at RATE events/s for SECONDS to
//!    `bench.live` while the pipeline runs live (updates every 100 ms),
//!    from the moment it consumes (its partitions assigned and restored,
//!    the merger on it: the steady state; the start-up is printed apart);
//!    a reader of `bench.live.kpis` sees each `leads_created` count and
//!    so when every lead it covers was published. p50 / p99 of produce →
//!    KPI publish (read back), and of produce → KPI record handed to the
//!    producer (the record's Kafka CreateTime: the pipeline's share).
//!    The pipeline's own split follows: `consume delay` (produce → read)
//!    and `publish delay` (read → update handed to the producer), from
//!    its histograms.
//!    The producer and the reader run in a child process (`kafka_bench
//!    --load …`), so the live stage's CPU is the pipeline's alone; the
//!    load's own CPU is printed next to it.
//!    The reader starts at the beginning of the fresh topic: with
//!    `latest`, an offset reset skipped records.
//! 3. With `KAFKA_BENCH_RATES` (e.g. `"5000 10000 20000"`), the latency
//!    stage again at each of those rates, each on fresh topics
//!    (`bench.live.rR`, created here) and a fresh pipeline: the highest
//!    rate at which every event is seen published (and with what
//!    latency) is the highest the machine sustains.
//!
//! Knobs and diagnostics (environment): `KAFKA_BENCH_TOML` (appended to
//! the pipeline's configuration), `KAFKA_BENCH_UPDATE` (the live stage's
//! `output.update_interval`, default 100ms), `KAFKA_BENCH_TOPICS` (after
//! the throughput stage: messages in the partials, changelog and KPI
//! topics, and the partials' items by kind), `KAFKA_BENCH_LOG` (a
//! tracing filter, e.g. `salespulse=debug`).

/// mimalloc, as in the `salespulse` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
use salespulse::event::{LeadCreated, Payload};
use salespulse::kafka::{run, KafkaOptions};
use salespulse::metrics::Metrics;
use salespulse::output::KpiRecord;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU seconds used by this process so far (user + system, all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

async fn produce(bs: &str, topic: &str, lines: &[(String, String)]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let mut futs = Vec::new();
    for (k, v) in lines {
        loop {
            match p.send_result(FutureRecord::to(topic).key(k).payload(v)) {
                Ok(f) => {
                    futs.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The pipeline's configuration; `KAFKA_BENCH_TOML` is appended to it
/// (to try knobs, e.g. `[kafka.properties]` on its own line first).
fn config(bs: &str, topic: &str, kpis: &str, group: &str, update: &str) -> Config {
    let extra = std::env::var("KAFKA_BENCH_TOML").unwrap_or_default();
    Config::from_toml(&format!(
        "[output]\nupdate_interval = \"{update}\"\n[kafka]\nbrokers = \"{bs}\"\ninput_topics = [\"{topic}\"]\nkpi_topic = \"{kpis}\"\n\
         group_id = \"{group}\"\nend_quiet = \"8s\"\n{extra}\n"
    ))
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("KAFKA_BENCH_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("KAFKA_BENCH_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let mut a = std::env::args().skip(1).peekable();
    if a.peek().is_some_and(|f| f == "--load") {
        a.next();
        let bs = a.next().expect("BOOTSTRAP");
        let rate: f64 = a.next().expect("RATE").parse().unwrap();
        let secs: u64 = a.next().expect("SECONDS").parse().unwrap();
        let (topic, kpis) = (a.next().expect("TOPIC"), a.next().expect("KPI_TOPIC"));
        return load(bs, rate, secs, topic, kpis).await;
    }
    let bs = a.next().expect("BOOTSTRAP");
    let n: usize = a.next().map_or(200_000, |s| s.parse().unwrap());
    let rate: f64 = a.next().map_or(2000.0, |s| s.parse().unwrap());
    let secs: u64 = a.next().map_or(10, |s| s.parse().unwrap());

    // 1. Throughput.
    let lines: Vec<(String, String)> = Generator::new(GenConfig {
        seed: 1,
        start: DEFAULT_START,
        events_per_day: 5000,
        reps: 12,
    })
    .take(n)
    .map(|e| (e.partition_key().to_string(), cej::encode(&e)))
    .collect();
    produce(&bs, "bench.events", &lines).await;
    eprintln!("produced {n} events");

    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "bench-bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["bench.events"]).unwrap();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut bytes = 0usize;
    for _ in 0..n {
        let m = c.recv().await.unwrap();
        bytes += m.payload().map_or(0, <[u8]>::len);
    }
    let (bare_wall, bare_cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    drop(c);
    std::hint::black_box(bytes);

    let cfg = config(&bs, "bench.events", "bench.kpis", "bench-full", "1s");
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let metrics = Arc::new(Metrics::new());
    let opts = KafkaOptions {
        to_end: true,
        live_updates: false,
        metrics: metrics.clone(),
        fresh: false,
        progress: false,
    };
    // The run waits `kafka.end_quiet` before it stops, and librdkafka
    // keeps fetching meanwhile: measure up to the last message instead.
    let watch = tokio::spawn(async move {
        let c = metrics.kafka.consumed.with_label_values(&["bench.events"]);
        while (c.get() as usize) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (t0.elapsed().as_secs_f64(), cpu_seconds() - c0)
    });
    let report = run(&cfg, opts).await.unwrap();
    let (full_wall, full_cpu) = watch.await.unwrap();
    if std::env::var("KAFKA_BENCH_TOPICS").is_ok() {
        let c: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bs)
            .create()
            .unwrap();
        for t in ["bench-full.partials", "bench-full.changelog", "bench.kpis"] {
            let md = c.fetch_metadata(Some(t), Duration::from_secs(5)).unwrap();
            let parts = md.topics()[0].partitions().len() as i32;
            let mut total = 0;
            for p in 0..parts {
                total += c.fetch_watermarks(t, p, Duration::from_secs(5)).unwrap().1;
            }
            eprintln!("topic {t}: {total} messages");
        }
        let pc: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bs)
            .set("group.id", "diag")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        pc.subscribe(&["bench-full.partials"]).unwrap();
        let mut kinds: std::collections::BTreeMap<&str, (usize, usize, usize)> = Default::default();
        let mut bytes = 0;
        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(3), pc.recv()).await {
            let pl = m.payload().unwrap_or_default();
            bytes += pl.len();
            let p = salespulse::engine::merge::Partial::decode(pl).unwrap();
            for it in &p.items {
                use salespulse::engine::merge::Item;
                let (k, n) = match it {
                    Item::Day { cells, .. } => ("day", cells.scopes.len() + cells.pairs.len()),
                    Item::Rolling { cells, .. } => {
                        ("rolling", cells.scopes.len() + cells.pairs.len())
                    }
                    Item::Ledger { slots, .. } => ("ledger", slots.len()),
                    Item::Cohort { cells, .. } => ("cohort", cells.len()),
                    Item::Pipeline { cells } => ("pipeline", cells.len()),
                    Item::Deals { rows, .. } => ("deals", rows.len()),
                    Item::Customers { rows, .. } => ("customers", rows.len()),
                    _ => ("misc", 1),
                };
                let e = kinds.entry(k).or_default();
                e.0 += 1;
                e.1 += n;
                e.2 += postcard::experimental::serialized_size(it).unwrap_or(0);
            }
        }
        eprintln!("partials: {bytes} bytes; items (count, cells, bytes): {kinds:?}");
    }
    assert_eq!(report.accepted as usize, n);
    let per_core = |cpu: f64| n as f64 / cpu;
    println!(
        "throughput, {n} events: bare rdkafka consume {:.0} events/s per CPU-second ({:.0}/s wall); \
         full pipeline {:.0} events/s per CPU-second ({:.0}/s wall, {} records); ratio full/bare {:.2}",
        per_core(bare_cpu),
        n as f64 / bare_wall,
        per_core(full_cpu),
        n as f64 / full_wall,
        report.records,
        per_core(full_cpu) / per_core(bare_cpu),
    );

    // 2. Latency at a fixed rate, then (`KAFKA_BENCH_RATES`) at others.
    let update = std::env::var("KAFKA_BENCH_UPDATE").unwrap_or_else(|_| "100ms".into());
    live_stage(&bs, "bench.live", rate, secs, &update).await;
    let rates = std::env::var("KAFKA_BENCH_RATES").unwrap_or_default();
    for r in rates.split_whitespace() {
        let r: f64 = r.parse().expect("KAFKA_BENCH_RATES: events per second");
        let topic = format!("bench.live.r{r:.0}");
        create_topics(&bs, &[(&topic, 3), (&format!("{topic}.kpis"), 1)]).await;
        live_stage(&bs, &topic, r, secs, &update).await;
    }
}

/// The `q` quantile of a histogram, interpolated within its bucket as
/// Prometheus' `histogram_quantile` does.
fn quantile(h: &prometheus::Histogram, q: f64) -> f64 {
    use prometheus::core::Metric as _;
    let m = h.metric();
    let b = m.get_histogram().get_bucket();
    let total = h.get_sample_count() as f64;
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for x in b {
        let (up, n) = (x.upper_bound(), x.cumulative_count() as f64);
        if n >= rank && n > below {
            return lo + (up - lo) * (rank - below) / (n - below);
        }
        (lo, below) = (up, n);
    }
    lo
}

/// Creates topics (name, partitions) on the broker.
async fn create_topics(bs: &str, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(-1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.expect("topic created");
    }
}

/// The live pipeline on `topic` (its KPIs to `topic.kpis`), and the load
/// at `rate` events/s for `secs` in a child process, started once the
/// pipeline consumes (its partitions assigned and restored, the merger
/// here): the figures are of the steady state, the start-up is printed
/// apart. Prints the stage's line.
async fn live_stage(bs: &str, topic: &str, rate: f64, secs: u64, update: &str) {
    let kpis = format!("{topic}.kpis");
    let cfg = config(bs, topic, &kpis, &format!("{topic}.group"), update);
    let live_metrics = Arc::new(Metrics::new());
    let opts = KafkaOptions {
        to_end: false,
        live_updates: true,
        metrics: live_metrics.clone(),
        fresh: false,
        progress: false,
    };
    let live_cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let pipeline = tokio::spawn(async move { run(&cfg, opts).await });
    let ready = loop {
        let m = &live_metrics;
        if m.kafka.restored.get() == 3 && m.kpis.shown() || pipeline.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The load (producer and reader) runs in a child process, so that
    // the CPU measured here is the pipeline's alone.
    let exe = std::env::current_exe().expect("own path");
    let child = std::process::Command::new(exe)
        .args([
            "--load",
            bs,
            &rate.to_string(),
            &secs.to_string(),
            topic,
            &kpis,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the load process starts");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("the load process ends");
    let live_cpu = cpu_seconds() - live_cpu0;
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("the load's figures"))
        .collect();
    let &[seen, records_read, high, p50, p99, h50, h99, load_cpu, sent_rate] = f.as_slice() else {
        panic!("the load process printed {line:?}");
    };
    let total = (rate * secs as f64) as usize;
    let consumed = live_metrics
        .kafka
        .consumed
        .with_label_values(&[topic])
        .get();
    if (seen as usize) < total {
        eprintln!(
            "only {seen} of {total} events were seen published within {} s ({records_read} of {high} KPI records read; {consumed} consumed, {:?} in the merger's last record)",
            secs + 30,
            live_metrics.current("leads_created", "day").and_then(|r| r.value),
        );
    }
    if pipeline.is_finished() {
        // A live pipeline runs until stopped: an end is a failure.
        eprintln!("the live pipeline ended: {:?}", pipeline.await);
    } else {
        pipeline.abort();
    }
    if h50 >= 0.0 {
        eprintln!("of which produce → KPI record handed to the producer: p50 {h50:.0} ms, p99 {h99:.0} ms");
    }
    let k = &live_metrics.kafka;
    let ms = |h: &prometheus::Histogram, q: f64| quantile(h, q) * 1000.0;
    eprintln!(
        "the pipeline's histograms: consume delay (produce → read) p50 {:.0} ms, p99 {:.0} ms; \
         publish delay (read → update handed to the producer) p50 {:.0} ms, p99 {:.0} ms",
        ms(&k.consume_delay, 0.5),
        ms(&k.consume_delay, 0.99),
        ms(&k.publish_delay, 0.5),
        ms(&k.publish_delay, 0.99),
    );
    println!(
        "latency produce → KPI publish at {rate:.0} events/s for {secs}s ({seen} events, sent at {sent_rate:.0}/s, \
         updates every {update}, pipeline {live_cpu:.1} CPU-s with {:.1} s of start-up, load {load_cpu:.1} CPU-s, \
         {records_read} KPI records read): p50 {p50:.0} ms, p99 {p99:.0} ms",
        ready.as_secs_f64()
    );
}

/// The live stage's load, in its own process (`kafka_bench --load
/// BOOTSTRAP RATE SECONDS TOPIC KPI_TOPIC`): a reader of KPI_TOPIC, then
/// events produced to TOPIC at RATE for SECONDS. Prints one line: events
/// seen published, KPI records read, the KPI topic's end offset, p50 and
/// p99 of produce → read back, p50 and p99 of produce → handed to the
/// producer (-1 when unknown), this process's CPU seconds, and the rate
/// the events were sent at.
async fn load(bs: String, rate: f64, secs: u64, topic: String, kpis: String) {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "bench-reader")
        .set("auto.offset.reset", "earliest")
        // The reader is the instrument: it must not add its own fetch wait.
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    reader.subscribe(&[&kpis]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let total = (rate * secs as f64) as usize;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let sent = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let s2 = sent.clone();
    // Live events are dated now (a date past the wall clock would be
    // dead-lettered as `future`).
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Sent without waiting for each delivery (that would cap the rate),
    // on time: the due instant of event `i` is `i / rate` s after the start.
    let prod = tokio::spawn(async move {
        let start = Instant::now();
        let mut deliveries = Vec::with_capacity(total);
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let e = salespulse::event::Event {
                id: Cow::Owned(format!("live-{i}")),
                source: Cow::Borrowed("bench"),
                time: day + (i as f64 * 1000.0 / rate) as i64,
                subject: None,
                payload: Payload::LeadCreated(LeadCreated {
                    lead_id: Cow::Owned(format!("live-lead-{i}")),
                    channel: Cow::Borrowed("web"),
                    rep: None,
                    campaign: None,
                    variant: None,
                    team: None,
                    region: None,
                    segment: None,
                }),
            };
            let v = cej::encode(&e);
            s2.lock().unwrap().push((Instant::now(), wall_ms()));
            loop {
                match producer.send_result(FutureRecord::to(&topic).key(&*e.id).payload(&v)) {
                    Ok(d) => break deliveries.push(d),
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
        let sent_rate = total as f64 / start.elapsed().as_secs_f64();
        for d in deliveries {
            let _ = d.await;
        }
        sent_rate
    });
    let mut latencies = Vec::with_capacity(total);
    // Produce → the KPI record handed to salespulse's producer (its
    // Kafka CreateTime): the pipeline's share, without the broker's and
    // the reader's.
    let mut handed = Vec::with_capacity(total);
    let mut records_read = 0usize;
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    while latencies.len() < total && Instant::now() < deadline {
        let m = match tokio::time::timeout(Duration::from_secs(1), reader.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                eprintln!("the reader's consumer: {e}");
                continue;
            }
            Err(_) => continue,
        };
        records_read += 1;
        let Some(r) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<KpiRecord>(p).ok())
        else {
            continue;
        };
        if r.kpi != "leads_created" || r.window.kind != "day" || !r.dimensions.is_empty() {
            continue;
        }
        let now = Instant::now();
        let covered = r.value.unwrap_or(0.0) as usize;
        let sent = sent.lock().unwrap();
        let created = m.timestamp().to_millis();
        while latencies.len() < covered.min(sent.len()) {
            let (at, ms) = sent[latencies.len()];
            latencies.push(now.duration_since(at).as_secs_f64() * 1000.0);
            if let Some(c) = created {
                handed.push((c - ms) as f64);
            }
        }
    }
    let sent_rate = prod.await.unwrap();
    let high = reader
        .fetch_watermarks(&kpis, 0, Duration::from_secs(5))
        .map_or(-1, |w| w.1);
    latencies.sort_by(f64::total_cmp);
    handed.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(-1.0)
    };
    println!(
        "{} {records_read} {high} {} {} {} {} {} {sent_rate}",
        latencies.len(),
        q(&latencies, 0.5),
        q(&latencies, 0.99),
        q(&handed, 0.5),
        q(&handed, 0.99),
        cpu_seconds()
    );
}
