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
use std::collections::BTreeMap;
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
        .env("RUST_LOG", "salespulse=info")
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

/// `salespulse_kafka_messages_consumed_total` of a running binary, read
/// from its /metrics (address from its log).
fn consumed(log: &str) -> u64 {
    use std::io::{Read, Write};
    let Some(addr) = log
        .lines()
        .find_map(|l| l.split("serving http://").nth(1))
        .and_then(|r| r.split('/').next())
    else {
        return 0;
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("salespulse_kafka_messages_consumed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Partitions named in the last "partitions assigned" line of a log.
fn assigned(log: &str) -> Vec<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))
        .map(|l| {
            l.split('"')
                .filter(|s| s.starts_with("split."))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_split_the_partitions_and_add_up() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [
        ("split.events", 3),
        ("split.kpis.a", 1),
        ("split.kpis.b", 1),
        ("split.dlq", 1),
    ] {
        broker.topic(t, p);
    }
    let toml = format!("{}[output]\nupdate_interval = \"200ms\"\n", roster_toml(6));
    let cfg_path = write_config(tmp.path(), "split.toml", &toml);
    let start = |kpis: &str| {
        salespulse(
            &cfg_path,
            &[
                "--brokers",
                &bs,
                "--input-topic",
                "split.events",
                "--kpi-topic",
                kpis,
                "--dlq-topic",
                "split.dlq",
                "--group-id",
                "split",
                "--listen",
                "127.0.0.1:0",
            ],
        )
    };
    let a = start("split.kpis.a");
    let b = start("split.kpis.b");
    // Wait until the group has settled with the partitions split between them.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (la, lb) = (
            assigned(&a.log.lock().unwrap()),
            assigned(&b.log.lock().unwrap()),
        );
        if !la.is_empty()
            && !lb.is_empty()
            && la.len() + lb.len() == 3
            && la.iter().all(|p| !lb.contains(p))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not split the partitions:\nA:\n{}\nB:\n{}",
            a.log.lock().unwrap(),
            b.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gen: Vec<Event<'static>> = Generator::new(GenConfig {
        seed: 9,
        start: ms("2026-07-01T00:00:00Z"),
        events_per_day: 300,
        reps: 6,
    })
    .take(4000)
    .collect();
    produce(&bs, "split.events", &keyed(&gen)).await;
    // Wait until the two have consumed every message between them (their
    // own /metrics say so), then stop them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = consumed(&a.log.lock().unwrap()) + consumed(&b.log.lock().unwrap());
        if n >= gen.len() as u64 {
            assert_eq!(n, gen.len() as u64, "no message consumed twice");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {} consumed",
            gen.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let la = a.stop(Duration::from_secs(60));
    let lb = b.stop(Duration::from_secs(60));

    // Latest value of each series from each consumer; additive KPIs add up.
    let latest = |topic: &str| -> BTreeMap<String, KpiRecord> {
        let mut m = BTreeMap::new();
        for r in records(&bs, topic) {
            m.insert(salespulse::kafka::record_key(&r), r);
        }
        m
    };
    let (ra, rb) = (latest("split.kpis.a"), latest("split.kpis.b"));
    // Nothing was late: a partition that tansu serves in bursts stays
    // active for kafka.idle_partition_timeout (30 s), so it holds the clock.
    assert!(
        read_topic(&bs, "split.dlq").is_empty(),
        "dead letters:\nA:\n{la}\nB:\n{lb}"
    );
    let cfg = Config::from_toml(&toml).unwrap();
    let want = file_mode(&cfg, &gen);
    let mut checked = 0;
    for w in want.iter().filter(|r| {
        r.is_final
            && r.dimensions.is_empty()
            && ["day", "month"].contains(&r.window.kind.as_str())
            && ["leads_created", "deals_won", "revenue", "win_rate"].contains(&&*r.kpi)
    }) {
        let k = salespulse::kafka::record_key(w);
        let part = |m: &BTreeMap<String, KpiRecord>| {
            m.get(&k).map_or((0.0, 0.0), |r| {
                (r.numerator.unwrap_or(0.0), r.denominator.unwrap_or(0.0))
            })
        };
        let (pa, pb) = (part(&ra), part(&rb));
        let num = pa.0 + pb.0;
        assert!(
            (num - w.numerator.unwrap_or(0.0)).abs() < 0.005,
            "{k}: {num} = {} + {} vs {:?}\nA:\n{la}\nB:\n{lb}",
            pa.0,
            pb.0,
            w.numerator
        );
        if w.kpi == "win_rate" {
            assert!(
                (pa.1 + pb.1 - w.denominator.unwrap_or(0.0)).abs() < 1e-9,
                "{k} denominator"
            );
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} series checked");
    let leads = |m: &BTreeMap<String, KpiRecord>| -> f64 {
        m.values()
            .filter(|r| {
                r.kpi == "leads_created" && r.window.kind == "day" && r.dimensions.is_empty()
            })
            .filter_map(|r| r.value)
            .sum()
    };
    assert!(
        leads(&ra) > 0.0 && leads(&rb) > 0.0,
        "both consumers counted some leads"
    );
}
