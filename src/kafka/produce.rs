//! Producing and committing: record keys and encodings, sends with
//! backpressure, the delivery task that waits for every acknowledgement
//! (sending again what failed) before offsets are committed, and the
//! event producer of `salespulse generate --brokers`.

use super::client::{producer, Ctx};
use crate::config::Config;
use crate::decode::Format;
use crate::engine::merge::Progress;
use crate::metrics::Metrics;
use crate::output::{JsonRecords, KpiRecord, LeaderboardRecord};
use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Key of a KPI record on the KPI topic: one key per series and window
/// instance, so a compacted topic keeps the latest value of each.
pub fn record_key(r: &KpiRecord) -> String {
    let mut k = String::new();
    write_record_key(r, &mut k);
    k
}

/// [`record_key`] into a reused string.
pub(super) fn write_record_key(r: &KpiRecord, k: &mut String) {
    for part in [&*r.kpi, "|", &r.window.kind, "|", &r.window.label] {
        k.push_str(part);
    }
    for (n, v) in r.dimensions.iter() {
        k.push('|');
        k.push_str(n);
        k.push('=');
        k.push_str(v);
    }
}

/// A KPI record in the configured format.
pub fn encode_record(r: &KpiRecord, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut JsonRecords::default(), format, r, &mut out);
    out
}

/// [`encode_record`] appended to `out`; in JSON, `json` encodes what the
/// records of one emission share once ([`JsonRecords`]).
pub(super) fn encode_into(
    json: &mut JsonRecords,
    format: Format,
    r: &KpiRecord,
    out: &mut Vec<u8>,
) {
    match format {
        Format::Json => json.write(r, out),
        Format::Protobuf => {
            prost::Message::encode(&crate::output::to_proto(r), out).expect("a Vec grows as needed")
        }
    }
}

/// A leaderboard in the configured format (`salespulse.v1.Leaderboard` in protobuf).
pub fn encode_leaderboard(b: &LeaderboardRecord, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(b).expect("records serialize"),
        Format::Protobuf => prost::Message::encode_to_vec(&crate::output::leaderboard_to_proto(b)),
    }
}

/// Sends one message, waiting while the producer queue is full
/// (backpressure); fails only on a non-retriable configuration error.
pub(super) async fn send(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> anyhow::Result<DeliveryFuture> {
    let mut headers = headers;
    loop {
        let mut rec = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers.take() {
            rec = rec.headers(h);
        }
        if let Some(n) = partition {
            rec = rec.partition(n);
        }
        match p.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                headers = rec.headers;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e).with_context(|| format!("cannot produce to {topic}")),
        }
    }
}

/// Sends a tombstone (a key without a value) to one partition.
pub(super) async fn send_tombstone(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
) -> anyhow::Result<DeliveryFuture> {
    loop {
        let rec = FutureRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .partition(partition);
        match p.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e).with_context(|| format!("cannot produce to {topic}")),
        }
    }
}

/// Waits for every delivery; the failed ones are sent again together
/// (with a growing backoff) until the broker takes them, and counted.
/// Never drops a message. Returns where each landed (partition, offset),
/// in no particular order.
pub(super) async fn deliver_all(
    p: &FutureProducer,
    mut futs: Vec<DeliveryFuture>,
    m: &Metrics,
) -> anyhow::Result<Vec<(i32, i64)>> {
    let mut backoff = Duration::from_millis(100);
    let mut landed = Vec::with_capacity(futs.len());
    while !futs.is_empty() {
        let mut failed: Vec<OwnedMessage> = Vec::new();
        for f in futs.drain(..) {
            match f.await {
                Ok(Ok(d)) => landed.push((d.partition, d.offset)),
                Ok(Err((e, msg))) => {
                    m.kafka
                        .produce_errors
                        .with_label_values(&[msg.topic()])
                        .inc();
                    if failed.is_empty() {
                        tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; sending again");
                    }
                    failed.push(msg);
                }
                Err(_) => anyhow::bail!("the Kafka producer shut down with messages in flight"),
            }
        }
        if failed.is_empty() {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        for msg in &failed {
            m.kafka
                .produce_retries
                .with_label_values(&[msg.topic()])
                .inc();
            futs.push(
                send(
                    p,
                    msg.topic(),
                    Some(msg.partition()),
                    msg.key().unwrap_or_default(),
                    msg.payload().unwrap_or_default(),
                    msg.headers().cloned(),
                )
                .await?,
            );
        }
    }
    Ok(landed)
}

/// What the delivery task receives: deliveries to wait for, and maybe a
/// barrier to release once they (and all before them) are acknowledged.
pub(super) struct Ack {
    pub(super) deliveries: Vec<DeliveryFuture>,
    pub(super) barrier: Option<tokio::sync::oneshot::Sender<()>>,
    /// Progress of the exports among `deliveries`: confirmed once they
    /// and everything before them are acknowledged.
    pub(super) confirms: Vec<Confirm>,
}

/// A source's progress as of one export: (partition, source generation, progress).
pub(super) type Confirm = ((String, i32), u64, Progress);

/// The newest confirmed progress of each source: the progress the next
/// export sends. The merger thus never learns of a clock (or an end)
/// before the partials it depends on are in the partials topic, ahead of
/// the message that tells it, even when a delivery failed and was sent
/// again after later ones.
pub(super) type Confirmed = Arc<Mutex<HashMap<(String, i32), (u64, Progress)>>>;

/// Waits for every delivery (sending again what failed), in order, and
/// releases barriers. Its bounded channel is the backpressure: a slow
/// broker stops consumption, so memory stays bounded.
pub(super) async fn deliverer(
    mut rx: mpsc::Receiver<Ack>,
    producer: FutureProducer,
    m: Arc<Metrics>,
    confirmed: Confirmed,
) -> anyhow::Result<()> {
    while let Some(ack) = rx.recv().await {
        deliver_all(&producer, ack.deliveries, &m).await?;
        if !ack.confirms.is_empty() {
            let mut c = confirmed.lock().expect("confirmed lock");
            for (k, gen, p) in ack.confirms {
                c.insert(k, (gen, p));
            }
        }
        if let Some(b) = ack.barrier {
            let _ = b.send(());
        }
    }
    Ok(())
}

/// Commits offsets (synchronously, off the async threads).
pub(super) async fn commit<C: Consumer<Ctx> + Send + Sync + 'static>(
    consumer: &Arc<C>,
    offsets: &[((String, i32), i64)],
    m: &Metrics,
) {
    let with: Vec<_> = offsets
        .iter()
        .map(|(tp, o)| (tp.clone(), *o, None))
        .collect();
    commit_with_metadata(consumer, &with, m).await
}

/// [`commit`], each offset with its metadata (see
/// [`super::changelog::hint_metadata`]).
pub(super) async fn commit_with_metadata<C: Consumer<Ctx> + Send + Sync + 'static>(
    consumer: &Arc<C>,
    offsets: &[((String, i32), i64, Option<String>)],
    m: &Metrics,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o, meta) in offsets {
        if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
            return;
        }
        if let (Some(mut e), Some(meta)) = (tpl.find_partition(t, *p), meta) {
            e.set_metadata(meta);
        }
    }
    let c = consumer.clone();
    let t0 = Instant::now();
    let r = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await;
    m.kafka.commit_seconds.observe(t0.elapsed().as_secs_f64());
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            m.kafka.commit_errors.inc();
            tracing::warn!(error = %e, "offset commit failed (restores use the changelog's offsets; the next checkpoint commits again)");
        }
        Err(e) => {
            m.kafka.commit_errors.inc();
            tracing::warn!(error = %e, "offset commit task failed");
        }
    }
}

/// Produces events to `topic` as CloudEvents (structured JSON with
/// `content-type: application/cloudevents+json`, or protobuf with
/// `application/protobuf`), keyed by [`crate::event::Event::partition_key`],
/// paced at `rate` events/s if given. Waits for every delivery; returns
/// how many were sent. This is `salespulse generate --brokers`.
pub async fn produce_events<'a>(
    cfg: &Config,
    topic: &str,
    events: impl Iterator<Item = crate::event::Event<'a>>,
    format: Format,
    rate: Option<f64>,
) -> anyhow::Result<u64> {
    let p = producer(cfg)?;
    let m = Metrics::new();
    let content_type = match format {
        Format::Json => "application/cloudevents+json",
        Format::Protobuf => "application/protobuf",
    };
    let start = Instant::now();
    let mut inflight: std::collections::VecDeque<DeliveryFuture> = Default::default();
    let mut n = 0u64;
    for e in events {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(n as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let value = match format {
            Format::Json => crate::decode::json::encode(&e).into_bytes(),
            Format::Protobuf => {
                prost::Message::encode_to_vec(&crate::decode::proto::from_event(&e))
            }
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(content_type),
        });
        inflight.push_back(
            send(
                &p,
                topic,
                None,
                e.partition_key().as_bytes(),
                &value,
                Some(headers),
            )
            .await?,
        );
        n += 1;
        if inflight.len() >= 10_000 {
            let batch: Vec<_> = inflight.drain(..5_000).collect();
            deliver_all(&p, batch, &m).await?;
        }
    }
    deliver_all(&p, inflight.into_iter().collect(), &m).await?;
    Ok(n)
}

/// Produces `e` (an erasure request) to every partition of `topic`, as a
/// structured JSON CloudEvent: an instance holds the entities of the
/// partitions it reads, and which partition a CRM sent an entity to is
/// the CRM's choice, so every partition gets it. Returns the partition
/// count. This is `salespulse erase --brokers`.
pub async fn produce_to_every_partition(
    cfg: &Config,
    topic: &str,
    e: &crate::event::Event<'_>,
) -> anyhow::Result<i32> {
    let (b, t) = (super::client::client_config(cfg), vec![topic.to_string()]);
    let n = tokio::task::spawn_blocking(move || super::client::partition_counts(&b, &t))
        .await??
        .first()
        .map_or(0, |(_, n)| *n);
    if n == 0 {
        anyhow::bail!("topic {topic} does not exist (fix: give the input topic salespulse reads, --input-topic)");
    }
    let p = producer(cfg)?;
    let value = crate::decode::json::encode(e).into_bytes();
    let mut futs = Vec::with_capacity(n as usize);
    for partition in 0..n {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        futs.push(
            send(
                &p,
                topic,
                Some(partition),
                e.partition_key().as_bytes(),
                &value,
                Some(headers),
            )
            .await?,
        );
    }
    deliver_all(&p, futs, &Metrics::new()).await?;
    Ok(n)
}
