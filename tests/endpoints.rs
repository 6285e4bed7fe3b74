//! Protected endpoints (`[http]` TLS, basic and bearer authentication)
//! scraped by a real Prometheus (Debian's `prometheus`): it scrapes over
//! TLS with a password and with a token, and is refused without
//! credentials, with the wrong certificate authority, and over plain
//! HTTP; `/healthz` stays open for probes.

mod common;
use common::{free_port, http_get};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: cert.pem, key.pem.
fn certificate(dir: &Path, name: &str) {
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key.pem")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()
        .expect("openssl (Debian package; ./scripts/install-deps.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn healthcheck(url: &str) -> Output {
    Command::new(BIN)
        .args(["healthcheck", "--url", url])
        .output()
        .unwrap()
}

/// The value of an instant query with exactly one result.
fn query(prom: &str, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(prom, &format!("/api/v1/query?query={enc}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    (r.len() == 1).then_some(())?;
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Each scrape job's last error, from Prometheus' targets API.
fn last_errors(prom: &str) -> Vec<(String, String)> {
    use std::io::{Read, Write};
    // HTTP/1.0: a large answer comes whole, not chunked.
    let Ok(mut s) = std::net::TcpStream::connect(prom) else {
        return Vec::new();
    };
    let _ = write!(s, "GET /api/v1/targets HTTP/1.0\r\nHost: {prom}\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["labels"]["job"].as_str().unwrap_or("").to_string(),
                t["lastError"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn prometheus_scrapes_over_tls_with_credentials_and_is_refused_without() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    certificate(d, "server");
    certificate(d, "stranger");
    std::fs::write(d.join("password"), "s3cret-pässword\n").unwrap();
    std::fs::write(d.join("token"), "tok-8f2c1e\n").unwrap();
    std::fs::write(d.join("wrong"), "guess\n").unwrap();
    let sp = format!("127.0.0.1:{}", free_port());
    let path = |f: &str| d.join(f).display().to_string();
    let _salespulse = Killed(
        Command::new(BIN)
            .args(["run", "--rate", "500", "--listen", &sp])
            .current_dir(d)
            .env("RUST_LOG", "warn")
            .env("SALESPULSE_OUTPUT__SUMMARY_INTERVAL", "0s")
            .env("SALESPULSE_HTTP__TLS_CERT_FILE", path("server.pem"))
            .env("SALESPULSE_HTTP__TLS_KEY_FILE", path("server.key.pem"))
            .env("SALESPULSE_HTTP__BASIC_AUTH_USERNAME", "prometheus")
            .env(
                "SALESPULSE_HTTP__BASIC_AUTH_PASSWORD_FILE",
                path("password"),
            )
            .env("SALESPULSE_HTTP__BEARER_TOKEN_FILE", path("token"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The probe endpoint is open, over TLS; the others want credentials.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthcheck(&format!("https://{sp}/healthz"))
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "/healthz never answered over TLS"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = healthcheck(&format!("https://{sp}/metrics"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"), "{o:?}");
    assert!(
        !healthcheck(&format!("http://{sp}/healthz"))
            .status
            .success(),
        "plain HTTP on a TLS port"
    );

    let job = |name: &str, scheme: &str, ca: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: {scheme}\n    tls_config:\n      ca_file: {}\n{auth}    static_configs:\n      - targets: ['{sp}']\n",
            path(ca)
        )
    };
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}{}{}{}{}",
        job(
            "password",
            "https",
            "server.pem",
            &format!(
                "    basic_auth:\n      username: prometheus\n      password_file: {}\n",
                path("password")
            )
        ),
        job(
            "token",
            "https",
            "server.pem",
            &format!(
                "    authorization:\n      credentials_file: {}\n",
                path("token")
            )
        ),
        job("anonymous", "https", "server.pem", ""),
        job(
            "wrong_password",
            "https",
            "server.pem",
            &format!(
                "    basic_auth:\n      username: prometheus\n      password_file: {}\n",
                path("wrong")
            )
        ),
        job(
            "wrong_ca",
            "https",
            "stranger.pem",
            &format!(
                "    authorization:\n      credentials_file: {}\n",
                path("token")
            )
        ),
        job(
            "plain",
            "http",
            "server.pem",
            &format!(
                "    authorization:\n      credentials_file: {}\n",
                path("token")
            )
        ),
    );
    std::fs::write(d.join("prometheus.yml"), cfg).unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", path("prometheus.yml")))
            .arg(format!("--storage.tsdb.path={}", path("data")))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; ./scripts/install-deps.sh installs it)"),
    );
    let refused = ["anonymous", "wrong_password", "wrong_ca", "plain"];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up = |j: &str| query(&prom, &format!("up{{job=\"{j}\"}}"));
        let events = |j: &str| {
            query(
                &prom,
                &format!("sum(salespulse_events_in_total{{job=\"{j}\"}})"),
            )
        };
        let scraped = up("password") == Some(1.0)
            && up("token") == Some(1.0)
            && events("password").is_some_and(|n| n > 0.0)
            && events("token").is_some_and(|n| n > 0.0);
        let errors = last_errors(&prom);
        let refused_all = refused
            .iter()
            .all(|j| up(j) == Some(0.0) && errors.iter().any(|(n, e)| n == j && !e.is_empty()));
        if scraped && refused_all {
            let err = |j: &str| errors.iter().find(|(n, _)| n == j).unwrap().1.clone();
            assert!(err("anonymous").contains("401"), "{}", err("anonymous"));
            assert!(
                err("wrong_password").contains("401"),
                "{}",
                err("wrong_password")
            );
            assert!(
                err("wrong_ca").contains("certificate"),
                "{}",
                err("wrong_ca")
            );
            // Nothing of the refused jobs was stored.
            for j in refused {
                assert_eq!(
                    query(
                        &prom,
                        &format!("count(salespulse_events_in_total{{job=\"{j}\"}})")
                    ),
                    None
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scraped {scraped}, refused {refused_all}: {errors:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn protected_endpoint_settings_fail_at_start_up_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args([
            "run",
            "--events",
            "10",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .current_dir(tmp.path())
        .env("RUST_LOG", "warn");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let err = run(&[("SALESPULSE_HTTP__TLS_CERT_FILE", "cert.pem")]);
    assert!(
        err.contains("http.tls_cert_file") && err.contains("fix:"),
        "{err}"
    );
    let err = run(&[
        ("SALESPULSE_HTTP__TLS_CERT_FILE", "missing.pem"),
        ("SALESPULSE_HTTP__TLS_KEY_FILE", "missing.key"),
    ]);
    assert!(
        err.contains("http.tls_cert_file: cannot read missing.pem"),
        "{err}"
    );
    let err = run(&[("SALESPULSE_HTTP__BASIC_AUTH_USERNAME", "prometheus")]);
    assert!(
        err.contains("http.basic_auth_username") && err.contains("basic_auth_password_file"),
        "{err}"
    );
    let err = run(&[("SALESPULSE_HTTP__BEARER_TOKEN_FILE", "nope")]);
    assert!(
        err.contains("http.bearer_token_file: cannot read nope"),
        "{err}"
    );
}
