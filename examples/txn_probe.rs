//! Probes a broker's support for Kafka transactions as salespulse would
//! use them for exactly-once output (docs/operations.md, "Kafka transactions"):
//! a consume → transactional produce + `send_offsets_to_transaction` →
//! commit cycle, an aborted transaction, what a `read_committed` reader
//! then sees, the committed input offset, and fencing of a zombie
//! producer with the same `transactional.id`. Prints one line per check.
//!
//! `./scripts/probe-transactions.sh` starts tansu on a free port and runs
//! it; or `cargo run --release --example txn_probe -- HOST:PORT` (`mock`:
//! librdkafka's mock cluster, where every check passes).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn client(bs: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bs);
    c
}

fn report(name: &str, r: Result<String, String>) -> bool {
    match r {
        Ok(s) => {
            println!("ok    {name}: {s}");
            true
        }
        Err(s) => {
            println!("FAIL  {name}: {s}");
            false
        }
    }
}

fn txn_producer(bs: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    client(bs)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "30000")
        .create()
        .expect("producer")
}

fn read_all(bs: &str, topic: &str, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = client(bs)
        .set(
            "group.id",
            format!("probe-reader-{isolation}-{}", std::process::id()),
        )
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    // `mock`: librdkafka's in-process mock cluster, which implements
    // transactions: a check that the probe itself is right.
    let mock = (arg == "mock").then(|| MockCluster::new(1).expect("mock cluster"));
    let bs = mock.as_ref().map_or(arg, |m| m.bootstrap_servers());
    println!(
        "broker: {}",
        if mock.is_some() {
            "librdkafka mock cluster"
        } else {
            &bs
        }
    );
    let run = std::process::id();
    let (input, output) = (format!("probe.in.{run}"), format!("probe.out.{run}"));
    let admin: AdminClient<DefaultClientContext> = client(&bs).create().expect("admin");
    let topics = [
        NewTopic::new(&input, 1, TopicReplication::Fixed(-1)),
        NewTopic::new(&output, 1, TopicReplication::Fixed(-1)),
    ];
    if let Some(m) = &mock {
        for t in [&input, &output] {
            m.create_topic(t, 1, 1).expect("mock topic");
        }
    } else {
        let made = admin.create_topics(&topics, &AdminOptions::new()).await;
        report(
            "create topics",
            made.map(|r| format!("{r:?}")).map_err(|e| e.to_string()),
        );
    }

    // Input: 10 plain messages.
    let plain: ThreadedProducer<DefaultProducerContext> = client(&bs).create().unwrap();
    for i in 0..10 {
        plain
            .send(BaseRecord::<str, str>::to(&input).payload(&format!("in-{i}")))
            .unwrap();
    }
    plain.flush(T).unwrap();

    let consumer: BaseConsumer = client(&bs)
        .set("group.id", format!("probe-{run}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&input, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = 0;
    let deadline = Instant::now() + T;
    while got < 10 && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            got += 1;
        }
    }
    report(
        "consume input",
        if got == 10 {
            Ok("10 messages".into())
        } else {
            Err(format!("{got} of 10"))
        },
    );

    let p = txn_producer(&bs, &format!("probe-txn-{run}"));
    let ok = report(
        "init_transactions",
        p.init_transactions(T)
            .map(|_| "producer id assigned".into())
            .map_err(|e| e.to_string()),
    );
    if !ok {
        println!("transactions unsupported: nothing more to probe");
        return;
    }
    // A committed transaction: 3 records + the input offset.
    let committed = (|| -> Result<String, String> {
        p.begin_transaction().map_err(|e| format!("begin: {e}"))?;
        for i in 0..3 {
            p.send(BaseRecord::<str, str>::to(&output).payload(&format!("committed-{i}")))
                .map_err(|(e, _)| format!("send: {e}"))?;
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&input, 0, Offset::Offset(10))
            .unwrap();
        let meta = consumer.group_metadata().ok_or("no group metadata")?;
        p.send_offsets_to_transaction(&offsets, &meta, T)
            .map_err(|e| format!("send_offsets_to_transaction: {e}"))?;
        p.commit_transaction(T)
            .map_err(|e| format!("commit: {e}"))?;
        Ok("3 records + input offset 10 committed".into())
    })();
    if !report("committed transaction", committed) {
        let ru = read_all(&bs, &output, "read_uncommitted");
        let rc = read_all(&bs, &output, "read_committed");
        println!("info  read_uncommitted sees {ru:?}; read_committed sees {rc:?}");
        println!("transactions unusable on this broker: the transaction cannot be ended");
        std::process::exit(2);
    }
    // An aborted transaction: 2 records that no read_committed reader may see.
    let aborted = (|| -> Result<String, String> {
        p.begin_transaction().map_err(|e| format!("begin: {e}"))?;
        for i in 0..2 {
            p.send(BaseRecord::<str, str>::to(&output).payload(&format!("aborted-{i}")))
                .map_err(|(e, _)| format!("send: {e}"))?;
        }
        p.flush(T).map_err(|e| format!("flush: {e}"))?;
        p.abort_transaction(T).map_err(|e| format!("abort: {e}"))?;
        Ok("2 records produced, then aborted".into())
    })();
    report("aborted transaction", aborted);

    let rc = read_all(&bs, &output, "read_committed");
    let want: Vec<String> = (0..3).map(|i| format!("committed-{i}")).collect();
    report(
        "read_committed sees only committed records",
        if rc == want {
            Ok(format!("{rc:?}"))
        } else {
            Err(format!("saw {rc:?}, want {want:?}"))
        },
    );
    let ru = read_all(&bs, &output, "read_uncommitted");
    println!("info  read_uncommitted sees: {ru:?}");

    let mut q = TopicPartitionList::new();
    q.add_partition(&input, 0);
    let off = consumer
        .committed_offsets(q, T)
        .map(|l| l.elements().first().map(|e| e.offset()));
    report(
        "input offset committed by the transaction",
        match off {
            Ok(Some(Offset::Offset(10))) => Ok("10".into()),
            other => Err(format!("{other:?}, want Offset(10)")),
        },
    );
    // Not part of a transaction: a plain commit still works next to it.
    let _ = consumer.commit_consumer_state(CommitMode::Sync);

    // Fencing: a second producer with the same transactional.id takes over;
    // the first one's next transaction must fail.
    let zombie_id = format!("probe-txn-{run}");
    let p2 = txn_producer(&bs, &zombie_id);
    let took_over = p2.init_transactions(T);
    report(
        "second producer, same transactional.id",
        took_over
            .map(|_| "initialised".into())
            .map_err(|e| e.to_string()),
    );
    let fenced = (|| -> Result<(), String> {
        p.begin_transaction().map_err(|e| e.to_string())?;
        p.send(BaseRecord::<str, str>::to(&output).payload("zombie"))
            .map_err(|(e, _)| e.to_string())?;
        p.commit_transaction(T).map_err(|e| e.to_string())
    })();
    report(
        "zombie producer fenced",
        match fenced {
            Err(e) => Ok(format!("its commit failed: {e}")),
            Ok(()) => Err("the zombie's transaction was committed".into()),
        },
    );
    let rc = read_all(&bs, &output, "read_committed");
    println!("info  read_committed after fencing: {rc:?}");
}
