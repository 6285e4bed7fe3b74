//! Prometheus, for real (Debian's `prometheus` package, installed by
//! scripts/install-deps.sh): the rules in deploy/prometheus pass
//! `promtool check rules` and `promtool test rules`, and a Prometheus
//! server started here scrapes a running salespulse and answers KPI
//! queries through its HTTP API with the values salespulse reports.

mod common;
use common::{free_port, http_get};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    for args in [
        vec!["check", "rules", "salespulse.rules.yml"],
        vec!["test", "rules", "salespulse.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(deploy())
            .output()
            .expect("promtool (Debian package prometheus; ./scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a PromQL query for a URL.
fn enc(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query with exactly one result.
fn query(prom: &str, q: &str) -> Option<f64> {
    let body = http_get(prom, &format!("/api/v1/query?query={}", enc(q)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_salespulse_and_answers_kpi_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let sp = format!("127.0.0.1:{}", free_port());
    let _salespulse = Killed(
        Command::new(BIN)
            .args([
                "run", "--events", "6000", "--rate", "20000", "--listen", &sp,
            ])
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .env("SALESPULSE_OUTPUT__SUMMARY_INTERVAL", "0s")
            .env("SALESPULSE_GENERATOR__EVENTS_PER_DAY", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = format!("127.0.0.1:{}", free_port());
    let cfg = tmp.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: salespulse\n    static_configs:\n      - targets: ['{sp}']\n",
            deploy().join("salespulse.rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; ./scripts/install-deps.sh installs it)"),
    );
    // Wait until Prometheus has scraped all 6,000 events.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if query(&prom, "sum(salespulse_events_in_total)") == Some(6000.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the 6000 events"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The same series through Prometheus and through salespulse's /kpis.
    let kpis: Vec<salespulse::output::KpiRecord> =
        serde_json::from_str(&http_get(&sp, "/kpis").unwrap()).unwrap();
    let mut checked = 0;
    for (kpi, window) in [
        ("leads_created", "month"),
        ("win_rate", "month"),
        ("revenue", "quarter"),
        ("lead_conversion_rate", "year"),
    ] {
        let want = kpis
            .iter()
            .find(|r| r.kpi == kpi && r.window.kind == window && r.dimensions.is_empty())
            .and_then(|r| r.value)
            .unwrap_or_else(|| panic!("salespulse has no {kpi} {window}"));
        let q = format!(
            "salespulse_kpi_{kpi}{{job=\"salespulse\",window=\"{window}\",rep=\"\",team=\"\",region=\"\",channel=\"\",product=\"\",campaign=\"\",variant=\"\",competitor=\"\",segment=\"\"}}"
        );
        let got = query(&prom, &q).unwrap_or_else(|| panic!("no answer to {q}"));
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{q}: {got} vs {want}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
    // A recording rule over salespulse's health metrics evaluates too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(&prom, "salespulse:events_in:rate5m").is_none() {
        assert!(Instant::now() < deadline, "recording rule never evaluated");
        std::thread::sleep(Duration::from_millis(300));
    }
}
