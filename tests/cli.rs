//! The binary, driven as a user would: files in, records out, dead
//! letters, config checking, and a real scrape of /metrics in live mode.

mod common;
use common::{free_port, http_get};
use salespulse::output::KpiRecord;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

fn sp(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run salespulse")
}

/// The KPI records of an output file (leaderboards, their own record kind, left out).
fn records(p: &Path) -> Vec<KpiRecord> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(r#"{"record":"leaderboard""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The dead letters of a dead-letter file.
fn dead_letters(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn file_mode_writes_a_final_record_for_every_closed_window() {
    let d = tempfile::tempdir().unwrap();
    let out = sp(
        &[
            "generate",
            "--events",
            "30000",
            "--seed",
            "5",
            "--output",
            "events.jsonl",
        ],
        d.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sp(
        &["run", "--input", "events.jsonl", "--output", "kpis.jsonl"],
        d.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&d.path().join("kpis.jsonl"));
    let raw = std::fs::read_to_string(d.path().join("kpis.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    for key in [
        "kpi",
        "window",
        "dimensions",
        "value",
        "numerator",
        "denominator",
        "sample_size",
        "final",
        "revision",
    ] {
        assert!(first.get(key).is_some(), "record lacks {key}: {first}");
    }
    for key in ["kind", "start", "end"] {
        assert!(first["window"].get(key).is_some(), "window lacks {key}");
    }
    // every day between the first and last event has a final "all" leads record
    let days: std::collections::BTreeSet<_> = recs
        .iter()
        .filter(|r| {
            r.kpi == "leads_created"
                && r.window.kind == "day"
                && r.dimensions.is_empty()
                && r.is_final
        })
        .map(|r| r.window.label.clone())
        .collect();
    assert!(days.len() >= 20, "{} days", days.len());
    let first_day = chrono::NaiveDate::parse_from_str(days.first().unwrap(), "%Y-%m-%d").unwrap();
    let last_day = chrono::NaiveDate::parse_from_str(days.last().unwrap(), "%Y-%m-%d").unwrap();
    assert_eq!(
        days.len() as i64,
        (last_day - first_day).num_days() + 1,
        "a day is missing"
    );
    for kind in [
        "week",
        "month",
        "quarter",
        "year",
        "rolling_24h",
        "rolling_7d",
        "rolling_30d",
        "gauge",
    ] {
        assert!(
            recs.iter().any(|r| r.window.kind == kind && r.is_final),
            "no final {kind} record"
        );
    }
    // no dead letters for clean input
    assert!(!d.path().join("salespulse-dlq.jsonl").exists());
}

/// An empty input (a day with no events, a truncated export) is a
/// run with nothing to say, not a crash (it panicked on the rolling
/// windows' clock before any event).
#[test]
fn an_empty_input_exits_0_with_no_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.jsonl"), "").unwrap();
    let out = sp(
        &["run", "--input", "empty.jsonl", "--output", "out.jsonl"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(records(&dir.path().join("out.jsonl")).is_empty());
}

#[test]
fn protobuf_input_gives_the_same_records_as_json() {
    let d = tempfile::tempdir().unwrap();
    for (fmt, file) in [("json", "e.jsonl"), ("protobuf", "e.pb")] {
        let out = sp(
            &[
                "generate", "--events", "8000", "--format", fmt, "--output", file,
            ],
            d.path(),
        );
        assert!(out.status.success());
        let out = sp(
            &[
                "run",
                "--input",
                file,
                "--format",
                fmt,
                "--output",
                &format!("{file}.out"),
            ],
            d.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let a = records(&d.path().join("e.jsonl.out"));
    let b = records(&d.path().join("e.pb.out"));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn bad_lines_go_to_the_dead_letter_file_with_their_reason() {
    let d = tempfile::tempdir().unwrap();
    let good = r#"{"specversion":"1.0","id":"1","source":"s","type":"crm.lead.created","time":"2026-11-01T10:00:00Z","data":{"lead_id":"L1","channel":"web"}}"#;
    let nps = r#"{"specversion":"1.0","id":"2","source":"s","type":"crm.survey.answered","time":"2026-11-01T10:00:00Z","data":{"customer_id":"C1","nps":11}}"#;
    // a 3 MB line: its dead letter keeps 1 MiB, its length and its hash
    let huge = format!("{{\"é\": \"{}\"}}", "é".repeat(1_500_000));
    let input = format!("{good}\nnot json at all\n{nps}\n{good}\n{huge}\n");
    std::fs::write(d.path().join("in.jsonl"), input).unwrap();
    let out = sp(
        &[
            "run",
            "--input",
            "in.jsonl",
            "--output",
            "out.jsonl",
            "--dead-letter",
            "dlq.jsonl",
        ],
        d.path(),
    );
    assert!(
        out.status.success(),
        "bad input must not stop the run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dlq = dead_letters(&d.path().join("dlq.jsonl"));
    assert_eq!(dlq.len(), 3);
    let cut = dlq[2]["raw"].as_str().unwrap();
    assert!(
        cut.len() <= 1 << 20 && cut.len() > (1 << 20) - 4,
        "{}",
        cut.len()
    );
    assert!(huge.starts_with(cut));
    assert_eq!(dlq[2]["raw_length"], huge.len());
    assert_eq!(
        dlq[2]["raw_xxh3"],
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(huge.as_bytes()))
    );
    assert!(dlq[0].get("raw_length").is_none());
    assert_eq!(dlq[0]["reason"], "malformed_json");
    assert_eq!(dlq[0]["raw"], "not json at all");
    assert_eq!(dlq[0]["origin"], "in.jsonl:2");
    assert_eq!(dlq[1]["reason"], "nps_out_of_range");
    assert_eq!(dlq[1]["raw"], nps);
    // the duplicate good line is counted once
    let recs = records(&d.path().join("out.jsonl"));
    let r = common::find(&recs, "leads_created", "day", "2026-11-01", &[]).unwrap();
    assert_eq!(r.value, Some(1.0));
}

#[test]
fn a_protobuf_frame_cut_short_is_a_dead_letter_after_the_events_before_it() {
    // A good event, then a length prefix claiming 2^60 bytes with three
    // after it: the good one counts, the rest is one dead letter (it
    // once made the reader allocate the claimed size and abort).
    let d = tempfile::tempdir().unwrap();
    let json = r#"{"specversion":"1.0","id":"1","source":"s","type":"crm.lead.created","time":"2026-11-01T10:00:00Z","data":{"lead_id":"L1","channel":"web"}}"#;
    let e = salespulse::decode::json::decode(json.as_bytes()).unwrap();
    let mut input = salespulse::decode::proto::encode_delimited(&e);
    input.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
    input.extend_from_slice(b"abc");
    std::fs::write(d.path().join("in.pb"), input).unwrap();
    let out = sp(
        &[
            "run",
            "--format",
            "protobuf",
            "--input",
            "in.pb",
            "--output",
            "out.jsonl",
            "--dead-letter",
            "dlq.jsonl",
        ],
        d.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dlq = dead_letters(&d.path().join("dlq.jsonl"));
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["reason"], "malformed_protobuf");
    assert_eq!(
        dlq[0]["detail"],
        "input ends inside a 1152921504606846976-byte message"
    );
    assert_eq!(dlq[0]["origin"], "in.pb:2");
    let recs = records(&d.path().join("out.jsonl"));
    let r = common::find(&recs, "leads_created", "day", "2026-11-01", &[]).unwrap();
    assert_eq!(r.value, Some(1.0));
}

#[test]
fn check_config_names_the_field_and_the_fix() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("bad.toml"),
        "[time]\nzone = \"Mars/Olympus\"\nfiscal_year_start_month = 13\n",
    )
    .unwrap();
    let out = sp(&["check-config", "bad.toml"], d.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("time.zone") && err.contains("IANA"), "{err}");
    assert!(
        err.contains("time.fiscal_year_start_month") && err.contains("fix:"),
        "{err}"
    );

    // [prometheus]: names that are not a KPI, a window computed, a dimension
    std::fs::write(
        d.path().join("prom.toml"),
        "[windows]\ncalendar = [\"day\", \"month\"]\n[prometheus]\nkpis = [\"win_rat\"]\nwindows = [\"quarter\"]\ndimensions = [\"planet\"]\nmax_series = 0\n",
    )
    .unwrap();
    let out = sp(&["check-config", "prom.toml"], d.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "prometheus.kpis[0]",
        "\"win_rat\" is not a KPI",
        "prometheus.windows[0]",
        "use any of day, month, rolling_24h",
        "prometheus.dimensions[0]",
        "prometheus.max_series",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }

    std::fs::write(d.path().join("typo.toml"), "[time]\nzones = \"UTC\"\n").unwrap();
    let out = sp(&["check-config", "typo.toml"], d.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("zones"),
        "unknown keys are named"
    );

    std::fs::write(
        d.path().join("ok.toml"),
        "[time]\nzone = \"Europe/Paris\"\n",
    )
    .unwrap();
    assert!(sp(&["check-config", "ok.toml"], d.path()).status.success());
    let out = Command::new(BIN)
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/salespulse.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example config is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // environment overrides are checked the same way
    let out = Command::new(BIN)
        .args(["check-config", "ok.toml"])
        .current_dir(d.path())
        .env("SALESPULSE_TIME__GRACE", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("time.grace"));
}

fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn live_mode_serves_metrics_that_a_scrape_reads() {
    let d = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "run", "--events", "8000", "--rate", "20000", "--listen", &addr,
        ])
        .current_dir(d.path())
        .env("RUST_LOG", "warn")
        .env("SALESPULSE_OUTPUT__SUMMARY_INTERVAL", "0s")
        .env("SALESPULSE_GENERATOR__EVENTS_PER_DAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut body = String::new();
    while Instant::now() < deadline {
        if let Some(b) = http_get(&addr, "/metrics") {
            // All counted, and the end of input emitted (the gauges come last).
            if metric_sum(&b, "salespulse_events_in_total") >= 8000.0
                && b.contains("salespulse_window_start_seconds{window=\"gauge\"}")
            {
                body = b;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(&addr, "/healthz").as_deref(), Some("ok\n"));
    assert_eq!(http_get(&addr, "/readyz").as_deref(), Some("ready\n"));
    let kpis = http_get(&addr, "/kpis").expect("/kpis");
    // stop it: SIGTERM drains and exits 0
    unsafe_kill(child.id());
    let status = child.wait().unwrap();
    assert!(
        !body.is_empty(),
        "metrics never showed 8000 events and every KPI family"
    );
    assert_eq!(metric_sum(&body, "salespulse_events_in_total"), 8000.0);
    // Every KPI with a value in an exported window of /kpis has its family
    // on /metrics (after the last update both show the same state).
    let records: Vec<salespulse::output::KpiRecord> = serde_json::from_str(&kpis).unwrap();
    let exported = ["day", "month", "quarter", "gauge"];
    let mut families = 0;
    for family in salespulse::kpi::CATALOGUE {
        if records.iter().any(|r| {
            r.kpi == family.name && r.value.is_some() && exported.contains(&&*r.window.kind)
        }) {
            assert!(
                body.contains(&format!("# TYPE salespulse_kpi_{} gauge", family.name)),
                "no family {}",
                family.name
            );
            families += 1;
        }
    }
    assert!(families > 40, "{families} families");
    assert!(
        body.contains(r#"salespulse_kpi_lead_conversion_rate{window="month",dimension="all"} "#),
        "all-series missing"
    );
    assert!(body.contains(r#"dimension="channel",channel="web""#));
    assert!(body.contains("salespulse_events_rejected_total{reason=\"late\"} 0"));
    assert!(body.contains("salespulse_event_processing_seconds_bucket"));
    assert!(body.contains("salespulse_state_entities{entity=\"lead\"}"));
    // no entity ids in labels
    for id in ["lead-", "deal-", "cust-", "order-", "evt-"] {
        assert!(
            !body.contains(id),
            "an entity id ({id}…) leaked into metrics"
        );
    }
    let kpis: Vec<KpiRecord> = serde_json::from_str(&kpis).unwrap();
    assert!(kpis
        .iter()
        .any(|r| r.kpi == "pipeline_value" && r.window.kind == "gauge"));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// Live, news after a quiet spell goes out at once, not at the next
/// update tick: the generator at 4 events a second with updates every
/// minute shows its first events within a few seconds (the first tick came at
/// start, before any event), and the events after them wait for the
/// interval: the provisional records stay as they were.
#[test]
fn live_mode_publishes_news_after_a_quiet_spell_at_once() {
    let d = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "run", "--events", "100000", "--rate", "4", "--listen", &addr,
        ])
        .current_dir(d.path())
        .env("RUST_LOG", "warn")
        .env("SALESPULSE_OUTPUT__SUMMARY_INTERVAL", "0s")
        .env("SALESPULSE_OUTPUT__UPDATE_INTERVAL", "60s")
        // Event time crawls: no window closes (no finals) meanwhile.
        .env("SALESPULSE_GENERATOR__EVENTS_PER_DAY", "100000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let provisional = |body: &str| -> Vec<(String, String, String, Option<f64>)> {
        let recs: Vec<KpiRecord> = serde_json::from_str(body).unwrap_or_default();
        let mut v: Vec<_> = recs
            .into_iter()
            .filter(|r| !r.is_final && r.value.is_some())
            .map(|r| {
                let dims = format!("{:?}", r.dimensions);
                (r.kpi.to_string(), r.window.label.clone(), dims, r.value)
            })
            .collect();
        v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        v
    };
    let events = || {
        http_get(&addr, "/metrics").map_or(0.0, |b| metric_sum(&b, "salespulse_events_in_total"))
    };
    let t0 = Instant::now();
    let (first, seen) = loop {
        let shown = http_get(&addr, "/kpis").map(|b| provisional(&b));
        if let Some(p) = shown.filter(|p| !p.is_empty()) {
            break (p, events());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            unsafe_kill(child.id());
            let _ = child.wait();
            panic!("no provisional record within 30 s with updates every 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Eight events more, read within the interval: held for it.
    let t1 = Instant::now();
    while events() < seen + 8.0 && t1.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let later = events();
    let now = provisional(&http_get(&addr, "/kpis").expect("/kpis"));
    unsafe_kill(child.id());
    let _ = child.wait();
    assert!(
        later >= seen + 8.0,
        "{later} events read, {seen} at the first update"
    );
    assert_eq!(now, first, "an update within the interval of the last");
}

fn unsafe_kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[test]
fn maven_conversion_through_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/maven-crm");
    let out = sp(
        &["convert-maven", data, "--output", "maven.jsonl"],
        d.path(),
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GTXPro"),
        "the product mismatch is reported: {err}"
    );
    assert_eq!(
        err.matches("is not in products.csv: its deals carry no list price")
            .count(),
        1,
        "logged once, not once per row: {err}"
    );
    let out = sp(
        &["run", "--input", "maven.jsonl", "--output", "k.jsonl"],
        d.path(),
    );
    assert!(out.status.success());
    let recs = records(&d.path().join("k.jsonl"));
    assert!(
        common::find(&recs, "revenue", "year", "2017", &[])
            .unwrap()
            .value
            .unwrap()
            > 1e7
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{not json\n{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"crm.lead.created\",\"time\":\"2026-11-01T00:00:00Z\",\"data\":{\"lead_id\":\"l\",\"channel\":\"web\"}}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--log-format", "json", "run", "--input"])
        .arg(&input)
        .current_dir(d.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let done = lines
        .iter()
        .find(|v| v["message"] == "done")
        .expect("a done line");
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["accepted"], 1);
    assert_eq!(done["rejected"], 1);
    // and an error at start-up is a JSON line too
    let out = Command::new(BIN)
        .args(["run", "--input", "/nonexistent/x.jsonl"])
        .env("SALESPULSE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stderr)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(err["level"], "ERROR");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("cannot open input"));
}

/// `check-config` reports every error at once — parse errors (unknown
/// keys, wrong types) and validation errors, and librdkafka properties
/// `run` would refuse — and an error from a `SALESPULSE_*` variable
/// names the variable.
#[test]
fn check_config_reports_every_error_and_names_environment_variables() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("many.toml"),
        "[time]\nzone = 5\nzones = \"UTC\"\nfiscal_year_start_month = 13\n[bogus]\nx = 1\n\
         [kafka]\nbrokers = \"localhost:9092\"\n[kafka.properties]\n\"fetch.wait.max.mss\" = 5\n\"session.timeout.ms\" = \"soon\"\n",
    )
    .unwrap();
    let out = sp(&["check-config", "many.toml"], d.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "bogus: unknown field",
        "time.zone: invalid type",
        "time.zones: unknown field",
        "time.fiscal_year_start_month: 13 is not a month",
        "kafka.properties.fetch.wait.max.mss: librdkafka refuses it",
        "kafka.properties.session.timeout.ms: librdkafka refuses it",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert_eq!(err.matches("(fix: ").count(), 6, "{err}");
    // the same file is refused by `run`, with the same errors
    let run = sp(&["run", "--config", "many.toml", "--input", "-"], d.path());
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("librdkafka refuses it"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    std::fs::write(d.path().join("ok.toml"), "[time]\nzone = \"UTC\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "ok.toml"])
        .current_dir(d.path())
        .env("SALESPULSE_BIN", "/usr/local/bin/salespulse")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SALESPULSE_BIN (environment variable")
            && err.contains("unset SALESPULSE_BIN"),
        "{err}"
    );
    assert!(
        !err.contains("ok.toml: bin"),
        "not blamed on the file: {err}"
    );
}

/// Every subcommand's `--help` describes it and shows an example; `run`'s
/// mentions Kafka.
#[test]
fn every_subcommand_has_help_with_an_example() {
    let d = tempfile::tempdir().unwrap();
    for cmd in [
        "run",
        "generate",
        "check-config",
        "convert-maven",
        "healthcheck",
    ] {
        let out = sp(&[cmd, "--help"], d.path());
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Example"), "{cmd}: {help}");
        assert!(help.contains(&format!("salespulse {cmd}")), "{cmd}: {help}");
        let about = help.lines().next().unwrap_or_default();
        assert!(about.len() > 20, "{cmd}: no description: {help}");
        if cmd == "run" {
            assert!(about.contains("Kafka"), "{help}");
        }
    }
}

/// A file replay with `--listen` serves `/metrics` while it reads (here
/// from stdin, kept open), and its logs carry no ANSI escape codes when
/// stderr is not a terminal.
#[test]
fn file_mode_serves_metrics_with_listen_and_logs_without_ansi_codes() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let events = sp(&["generate", "--events", "5000", "--seed", "3"], d.path()).stdout;
    let mut child = Command::new(BIN)
        .args(["run", "--input", "-", "--listen", "127.0.0.1:0"])
        .current_dir(d.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&events).unwrap();
    stdin.flush().unwrap();
    // the address from the log line "serving http://ADDR/metrics"
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("serving http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(all);
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("serving");
    let t0 = Instant::now();
    let counted = loop {
        let body = http_get(&addr, "/metrics").unwrap_or_default();
        let n = metric_sum(&body, "salespulse_events_in_total");
        if n >= 4000.0 || t0.elapsed() > Duration::from_secs(30) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(counted >= 4000.0, "events counted on /metrics: {counted}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let log = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(log.contains("done"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI codes in a log that is not a terminal: {log:?}"
    );
}

/// On a terminal (a pseudo-terminal from `script`), a file replay shows
/// its progress: events, event time, rate, share done.
#[test]
fn a_file_replay_on_a_terminal_shows_progress() {
    let d = tempfile::tempdir().unwrap();
    let gen = sp(
        &[
            "generate",
            "--events",
            "20000",
            "--seed",
            "5",
            "--output",
            "big.jsonl",
        ],
        d.path(),
    );
    assert!(gen.status.success());
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{BIN} run --input big.jsonl --output /dev/null"),
            "/dev/null",
        ])
        .current_dir(d.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("script (bsdutils) runs the replay on a pseudo-terminal");
    assert!(out.status.success(), "{out:?}");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains(" events · event time 2026-"), "{tty}");
    assert!(tty.contains(" ev/s · ") && tty.contains(" %"), "{tty}");
    // not on a pipe
    let piped = sp(
        &["run", "--input", "big.jsonl", "--output", "/dev/null"],
        d.path(),
    );
    assert!(!String::from_utf8_lossy(&piped.stderr).contains(" ev/s"));
}
