//! The KPI history loader on tansu: `salespulse sink postgres` reading a
//! KPI topic (and leaderboard topic) written by a Kafka-mode run gives
//! exactly the rows the run's own PostgreSQL sink wrote (the merger's
//! records); run again in the same consumer group it finds nothing new
//! (it committed once the rows were durable).

mod common;
#[path = "common/kafka.rs"]
mod kafka_util;
#[path = "common/pg.rs"]
mod pg_util;
#[path = "common/tansu.rs"]
mod tansu_util;

use kafka_util::*;
use pg_util::Pg;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tansu_util::*;

fn config(dir: &Path, name: &str, pg: &Pg, db: &str) -> PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "[kafka]\nend_quiet = \"8s\"\nleaderboard_topic = \"hist.boards\"\n\
             [postgres]\nurl = \"{}\"\nflush_interval = \"100ms\"\n",
            pg.url(db)
        ),
    )
}

fn load(cfg: &Path, bs: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_salespulse"))
        .args(["sink", "postgres", "--config"])
        .arg(cfg)
        .args(["--brokers", bs, "--kpi-topic", "hist.kpis", "--to-end"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_from_the_kpi_topic_gives_the_rows_of_the_direct_sink() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    let pg = Pg::start();
    pg.create_db("direct");
    pg.create_db("loaded");
    let tmp = tempfile::tempdir().unwrap();
    for (t, p) in [
        ("hist.events", 3),
        ("hist.kpis", 2),
        ("hist.boards", 1),
        ("hist.dlq", 1),
    ] {
        broker.topic(t, p);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/maven-crm");
    let (maven, _) = salespulse::demo::maven::convert(&dir).unwrap();
    produce(&bs, "hist.events", &keyed(&maven)).await;

    let direct = config(tmp.path(), "direct.toml", &pg, "direct");
    salespulse(
        &direct,
        &[
            "--brokers",
            &bs,
            "--input-topic",
            "hist.events",
            "--kpi-topic",
            "hist.kpis",
            "--dlq-topic",
            "hist.dlq",
            "--group-id",
            "hist",
            "--to-end",
        ],
    )
    .wait(Duration::from_secs(300));
    let want = pg.kpi_rows("direct");
    let want_boards = pg.board_rows("direct");
    assert!(
        want.len() > 100_000,
        "{} rows from the direct sink",
        want.len()
    );
    assert!(
        want_boards.len() > 100,
        "{} leaderboard rows",
        want_boards.len()
    );

    let loaded = config(tmp.path(), "loaded.toml", &pg, "loaded");
    let log = load(&loaded, &bs);
    assert!(log.contains("KPI topic loaded"), "{log}");
    let got = pg.kpi_rows("loaded");
    assert_eq!(got.len(), want.len(), "rows loaded vs written directly");
    assert!(got == want, "the loaded rows differ from the direct sink's");
    assert!(pg.board_rows("loaded") == want_boards);

    // Same group again: its offsets were committed after the rows were
    // durable, so nothing is read twice.
    let log = load(&loaded, &bs);
    assert!(
        log.contains("loaded 0 KPI records and 0 leaderboards"),
        "{log}"
    );
    assert!(pg.kpi_rows("loaded") == want);
}
