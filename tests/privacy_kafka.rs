//! The right to erasure in Kafka mode, on tansu (docs/privacy.md):
//! `salespulse erase --brokers` reaches every input partition; after it,
//! the changelog as compaction leaves it (the newest value of each key,
//! tombstones applied) has no trace of the customer — neither the id nor
//! its pseudonym — and the state a restart restores does not know them.

mod common;
#[path = "common/kafka.rs"]
mod kafka_util;
#[path = "common/tansu.rs"]
mod tansu_util;
use common::ce;
use kafka_util::{produce, read_topic, Out};
use rdkafka::Message;
use serde_json::json;
use siphasher::sip128::SipHasher24;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use tansu_util::{salespulse, write_config, Tansu};

const KEY: &str = "8d3f0c2a9b7e41d5a6c0f1e2d3b4a597";

fn pseudonym(id: &str) -> Vec<u8> {
    let k: [u8; 16] =
        std::array::from_fn(|i| u8::from_str_radix(&KEY[2 * i..2 * i + 2], 16).unwrap());
    postcard::to_stdvec(&u128::from(
        SipHasher24::new_with_key(&k).hash(id.as_bytes()),
    ))
    .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The changelog as compaction leaves it: the newest message of each key
/// (a tombstone removes its key), by partition and key.
fn compacted(msgs: &[rdkafka::message::OwnedMessage]) -> BTreeMap<(i32, String), Vec<u8>> {
    let mut sorted: Vec<_> = msgs.iter().collect();
    sorted.sort_by_key(|m| (m.partition(), m.offset()));
    let mut out = BTreeMap::new();
    for m in sorted {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        match m.payload() {
            Some(p) => out.insert((m.partition(), key), p.to_vec()),
            None => out.remove(&(m.partition(), key)),
        };
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_customer_leaves_no_trace_in_the_compacted_changelog_or_the_restored_state() {
    let broker = Tansu::start();
    let bs = broker.bootstrap.clone();
    broker.topic("er.events", 2);
    broker.topic("er.kpis", 1);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "er.toml",
        &format!("[kafka]\nend_quiet = \"4s\"\ngroup_id = \"er\"\n[privacy]\nkey = \"{KEY}\"\n"),
    );
    let mut msgs = Vec::new();
    for i in 1..=40 {
        let c = format!("cust-er-{i}");
        msgs.push(Out::plain(
            &c,
            ce(
                &format!("acq-{c}"),
                "crm.customer.acquired",
                "2026-11-02T10:00:00Z",
                json!({"customer_id": c, "channel": "web"}),
            ),
        ));
    }
    produce(&bs, "er.events", &msgs).await;
    let args = [
        "--brokers",
        bs.as_str(),
        "--input-topic",
        "er.events",
        "--kpi-topic",
        "er.kpis",
        "--to-end",
        "--listen",
        "127.0.0.1:0",
    ];
    let log = salespulse(&cfg, &args).wait(Duration::from_secs(180));
    assert!(
        !log.contains("built-in public key"),
        "the key was given: {log}"
    );
    let before = read_topic(&bs, "er.changelog");
    let all_before: Vec<u8> = before
        .iter()
        .flat_map(|m| m.payload().unwrap_or_default().to_vec())
        .collect();
    assert!(
        contains(&all_before, &pseudonym("cust-er-7")),
        "the scan finds a pseudonym when it is there"
    );

    // The erasure, through Kafka, to every partition.
    let o = Command::new(env!("CARGO_BIN_EXE_salespulse"))
        .args([
            "erase",
            "--customer-id",
            "cust-er-7",
            "--brokers",
            &bs,
            "--input-topic",
            "er.events",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("partitions=2"), "{err}");
    // A tombstone in the changelog (what a smaller checkpoint leaves for
    // the chunk indexes it no longer has): the restore skips it.
    let p: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .create()
        .unwrap();
    for part in 0..2 {
        let key = format!("source/er.events/{part}#3");
        p.send(
            rdkafka::producer::FutureRecord::<str, [u8]>::to("er.changelog")
                .partition(part)
                .key(&key),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let log = salespulse(&cfg, &args).wait(Duration::from_secs(180));
    assert_eq!(
        log.matches("partition state restored from the changelog")
            .count(),
        2,
        "{log}"
    );

    // The changelog as compaction leaves it: no trace of cust-er-7.
    let after = read_topic(&bs, "er.changelog");
    assert!(after.len() > before.len(), "a new checkpoint was written");
    let kept = compacted(&after);
    let sources: Vec<_> = kept
        .iter()
        .filter(|((_, k), _)| k.starts_with("source/"))
        .collect();
    assert_eq!(sources.len(), 2, "{:?}", kept.keys());
    for ((p, k), v) in &kept {
        assert!(
            !contains(v, &pseudonym("cust-er-7")),
            "{p}/{k} keeps the pseudonym"
        );
        assert!(!contains(v, b"cust-er-7"), "{p}/{k} keeps the id");
    }
    let all_kept: Vec<u8> = kept.values().flatten().copied().collect();
    for other in ["cust-er-6", "cust-er-8", "cust-er-40"] {
        assert!(
            contains(&all_kept, &pseudonym(other)),
            "{other} is still known"
        );
    }

    // What a restart restores: every source's newest checkpoint.
    let mut restored = 0;
    for ((_, k), v) in &sources {
        let chunk: salespulse::kafka::changelog::Chunk = postcard::from_bytes(v).unwrap();
        assert_eq!(chunk.count, 1, "{k}: one chunk");
        let c = salespulse::checkpoint::Checkpoint::decode(&chunk.data, std::path::Path::new(k))
            .unwrap();
        let ids = [7, 8].map(|i| {
            u128::from(
                SipHasher24::new_with_key(&std::array::from_fn(|j| {
                    u8::from_str_radix(&KEY[2 * j..2 * j + 2], 16).unwrap()
                }))
                .hash(format!("cust-er-{i}").as_bytes()),
            )
        });
        assert!(
            !c.state.customers.contains_key(&ids[0]),
            "{k} restores cust-er-7"
        );
        restored += usize::from(c.state.customers.contains_key(&ids[1]));
        assert!(c.state.stats.erased[2][1] <= 1);
    }
    assert_eq!(restored, 1, "cust-er-8 is in one partition's state");
}
