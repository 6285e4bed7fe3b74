//! End to end on tansu, a real Kafka-protocol broker (installed by
//! scripts/install-tansu.sh, started here on a free port): the binary
//! consumes the Maven CRM replay and a generated stream from 3-partition
//! topics, the final KPI records on the KPI topic equal file mode's, bad
//! events are in the dead-letter topic with their reason, and two
//! consumers in one group split the partitions and together give the
//! same result.

mod common;
#[path = "common/kafka.rs"]
mod kafka_util;

use common::*;
use kafka_util::*;
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::engine::Engine;
use salespulse::event::Event;
use salespulse::generator::{GenConfig, Generator};
use salespulse::output::KpiRecord;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUIET: &str = "[kafka]\nend_quiet = \"8s\"\n";

/// A tansu broker on a free port, killed on drop.
struct Tansu {
    child: Child,
    url: String,
    bootstrap: String,
}

impl Tansu {
    fn start() -> Tansu {
        let bin = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin}: {e} (run ./scripts/install-tansu.sh, or ./scripts/test.sh which does)")
            });
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu {
            child,
            url,
            bootstrap,
        }
    }

    fn topic(&self, name: &str, partitions: u32) {
        let bin = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        let st = Command::new(bin)
            .args(["topic", "create", name, "--broker", &self.url])
            .args(["--partitions", &partitions.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "tansu topic create {name}");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn roster_toml(reps: u32) -> String {
    salespulse::generator::roster(reps)
        .iter()
        .map(|(n, t, r)| format!("[[reps]]\nname = \"{n}\"\nteam = \"{t}\"\nregion = \"{r}\"\n"))
        .collect()
}

/// The binary, consuming from Kafka with the given extra arguments; its
/// stderr is collected in the background.
struct Run {
    child: Child,
    log: Arc<Mutex<String>>,
}

fn salespulse(config: &Path, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_salespulse"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "salespulse=info".into()),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = l.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    Run { child, log }
}

impl Run {
    fn wait(mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let log = self.log.lock().unwrap().clone();
                assert!(st.success(), "salespulse failed: {st}\n{log}");
                return log;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("salespulse did not finish\n{}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Messages consumed so far, from the instance's /metrics (once it
    /// serves them).
    fn consumed(&self, topic: &str) -> Option<u64> {
        let log = self.log.lock().unwrap().clone();
        let addr = log
            .split("serving http://")
            .nth(1)?
            .split('/')
            .next()?
            .to_string();
        let metrics = http_get(&addr, "/metrics")?;
        let prefix = format!("salespulse_kafka_messages_consumed_total{{topic=\"{topic}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    fn stop(self, limit: Duration) -> String {
        unsafe_sigterm(self.child.id());
        self.wait(limit)
    }
}

fn unsafe_sigterm(pid: u32) {
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn records(bootstrap: &str, topic: &str) -> Vec<KpiRecord> {
    read_topic(bootstrap, topic)
        .iter()
        .map(|m| serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap())
        .collect()
}

fn file_mode(cfg: &Config, events: &[Event<'_>]) -> Vec<KpiRecord> {
    let mut e = Engine::from_config(cfg);
    for ev in events {
        e.process_json(cej::encode(ev).as_bytes()).unwrap();
    }
    e.finish();
    e.take_records()
}

fn keyed(events: &[Event<'_>]) -> Vec<Out> {
    events
        .iter()
        .map(|e| Out::plain(e.partition_key(), cej::encode(e).into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maven_replay_and_generated_stream_through_tansu_equal_file_mode() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();

    // 1. The Maven CRM replay.
    for (t, p) in [("maven.events", 3), ("maven.kpis", 1), ("maven.dlq", 1)] {
        broker.topic(t, p);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/maven-crm");
    let (maven, _) = salespulse::maven::convert(&dir).unwrap();
    produce(&bs, "maven.events", &keyed(&maven)).await;
    // tansu 0.6 reports end offsets short of what it holds: --to-end then
    // relies on a quiet period (kafka.end_quiet) to know it is done.
    let cfg_path = write_config(tmp.path(), "maven.toml", QUIET);
    let log = salespulse(
        &cfg_path,
        &[
            "--brokers",
            &bs,
            "--input-topic",
            "maven.events",
            "--kpi-topic",
            "maven.kpis",
            "--dlq-topic",
            "maven.dlq",
            "--group-id",
            "maven",
            "--to-end",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .wait(Duration::from_secs(300));
    assert!(log.contains("consumed to its end"), "{log}");
    assert!(
        log.contains(&format!("accepted={} ", maven.len())),
        "every Maven event consumed:\n{log}"
    );
    let want = finals(&file_mode(&Config::default(), &maven));
    assert!(want.len() > 1000, "{} maven series", want.len());
    assert_same_finals(&finals(&records(&bs, "maven.kpis")), &want);
    assert!(read_topic(&bs, "maven.dlq").is_empty());

    // 2. A generated stream with bad events in it.
    for (t, p) in [("gen.events", 3), ("gen.kpis", 1), ("gen.dlq", 1)] {
        broker.topic(t, p);
    }
    let gen: Vec<Event<'static>> = Generator::new(GenConfig {
        seed: 5,
        start: ms("2026-05-01T00:00:00Z"),
        events_per_day: 300,
        reps: 6,
    })
    .take(6000)
    .collect();
    let mut msgs = keyed(&gen);
    msgs.insert(10, Out::plain("bad-json", b"{\"specversion\":".to_vec()));
    msgs.insert(
        3000,
        Out::plain(
            "bad-nps",
            ce(
                "bad-nps",
                "crm.survey.answered",
                "2026-05-05T00:00:00Z",
                serde_json::json!({"customer_id": "c", "nps": 42}),
            ),
        ),
    );
    produce(&bs, "gen.events", &msgs).await;
    let toml = format!("{}{QUIET}", roster_toml(6));
    let cfg_path = write_config(tmp.path(), "gen.toml", &toml);
    salespulse(
        &cfg_path,
        &[
            "--brokers",
            &bs,
            "--input-topic",
            "gen.events",
            "--kpi-topic",
            "gen.kpis",
            "--dlq-topic",
            "gen.dlq",
            "--group-id",
            "gen",
            "--to-end",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .wait(Duration::from_secs(300));
    let cfg = Config::from_toml(&toml).unwrap();
    assert_same_finals(
        &finals(&records(&bs, "gen.kpis")),
        &finals(&file_mode(&cfg, &gen)),
    );
    let dlq = read_topic(&bs, "gen.dlq");
    let mut reasons: Vec<String> = dlq
        .iter()
        .map(|m| header(m, "salespulse.reason").unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["malformed_json", "nps_out_of_range"]);
    for m in &dlq {
        assert_eq!(
            header(m, "salespulse.source.topic").as_deref(),
            Some("gen.events")
        );
    }
}

/// A killed instance leaves the consumer group after 6 s.
const FAST_FAILOVER: &str =
    "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";

fn sigkill(run: Run) {
    let mut child = run.child;
    let _ = child.kill();
    let _ = child.wait();
}

/// Config of the recovery tests: reps listed (every partition knows a
/// rep's team), checkpoints every second, tansu's quiet period.
fn recovery_config(dir: &Path, extra: &str) -> (PathBuf, Config) {
    let toml = format!(
        "{}[output]\nupdate_interval = \"200ms\"\n[kafka]\nend_quiet = \"20s\"\ncheckpoint_interval = \"1s\"\n{extra}",
        roster_toml(6)
    );
    (
        write_config(dir, "recovery.toml", &toml),
        Config::from_toml(&toml).unwrap(),
    )
}

fn generated(n: usize, seed: u64) -> Vec<Event<'static>> {
    Generator::new(GenConfig {
        seed,
        start: ms("2026-03-01T00:00:00Z"),
        events_per_day: 2000,
        reps: 6,
    })
    .take(n)
    .collect()
}

fn start_run(cfg: &Path, bs: &str, topic: &str, kpis: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--brokers",
        bs,
        "--input-topic",
        topic,
        "--kpi-topic",
        kpis,
        "--dlq-topic",
        "recovery.dlq",
        "--group-id",
        "recovery",
        "--to-end",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    salespulse(cfg, &args)
}

/// Every final record of a key on the KPI topic has the same values
/// (a record repeated after a crash is the same record), and together
/// they equal file mode's finals.
fn assert_kafka_finals_equal_file_mode(bs: &str, kpis: &str, cfg: &Config, evs: &[Event<'_>]) {
    let recs = records(bs, kpis);
    assert_finals_agree(&recs);
    let want = finals(&file_mode(cfg, evs));
    assert!(want.len() > 1000, "{} final series", want.len());
    let got = finals(&recs);
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len(), "no extra final series");
}

/// Issue 6, test 1: 200,000 events; the process is killed with SIGKILL at
/// several random points and restarted each time; the final KPI records
/// equal those of an uninterrupted (file-mode) run exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_counts_nothing_twice() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [("crash.events", 3), ("crash.kpis", 1), ("recovery.dlq", 1)] {
        broker.topic(t, p);
    }
    let evs = generated(200_000, 21);
    produce(&bs, "crash.events", &keyed(&evs)).await;
    // The killed members leave the group after session.timeout.ms.
    let (cfg_path, cfg) = recovery_config(tmp.path(), FAST_FAILOVER);
    let mut rng = fastrand::Rng::with_seed(6);
    let mut kills = 0;
    for _ in 0..4 {
        let run = start_run(&cfg_path, &bs, "crash.events", "crash.kpis", &[]);
        // A random point: after 3 to 12 s of processing (restore included).
        let at = Duration::from_millis(rng.u64(3_000..12_000));
        let t0 = Instant::now();
        while t0.elapsed() < at {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if run.log.lock().unwrap().contains("every window is closed") {
            break;
        }
        sigkill(run);
        kills += 1;
    }
    let log =
        start_run(&cfg_path, &bs, "crash.events", "crash.kpis", &[]).wait(Duration::from_secs(600));
    assert!(log.contains("every window is closed"), "{log}");
    assert!(kills >= 2, "killed {kills} times");
    assert!(
        log.contains("partition state restored from the changelog"),
        "the last run restored:\n{log}"
    );
    assert_kafka_finals_equal_file_mode(&bs, "crash.kpis", &cfg, &evs);
    assert!(read_topic(&bs, "recovery.dlq").is_empty());
}

/// Issue 6, test 2: SIGTERM in the middle of the stream (drain, last
/// checkpoint, commit, exit 0), then a restart: the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_gives_the_same_result() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [("term.events", 3), ("term.kpis", 1), ("recovery.dlq", 1)] {
        broker.topic(t, p);
    }
    let evs = generated(60_000, 22);
    produce(&bs, "term.events", &keyed(&evs)).await;
    let (cfg_path, cfg) = recovery_config(tmp.path(), "");
    let run = start_run(&cfg_path, &bs, "term.events", "term.kpis", &[]);
    // Mid-stream: once a sixth of the events is consumed.
    let t0 = Instant::now();
    while run.consumed("term.events").unwrap_or(0) < 10_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "consumption did not start:\n{}",
            run.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = run.stop(Duration::from_secs(60));
    assert!(first.contains("stop signal received"), "{first}");
    assert!(
        !first.contains("every window is closed"),
        "stopped mid-stream:\n{first}"
    );
    let accepted = |log: &str| -> u64 {
        log.split("done accepted=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no report:\n{log}"))
    };
    let before = accepted(&first);
    assert!(
        (10_000..60_000).contains(&before),
        "stopped mid-stream: {before} of 60,000 events counted before the stop"
    );
    let log =
        start_run(&cfg_path, &bs, "term.events", "term.kpis", &[]).wait(Duration::from_secs(300));
    assert!(
        log.contains("partition state restored from the changelog"),
        "{log}"
    );
    assert!(
        log.contains("merger state restored from the changelog"),
        "{log}"
    );
    if std::env::var_os("TEST_PRINT_LOGS").is_some() {
        eprintln!("first run:\n{first}\nsecond run:\n{log}");
    }
    // The second run counted the rest, and nothing twice.
    assert_eq!(before + accepted(&log), 60_000);
    assert_kafka_finals_equal_file_mode(&bs, "term.kpis", &cfg, &evs);
}

/// Issue 6, test 3: three instances on a 6-partition topic; one is killed
/// mid-stream and another joins; the final KPIs equal the single-instance
/// file-mode run on the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_with_a_killed_and_a_joining_instance_equals_file_mode() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [("group.events", 6), ("group.kpis", 1), ("recovery.dlq", 1)] {
        broker.topic(t, p);
    }
    let evs = generated(60_000, 23);
    produce(&bs, "group.events", &keyed(&evs)).await;
    let (cfg_path, cfg) = recovery_config(tmp.path(), FAST_FAILOVER);
    let start = || start_run(&cfg_path, &bs, "group.events", "group.kpis", &[]);
    let a = start();
    let b = start();
    let c = start();
    tokio::time::sleep(Duration::from_secs(8)).await;
    sigkill(b);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = start();
    let logs: Vec<String> = [a, c, d]
        .into_iter()
        .map(|r| r.wait(Duration::from_secs(600)))
        .collect();
    if std::env::var_os("TEST_PRINT_LOGS").is_some() {
        eprintln!("{}", logs.join("\n-----\n"));
    }
    assert!(
        logs.iter().any(|l| l.contains("every window is closed")),
        "one instance merged to the end:\n{}",
        logs.join("\n-----\n")
    );
    assert_kafka_finals_equal_file_mode(&bs, "group.kpis", &cfg, &evs);
}

/// Issue 6, test 4: a damaged checkpoint in the changelog stops the run
/// with an error naming it and the way out; `--fresh` rebuilds from the
/// input topic and gives the right numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_changelog_checkpoint_is_refused_and_fresh_rebuilds() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [("bad.events", 3), ("bad.kpis", 1), ("recovery.dlq", 1)] {
        broker.topic(t, p);
    }
    let evs = generated(5_000, 24);
    produce(&bs, "bad.events", &keyed(&evs)).await;
    let (cfg_path, cfg) = recovery_config(tmp.path(), "");
    let first =
        start_run(&cfg_path, &bs, "bad.events", "bad.kpis", &[]).wait(Duration::from_secs(300));
    assert!(first.contains("every window is closed"), "{first}");
    // A flipped byte in the newest checkpoint of partition 1: its chunk
    // still decodes, the checkpoint's checksum does not match.
    let msgs = read_topic(&bs, "recovery.changelog");
    let m = msgs
        .iter()
        .rev()
        .find(|m| rdkafka::Message::key(*m) == Some(b"source/bad.events/1#0".as_slice()))
        .expect("a checkpoint of partition 1");
    let mut chunk: salespulse::changelog::Chunk =
        postcard::from_bytes(rdkafka::Message::payload(m).unwrap()).unwrap();
    let n = chunk.data.len();
    chunk.data[n / 2] ^= 0x40;
    let bad = postcard::to_stdvec(&chunk).unwrap();
    produce_to(&bs, "recovery.changelog", 1, "source/bad.events/1#0", bad).await;
    let mut run = start_run(&cfg_path, &bs, "bad.events", "bad.kpis", &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let st = loop {
        if let Some(st) = run.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the damaged checkpoint was not refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = run.log.lock().unwrap().clone();
    assert!(!st.success(), "{log}");
    assert!(
        log.contains("recovery.changelog partition 1")
            && log.contains("source/bad.events/1")
            && log.contains("checksum mismatch")
            && log.contains("--fresh"),
        "{log}"
    );
    broker.topic("bad.kpis2", 1);
    let fresh = start_run(&cfg_path, &bs, "bad.events", "bad.kpis2", &["--fresh"]);
    let log = fresh.wait(Duration::from_secs(300));
    assert!(
        log.contains("no checkpoint: reading the partition from its start"),
        "{log}"
    );
    assert_kafka_finals_equal_file_mode(&bs, "bad.kpis2", &cfg, &evs);
}
