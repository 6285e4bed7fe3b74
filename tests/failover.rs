//! Fast failover with the default configuration, on tansu (a real
//! Kafka-protocol broker started here): a killed instance restarted at
//! once consumes again within seconds with exact KPIs, a restarted static
//! member takes its partitions back without a rebalance (mock cluster),
//! readiness and the assignment are visible, and when one of two
//! instances is killed the survivor takes every partition within seconds,
//! exactly.
//!
//! The tests run one at a time (they measure seconds).

mod common;
#[path = "common/kafka.rs"]
mod kafka_util;
#[path = "common/tansu.rs"]
mod tansu_util;

use common::*;
use kafka_util::*;
use salespulse::config::Config;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tansu_util::*;
use tokio::sync::Mutex;

/// One test at a time: timings are the point (each test has its own
/// runtime; tokio's mutex works across them).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The default Kafka settings (no session or heartbeat override), reps
/// listed, checkpoints every second, tansu's quiet period at the end.
fn config(dir: &Path, extra: &str) -> (PathBuf, Config) {
    let reps: String = salespulse::demo::generator::roster(6)
        .iter()
        .map(|(n, t, r)| format!("[[reps]]\nname = \"{n}\"\nteam = \"{t}\"\nregion = \"{r}\"\n"))
        .collect();
    let toml = format!(
        "{reps}[output]\nupdate_interval = \"200ms\"\n[kafka]\nend_quiet = \"20s\"\ncheckpoint_interval = \"1s\"\n{extra}"
    );
    let p = dir.join("failover.toml");
    std::fs::write(&p, &toml).unwrap();
    (p, Config::from_toml(&toml).unwrap())
}

fn start(cfg: &Path, bs: &str, topic: &str, kpis: &str, group: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--brokers",
        bs,
        "--input-topic",
        topic,
        "--kpi-topic",
        kpis,
        "--dlq-topic",
        "failover.dlq",
        "--group-id",
        group,
        "--to-end",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    salespulse(cfg, &args)
}

/// Waits until `ok` holds, polling every 50 ms; the time it took.
async fn until(limit: Duration, what: &str, run: &Run, ok: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            run.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

fn assigned(run: &Run) -> Option<u64> {
    run.metric("salespulse_kafka_assigned_partitions")
        .map(|v| v as u64)
}

fn assigns(run: &Run) -> Option<u64> {
    run.metric("salespulse_kafka_rebalances_total{kind=\"assign\"}")
        .map(|v| v as u64)
}

/// SIGKILL mid-replay, restart at once, twice, with the default
/// configuration: the restarted instance consumes again within seconds
/// (it used to wait minutes for the dead member), and the final KPIs
/// equal file mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_restarted_at_once_consumes_again_within_seconds() {
    let _one = SERIAL.lock().await;
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [
        ("crashbar.events", 3),
        ("crashbar.kpis", 1),
        ("failover.dlq", 1),
    ] {
        broker.topic(t, p);
    }
    let evs = generated(60_000, 31);
    produce(&bs, "crashbar.events", &keyed(&evs)).await;
    let (cfg_path, cfg) = config(tmp.path(), "");
    let run = || {
        start(
            &cfg_path,
            &bs,
            "crashbar.events",
            "crashbar.kpis",
            "crashbar",
            &[],
        )
    };
    let mut current = run();
    let mut figures = Vec::new();
    for kill in 0..2 {
        // mid-replay: once this run has consumed some events
        let r = &current;
        until(Duration::from_secs(120), "consuming", r, || {
            r.consumed("crashbar.events").unwrap_or(0) >= 5_000
        })
        .await;
        sigkill(current);
        let t0 = Instant::now();
        current = run();
        let r = &current;
        // Up, but not ready: its partitions are not assigned before the
        // dead member's session (6 s) ends, nor restored.
        until(Duration::from_secs(30), "serving HTTP", r, || {
            r.addr().is_some_and(|a| http_get(&a, "/healthz").is_some())
        })
        .await;
        assert!(
            !r.ready(),
            "ready before its partitions are assigned and restored"
        );
        until(
            Duration::from_secs(60),
            "consuming after the restart",
            r,
            || r.consumed("crashbar.events").unwrap_or(0) > 0,
        )
        .await;
        let took = t0.elapsed();
        figures.push(took);
        eprintln!("kill {kill}: restart → first consumed message {took:?}");
        until(Duration::from_secs(30), "ready", r, || r.ready()).await;
        assert!(
            took < Duration::from_secs(15),
            "the restarted instance took {took:?} to consume again (target 15 s)"
        );
    }
    let log = current.wait(Duration::from_secs(600));
    assert!(log.contains("every window is closed"), "{log}");
    assert!(
        log.contains("partition state restored from the changelog"),
        "{log}"
    );
    eprintln!("restart → consuming: {figures:?}");
    assert_kafka_finals_equal_file_mode(&bs, "crashbar.kpis", &cfg, &evs);
}

/// Two instances, one killed, with the default configuration
/// (cooperative-sticky): the survivor owns every partition within the
/// session timeout (6 s) plus a rebalance, and the KPIs are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_takes_every_partition_within_the_session_timeout() {
    let _one = SERIAL.lock().await;
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [("pair.events", 3), ("pair.kpis", 1), ("failover.dlq", 1)] {
        broker.topic(t, p);
    }
    let evs = generated(60_000, 32);
    produce(&bs, "pair.events", &keyed(&evs)).await;
    let (cfg_path, cfg) = config(tmp.path(), "");
    let a = start(&cfg_path, &bs, "pair.events", "pair.kpis", "pair", &[]);
    // b joins once a consumes: a rebalance splits the partitions
    until(Duration::from_secs(60), "a consuming", &a, || {
        a.consumed("pair.events").unwrap_or(0) > 0
    })
    .await;
    let b = start(&cfg_path, &bs, "pair.events", "pair.kpis", "pair", &[]);
    until(Duration::from_secs(60), "the partitions split", &a, || {
        assigned(&a).is_some_and(|n| (1..3).contains(&n))
            && assigned(&b).is_some_and(|n| (1..3).contains(&n))
    })
    .await;
    until(Duration::from_secs(30), "b consuming", &b, || {
        b.consumed("pair.events").unwrap_or(0) > 0
    })
    .await;
    let b_log = b.log.clone();
    sigkill(b);
    let took = until(
        Duration::from_secs(30),
        "a owning every partition",
        &a,
        || assigned(&a) == Some(3),
    )
    .await;
    eprintln!("kill → survivor owns all 3 partitions: {took:?}");
    assert!(
        took < Duration::from_secs(12),
        "{took:?}: more than the session timeout (6 s) and a rebalance"
    );
    until(Duration::from_secs(30), "a ready", &a, || a.ready()).await;
    let rebalance = a
        .metric("salespulse_kafka_rebalance_seconds_count")
        .unwrap_or(0.0);
    assert!(rebalance >= 2.0, "rebalances timed: {rebalance}");
    let log = a.wait(Duration::from_secs(600));
    if std::env::var_os("TEST_PRINT_LOGS").is_some() {
        eprintln!("a:\n{log}\n-----\nb:\n{}", b_log.lock().unwrap());
    }
    assert!(log.contains("every window is closed"), "{log}");
    assert_kafka_finals_equal_file_mode(&bs, "pair.kpis", &cfg, &evs);
}

/// Static membership (`kafka.instance_id`), on librdkafka's mock cluster
/// with the KIP-848 consumer protocol (tansu 0.6 loops in rebalances
/// with static members; the mock's classic protocol ignores the instance
/// id): a member stopped (a rollout's SIGTERM) and restarted with the same
/// id takes its partitions back without a rebalance — the other member
/// sees no revocation and no new assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_takes_its_partitions_back_without_a_rebalance() {
    let _one = SERIAL.lock().await;
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    for (t, p) in [
        ("static.events", 4),
        ("static.kpis", 1),
        ("failover.dlq", 1),
        ("static.partials", 1),
        ("static.changelog", 4),
    ] {
        mock.create_topic(t, p, 1).unwrap();
    }
    // A day and a half of events: librdkafka's mock cluster keeps only
    // the last 5 MB of a partition, and the merger's checkpoint (written
    // every second to changelog partition 0, with source 0's) grows with
    // the days it covers — 30 days (60,000 events) made it 6.5 MB, 6 days
    // 1.2–2.2 MB, enough to push out, within seconds, the checkpoint of
    // source 0 that the restart needs.
    let evs = generated(3_000, 33);
    produce(&bs, "static.events", &keyed(&evs)).await;
    let tmp = tempfile::tempdir().unwrap();
    let (cfg_path, _) = config(
        tmp.path(),
        "[kafka.properties]\n\"group.protocol\" = \"consumer\"\n",
    );
    let member = |id: &str| {
        let mut args = vec![
            "--brokers",
            &bs,
            "--input-topic",
            "static.events",
            "--kpi-topic",
            "static.kpis",
            "--dlq-topic",
            "failover.dlq",
            "--group-id",
            "static",
            "--listen",
            "127.0.0.1:0",
            "--instance-id",
        ];
        args.push(id);
        salespulse(&cfg_path, &args)
    };
    let a = member("salespulse-0");
    let b = member("salespulse-1");
    until(Duration::from_secs(60), "the partitions split", &b, || {
        assigned(&a).is_some_and(|n| (1..4).contains(&n))
            && assigned(&b).is_some_and(|n| (1..4).contains(&n))
            && assigned(&a).unwrap_or(0) + assigned(&b).unwrap_or(0) == 4
            && a.ready()
            && b.ready()
    })
    .await;
    let a_parts = assigned(&a).unwrap();
    let b_parts = assigned(&b).unwrap();
    let b_assigns = assigns(&b).unwrap();
    let b_log_len = b.log.lock().unwrap().len();
    let first = a.stop(Duration::from_secs(60));
    assert!(first.contains("stop signal received"), "{first}");
    let t0 = Instant::now();
    let a = member("salespulse-0");
    let took = until(
        Duration::from_secs(30),
        "a owning its partitions again",
        &a,
        || assigned(&a) == Some(a_parts) && a.ready(),
    )
    .await;
    eprintln!("static member stop → restart → its {a_parts} partitions restored: {took:?} ({:?} from the restart)", t0.elapsed());
    if std::env::var_os("TEST_PRINT_LOGS").is_some() {
        eprintln!("{}", a.log.lock().unwrap());
    }
    assert_eq!(assigned(&b), Some(b_parts), "b kept its partitions");
    assert_eq!(assigns(&b), Some(b_assigns), "b saw no new assignment");
    let b_log = b.log.lock().unwrap()[b_log_len..].to_string();
    assert!(
        !b_log.contains("partitions revoked"),
        "b saw no revocation:\n{b_log}"
    );
    sigkill(a);
    sigkill(b);
}

/// More instances than partitions: the one left without a partition is
/// not ready, shows 0 assigned partitions, and warns after
/// `kafka.unassigned_warn_after`; the other is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_partitions_is_not_ready_and_warns() {
    let _one = SERIAL.lock().await;
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [("spare.events", 1), ("spare.kpis", 1), ("failover.dlq", 1)] {
        broker.topic(t, p);
    }
    let evs = generated(2_000, 34);
    produce(&bs, "spare.events", &keyed(&evs)).await;
    let (cfg_path, _) = config(tmp.path(), "unassigned_warn_after = \"2s\"\n");
    let args: [&str; 0] = [];
    let a = start(&cfg_path, &bs, "spare.events", "spare.kpis", "spare", &args);
    until(Duration::from_secs(60), "a ready", &a, || a.ready()).await;
    let b = start(&cfg_path, &bs, "spare.events", "spare.kpis", "spare", &args);
    // After the rebalance b's arrival causes, one of them holds the
    // partition (which one is the assignor's choice): it is ready once
    // assigned and restored; the other has nothing, is not ready, warns.
    let warned = |r: &Run| {
        r.log
            .lock()
            .unwrap()
            .contains("without any input partition")
    };
    until(Duration::from_secs(60), "a rebalance", &b, || {
        warned(&a) || warned(&b)
    })
    .await;
    let settled = || {
        a.ready() != b.ready()
            && matches!((assigned(&a), assigned(&b)), (Some(x), Some(y)) if x + y == 1)
    };
    until(Duration::from_secs(30), "one owner", &a, settled).await;
    let (owner, spare) = if a.ready() { (&a, &b) } else { (&b, &a) };
    assert_eq!(assigned(owner), Some(1));
    assert_eq!(assigned(spare), Some(0));
    until(
        Duration::from_secs(30),
        "the spare's warning",
        spare,
        || warned(spare),
    )
    .await;
    assert!(!spare.ready(), "the spare has no partition: not ready");
    assert!(owner.ready(), "the owner stays ready");
    sigkill(a);
    sigkill(b);
}

/// A librdkafka property given as a number in the environment (as every
/// environment value is text) is taken as its text.
#[test]
fn numeric_kafka_properties_from_the_environment_are_accepted() {
    let _one = SERIAL.blocking_lock();
    std::env::set_var("SALESPULSE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000");
    std::env::set_var(
        "SALESPULSE_KAFKA__PROPERTIES__ENABLE_PARTITION_EOF",
        "false",
    );
    let cfg = Config::load(None);
    std::env::remove_var("SALESPULSE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS");
    std::env::remove_var("SALESPULSE_KAFKA__PROPERTIES__ENABLE_PARTITION_EOF");
    let cfg = cfg.expect("numeric properties are accepted");
    let props = cfg.kafka.librdkafka_properties();
    assert!(
        props.contains(&("session.timeout.ms".into(), "6000".into())),
        "{props:?}"
    );
    assert!(
        props.contains(&("enable.partition.eof".into(), "false".into())),
        "{props:?}"
    );
    let toml = Config::from_toml("[kafka.properties]\n\"fetch.wait.max.ms\" = 100\n").unwrap();
    assert_eq!(
        toml.kafka
            .properties
            .get("fetch.wait.max.ms")
            .map(String::as_str),
        Some("100")
    );
}
