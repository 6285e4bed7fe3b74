//! Kafka helpers shared by the MockCluster and tansu tests: produce
//! events, read a topic to its end, compare KPI records.
#![allow(dead_code)]

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use salespulse::output::KpiRecord;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// librdkafka properties every test client adds: the security test's
/// SASL and TLS settings (set once, before its first client).
pub static SECURITY: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// A client configuration for `bootstrap`, with [`SECURITY`].
pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in SECURITY.get().into_iter().flatten() {
        c.set(k, v);
    }
    c
}

/// One message to produce: key, value, headers.
pub struct Out {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Out {
    pub fn plain(key: &str, value: Vec<u8>) -> Out {
        Out {
            key: key.into(),
            value,
            headers: Vec::new(),
        }
    }
}

/// Produces one message to one partition and waits for its delivery.
pub async fn produce_to(bootstrap: &str, topic: &str, partition: i32, key: &str, value: Vec<u8>) {
    let p: FutureProducer = client(bootstrap).create().expect("test producer");
    p.send(
        FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(&value),
        Duration::from_secs(30),
    )
    .await
    .expect("delivered");
}

/// Produces every message (keyed: the partitioner hashes the key) and waits for delivery.
pub async fn produce(bootstrap: &str, topic: &str, msgs: &[Out]) {
    let p: FutureProducer = client(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("test producer");
    let mut futs = Vec::with_capacity(msgs.len());
    for m in msgs {
        let mut h = OwnedHeaders::new();
        for (k, v) in &m.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut rec = FutureRecord::to(topic).key(&m.key).payload(&m.value);
        if !m.headers.is_empty() {
            rec = rec.headers(h);
        }
        loop {
            match p.send_result(rec) {
                Ok(f) => {
                    futs.push(f);
                    break;
                }
                Err((_, r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for f in futs {
        f.await.expect("delivered").expect("delivered");
    }
}

/// Every message of every partition of `topic`, from the beginning to
/// the end as the broker reports it now and on until it is quiet.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", "salespulse-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
        let (_, high) = c
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        ends.insert(*p, high);
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = parts.iter().map(|p| (*p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    while next.iter().any(|(p, n)| *n < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}: read up to {next:?} of {ends:?}, last error {last_error:?}"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                out.push(m.detach());
            }
            // librdkafka reports a dropped connection (AllBrokersDown in
            // a CI run) as a consume error and reconnects on its own:
            // read on, up to the deadline.
            Some(Err(e)) => {
                eprintln!("reading {topic}: {e} (retrying)");
                last_error = Some(e);
            }
            None => {}
        }
    }
    // tansu 0.6 reports an end offset short of the last batch: read on
    // until the topic has been quiet for a second.
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            quiet_since = Instant::now();
            out.push(m.detach());
        }
    }
    out
}

/// A header of a message as a string.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// value, numerator, denominator, sample size of a record.
pub type Vals = (Option<f64>, Option<f64>, Option<f64>, u64);

/// Final values by series key, leaving out what depends on the arrival
/// order across partitions: activity counts split by the channel or
/// product they borrow from a deal or lead that may sit in another
/// partition; and first-contact SLA counts, whose deadlines at the very
/// end of a replay pass the newest partition's watermark (file mode) but
/// not the lead's own partition's (docs/kpis.md, "Health timers"; within
/// the stream they agree: tests/deal_health.rs), and the awaiting-leads
/// gauge, which loses a lead when the entity TTL forgets it — by each
/// partition's own clock.
pub fn finals(recs: &[KpiRecord]) -> BTreeMap<String, Vals> {
    recs.iter()
        .filter(|r| r.is_final)
        .filter(|r| {
            !r.kpi.starts_with("first_contact_sla_") && r.kpi != "leads_awaiting_first_contact"
        })
        .filter(|r| {
            !(r.kpi == "activities"
                && (r.dimensions.contains_key("channel") || r.dimensions.contains_key("product")))
        })
        .map(|r| {
            (
                salespulse::kafka::record_key(r),
                (r.value, r.numerator, r.denominator, r.sample_size),
            )
        })
        .collect()
}

/// Every final record of a series has the same values: a final
/// published again (after a crash, or by a merger that took over) is the
/// same final.
pub fn assert_finals_agree(recs: &[KpiRecord]) {
    let mut seen: BTreeMap<String, Vals> = BTreeMap::new();
    for r in recs.iter().filter(|r| r.is_final) {
        let v = (r.value, r.numerator, r.denominator, r.sample_size);
        let k = salespulse::kafka::record_key(r);
        if let Some(first) = seen.insert(k.clone(), v) {
            assert_same_finals(
                &BTreeMap::from([(k.clone(), v)]),
                &BTreeMap::from([(k, first)]),
            );
        }
    }
}

/// Asserts two final-value maps are equal, naming the first difference.
pub fn assert_same_finals(got: &BTreeMap<String, Vals>, want: &BTreeMap<String, Vals>) {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (a, b) => a == b,
    };
    let mut wrong = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => wrong.push(format!("missing final record {k}")),
            Some(g) if !(close(g.0, w.0) && close(g.1, w.1) && close(g.2, w.2) && g.3 == w.3) => {
                wrong.push(format!("{k}: got {g:?}, want {w:?}"))
            }
            Some(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} final records differ:\n{}",
        wrong.len(),
        want.len(),
        wrong[..wrong.len().min(40)].join("\n")
    );
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(extra.is_empty(), "unexpected final records {extra:?}");
}
