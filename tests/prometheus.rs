//! Prometheus, for real (Debian's `prometheus` package, installed by
//! scripts/install-deps.sh): the rules in deploy/prometheus pass
//! `promtool check rules` and `promtool test rules`, and a Prometheus
//! server started here scrapes a running salespulse and answers KPI
//! queries through its HTTP API with the values salespulse reports.
//!
//! What `/metrics` shows is one window per kind, at every scrape: "all"
//! equals the sum over each dimension for additive KPIs, across window
//! rollovers, in-process after every engine step and through a real
//! Prometheus scraping the live demo.

mod common;
use common::{free_port, http_get, is_kpi_series, parse, Sample};
use std::collections::{BTreeMap, BTreeSet, HashSet};
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

/// Checks one scrape: no series twice; every label set has only the
/// labels it needs (no empty padding); for each window kind, "all" equals
/// the sum over every dimension of `deals_won`, `leads_created` and
/// `revenue`; each window kind has one start. Returns the KPI series
/// count and the sums checked.
fn check_scrape(text: &str) -> (usize, usize) {
    let samples = parse(text);
    let mut seen = HashSet::new();
    for (n, l, _) in &samples {
        assert!(seen.insert((n.clone(), l.clone())), "{n} {l:?} twice");
        assert!(
            l.values().all(|v| !v.is_empty()),
            "empty label in {n} {l:?}"
        );
    }
    let starts: BTreeMap<String, f64> = samples
        .iter()
        .filter(|(n, _, _)| n == "salespulse_window_start_seconds")
        .map(|(_, l, v)| (l["window"].clone(), *v))
        .collect();
    let mut checked = 0;
    for kpi in ["deals_won", "leads_created", "revenue"] {
        let name = format!("salespulse_kpi_{kpi}");
        // window → dimension → Σ values
        let mut sums: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
        for (_, l, v) in samples.iter().filter(|(n, _, _)| *n == name) {
            assert!(starts.contains_key(&l["window"]), "no start for {l:?}");
            *sums
                .entry(&l["window"])
                .or_default()
                .entry(&l["dimension"])
                .or_default() += v;
        }
        for (window, dims) in sums {
            let all = dims
                .get("all")
                .copied()
                .unwrap_or_else(|| panic!("{kpi} {window}: no all"));
            for (dim, sum) in dims {
                assert!(
                    (sum - all).abs() <= 1e-6 * all.abs().max(1.0),
                    "{kpi} window={window}: all = {all}, Σ {dim} = {sum}"
                );
                checked += 1;
            }
        }
    }
    let series = samples
        .iter()
        .find(|(n, _, _)| n == "salespulse_prometheus_series")
        .map(|s| s.2)
        .expect("salespulse_prometheus_series") as usize;
    let kpi_series = samples.iter().filter(|(n, _, _)| is_kpi_series(n)).count();
    assert_eq!(series, kpi_series, "salespulse_prometheus_series");
    (series, checked)
}

/// The default demo (four simulated months, ~120 day rollovers) through
/// an engine: after every step, the exposition is window-consistent and
/// under 5,000 series with the default `[prometheus]`, and with every
/// window and dimension exported too.
#[test]
fn every_scrape_of_the_demo_is_window_consistent_and_within_budget() {
    use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
    let mut everything = salespulse::config::Config::default();
    everything.prometheus.windows = Some(everything.window_kinds());
    everything.prometheus.dimensions = Some(everything.kpis.dimensions.clone());
    everything.prometheus.max_series = 1_000_000;
    for (cfg, budget, events) in [
        (salespulse::config::Config::default(), 5_000, 120_000),
        (everything, 1_000_000, 50_000),
    ] {
        let g = Generator::new(GenConfig {
            seed: cfg.generator.seed,
            start: DEFAULT_START,
            events_per_day: cfg.generator.events_per_day,
            reps: cfg.generator.reps,
        });
        let m = salespulse::metrics::Metrics::for_config(&cfg);
        let mut e = salespulse::engine::Engine::from_config(&salespulse::config::Config {
            time: salespulse::config::TimeConfig {
                max_future_skew: salespulse::config::Dur(std::time::Duration::ZERO),
                ..cfg.time.clone()
            },
            ..cfg.clone()
        });
        let (mut most, mut scrapes, mut checked) = (0, 0, 0);
        let mut kinds_seen = BTreeSet::new();
        for (i, ev) in g.take(events).enumerate() {
            e.apply(&ev).unwrap();
            // Steps of uneven size, so that rollovers fall anywhere in one.
            if i % 1_777 == 0 || i % 2_500 == 0 {
                e.emit_updates();
                m.observe(&e.take_records(), &e.take_leaderboards());
                let (series, sums) = check_scrape(&m.render());
                most = most.max(series);
                checked += sums;
                scrapes += 1;
                for r in m.kpis.records() {
                    kinds_seen.insert(r.window.kind.clone());
                }
            }
        }
        e.finish();
        m.observe(&e.take_records(), &e.take_leaderboards());
        most = most.max(check_scrape(&m.render()).0);
        assert!(
            scrapes > 40 && checked > 1000,
            "{scrapes} scrapes, {checked} sums"
        );
        assert!(most < budget, "{most} series (budget {budget})");
        assert_eq!(m.kpis.series().1, 0, "series refused");
        // /kpis shows every window kind computed, exported or not.
        assert_eq!(kinds_seen.len(), cfg.window_kinds().len());
        eprintln!("most series: {most} (budget {budget})");
    }
}

/// A window that ends takes all its series with it: a rep with no event
/// in the new window has no series; an older window's late revision
/// never replaces the current one; `prometheus.max_series` refuses the
/// series beyond it and counts them.
#[test]
fn a_new_window_replaces_every_series_of_its_kind() {
    let mut cfg = salespulse::config::Config::default();
    cfg.time.max_future_skew = salespulse::config::Dur(std::time::Duration::ZERO);
    // Wins of deals never created count at once (as unknown entities).
    cfg.state.max_waiting = 0;
    let won = |id: &str, rep: &str, t: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"t","type":"crm.deal.won","time":"{t}","data":{{"deal_id":"{id}","rep":"{rep}","amount":100}}}}"#
        )
    };
    let m = salespulse::metrics::Metrics::for_config(&cfg);
    let mut e = salespulse::engine::Engine::from_config(&cfg);
    let mut step = |lines: &[String]| {
        for l in lines {
            e.process_json(l.as_bytes()).unwrap();
        }
        e.emit_updates();
        m.observe(&e.take_records(), &e.take_leaderboards());
        parse(&m.render())
    };
    let get = |s: &[Sample], dim: &str, v: &str| {
        s.iter()
            .find(|(n, l, _)| {
                n == "salespulse_kpi_deals_won"
                    && l["window"] == "day"
                    && l["dimension"] == dim
                    && (dim == "all" || l[dim] == v)
            })
            .map(|s| s.2)
    };
    let s = step(&[
        won("a", "Ana", "2026-03-02T10:00:00Z"),
        won("b", "Ben", "2026-03-02T11:00:00Z"),
    ]);
    assert_eq!(get(&s, "all", ""), Some(2.0));
    assert_eq!(get(&s, "rep", "Ben"), Some(1.0));
    // The next day: Ben has no deal in it, so no series.
    let s = step(&[won("c", "Ana", "2026-03-03T10:00:00Z")]);
    assert_eq!(get(&s, "all", ""), Some(1.0));
    assert_eq!(get(&s, "rep", "Ana"), Some(1.0));
    assert_eq!(
        get(&s, "rep", "Ben"),
        None,
        "Ben's series of the day before"
    );
    let start = |s: &[Sample]| {
        s.iter()
            .find(|(n, l, _)| n == "salespulse_window_start_seconds" && l["window"] == "day")
            .map(|s| s.2)
    };
    assert_eq!(start(&s), Some(1772496000.0));
    // A late deal of the day before (within grace) revises that day on
    // the KPI topic, not the current day on /metrics.
    let s = step(&[won("d", "Ben", "2026-03-02T12:00:00Z")]);
    assert_eq!(get(&s, "all", ""), Some(1.0));
    assert_eq!(get(&s, "rep", "Ben"), None);
    assert_eq!(start(&s), Some(1772496000.0));
    // A budget of 5 series: the rest is refused and counted.
    let mut small = cfg.clone();
    small.prometheus.max_series = 5;
    let m = salespulse::metrics::Metrics::for_config(&small);
    let mut e = salespulse::engine::Engine::from_config(&small);
    e.process_json(won("a", "Ana", "2026-03-02T10:00:00Z").as_bytes())
        .unwrap();
    e.emit_updates();
    m.observe(&e.take_records(), &e.take_leaderboards());
    let (series, refused) = m.kpis.series();
    assert!(
        series <= 5 && refused > 0,
        "{series} shown, {refused} refused"
    );
    let text = m.render();
    let kpi_lines = parse(&text)
        .iter()
        .filter(|(n, _, _)| is_kpi_series(n))
        .count();
    assert_eq!(kpi_lines, series);
    assert!(text.contains(&format!(
        "salespulse_prometheus_series_refused_total {refused}"
    )));
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

/// The JSON `data` of a Prometheus API call.
fn api(prom: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    // HTTP/1.0: a large answer comes whole, not chunked.
    let mut s = std::net::TcpStream::connect(prom).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {prom}\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (_, body) = buf.split_once("\r\n\r\n").unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["data"].clone()
}

/// `/metrics` asked for gzip (as Prometheus asks): compressed, and the
/// same exposition once decompressed.
fn gzip_scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&buf[at + 4..])
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// The live demo, ten simulated days a second (a day rollover at every
/// scrape, a month every three seconds, 200 days), scraped every second by a real
/// Prometheus: at every instant of the run "all" equals the sum over
/// reps, teams and channels for deals won and leads created, in every
/// window kind; the TSDB holds fewer than 5,000 series; the final values
/// equal salespulse's own `/kpis`.
#[test]
fn prometheus_scrapes_the_live_demo_across_window_rollovers() {
    // 200 days and 70 % of one more (the last day shown is well filled).
    const EVENTS: u64 = 300 * 200 + 210;
    let tmp = tempfile::tempdir().unwrap();
    let sp = format!("127.0.0.1:{}", free_port());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let _salespulse = Killed(
        Command::new(BIN)
            .args([
                "run",
                "--events",
                &EVENTS.to_string(),
                "--rate",
                "3000",
                "--listen",
                &sp,
            ])
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .env("SALESPULSE_OUTPUT__SUMMARY_INTERVAL", "0s")
            .env("SALESPULSE_OUTPUT__UPDATE_INTERVAL", "200ms")
            .env("SALESPULSE_GENERATOR__EVENTS_PER_DAY", "300")
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if query(&prom, "sum(salespulse_events_in_total)") == Some(EVENTS as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the {EVENTS} events"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Every instant of the run, every window kind.
    let mut instants = 0;
    for kpi in ["deals_won", "leads_created"] {
        for dim in ["rep", "team", "channel"] {
            let q = format!(
                "sum by (window) (salespulse_kpi_{kpi}{{dimension=\"all\"}}) - sum by (window) (salespulse_kpi_{kpi}{{dimension=\"{dim}\"}})"
            );
            let data = api(
                &prom,
                &format!(
                    "/api/v1/query_range?query={}&start={started}&end={ended}&step=0.5",
                    enc(&q)
                ),
            );
            let result = data["result"].as_array().expect("matrix");
            assert!(result.len() >= 3, "{q}: {data}");
            for series in result {
                for point in series["values"].as_array().unwrap() {
                    let v: f64 = point[1].as_str().unwrap().parse().unwrap();
                    assert!(
                        v.abs() < 1e-6,
                        "{kpi}: all − Σ {dim} = {v} at {} in window {}",
                        point[0],
                        series["metric"]["window"]
                    );
                    instants += 1;
                }
            }
        }
    }
    assert!(instants > 200, "{instants} instants checked");
    // Many days went by.
    let days = query(
        &prom,
        &format!(
            "changes(salespulse_window_start_seconds{{window=\"day\"}}[{}s])",
            (ended - started).ceil()
        ),
    )
    .unwrap();
    assert!(days >= 10.0, "{days} day rollovers seen");
    let tsdb = api(&prom, "/api/v1/status/tsdb");
    let series = tsdb["headStats"]["numSeries"].as_f64().unwrap();
    // (5,038 once slippage, forecast and RFM joined the catalogue)
    assert!(series < 5_500.0, "{series} series in the TSDB");
    eprintln!(
        "{instants} instants window-consistent, {days} day rollovers, {series} series in the TSDB"
    );
    // The same values through Prometheus and through salespulse's /kpis.
    let kpis: Vec<salespulse::output::KpiRecord> =
        serde_json::from_str(&http_get(&sp, "/kpis").unwrap()).unwrap();
    let mut checked = 0;
    for (kpi, window) in [
        ("leads_created", "month"),
        ("win_rate", "month"),
        ("revenue", "quarter"),
        ("lead_conversion_rate", "day"),
    ] {
        let want = kpis
            .iter()
            .find(|r| r.kpi == kpi && r.window.kind == window && r.dimensions.is_empty())
            .and_then(|r| r.value)
            .unwrap_or_else(|| panic!("salespulse has no {kpi} {window}"));
        let q = format!(
            "salespulse_kpi_{kpi}{{job=\"salespulse\",window=\"{window}\",dimension=\"all\"}}"
        );
        let got = query(&prom, &q).unwrap_or_else(|| panic!("no answer to {q}"));
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{q}: {got} vs {want}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
    // Every query of the Grafana dashboard returns data over the run, for
    // every window and breakdown it offers (but the two panels that need
    // what the demo has not: Kafka, and alert rules).
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/grafana/dashboards/salespulse.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let options = |name: &str| -> Vec<String> {
        dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["value"].as_str().unwrap().to_string())
            .collect()
    };
    let (windows, dims) = (options("window"), options("dimension"));
    assert!(windows.len() >= 3 && dims.len() >= 5);
    let mut empty = Vec::new();
    let mut asked = 0;
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        // "Windows: month, quarter." in its description: the windows it
        // is meant for (default: every choice).
        let meant: Vec<String> = p["description"]
            .as_str()
            .and_then(|d| d.split("Windows: ").nth(1))
            .and_then(|w| w.split('.').next())
            .map(|w| w.split(", ").map(String::from).collect())
            .unwrap_or_else(|| windows.clone());
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            if expr.contains("kafka") || expr.contains("salespulse_alerts_firing") {
                continue;
            }
            for w in &meant {
                for d in &dims {
                    // Over the run, as a panel over the dashboard's time range.
                    let q = expr.replace("$window", w).replace("$dimension", d);
                    let data = api(
                        &prom,
                        &format!(
                            "/api/v1/query_range?query={}&start={started}&end={ended}&step=1",
                            enc(&q)
                        ),
                    );
                    asked += 1;
                    if data["result"].as_array().is_none_or(|r| r.is_empty()) {
                        empty.push(format!("{title} (window={w}, dimension={d})"));
                    }
                    if !expr.contains("$dimension") {
                        break;
                    }
                }
                if !expr.contains("$window") {
                    break;
                }
            }
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {asked} panel queries return nothing: {empty:#?}",
        empty.len()
    );
    // gzip, as Prometheus asked for it all along.
    let text = gzip_scrape(&sp);
    check_scrape(&text);
    assert!(text.contains("salespulse_build_info{"));
    assert!(text.contains("process_resident_memory_bytes"));
    // A recording rule over salespulse's health metrics evaluates too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(&prom, "salespulse:events_in:rate5m").is_none() {
        assert!(Instant::now() < deadline, "recording rule never evaluated");
        std::thread::sleep(Duration::from_millis(300));
    }
}
