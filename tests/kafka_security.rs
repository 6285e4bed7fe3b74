//! Kafka security against a real broker: SASL/SCRAM-SHA-512 over TLS.
//!
//! tansu 0.6 with `--authentication` checks SCRAM credentials kept in its
//! SQLite storage (its `libsql` feature, which scripts/install-tansu.sh
//! builds; the in-memory storage keeps no users, and tansu offers no
//! PLAIN). Its own TLS cannot be switched on from its command line in 0.6
//! (`--cert` and `--key` sit in one exclusive argument group), so TLS is
//! terminated by stunnel in front of it, as a TLS proxy or a cloud load
//! balancer would: the broker advertises stunnel's port, and salespulse
//! and the test clients speak SASL_SSL to it. The password goes through
//! the environment (`SALESPULSE_KAFKA__PROPERTIES__SASL_PASSWORD`).

mod common;
#[path = "common/kafka.rs"]
mod kafka_util;
#[path = "common/tansu.rs"]
mod tansu_util;

use common::free_port;
use kafka_util::{produce, read_topic, SECURITY};
use salespulse::config::Config;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tansu_util::{
    assert_kafka_finals_equal_file_mode, generated, keyed, salespulse_env, write_config,
};

const USER: &str = "salespulse";
const PASSWORD: &str = "pw-Zq8rT2xv";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker behind TLS, shared by the tests of this file.
struct Secure {
    _broker: Killed,
    _tls: Killed,
    dir: tempfile::TempDir,
    /// stunnel's TLS port, which the broker advertises.
    bootstrap: String,
}

fn tansu(dir: &Path) -> Command {
    let mut c = Command::new(std::env::var("TANSU").unwrap_or_else(|_| "tansu".into()));
    c.current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A self-signed certificate for 127.0.0.1: `<name>.pem`, `<name>.key.pem`.
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

/// A static is never dropped, so `Killed` cannot stop what [`secure`]
/// starts: a watchdog stops the broker and stunnel and removes their
/// directory once this test process has ended.
fn outlive_not(pids: &[u32], dir: &Path) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    // In the background: `sh` itself returns at once.
    let script = format!(
        "(while kill -0 {me} 2>/dev/null; do sleep 1; done; kill {pids} 2>/dev/null; rm -rf '{dir}') &",
        me = std::process::id(),
        pids = pids.join(" "),
        dir = dir.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh");
}

fn secure() -> &'static Secure {
    static S: OnceLock<Secure> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        certificate(d, "broker");
        certificate(d, "other");
        let (bp, tp) = (free_port(), free_port());
        let plain = format!("tcp://127.0.0.1:{bp}");
        let storage = "sqlite://tansu.db";
        // 1. Without authentication: the SCRAM user and the topics.
        let setup = Killed(
            tansu(d)
                .args(["broker", "--listener-url", &plain, "--advertised-listener-url", &plain])
                .args(["--storage-engine", storage])
                .spawn()
                .expect("tansu (./scripts/install-tansu.sh installs it)"),
        );
        listening(bp, "tansu");
        let ok = |c: &mut Command, what: &str| {
            let st = c.stderr(Stdio::inherit()).status().unwrap();
            assert!(st.success(), "{what} (a tansu built with --features libsql: ./scripts/install-tansu.sh)");
        };
        ok(
            tansu(d).args(["user", "create", USER, PASSWORD, "--mechanism", "scram512", "--broker", &plain]),
            "tansu user create",
        );
        for (t, p) in [("sec.events", "2"), ("sec.kpis", "1"), ("sec.dlq", "1")] {
            ok(
                tansu(d).args(["topic", "create", t, "--partitions", p, "--broker", &plain]),
                "tansu topic create",
            );
        }
        drop(setup);
        // 2. Authentication required, advertised at the TLS port.
        let broker = Killed(
            tansu(d)
                .args(["broker", "--authentication", "--listener-url", &plain])
                .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{tp}")])
                .args(["--storage-engine", storage])
                .spawn()
                .unwrap(),
        );
        listening(bp, "tansu --authentication");
        let conf = d.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tp}\nconnect = 127.0.0.1:{bp}\ncert = {c}\nkey = {k}\n",
                c = d.join("broker.pem").display(),
                k = d.join("broker.key.pem").display()
            ),
        )
        .unwrap();
        let tls = Killed(
            Command::new("stunnel4")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("stunnel4 (Debian package; ./scripts/install-deps.sh installs it)"),
        );
        listening(tp, "stunnel");
        outlive_not(&[broker.0.id(), tls.0.id()], d);
        let ca = d.join("broker.pem").display().to_string();
        SECURITY
            .set(
                [
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanisms", "SCRAM-SHA-512"),
                    ("sasl.username", USER),
                    ("sasl.password", PASSWORD),
                    ("ssl.ca.location", ca.as_str()),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec(),
            )
            .unwrap();
        Secure {
            _broker: broker,
            _tls: tls,
            bootstrap: format!("127.0.0.1:{tp}"),
            dir,
        }
    })
}

/// A salespulse config with these `kafka.properties` (no password: that
/// comes from the environment).
fn config(s: &Secure, name: &str, props: &[(&str, &str)]) -> std::path::PathBuf {
    let mut toml = salespulse::demo::generator::roster(6)
        .iter()
        .map(|(n, t, r)| format!("[[reps]]\nname = \"{n}\"\nteam = \"{t}\"\nregion = \"{r}\"\n"))
        .collect::<String>();
    toml.push_str(&format!(
        "[kafka]\nend_quiet = \"8s\"\ngroup_id = \"{name}\"\n[kafka.properties]\n"
    ));
    for (k, v) in props {
        toml.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    write_config(s.dir.path(), &format!("{name}.toml"), &toml)
}

fn scram(s: &Secure) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanisms", "SCRAM-SHA-512".into()),
        ("sasl.username", USER.into()),
        (
            "ssl.ca.location",
            s.dir.path().join("broker.pem").display().to_string(),
        ),
    ]
}

fn args(bs: &str) -> Vec<&str> {
    vec![
        "--brokers",
        bs,
        "--input-topic",
        "sec.events",
        "--kpi-topic",
        "sec.kpis",
        "--dlq-topic",
        "sec.dlq",
        "--to-end",
        "--listen",
        "127.0.0.1:0",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_carries_the_whole_pipeline() {
    let s = secure();
    let bs = s.bootstrap.as_str();
    let events = generated(3000, 11);
    produce(bs, "sec.events", &keyed(&events)).await;
    let props = scram(s);
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cfg = config(s, "sec-ok", &props);
    let log = salespulse_env(
        &cfg,
        &args(bs),
        &[("SALESPULSE_KAFKA__PROPERTIES__SASL_PASSWORD", PASSWORD)],
    )
    .wait(Duration::from_secs(240));
    assert!(
        !log.contains(PASSWORD),
        "the password is never logged:\n{log}"
    );
    // Every KPI of the run, read back over SASL_SSL, equals file mode.
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert_kafka_finals_equal_file_mode(
        bs,
        "sec.kpis",
        &Config::from_toml(&toml).unwrap(),
        &events,
    );
    // The internal topics were created and written through the same session.
    assert!(
        !read_topic(bs, "sec-ok.changelog").is_empty(),
        "checkpoints in the changelog"
    );
}

/// salespulse with one setting wrong stops at start-up, saying why (the
/// reason librdkafka gave) and which setting to fix; the four runs at once.
#[test]
fn refused_at_start_up_saying_what_to_fix() {
    let s = secure();
    let other = s.dir.path().join("other.pem").display().to_string();
    let cases: [(&str, &str, &str, &str, &str, &str); 4] = [
        // A wrong password: the SCRAM exchange fails.
        (
            "sec-wrong-password",
            "sasl.mechanisms",
            "SCRAM-SHA-512",
            "not-the-password",
            "SASL authentication error",
            "\"sasl.password\"",
        ),
        // A broker certificate from another authority.
        (
            "sec-wrong-ca",
            "ssl.ca.location",
            &other,
            PASSWORD,
            "certificate verify failed",
            "\"ssl.ca.location\"",
        ),
        // TLS without SASL: the broker requires authentication and hangs up.
        (
            "sec-no-sasl",
            "security.protocol",
            "SSL",
            PASSWORD,
            "by peer", // librdkafka: "connection closed by peer" or, under load, "reset by peer"
            "\"security.protocol\"",
        ),
        // Neither TLS nor SASL, to the TLS port.
        (
            "sec-plaintext",
            "security.protocol",
            "PLAINTEXT",
            PASSWORD,
            "brokers are down",
            "\"security.protocol\"",
        ),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(name, key, value, password, _, _)| {
            let mut props = scram(s);
            props
                .iter_mut()
                .find(|(k, _)| k == key)
                .expect("a SCRAM property")
                .1 = value.to_string();
            let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let cfg = config(s, name, &props);
            salespulse_env(
                &cfg,
                &args(&s.bootstrap),
                &[("SALESPULSE_KAFKA__PROPERTIES__SASL_PASSWORD", password)],
            )
        })
        .collect();
    for (run, (name, _, _, password, why, fix)) in runs.into_iter().zip(&cases) {
        let (st, log) = run.finish(Duration::from_secs(120));
        let err = log
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{name}: refused with an error\n{log}"));
        assert!(!st.success(), "{name}: {st}");
        assert!(err.contains(why), "{name}: says why ({why}): {err}");
        assert!(err.contains(fix), "{name}: names {fix}: {err}");
        assert!(
            !log.contains(password),
            "{name}: the password is never logged"
        );
    }
}
