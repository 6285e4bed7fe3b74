//! A tansu broker and the salespulse binary as child processes, for the
//! end-to-end tests on a real Kafka-protocol broker. Needs the test
//! crate's `common` and `kafka_util` modules.
#![allow(dead_code)]

use crate::common::http_get;
use crate::kafka_util::{assert_finals_agree, assert_same_finals, finals, read_topic, Out};
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::demo::generator::{GenConfig, Generator};
use salespulse::engine::Engine;
use salespulse::event::Event;
use salespulse::output::KpiRecord;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tansu broker on a free port, killed on drop.
pub struct Tansu {
    child: Child,
    pub url: String,
    pub bootstrap: String,
}

impl Tansu {
    pub fn start() -> Tansu {
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

    pub fn topic(&self, name: &str, partitions: u32) {
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

/// The binary, consuming from Kafka with the given extra arguments; its
/// stderr is collected in the background.
pub struct Run {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

pub fn salespulse(config: &Path, args: &[&str]) -> Run {
    salespulse_env(config, args, &[])
}

/// [`salespulse`] with extra environment variables.
pub fn salespulse_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
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
        .envs(env.iter().copied())
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
    pub fn wait(self, limit: Duration) -> String {
        let (st, log) = self.finish(limit);
        assert!(st.success(), "salespulse failed: {st}\n{log}");
        log
    }

    /// Waits for the exit (kills and panics after `limit`): its status and log.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, self.log.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("salespulse did not finish\n{}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The address of the instance's HTTP server, once it logged it.
    pub fn addr(&self) -> Option<String> {
        let log = self.log.lock().unwrap().clone();
        Some(
            log.split("serving http://")
                .nth(1)?
                .split('/')
                .next()?
                .to_string(),
        )
    }

    /// The value of one series of the instance's /metrics (`series` is
    /// the name with its labels, as exposed), once it serves them.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let metrics = http_get(&self.addr()?, "/metrics")?;
        let prefix = format!("{series} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
    }

    /// Messages consumed so far, from the instance's /metrics (once it
    /// serves them).
    pub fn consumed(&self, topic: &str) -> Option<u64> {
        self.metric(&format!(
            "salespulse_kafka_messages_consumed_total{{topic=\"{topic}\"}}"
        ))
        .map(|v| v as u64)
    }

    /// Waits until the instance's log holds `text` (panics with the log
    /// after `limit`).
    pub async fn wait_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log.lock().unwrap().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log within {limit:?}:\n{}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether `/readyz` answers ready.
    pub fn ready(&self) -> bool {
        self.addr().and_then(|a| http_get(&a, "/readyz")).is_some()
    }

    pub fn stop(self, limit: Duration) -> String {
        unsafe_sigterm(self.child.id());
        self.wait(limit)
    }
}

pub fn unsafe_sigterm(pid: u32) {
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn records(bootstrap: &str, topic: &str) -> Vec<KpiRecord> {
    read_topic(bootstrap, topic)
        .iter()
        .map(|m| serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap())
        .collect()
}

pub fn sigkill(run: Run) {
    let mut child = run.child;
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` generated events from 2026-03-01, 2,000 a day, 6 reps.
pub fn generated(n: usize, seed: u64) -> Vec<Event<'static>> {
    Generator::new(GenConfig {
        seed,
        start: crate::common::ms("2026-03-01T00:00:00Z"),
        events_per_day: 2000,
        reps: 6,
    })
    .take(n)
    .collect()
}

/// Events as CloudEvents JSON messages keyed by their partition key.
pub fn keyed(events: &[Event<'_>]) -> Vec<Out> {
    events
        .iter()
        .map(|e| Out::plain(e.partition_key(), cej::encode(e).into_bytes()))
        .collect()
}

/// The records of one engine over every event (file mode).
pub fn file_mode(cfg: &Config, events: &[Event<'_>]) -> Vec<KpiRecord> {
    let mut e = Engine::from_config(cfg);
    for ev in events {
        e.process_json(cej::encode(ev).as_bytes()).unwrap();
    }
    e.finish();
    e.take_records()
}

/// Every final record of a key on the KPI topic has the same values
/// (a record repeated after a crash is the same record), and together
/// they equal file mode's finals.
pub fn assert_kafka_finals_equal_file_mode(bs: &str, kpis: &str, cfg: &Config, evs: &[Event<'_>]) {
    let recs = records(bs, kpis);
    assert_finals_agree(&recs);
    let want = finals(&file_mode(cfg, evs));
    assert!(want.len() > 1000, "{} final series", want.len());
    let got = finals(&recs);
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len(), "no extra final series");
}
