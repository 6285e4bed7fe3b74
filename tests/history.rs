//! KPI history in PostgreSQL, end to end with a real server (initdb in a
//! temporary directory) and the binary:
//! - a Maven replay loaded twice, and once killed with SIGKILL midway and
//!   restarted from its checkpoint, leaves exactly the rows of one clean
//!   run, equal to the JSON output's records (highest revision per key);
//! - `salespulse db migrate` creates the tables and is idempotent; a
//!   wrong database fails at start-up with a clear error;
//! - the database stopped for seconds in the middle of a live run loses
//!   nothing once it is back, and the metrics show the pause;
//! - every query of the History dashboard runs on the replay's rows and
//!   returns the JSON output's values.
//!
//! The loader from a KPI topic on tansu is in tests/history_kafka.rs.

mod common;
#[path = "common/pg.rs"]
mod pg_util;

use common::*;
use pg_util::Pg;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Maven CRM export as CloudEvents JSON lines.
fn maven(dir: &Path) -> PathBuf {
    let out = dir.join("maven.jsonl");
    let o = Command::new(BIN)
        .arg("convert-maven")
        .arg(root().join("tests/data/maven-crm"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn cmd(dir: &Path, url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("RUST_LOG", "info")
        .env("SALESPULSE_POSTGRES__URL", url)
        .env("SALESPULSE_POSTGRES__FLUSH_INTERVAL", "50ms")
        .env("SALESPULSE_CHECKPOINT__INTERVAL", "50ms")
        .stdout(Stdio::null());
    c
}

fn replay(dir: &Path, url: &str, input: &Path, output: &str) {
    let o = cmd(dir, url)
        .args(["run", "--input"])
        .arg(input)
        .args(["--output", output])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A comparable KPI row: (kpi, kind, start ms, dimensions) → (label,
/// value, numerator, denominator, sample size, unit, final, revision).
type Dims = BTreeMap<String, String>;
type Key = (String, String, i64, Dims);

fn dims(v: Value) -> Dims {
    serde_json::from_value(v).unwrap()
}
type Vals = (
    String,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    u64,
    String,
    bool,
    u64,
);

fn num(s: &str) -> Option<f64> {
    (!s.is_empty()).then(|| s.parse().unwrap())
}

fn from_db(rows: &[Vec<String>]) -> BTreeMap<Key, Vals> {
    rows.iter()
        .map(|r| {
            (
                (
                    r[0].clone(),
                    r[1].clone(),
                    r[2].parse().unwrap(),
                    serde_json::from_str::<Dims>(&r[3]).unwrap(),
                ),
                (
                    r[6].clone(),
                    num(&r[7]),
                    num(&r[8]),
                    num(&r[9]),
                    r[10].parse().unwrap(),
                    r[11].clone(),
                    r[12] == "t",
                    r[13].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// The rows the JSON output's records make: the highest revision per
/// (kpi, window kind, window start, dimensions); a gauge's window is its
/// UTC day (the default time zone).
fn from_json(out: &Path) -> BTreeMap<Key, Vals> {
    let mut m: BTreeMap<Key, Vals> = BTreeMap::new();
    for line in std::fs::read_to_string(out).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        if r["record"] == "leaderboard" {
            continue;
        }
        let w = &r["window"];
        let kind = w["kind"].as_str().unwrap().to_string();
        // `postgres.windows` by default: calendar windows and gauges.
        if kind.starts_with("rolling") {
            continue;
        }
        let start = ms(w["start"].as_str().unwrap());
        let (start, label) = if kind == "gauge" {
            let day = start - start.rem_euclid(86_400_000);
            let label = chrono::DateTime::from_timestamp_millis(day)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string();
            (day, label)
        } else {
            (start, w["label"].as_str().unwrap().to_string())
        };
        let key = (
            r["kpi"].as_str().unwrap().to_string(),
            kind,
            start,
            dims(r["dimensions"].clone()),
        );
        let vals = (
            label,
            r["value"].as_f64(),
            r["numerator"].as_f64(),
            r["denominator"].as_f64(),
            r["sample_size"].as_u64().unwrap(),
            r["unit"].as_str().unwrap().to_string(),
            r["final"].as_bool().unwrap(),
            r["revision"].as_u64().unwrap(),
        );
        match m.get(&key) {
            Some(old) if old.7 >= vals.7 => {}
            _ => {
                m.insert(key, vals);
            }
        }
    }
    m
}

fn assert_same(got: &BTreeMap<Key, Vals>, want: &BTreeMap<Key, Vals>, what: &str) {
    for (k, v) in want {
        assert_eq!(got.get(k), Some(v), "{what}: row {k:?}");
    }
    assert_eq!(got.len(), want.len(), "{what}: rows nobody wrote");
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

#[test]
fn maven_replay_loaded_twice_and_killed_midway_leaves_the_rows_of_one_clean_run() {
    let pg = Pg::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = maven(tmp.path());
    let lines: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();

    // `db migrate` creates the tables once; again, it has nothing to do.
    pg.create_db("clean");
    for want in [
        "migrated from version 0 to 1",
        "at version 1, nothing to do",
    ] {
        let o = Command::new(BIN)
            .args(["db", "migrate", "--postgres-url", &pg.url("clean")])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains(want), "{want}");
    }

    // Clean run, then the same replay again into the same database.
    replay(tmp.path(), &pg.url("clean"), &input, "clean.jsonl");
    let (once, boards_once) = (pg.kpi_rows("clean"), pg.board_rows("clean"));
    let want = from_json(&tmp.path().join("clean.jsonl"));
    assert!(want.len() > 100_000, "{} rows", want.len());
    assert_same(&from_db(&once), &want, "one replay against its JSON output");
    assert!(
        boards_once.len() > 100,
        "{} leaderboard rows",
        boards_once.len()
    );
    replay(tmp.path(), &pg.url("clean"), &input, "again.jsonl");
    assert!(
        pg.kpi_rows("clean") == once,
        "a second replay changed the rows"
    );
    assert!(pg.board_rows("clean") == boards_once);

    // Killed midway: half the input on stdin, checkpoints written, SIGKILL;
    // the restart from the checkpoint gets the whole input again.
    pg.create_db("killed");
    let dir = tmp.path().join("killed");
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("state.ckpt");
    let mut child = cmd(&dir, &pg.url("killed"))
        .args([
            "run",
            "--input",
            "-",
            "--output",
            "out.jsonl",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in &lines[..lines.len() / 2] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    let t0 = Instant::now();
    let first = loop {
        if let Some(t) = modified(&ckpt) {
            break t;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    };
    while modified(&ckpt) == Some(first) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "one checkpoint only"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let midway = pg.kpi_rows("killed").len();
    assert!(
        midway > 0 && midway < once.len(),
        "{midway} rows at the kill, {} in all",
        once.len()
    );
    let o = cmd(&dir, &pg.url("killed"))
        .args([
            "run",
            "--input",
            "-",
            "--output",
            "out.jsonl",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .stdin(std::fs::File::open(&input).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("state restored"), "{log}");
    assert!(
        pg.kpi_rows("killed") == once,
        "after SIGKILL and restart the rows differ from one clean run"
    );
    assert!(pg.board_rows("killed") == boards_once);
}

#[test]
fn a_database_that_cannot_be_reached_fails_at_start_up_naming_the_setting() {
    let port = free_port();
    let o = Command::new(BIN)
        .args(["run", "--input", "-", "--postgres-url"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=salespulse password=secret dbname=x"
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("postgres.url"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password is never shown: {err}"
    );
    let o = Command::new(BIN)
        .args(["run", "--input", "-", "--postgres-url", "port=notanumber"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("postgres.url") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn non_final_retention_deletes_only_old_rows_that_never_became_final() {
    let pg = Pg::start();
    let o = Command::new(BIN)
        .args(["db", "migrate", "--postgres-url", &pg.url("postgres")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row = |label: &str, fin: bool, age: &str| {
        format!(
            "INSERT INTO salespulse.kpi_history (kpi, window_kind, window_start, window_end,
                 window_label, value, sample_size, unit, final, revision, updated_at)
             VALUES ('revenue', 'month', '{label}-01', '{label}-28', '{label}', 1, 1,
                 'currency', {fin}, 1, now() - interval '{age}')"
        )
    };
    for sql in [
        row("2026-01", false, "3 hours"),    // old, never final: deleted
        row("2026-02", false, "10 minutes"), // recent: kept
        row("2026-03", true, "3 hours"),     // final: kept
    ] {
        pg.query("postgres", &sql);
    }
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let o = cmd(tmp.path(), &pg.url("postgres"))
        .args(["run", "--input"])
        .arg(&empty)
        .env("SALESPULSE_POSTGRES__NON_FINAL_RETENTION", "1h")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let left = pg.query(
        "postgres",
        "SELECT window_label FROM salespulse.kpi_history ORDER BY 1",
    );
    assert_eq!(
        left,
        vec![vec!["2026-02".to_string()], vec!["2026-03".to_string()]]
    );
}

/// A metric of the binary's /metrics (summed over its labels).
fn metric(addr: &str, name: &str) -> Option<f64> {
    let text = http_get(addr, "/metrics")?;
    let found: Vec<f64> = parse(&text)
        .into_iter()
        .filter(|s| s.0 == name)
        .map(|s| s.2)
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

#[test]
fn database_down_for_seconds_mid_live_run_loses_nothing_and_the_metrics_show_the_pause() {
    let pg = Pg::start();
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // The demo generator, live: 30,000 events at 3,000/s, then serving.
    let mut child = cmd(tmp.path(), &pg.url("postgres"))
        .args([
            "run", "--events", "30000", "--rate", "3000", "--listen", &addr,
        ])
        .args(["--output", "out.jsonl"])
        .env("SALESPULSE_OUTPUT__UPDATE_INTERVAL", "200ms")
        .env("SALESPULSE_POSTGRES__MAX_BACKOFF", "500ms")
        .env("SALESPULSE_POSTGRES__QUEUE_CAPACITY", "4")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let rows = |pg: &Pg| pg.query("postgres", "SELECT count(*) FROM salespulse.kpi_history");
    while metric(&addr, "salespulse_postgres_rows_total").unwrap_or(0.0) == 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no rows written");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: u64 = rows(&pg)[0][0].parse().unwrap();
    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        metric(&addr, "salespulse_postgres_paused"),
        Some(1.0),
        "paused while the database is down"
    );
    pg.start_again();
    // The sink is back, and the pause counted.
    let t1 = Instant::now();
    while metric(&addr, "salespulse_postgres_paused") != Some(0.0)
        || metric(&addr, "salespulse_events_in_total").unwrap_or(0.0) < 30_000.0
    {
        assert!(t1.elapsed() < Duration::from_secs(90), "did not catch up");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&addr, "salespulse_postgres_errors_total").unwrap() >= 1.0);
    assert!(metric(&addr, "salespulse_postgres_paused_milliseconds_total").unwrap() >= 1000.0);
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    let after: u64 = rows(&pg)[0][0].parse().unwrap();
    assert!(after > before, "{after} rows after, {before} before");
    // Every record of the output (the highest revision of each row) is in
    // the database: nothing was lost while it was down.
    let want = from_json(&tmp.path().join("out.jsonl"));
    let got = from_db(&pg.kpi_rows("postgres"));
    assert_same(&got, &want, "live run with the database stopped midway");
}

/// Grafana's PostgreSQL macros, for the whole range.
fn expand(sql: &str) -> String {
    sql.replace(
        "$__timeFilter(window_start)",
        "window_start BETWEEN '2000-01-01' AND '2100-01-01'",
    )
    .replace(
        "$__timeFilter(b.window_start)",
        "b.window_start BETWEEN '2000-01-01' AND '2100-01-01'",
    )
    .replace("$__timeFrom()", "'2000-01-01'::timestamptz")
    .replace("$__timeTo()", "'2100-01-01'::timestamptz")
}

#[test]
fn history_dashboard_is_generated_and_its_queries_return_the_replays_values() {
    let script = root().join("deploy/grafana/make_history_dashboard.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg("--check")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/salespulse-history.json"))
            .unwrap(),
    )
    .unwrap();
    let pg = Pg::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = maven(tmp.path());
    replay(tmp.path(), &pg.url("postgres"), &input, "out.jsonl");
    let want = from_json(&tmp.path().join("out.jsonl"));
    let value_of = |kpi: &str, kind: &str, start: i64, d: Value| {
        want.get(&(kpi.to_string(), kind.to_string(), start, dims(d)))
            .map(|v| v.1)
    };
    let mut checked = 0;
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "salespulse-history", "{title}");
        let mut panel_rows = 0;
        for t in p["targets"].as_array().unwrap() {
            let sql = expand(t["rawSql"].as_str().unwrap());
            let rows = pg.query("postgres", &format!("SET TIME ZONE 'UTC'; {sql}"));
            let rows: Vec<_> = rows.into_iter().filter(|r| r.len() > 1).collect();
            panel_rows += rows.len();
            let time = |s: &str| ms(&format!("{}:00", s.replace(' ', "T")));
            for r in &rows {
                let expect = match (title, t["refId"].as_str().unwrap()) {
                    ("Revenue by month, against last year", "A") => {
                        value_of("revenue", "month", time(&r[0]), serde_json::json!({}))
                    }
                    ("Revenue by month, against last year", "B") => {
                        let start = chrono::DateTime::from_timestamp_millis(time(&r[0])).unwrap()
                            - chrono::Months::new(12);
                        value_of(
                            "revenue",
                            "month",
                            start.timestamp_millis(),
                            serde_json::json!({}),
                        )
                    }
                    ("Win rate by rep, quarterly", _) => value_of(
                        "win_rate",
                        "quarter",
                        time(&r[0]),
                        serde_json::json!({"rep": r[1]}),
                    ),
                    ("Conversion by channel, monthly", "B") => value_of(
                        "win_rate",
                        "month",
                        time(&r[0]),
                        serde_json::json!({"channel": r[1].trim_start_matches("deals won ")}),
                    ),
                    ("Top reps by revenue, by month", _) => {
                        // (month, rank, rep, revenue, deals): the month's leaderboard.
                        let month = format!("{}-01T00:00:00Z", r[0]);
                        let rev = value_of(
                            "revenue",
                            "month",
                            ms(&month),
                            serde_json::json!({"rep": r[2]}),
                        );
                        assert_eq!(num(&r[3]), rev.flatten(), "{title}: {r:?}");
                        checked += 1;
                        continue;
                    }
                    _ => continue,
                };
                assert_eq!(num(&r[2]), expect.flatten(), "{title}: {r:?}");
                checked += 1;
            }
        }
        assert!(panel_rows > 0, "{title}: no data on the Maven replay");
    }
    assert!(checked > 100, "{checked} values checked");

    // The demo (14 simulated months: last year's months exist too):
    // every panel has data.
    let demo = tmp.path().join("demo.jsonl");
    let o = Command::new(BIN)
        .args([
            "generate",
            "--events",
            "42000",
            "--events-per-day",
            "100",
            "--output",
        ])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(o.status.success());
    pg.create_db("demo");
    let o = cmd(tmp.path(), &pg.url("demo"))
        .args(["run", "--input"])
        .arg(&demo)
        .env("SALESPULSE_POSTGRES__WINDOWS", "[month, quarter, gauge]")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        for t in p["targets"].as_array().unwrap() {
            let sql = expand(t["rawSql"].as_str().unwrap());
            let rows = pg.query("demo", &sql);
            assert!(
                !rows.is_empty(),
                "{title} {}: no data on the demo",
                t["refId"]
            );
        }
    }
}
