//! Alert notifications reach real listeners: an HTTP server in the test
//! receives the Slack and webhook posts, an SMTP listener in the test
//! receives the mails, and Debian's `prometheus-alertmanager` (installed
//! by scripts/install-deps.sh, started here) shows the alert through its
//! own `/api/v2/alerts`. The binary reads a scripted stream from stdin in
//! which lead conversion drops, stays low (one day inside the hysteresis
//! band), then recovers.

mod common;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use salespulse::alert::{NoteState, Notification};
use salespulse::config::alerts::{AlertsConfig, Language, RouteConfig, RouteKind, SmtpTls};
use salespulse::metrics::Metrics;
use salespulse::sinks::alert::Dispatcher;
use serde_json::Value;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

#[derive(Clone, Default)]
struct Inbox {
    /// (path, body) of every successful post.
    posts: Arc<Mutex<Vec<(String, Value)>>>,
    /// Requests answered 503 on `/flaky`.
    refused: Arc<Mutex<u32>>,
}

impl Inbox {
    fn on(&self, path: &str) -> Vec<Value> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

async fn receive(
    State(inbox): State<Inbox>,
    UrlPath(path): UrlPath<String>,
    body: String,
) -> StatusCode {
    if path == "flaky" {
        let mut r = inbox.refused.lock().unwrap();
        if *r < 2 {
            *r += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    inbox.posts.lock().unwrap().push((path, v));
    StatusCode::OK
}

/// An HTTP listener on a free port: `POST /<anything>` is recorded;
/// `/flaky` answers 503 twice first.
async fn http_listener() -> (String, Inbox) {
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .route("/{path}", post(receive))
        .with_state(inbox.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, inbox)
}

/// A minimal SMTP server: accepts every mail and keeps its DATA.
async fn smtp_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let mails = Arc::new(Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let m = mails.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let m = m.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(buf) = &mut data {
                        if line == ".\r\n" {
                            m.lock().unwrap().push(std::mem::take(buf));
                            data = None;
                            w.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
                        } else {
                            buf.push_str(&line);
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                        _ => b"502 not implemented\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, mails)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Debian's Alertmanager on a free port; returns it and its address.
fn alertmanager(dir: &std::path::Path) -> (Killed, String) {
    let port = free_port();
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (Debian package; ./scripts/install-deps.sh installs it)");
    let am = Killed(child);
    let t0 = Instant::now();
    while http_get(&addr, "/-/ready").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "Alertmanager did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (am, addr)
}

/// Alerts Alertmanager holds as active, named `name`.
fn am_alerts(addr: &str, name: &str) -> Vec<Value> {
    let body = http_get(addr, "/api/v2/alerts").unwrap_or_else(|| "[]".into());
    let v: Vec<Value> = serde_json::from_str(&body).unwrap();
    v.into_iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state_of(v: &Value) -> &str {
    v["state"].as_str().unwrap_or("")
}

#[test]
fn conversion_drop_fires_and_resolves_once_on_every_route() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (http, inbox) = rt.block_on(http_listener());
    let (smtp_port, mails) = rt.block_on(smtp_listener());
    let tmp = tempfile::tempdir().unwrap();
    let (_am, am) = alertmanager(tmp.path());
    let alert_file = tmp.path().join("alerts.jsonl");
    let cfg = tmp.path().join("salespulse.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"{DAY_WINDOWS}
[input]
batch_size = 1

[alerts]
dashboard_url = "http://grafana.example/d/salespulse?var-window={{window}}"
retry_initial_delay = "100ms"
{CONVERSION_LOW}severity = "critical"
labels = {{ team = "sales-ops" }}

# The web channel has 10 leads a day: below this rule's minimum sample.
[[alerts.rules]]
name = "web_conversion_low"
kpi = "lead_conversion_rate"
window = "day"
filter = {{ channel = "web" }}
below = 0.5
min_sample = 100

[[alerts.routes]]
name = "slack"
kind = "slack"
url = "http://{http}/slack"
language = "fr"

[[alerts.routes]]
name = "hook"
kind = "webhook"
url = "http://{http}/hook"

[[alerts.routes]]
name = "flaky"
kind = "webhook"
url = "http://{http}/flaky"

[[alerts.routes]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "none"
from = "salespulse <alerts@example.com>"
to = ["sales-ops@example.com", "boss@example.com"]

[[alerts.routes]]
name = "alertmanager"
kind = "alertmanager"
url = "http://{am}"

[[alerts.routes]]
name = "file"
kind = "file"
path = "{file}"
"#,
            file = alert_file.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("records.jsonl");
    let mut sp = Killed(
        Command::new(BIN)
            .args(["run", "--input", "-", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(&out)
            .current_dir(tmp.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let days = conversion_days(
        "r",
        "2026-03-01T00:00:00Z",
        &[
            (20, 6),
            (20, 6),
            (20, 2),
            (20, 2),
            (20, 2),
            (20, 2),
            (25, 4), // 0.16: inside the band 0.15 … 0.18, still firing
            (20, 2),
            (20, 6),
            (20, 6),
            (4, 0), // a sample of 4: not evaluated
            (20, 6),
        ],
    );
    let cut = days
        .iter()
        .position(|l| String::from_utf8_lossy(l).contains("r-d6-"))
        .unwrap();
    let mut stdin = sp.0.stdin.take().unwrap();
    for l in &days[..cut] {
        stdin.write_all(l).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    stdin.flush().unwrap();

    // Conversion dropped on day 3 (closed by day 4's first event): firing everywhere.
    wait_for("the firing notification on every route", || {
        inbox.on("slack").len() == 1
            && inbox.on("hook").len() == 1
            && inbox.on("flaky").len() == 1
            && mails.lock().unwrap().len() == 1
            && !am_alerts(&am, "conversion_low").is_empty()
    });
    let a = &am_alerts(&am, "conversion_low")[0];
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["team"], "sales-ops");
    assert_eq!(a["labels"]["kpi"], "lead_conversion_rate");
    assert_eq!(a["labels"]["window"], "day");
    assert_eq!(a["status"]["state"], "active");
    assert!(a["annotations"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("[FIRING] conversion_low: Lead conversion rate (day 2026-03-03, all) is 10.0 %, below 15.0 % (sample 20)"));

    for l in &days[cut..] {
        stdin.write_all(l).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    drop(stdin);
    let status = sp.0.wait().unwrap();
    assert!(status.success());

    // Exactly one firing then one resolved per route.
    let hook = inbox.on("hook");
    assert_eq!(
        hook.iter().map(state_of).collect::<Vec<_>>(),
        ["firing", "resolved"]
    );
    let (f, r) = (&hook[0], &hook[1]);
    assert_eq!(f["rule"], "conversion_low");
    assert_eq!(f["value"], 0.1);
    assert_eq!(f["threshold"], 0.15);
    assert_eq!(f["sample_size"], 20);
    assert_eq!(f["window"]["label"], "2026-03-03");
    assert_eq!(f["started_at"], "2026-03-04T09:00:00Z");
    assert_eq!(f["labels"]["team"], "sales-ops");
    assert_eq!(
        f["dashboard_url"],
        "http://grafana.example/d/salespulse?var-window=day"
    );
    assert_eq!(r["window"]["label"], "2026-03-09");
    assert_eq!(r["value"], 0.3);
    assert_eq!(r["ended_at"], "2026-03-10T09:00:00Z");
    assert_eq!(r["started_at"], f["started_at"]);
    assert_eq!(r["fingerprint"], f["fingerprint"]);

    let flaky = inbox.on("flaky");
    assert_eq!(
        flaky.iter().map(state_of).collect::<Vec<_>>(),
        ["firing", "resolved"]
    );
    assert_eq!(*inbox.refused.lock().unwrap(), 2, "two refusals, retried");

    let slack = inbox.on("slack");
    assert_eq!(slack.len(), 2);
    let text = |i: usize| slack[i]["text"].as_str().unwrap().to_string();
    assert!(text(0).starts_with(":red_circle: [DÉCLENCHÉE] conversion_low: Taux de conversion des leads (day 2026-03-03, tous) est à 10,0 %, en dessous de 15,0 %"), "{}", text(0));
    assert!(
        text(1).starts_with(":white_check_mark: [RÉSOLUE] conversion_low"),
        "{}",
        text(1)
    );
    assert!(slack[0]["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Tableau de bord: http://grafana.example/d/salespulse?var-window=day"));

    // Unfold folded header lines (RFC 5322).
    let mails: Vec<String> = mails
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.replace("\r\n ", " "))
        .collect();
    assert_eq!(mails.len(), 2);
    assert!(mails[0].contains("Subject: [FIRING] conversion_low: Lead conversion rate (day 2026-03-03, all) is 10.0 %, below 15.0 %"), "{}", mails[0]);
    assert!(
        mails[0].contains("To: sales-ops@example.com, boss@example.com"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("Firing since: 2026-03-04T09:00:00Z"),
        "{}",
        mails[0]
    );
    assert!(
        mails[1].contains("Subject: [RESOLVED] conversion_low"),
        "{}",
        mails[1]
    );

    let file: Vec<Value> = std::fs::read_to_string(&alert_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        file.iter().map(state_of).collect::<Vec<_>>(),
        ["firing", "resolved"]
    );

    // Alertmanager got the resolution: the alert is no longer active.
    wait_for("Alertmanager to resolve the alert", || {
        am_alerts(&am, "conversion_low").is_empty()
    });
    // The web-channel rule never had its minimum sample.
    assert!(hook.iter().all(|n| n["rule"] != "web_conversion_low"));
}

fn note(state: NoteState) -> Notification {
    let mut e = engine(&format!("{DAY_WINDOWS}{CONVERSION_LOW}"));
    run_all(
        &mut e,
        &conversion_days("n", "2026-03-01T00:00:00Z", &[(20, 2), (20, 6), (20, 6)]),
    );
    e.take_notifications()
        .into_iter()
        .find(|n| n.state == state)
        .unwrap()
}

fn route(name: &str, kind: RouteKind, url: &str) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        kind,
        language: Some(Language::En),
        url: url.into(),
        url_env: String::new(),
        topic: String::new(),
        path: String::new(),
        smtp_host: String::new(),
        smtp_port: None,
        smtp_tls: SmtpTls::None,
        username_env: String::new(),
        password_env: String::new(),
        from: String::new(),
        to: Vec::new(),
    }
}

fn counter(m: &Metrics, route: &str, outcome: &str) -> u64 {
    m.alerts
        .deliveries
        .with_label_values(&[route, outcome])
        .get()
}

#[test]
fn failing_routes_never_block_the_pipeline_and_are_counted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (http, inbox) = http_listener().await;
        let dead = format!("http://127.0.0.1:{}/x", free_port());
        let cfg = AlertsConfig {
            queue_capacity: 1,
            retry_initial_delay: salespulse::config::Dur(Duration::from_millis(50)),
            retry_max_delay: salespulse::config::Dur(Duration::from_millis(200)),
            retry_for: salespulse::config::Dur(Duration::from_millis(600)),
            drain_timeout: salespulse::config::Dur(Duration::from_secs(10)),
            routes: vec![
                route("dead", RouteKind::Webhook, &dead),
                route("ok", RouteKind::Webhook, &format!("http://{http}/ok")),
                route("kafka", RouteKind::Kafka, ""),
            ],
            ..Default::default()
        };
        let m = Arc::new(Metrics::new());
        let d = Dispatcher::start(&cfg, "alerts", None, m.clone()).unwrap();
        // Three notifications at once into queues of one: dispatch returns
        // immediately; what does not fit is dropped, counted and logged.
        let (f, r) = (note(NoteState::Firing), note(NoteState::Resolved));
        d.dispatch(vec![f.clone()]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        d.dispatch(vec![r.clone(), f.clone()]);
        d.shutdown().await;
        assert_eq!(counter(&m, "dead", "failed"), 2, "given up after retry_for");
        assert_eq!(counter(&m, "dead", "dropped"), 1);
        assert!(m.alerts.retries.with_label_values(&["dead"]).get() >= 2);
        assert_eq!(counter(&m, "ok", "sent") + counter(&m, "ok", "dropped"), 3);
        assert_eq!(
            inbox.on("ok").len() as u64,
            counter(&m, "ok", "sent"),
            "every sent notification arrived"
        );
        // Without Kafka, a kafka route's notifications are counted as unavailable.
        assert_eq!(counter(&m, "kafka", "unavailable"), 3);
        assert_eq!(
            m.alerts
                .notifications
                .with_label_values(&["conversion_low", "firing"])
                .get(),
            2
        );
    });
}
