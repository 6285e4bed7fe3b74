//! Kafka source and sinks, with rdkafka on tokio.
//!
//! One task owns the engine: it receives messages from a consumer group,
//! decodes them by their `content-type` (CloudEvents JSON in structured or
//! binary mode, or protobuf), applies them, and every `input.batch_size`
//! messages (or update tick) hands the new KPI records and dead letters
//! to an idempotent producer. The delivery futures of that batch travel,
//! with the offsets of its messages, through a bounded channel to the
//! committer task, which waits until the broker has acknowledged every
//! one of them (sending again what failed) and only then commits those
//! offsets. So an offset is committed only once its message is fully
//! processed (at-least-once), and a slow or unavailable broker fills the
//! channel, which stops consumption: memory stays bounded.
//!
//! The watermark follows the slowest partition that had a message within
//! `kafka.idle_partition_timeout`, so one partition that is behind does
//! not see its events rejected as late, and one idle partition does not
//! hold every window open.

use crate::alert::deliver::Dispatcher;
use crate::config::Config;
use crate::decode::{json::BinaryAttrs, wire_of, Format, Reject, Wire};
use crate::engine::merge::Progress;
use crate::engine::{Engine, Outcome};
use crate::metrics::Metrics;
use crate::output::{KpiRecord, LeaderboardRecord};
use crate::pipeline::RunReport;
use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How a Kafka run ends.
#[derive(Clone)]
pub struct KafkaOptions {
    /// Consume every assigned partition to its current end, close every
    /// window (final records), commit and exit: a replay / backfill. Without
    /// it the run goes on until SIGTERM or Ctrl-C.
    pub to_end: bool,
    /// Emit provisional records on `output.update_interval`.
    pub live_updates: bool,
    pub metrics: Arc<Metrics>,
    /// Ignore the changelog: every partition is rebuilt from the start of
    /// its input topic (the way out of a damaged checkpoint).
    pub fresh: bool,
}

/// Consumer context: partition assignment bookkeeping and lag metrics.
pub struct Ctx {
    metrics: Arc<Metrics>,
    assigned: Mutex<HashSet<(String, i32)>>,
    /// Readiness follows this consumer's assignment (the input one).
    drives_ready: bool,
    /// When the current rebalance began (joining the group, or a
    /// revocation), until the next assignment.
    rebalance_start: Mutex<Option<Instant>>,
    /// Since when the consumer has held no partition (`None`: it holds some).
    unassigned_since: Mutex<Option<Instant>>,
    /// Assignments seen (see `Src::assignment`).
    assignments: std::sync::atomic::AtomicU64,
}

impl Ctx {
    fn new(metrics: Arc<Metrics>, drives_ready: bool) -> Ctx {
        Ctx {
            metrics,
            assigned: Mutex::new(HashSet::new()),
            drives_ready,
            rebalance_start: Mutex::new(Some(Instant::now())),
            unassigned_since: Mutex::new(Some(Instant::now())),
            assignments: Default::default(),
        }
    }

    /// How long the consumer has held no partition, if it holds none.
    pub fn unassigned_for(&self) -> Option<Duration> {
        self.unassigned_since
            .lock()
            .expect("assignment lock")
            .map(|t| t.elapsed())
    }
}

impl ClientContext for Ctx {
    fn stats(&self, st: Statistics) {
        for (topic, t) in &st.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics
                        .kafka
                        .lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(
        &self,
        _c: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        let mut a = self.assigned.lock().expect("assignment lock");
        let kind = match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    a.insert((e.topic().to_string(), e.partition()));
                }
                self.assignments
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(partitions = ?names(tpl), assigned = a.len(), "partitions assigned");
                if let Some(t0) = self.rebalance_start.lock().expect("lock").take() {
                    if self.drives_ready {
                        self.metrics
                            .kafka
                            .rebalance_seconds
                            .observe(t0.elapsed().as_secs_f64());
                    }
                }
                "assign"
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    a.remove(&(e.topic().to_string(), e.partition()));
                }
                tracing::info!(partitions = ?names(tpl), assigned = a.len(), "partitions revoked");
                self.rebalance_start
                    .lock()
                    .expect("lock")
                    .get_or_insert_with(Instant::now);
                "revoke"
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                "error"
            }
        };
        {
            let mut since = self.unassigned_since.lock().expect("lock");
            match (a.is_empty(), *since) {
                (true, None) => *since = Some(Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
        if self.drives_ready {
            self.metrics.kafka.assigned.set(a.len() as i64);
            if a.is_empty() {
                // Ready again once partitions are assigned and restored.
                self.metrics.set_ready(false);
            }
            self.metrics
                .kafka
                .rebalances
                .with_label_values(&[kind])
                .inc();
        }
    }
}

fn names(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

type Consumer_ = StreamConsumer<Ctx>;

/// Consumer settings for fast failover, unless `kafka.properties` sets
/// them (docs/operations.md, "Failover"):
/// - a crashed member is dropped from the group after 6 s without a
///   heartbeat (librdkafka's default is 45 s; 6 s is the smallest a Kafka
///   broker accepts by default): raise it on a network that loses
///   seconds at a time, at the price of slower failover;
/// - heartbeats every second, so the live members learn of a rebalance
///   within a second;
/// - `max.poll.interval.ms` 2 min: the longest salespulse may go without
///   polling (a restore from the changelog or a checkpoint in between
///   polls take seconds, not minutes); it is also how long a rebalance
///   waits for a member that stopped polling.
///
/// The assignor stays librdkafka's eager default: with cooperative-sticky
/// a two-instance failover test on tansu lost events intermittently
/// (docs/operations.md). With `group.protocol = consumer` (KIP-848) the
/// broker decides all of this: none is set.
pub const FAILOVER_DEFAULTS: [(&str, &str); 3] = [
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("max.poll.interval.ms", "120000"),
];

/// Sets `key` unless `kafka.properties` already did.
fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// Base librdkafka settings plus the user's `kafka.properties`.
fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in cfg.kafka.librdkafka_properties() {
        c.set(k, v);
    }
    c
}

/// A consumer group member subscribed to `topics` (offsets committed by
/// salespulse only, after checkpoints).
fn group_consumer(
    cfg: &Config,
    group: &str,
    topics: &[&str],
    metrics: Arc<Metrics>,
    drives_ready: bool,
) -> anyhow::Result<Arc<Consumer_>> {
    let mut c = client_config(cfg);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    set_default(&mut c, "auto.offset.reset", "earliest");
    set_default(&mut c, "statistics.interval.ms", "5000");
    // The next-generation protocol (KIP-848, `group.protocol = consumer`)
    // sets timeouts and assignment on the broker: librdkafka refuses them.
    let classic = c.get("group.protocol").is_none_or(|p| p == "classic");
    if classic {
        // librdkafka wants max.poll.interval.ms ≥ session.timeout.ms: a
        // session raised above the default poll interval raises it too.
        let session: Option<u64> = c.get("session.timeout.ms").and_then(|v| v.parse().ok());
        if let Some(s) = session.filter(|s| *s > 120_000) {
            set_default(&mut c, "max.poll.interval.ms", &s.to_string());
        }
        for (k, v) in FAILOVER_DEFAULTS {
            set_default(&mut c, k, v);
        }
    }
    if !cfg.kafka.instance_id.is_empty() {
        c.set("group.instance.id", &cfg.kafka.instance_id);
    }

    let consumer: Consumer_ = c
        .create_with_context(Ctx::new(metrics, drives_ready))
        .context("cannot create the Kafka consumer (check kafka.brokers and kafka.properties)")?;
    consumer
        .subscribe(topics)
        .with_context(|| format!("cannot subscribe to {topics:?}"))?;
    Ok(Arc::new(consumer))
}

/// An idempotent producer (no duplicates from its own retries, order kept).
pub fn producer(cfg: &Config) -> anyhow::Result<FutureProducer> {
    let mut c = client_config(cfg);
    c.set("enable.idempotence", "true").set("acks", "all");
    set_default(&mut c, "linger.ms", "5");
    set_default(&mut c, "message.timeout.ms", "30000");
    c.create()
        .context("cannot create the Kafka producer (check kafka.brokers and kafka.properties)")
}

/// Key of a KPI record on the KPI topic: one key per series and window
/// instance, so a compacted topic keeps the latest value of each.
pub fn record_key(r: &KpiRecord) -> String {
    let mut k = format!("{}|{}|{}", r.kpi, r.window.kind, r.window.label);
    for (n, v) in r.dimensions.iter() {
        k.push('|');
        k.push_str(n);
        k.push('=');
        k.push_str(v);
    }
    k
}

/// A KPI record in the configured format.
pub fn encode_record(r: &KpiRecord, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(r).expect("records serialize"),
        Format::Protobuf => prost::Message::encode_to_vec(&crate::output::to_proto(r)),
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
async fn send(
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

/// Waits for every delivery; the failed ones are sent again together
/// (with a growing backoff) until the broker takes them, and counted.
/// Never drops a message.
async fn deliver_all(
    p: &FutureProducer,
    mut futs: Vec<DeliveryFuture>,
    m: &Metrics,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    while !futs.is_empty() {
        let mut failed: Vec<OwnedMessage> = Vec::new();
        for f in futs.drain(..) {
            match f.await {
                Ok(Ok(_)) => {}
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
    Ok(())
}

/// What the delivery task receives: deliveries to wait for, and maybe a
/// barrier to release once they (and all before them) are acknowledged.
struct Ack {
    deliveries: Vec<DeliveryFuture>,
    barrier: Option<tokio::sync::oneshot::Sender<()>>,
    /// Progress of the exports among `deliveries`: confirmed once they
    /// and everything before them are acknowledged.
    confirms: Vec<Confirm>,
}

/// A source's progress as of one export: (partition, source generation, progress).
type Confirm = ((String, i32), u64, Progress);

/// The newest confirmed progress of each source: the progress the next
/// export sends. The merger thus never learns of a clock (or an end)
/// before the partials it depends on are in the partials topic, ahead of
/// the message that tells it, even when a delivery failed and was sent
/// again after later ones.
type Confirmed = Arc<Mutex<HashMap<(String, i32), (u64, Progress)>>>;

/// Waits for every delivery (sending again what failed), in order, and
/// releases barriers. Its bounded channel is the backpressure: a slow
/// broker stops consumption, so memory stays bounded.
async fn deliverer(
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
async fn commit<C: Consumer<Ctx> + Send + Sync + 'static>(
    consumer: &Arc<C>,
    offsets: &[((String, i32), i64)],
    m: &Metrics,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
            return;
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

/// A source engine: the state of one input partition.
struct Src {
    engine: Engine,
    /// Next offset to apply: smaller ones are already in the state.
    next: i64,
    /// `next` in the last checkpoint.
    saved: i64,
    last_message: Instant,
    consumed: u64,
    /// Applied something since the last export.
    changed: bool,
    /// Progress at the last export, and the (confirmed) progress it sent.
    last_progress: Option<Progress>,
    last_sent: Option<Progress>,
    last_export: Instant,
    /// Seeking back: see [`SeekBack`].
    back: SeekBack,
    /// Tells this source's confirmations from those of an earlier one
    /// of the same partition.
    generation: u64,
    /// The consumer's assignment count when this source last saw its
    /// partition assigned. A source kept across a revocation whose
    /// partition comes back (eager rebalancing revokes everything) has
    /// its fetch position reset to the committed offset, possibly inside
    /// a batch: its position is unverified again (see [`Src::verified`]).
    assignment: u64,
}

impl Src {
    /// The fetch position is known to be right: a message came since the
    /// restore (librdkafka then reads on in order), or the state starts at
    /// the partition's first offset. Until then the end offset proves
    /// nothing: tansu 0.6 reports the base offset of the last batch + 1 as
    /// the end, and serves nothing to a fetch from inside that batch.
    fn verified(&self, low: i64) -> bool {
        self.back.seen.is_some() || self.next <= low
    }
}

/// Seeking back to the offset a restored state expects, further each
/// time: some brokers (tansu 0.6) serve a fetch from inside a record
/// batch from the *next* batch, or nothing at all when it is the last
/// one. Whatever comes before the expected offset is skipped.
#[derive(Default)]
struct SeekBack {
    last: Option<Instant>,
    tries: u32,
    /// Last message of the partition, applied or skipped.
    seen: Option<Instant>,
}

impl SeekBack {
    /// Seeks `topic/partition` back from `next` (at most once a second):
    /// 4, 16, 64… × `step` offsets, the further the more tries.
    fn seek(&mut self, c: &Consumer_, topic: &str, partition: i32, next: i64, step: i64) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.tries += 1;
        let to = (next - step * (1i64 << (2 * self.tries.min(10)))).max(0);
        tracing::info!(
            topic,
            partition,
            next,
            seek = to,
            "seeking back to the restored checkpoint's offset"
        );
        if let Err(e) = seek(c, topic, partition, to) {
            tracing::debug!(error = %e, "seek failed; trying again later");
        }
    }

    /// No message for 2 s (none at all since the restore, or none since
    /// the last seek) although the partition holds offsets from `next`
    /// on: the fetch is stuck inside a batch.
    fn stuck(&self, since: Instant) -> bool {
        let quiet = |t: Instant| t.elapsed() > Duration::from_secs(2);
        quiet(self.seen.unwrap_or(since).max(self.last.unwrap_or(since)))
    }
}

/// Numbers the sources this process creates (see `Src::generation`).
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The merger: the one engine that emits KPI records.
struct Merger {
    engine: Engine,
    /// Next offset of the partials topic to read.
    next: i64,
    saved: i64,
    changed: bool,
    back: SeekBack,
    last_message: Instant,
}

/// Moves the fetch position of an assigned partition.
fn seek(c: &Consumer_, topic: &str, partition: i32, offset: i64) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    for e in c.seek_partitions(tpl, Duration::from_secs(5))?.elements() {
        if let Err(err) = e.error() {
            anyhow::bail!("{err}");
        }
    }
    Ok(())
}

/// Where a message stands against the next offset a state expects.
enum Pos {
    Apply,
    /// Already in the state (read again after a restore or a seek).
    Skip,
    /// Offsets were skipped (the group's committed offset is past the
    /// restored checkpoint): seek back.
    Gap,
}

fn position(next: i64, offset: i64) -> Pos {
    match offset.cmp(&next) {
        std::cmp::Ordering::Equal => Pos::Apply,
        std::cmp::Ordering::Less => Pos::Skip,
        std::cmp::Ordering::Greater => Pos::Gap,
    }
}

/// `topic/partition`: a source's name in partials.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn source_key(topic: &str, partition: i32) -> String {
    format!("source/{topic}/{partition}")
}

const MERGE_KEY: &str = "merge";

/// Header value as UTF-8, if present.
fn header<'a>(msg: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let h = msg.headers()?;
    h.iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The original headers plus `salespulse.*` headers saying why and where from.
fn dead_letter_headers(msg: &BorrowedMessage<'_>, rej: &Reject) -> OwnedHeaders {
    let mut h = msg.headers().map(|h| h.detach()).unwrap_or_default();
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    for (k, v) in [
        ("salespulse.reason", rej.reason.as_str()),
        ("salespulse.detail", rej.detail.as_str()),
        ("salespulse.source.topic", msg.topic()),
        ("salespulse.source.partition", partition.as_str()),
        ("salespulse.source.offset", offset.as_str()),
    ] {
        h = h.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    h
}

/// Decodes and applies one message; a rejection is returned with what the
/// dead-letter message needs (owned, so nothing borrows the consumer).
fn process(
    engine: &mut Engine,
    msg: &BorrowedMessage<'_>,
    default: Format,
) -> Result<Outcome, Box<(Reject, OwnedMessage, OwnedHeaders)>> {
    let payload = msg.payload().unwrap_or_default();
    let binary = header(msg, "ce_specversion");
    let r = match wire_of(header(msg, "content-type"), binary.is_some(), default) {
        Ok(Wire::Structured(Format::Json)) => engine.process_json(payload),
        Ok(Wire::Structured(Format::Protobuf)) => engine.process_protobuf(payload),
        Ok(Wire::BinaryJson) => {
            let attrs = BinaryAttrs {
                specversion: binary,
                id: header(msg, "ce_id"),
                source: header(msg, "ce_source"),
                ty: header(msg, "ce_type"),
                time: header(msg, "ce_time"),
                subject: header(msg, "ce_subject"),
            };
            engine.process_binary(&attrs, payload)
        }
        Err(rej) => {
            engine.count_external_reject(rej.reason);
            Err(rej)
        }
    };
    r.map_err(|rej| {
        let headers = dead_letter_headers(msg, &rej);
        Box::new((rej, msg.detach(), headers))
    })
}

/// Creates the partials and changelog topics when they do not exist.
async fn ensure_internal_topics(cfg: &Config, input_partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let k = &cfg.kafka;
    let existing = {
        let (b, t) = (client_config(cfg), vec![k.partials(), k.changelog()]);
        tokio::task::spawn_blocking(move || partition_counts(&b, &t)).await??
    };
    if existing.iter().all(|(_, n)| *n > 0) {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .context("cannot create the Kafka admin client")?;
    let repl = || TopicReplication::Fixed(k.internal_replication);
    let (partials, changelog) = (k.partials(), k.changelog());
    let topics = [
        NewTopic::new(&partials, 1, repl()),
        NewTopic::new(&changelog, input_partitions.max(1), repl()).set("cleanup.policy", "compact"),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_topics(&topics, &opts)
        .await
        .context("cannot create the internal topics")?
    {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created internal topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create internal topic {t}: {e} (create it by hand: {} with 1 partition, {} with as many partitions as the input topic, cleanup.policy=compact)", k.partials(), k.changelog()),
        }
    }
    Ok(())
}

/// Partition counts of the input topics, once they all exist: the
/// changelog is sized from them, so salespulse waits for a missing one
/// (created by an init job, or by the producer) instead of guessing.
async fn input_partitions(
    base: &ClientConfig,
    topics: &[String],
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<Option<Vec<(String, i32)>>> {
    let t0 = Instant::now();
    let mut warned: Option<Instant> = None;
    loop {
        let counts = {
            let (b, t) = (base.clone(), topics.to_vec());
            tokio::task::spawn_blocking(move || partition_counts(&b, &t)).await??
        };
        let missing: Vec<&str> = counts
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(t, _)| t.as_str())
            .collect();
        if missing.is_empty() {
            if warned.is_some() {
                tracing::info!(waited_s = t0.elapsed().as_secs(), "the input topics exist");
            }
            return Ok(Some(counts));
        }
        if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(30)) {
            tracing::warn!(
                topics = ?missing,
                "input topic does not exist yet: waiting for it (create it with its partition count; the changelog gets as many partitions)"
            );
            warned = Some(Instant::now());
        }
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Partition counts of `topics` (0 for a topic that does not exist).
fn partition_counts(base: &ClientConfig, topics: &[String]) -> anyhow::Result<Vec<(String, i32)>> {
    let c: rdkafka::consumer::BaseConsumer = base.create()?;
    let mut out = Vec::new();
    for t in topics {
        let md = c
            .fetch_metadata(Some(t), Duration::from_secs(30))
            .with_context(|| format!("cannot read the metadata of topic {t}"))?;
        let n = md
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        out.push((t.clone(), n));
    }
    Ok(out)
}

/// The offset the group of `consumer` committed for a partition, if any.
fn committed(consumer: &Consumer_, topic: &str, partition: i32) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    match consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?
        .elements()
        .first()
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    }
}

/// Where the restore of a checkpoint came from, for errors.
fn changelog_name(topic: &str, partition: i32, offset: i64, key: &str) -> std::path::PathBuf {
    format!("kafka changelog {topic} partition {partition} offset {offset} ({key})").into()
}

const KAFKA_FIX: &str = "the changelog holds a damaged or incompatible checkpoint; to rebuild every partition from the start of its input topic instead, run once with `salespulse run --fresh …`, which ignores the changelog (the input topics must still hold every event)";

/// Restores the source engine of one input partition from the changelog
/// (or a new one at the partition's start); returns it and its next offset.
fn restore_source(
    cfg: &Config,
    topic: &str,
    partition: i32,
    changelog_partitions: i32,
    fresh: bool,
    target: Option<i64>,
) -> anyhow::Result<(Engine, i64)> {
    use crate::checkpoint::{Checkpoint, InputPosition};
    let base = client_config(cfg);
    let settings = crate::engine::Settings::from_config(cfg);
    let key = source_key(topic, partition);
    let cp = partition % changelog_partitions.max(1);
    let found = if fresh {
        None
    } else {
        // At the partition's start there is nothing to wait for.
        let low = base
            .create::<rdkafka::consumer::BaseConsumer>()
            .ok()
            .and_then(|c| {
                c.fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .ok()
            })
            .map_or(0, |(l, _)| l);
        let target = target.filter(|t| *t > low);
        crate::changelog::read_partition(
            &base,
            &cfg.kafka.changelog(),
            cp,
            |k| k == key,
            target.map(|t| (key.as_str(), t)),
            Duration::from_secs(15),
        )?
        .by_key
        .remove(&key)
    };
    let Some((offset, _, bytes)) = found else {
        let c: rdkafka::consumer::BaseConsumer = base.create()?;
        let (low, _) = c
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .with_context(|| format!("cannot read the start offset of {topic}/{partition}"))?;
        let mut e = Engine::new(settings);
        e.set_source_mode();
        tracing::info!(
            topic,
            partition,
            start = low,
            fresh,
            "no checkpoint: reading the partition from its start"
        );
        return Ok((e, low));
    };
    let name = changelog_name(&cfg.kafka.changelog(), cp, offset, &key);
    let c = Checkpoint::decode(&bytes, &name).context(KAFKA_FIX)?;
    c.check_layout(&name, &settings).context(KAFKA_FIX)?;
    let InputPosition::Kafka { next, .. } = c.input else {
        anyhow::bail!(
            "{} is not the checkpoint of a Kafka partition ({KAFKA_FIX})",
            name.display()
        );
    };
    let mut e = Engine::from_state(settings, c.state);
    e.set_source_mode();
    tracing::info!(topic, partition, next, written_at = %c.written_at, "partition state restored from the changelog");
    Ok((e, next))
}

/// Restores the merger from the changelog (or a new one).
fn restore_merger(
    cfg: &Config,
    expected: std::collections::BTreeSet<String>,
    fresh: bool,
    target: Option<i64>,
) -> anyhow::Result<(Engine, i64)> {
    use crate::checkpoint::{check_layout, unframe, CheckpointError, MergeCheckpoint};
    let settings = crate::engine::Settings::from_config(cfg);
    let found = if fresh {
        None
    } else {
        crate::changelog::read_partition(
            &client_config(cfg),
            &cfg.kafka.changelog(),
            0,
            |k| k == MERGE_KEY,
            target.filter(|t| *t > 0).map(|t| (MERGE_KEY, t)),
            Duration::from_secs(15),
        )?
        .by_key
        .remove(MERGE_KEY)
    };
    let Some((offset, _, bytes)) = found else {
        let mut e = Engine::new(settings);
        e.set_merge_mode(Default::default(), expected);
        return Ok((e, 0));
    };
    let name = changelog_name(&cfg.kafka.changelog(), 0, offset, MERGE_KEY);
    let corrupt = |problem: String| CheckpointError::Corrupt {
        path: name.clone(),
        problem,
    };
    let payload = unframe(&bytes).map_err(corrupt).context(KAFKA_FIX)?;
    let c: MergeCheckpoint = postcard::from_bytes(payload)
        .map_err(|e| corrupt(format!("cannot decode the merger state: {e}")))
        .context(KAFKA_FIX)?;
    check_layout(&c.layout, &name, &settings).context(KAFKA_FIX)?;
    let mut e = Engine::from_state(settings, c.state);
    e.set_merge_mode(c.merge, expected);
    tracing::info!(partials_next = c.partials_next, written_at = %c.written_at, "merger state restored from the changelog");
    Ok((e, c.partials_next))
}

/// Runs the Kafka pipeline until SIGTERM / Ctrl-C, or with `to_end` until
/// every partition is consumed to its end and (on the instance that
/// holds the merger) every window is closed.
///
/// Each assigned input partition has its own source engine, restored
/// from the changelog topic when the partition is assigned. Sources
/// export partials to the partials topic (one partition); the instance
/// assigned that partition (consumer group `<group_id>.merge`) runs the
/// merger, which emits the KPI records, leaderboards and alerts. Every
/// `kafka.checkpoint_interval`: wait until everything produced is
/// acknowledged, write each changed state to the changelog, wait for
/// that, then commit the input offsets those states have reached.
pub async fn run(cfg: &Config, opts: KafkaOptions) -> anyhow::Result<RunReport> {
    let k = &cfg.kafka;
    let m = opts.metrics.clone();
    tracing::info!(kafka = ?k, "starting the Kafka pipeline");
    let base = client_config(cfg);
    // Registered now: a SIGTERM while waiting for topics or restoring counts.
    let shutdown = crate::pipeline::shutdown_signal();
    tokio::pin!(shutdown);
    let Some(counts) = input_partitions(&base, &k.input_topics, &mut shutdown).await? else {
        tracing::info!("stopped before the input topics existed");
        return Ok(RunReport::default());
    };
    let max_parts = counts.iter().map(|(_, n)| *n).max().unwrap_or(1);
    ensure_internal_topics(cfg, max_parts).await?;
    let changelog_parts = {
        let (b, t) = (base.clone(), vec![k.changelog()]);
        tokio::task::spawn_blocking(move || partition_counts(&b, &t))
            .await??
            .first()
            .map_or(1, |(_, n)| (*n).max(1))
    };
    let expected: std::collections::BTreeSet<String> = counts
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| source_name(t, p)))
        .collect();
    let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
    let consumer = group_consumer(cfg, &k.group_id, &topics, m.clone(), true)?;
    let merge_group = format!("{}.merge", k.group_id);
    let merge_consumer = group_consumer(
        cfg,
        &merge_group,
        &[k.partials().as_str()],
        m.clone(),
        false,
    )?;
    let producer = producer(cfg)?;
    let alerts = Dispatcher::start(
        &cfg.alerts,
        &k.alert_topic,
        Some(producer.clone()),
        m.clone(),
    )?;
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(8);
    let confirmed: Confirmed = Default::default();
    let deliverer = tokio::spawn(deliverer(
        ack_rx,
        producer.clone(),
        m.clone(),
        confirmed.clone(),
    ));
    let mut confirms: Vec<Confirm> = Vec::new();
    let mut sources: HashMap<(String, i32), Src> = HashMap::new();
    // Assigned partitions waiting for their first message, since when.
    let mut pending: HashMap<(String, i32), Instant> = HashMap::new();
    let mut merger: Option<Merger> = None;
    let mut report = RunReport::default();
    let mut deliveries: Vec<DeliveryFuture> = Vec::new();
    let mut since_flush = 0usize;
    let batch = cfg.input.batch_size;
    let idle = k.idle_partition_timeout.0;
    let mut tick = tokio::time::interval(
        cfg.output
            .update_interval
            .0
            .clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    let ends: Ends = Default::default();
    // End offsets: for `--to-end`, and to tell a partition stuck inside
    // a batch (see `SeekBack`) from one with nothing to read.
    let every = Duration::from_millis(if opts.to_end { 250 } else { 2_000 });
    let ends_task = watch_ends(consumer.clone(), ends.clone(), every);
    let mut t_batch = Instant::now();
    let mut last_message = Instant::now();
    let mut at_end_since: Option<Instant> = None;
    // When the last "no partition" warning was logged.
    let mut warned: Option<Instant> = None;
    // `--fresh`: the partials already in the topic belong to the state
    // being discarded (and may say every source is at its end): a merger
    // of this run reads only those written from now on.
    let fresh_partials_from = if opts.fresh {
        let (c, t) = (merge_consumer.clone(), k.partials());
        tokio::task::spawn_blocking(move || {
            c.fetch_watermarks(&t, 0, Duration::from_secs(10))
                .map(|(_, high)| high)
        })
        .await?
        .context("cannot read the end offset of the partials topic")?
    } else {
        0
    };
    let ctx = Shared {
        cfg,
        m: &m,
        producer: &producer,
        consumer: &consumer,
        merge_consumer: &merge_consumer,
        expected: &expected,
        changelog_parts,
        fresh: opts.fresh,
        fresh_partials_from,
    };
    loop {
        let mut ticked = false;
        tokio::select! {
            msg = consumer.recv() => {
                match msg {
                    Ok(msg) => {
                        let key = (msg.topic().to_string(), msg.partition());
                        if !sources.contains_key(&key) {
                            ctx.sync_sources(&mut sources, &mut pending, Some((&key, msg.offset()))).await?;
                        }
                        last_message = Instant::now();
                        if let Some(src) = sources.get_mut(&key) {
                            src.back.seen = Some(Instant::now());
                            let offset = msg.offset();
                            match position(src.next, offset) {
                                Pos::Skip => {}
                                Pos::Gap => src.back.seek(&consumer, &key.0, key.1, src.next, 16),
                                Pos::Apply => {
                                    let r = process(&mut src.engine, &msg, k.default_format);
                                    drop(msg);
                                    src.next = offset + 1;
                                    src.back.tries = 0;
                                    src.last_message = Instant::now();
                                    src.changed = true;
                                    src.consumed += 1;
                                    match r {
                                        Ok(Outcome::Counted) => report.accepted += 1,
                                        Ok(Outcome::Duplicate) => report.duplicates += 1,
                                        Err(bad) => {
                                            let (rej, orig, headers) = *bad;
                                            report.rejected += 1;
                                            if k.dlq_topic.is_empty() {
                                                tracing::warn!(reason = rej.reason.as_str(), detail = %rej.detail, topic = orig.topic(), partition = orig.partition(), offset = orig.offset(), "rejected message (no kafka.dlq_topic)");
                                            } else {
                                                let (value, cut) = crate::output::clip_raw(orig.payload().unwrap_or_default(), cfg.output.dead_letter_max_bytes);
                                                let headers = match &cut {
                                                    Some((len, hash)) => headers
                                                        .insert(Header { key: "salespulse.original_length", value: Some(&len.to_string()) })
                                                        .insert(Header { key: "salespulse.original_xxh3", value: Some(hash.as_str()) }),
                                                    None => headers,
                                                };
                                                deliveries.push(send(&producer, &k.dlq_topic, None, orig.key().unwrap_or_default(), value, Some(headers)).await?);
                                            }
                                        }
                                    }
                                    since_flush += 1;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
                }
            }
            msg = merge_consumer.recv() => {
                match msg {
                    Ok(msg) => {
                        if merger.is_none() {
                            ctx.sync_merger(&mut merger, Some(msg.offset())).await?;
                        }
                        if let Some(mg) = merger.as_mut() {
                            mg.back.seen = Some(Instant::now());
                            let offset = msg.offset();
                            match position(mg.next, offset) {
                                Pos::Skip => {}
                                Pos::Gap => mg.back.seek(&merge_consumer, msg.topic(), msg.partition(), mg.next, 1),
                                Pos::Apply => {
                                    match crate::engine::merge::Partial::decode(msg.payload().unwrap_or_default()) {
                                        Ok(p) => {
                                            mg.engine.absorb(&p);
                                        }
                                        Err(e) => tracing::error!(offset, error = %e, "undecodable message in the partials topic, skipped"),
                                    }
                                    mg.next = offset + 1;
                                    mg.back.tries = 0;
                                    mg.changed = true;
                                    mg.last_message = Instant::now();
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Kafka consumer error (partials)"),
                }
            }
            _ = tick.tick() => { ticked = true; }
            _ = &mut shutdown => {
                tracing::info!("stop signal received: draining");
                break;
            }
        }
        if !(ticked || since_flush >= batch) {
            continue;
        }
        if since_flush > 0 {
            m.event_seconds
                .observe(t_batch.elapsed().as_secs_f64() / since_flush as f64);
        }
        ctx.sync_sources(&mut sources, &mut pending, None).await?;
        ctx.sync_merger(&mut merger, None).await?;
        match consumer.context().unassigned_for() {
            Some(d)
                if d >= k.unassigned_warn_after.0
                    && warned.is_none_or(|w| w.elapsed() >= k.unassigned_warn_after.0) =>
            {
                tracing::warn!(
                    seconds = d.as_secs(),
                    group = %k.group_id,
                    "in the consumer group without any input partition: more instances than partitions, or a rebalance that does not end (docs/operations.md, Failover)"
                );
                warned = Some(Instant::now());
            }
            Some(_) => {}
            None => warned = None,
        }
        let ends_now = ends.lock().expect("ends lock").clone();
        for ((t, p), src) in sources.iter_mut() {
            let Some(&(low, high)) = ends_now.get(&(t.clone(), *p)) else {
                continue;
            };
            if (src.next < high || !src.verified(low)) && src.back.stuck(src.last_message) {
                src.back.seek(&consumer, t, *p, src.next, 16);
            }
        }
        ctx.export(
            &mut sources,
            &mut deliveries,
            &mut confirms,
            &confirmed,
            idle,
            &ends_now,
            opts.to_end,
        )
        .await?;
        let mut finished = false;
        if let Some(mg) = merger.as_mut() {
            mg.engine.merge_advance();
        }
        if opts.to_end && merger.as_ref().is_some_and(|mg| mg.engine.merge_at_end()) {
            // The merger's last checkpoint is its state before the last
            // windows close (as in file mode): a merger restored from it
            // (this instance stopped, another one holds the partials
            // now) finishes again with the same finals. Restored from a
            // finished state it would open those windows again with only
            // the partials read after it, and publish wrong finals.
            // As at every checkpoint, what the saved state has emitted
            // (windows the last partials closed) is handed out first.
            if let Some(mg) = merger.as_mut() {
                ctx.publish(&mut mg.engine, &mut deliveries, &mut report, &alerts)
                    .await?;
                mg.changed = true;
            }
            if !deliveries.is_empty() {
                ack_tx
                    .send(Ack {
                        deliveries: std::mem::take(&mut deliveries),
                        barrier: None,
                        confirms: std::mem::take(&mut confirms),
                    })
                    .await
                    .map_err(|_| anyhow::anyhow!("the delivery task stopped"))?;
            }
            ctx.checkpoint(&mut sources, merger.as_mut(), &ack_tx)
                .await?;
            last_checkpoint = Instant::now();
        }
        if let Some(mg) = merger.as_mut() {
            if opts.to_end && mg.engine.merge_at_end() {
                mg.engine.finish();
                // Not saved again (see above).
                mg.changed = false;
                finished = true;
            } else if ticked && opts.live_updates {
                mg.engine.emit_updates();
            }
            ctx.publish(&mut mg.engine, &mut deliveries, &mut report, &alerts)
                .await?;
        }
        ctx.sync_metrics(&sources, merger.as_ref());
        if !deliveries.is_empty() {
            ack_tx
                .send(Ack {
                    deliveries: std::mem::take(&mut deliveries),
                    barrier: None,
                    confirms: std::mem::take(&mut confirms),
                })
                .await
                .map_err(|_| anyhow::anyhow!("the delivery task stopped"))?;
        }
        since_flush = 0;
        t_batch = Instant::now();
        if finished {
            tracing::info!("every partition is consumed to its end and every window is closed");
            break;
        }
        if last_checkpoint.elapsed() >= k.checkpoint_interval.0 {
            ctx.checkpoint(&mut sources, merger.as_mut(), &ack_tx)
                .await?;
            last_checkpoint = Instant::now();
        }
        if opts.to_end {
            // Sources at their end; an instance without the merger waits
            // `end_quiet` in case the merger comes to it, then leaves.
            let all_end = !sources.is_empty()
                && sources
                    .values()
                    .all(|s| s.last_sent.is_some_and(|p| p.at_end))
                && last_message.elapsed() >= k.end_quiet.0;
            if all_end && merger.is_none() {
                let since = *at_end_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= k.end_quiet.0 {
                    tracing::info!("this instance's partitions are consumed to their end; the merger is elsewhere");
                    break;
                }
            } else {
                at_end_since = None;
            }
        }
    }
    ctx.checkpoint(&mut sources, merger.as_mut(), &ack_tx)
        .await?;
    drop(ack_tx);
    deliverer.await.context("delivery task failed")??;
    alerts.shutdown().await;
    drop(ends);
    let _ = ends_task.await;
    Ok(report)
}

/// What the steps of the Kafka loop share.
struct Shared<'a> {
    cfg: &'a Config,
    m: &'a Arc<Metrics>,
    producer: &'a FutureProducer,
    consumer: &'a Arc<Consumer_>,
    merge_consumer: &'a Arc<Consumer_>,
    expected: &'a std::collections::BTreeSet<String>,
    changelog_parts: i32,
    fresh: bool,
    /// First offset of the partials topic a merger of this run reads
    /// (`--fresh`: its end when the run started; else 0).
    fresh_partials_from: i64,
}

impl Shared<'_> {
    /// Restores the sources of newly assigned partitions (before any of
    /// their messages is applied) and drops those of revoked ones (their
    /// new owner restores them from the changelog and replays).
    async fn sync_sources(
        &self,
        sources: &mut HashMap<(String, i32), Src>,
        pending: &mut HashMap<(String, i32), Instant>,
        with: Option<(&(String, i32), i64)>,
    ) -> anyhow::Result<()> {
        let mut assigned: HashSet<(String, i32)> = self
            .consumer
            .context()
            .assigned
            .lock()
            .expect("assignment lock")
            .clone();
        // A message can come before the assignment callback is seen: its
        // partition is restored too, and kept for a while.
        assigned.extend(with.map(|(k, _)| k.clone()));
        sources.retain(|k, s| {
            assigned.contains(k) || s.last_message.elapsed() < Duration::from_secs(5)
        });
        let assignment = self
            .consumer
            .context()
            .assignments
            .load(std::sync::atomic::Ordering::Relaxed);
        for (k, s) in sources.iter_mut() {
            if s.assignment != assignment && assigned.contains(k) {
                s.assignment = assignment;
                // Unverified until a message comes; if none does for a
                // while, `SeekBack` seeks back (as after a restore).
                s.back = SeekBack {
                    last: Some(Instant::now()),
                    ..SeekBack::default()
                };
            }
        }
        pending.retain(|k, _| assigned.contains(k));
        for (t, p) in assigned {
            let key = (t.clone(), p);
            if sources.contains_key(&key) {
                continue;
            }
            // A partition is restored at its first message, whose offset
            // is the group's committed one: the changelog is read up to
            // that checkpoint, so no seek is needed (some brokers, tansu
            // 0.6, stall after one). One that brings no message for a few
            // seconds is restored anyway (it reports its progress).
            let first = with.filter(|(k, _)| **k == key).map(|(_, o)| o);
            let since = *pending.entry(key.clone()).or_insert_with(Instant::now);
            if first.is_none() && since.elapsed() < Duration::from_secs(3) {
                continue;
            }
            pending.remove(&key);
            let (cfg, tt, parts, fresh) = (
                self.cfg.clone(),
                t.clone(),
                self.changelog_parts,
                self.fresh,
            );
            let c = self.consumer.clone();
            let t0 = Instant::now();
            let (engine, next) = tokio::task::spawn_blocking(move || {
                // The group's committed offset; else the first message's
                // (some brokers answer the offset fetch late).
                let target = committed(&c, &tt, p).or(first);
                tracing::debug!(topic = %tt, partition = p, ?target, "restoring the partition's state");
                restore_source(&cfg, &tt, p, parts, fresh, target)
            })
            .await
            .context("restore task failed")??;
            self.m
                .checkpoint
                .restore_seconds
                .observe(t0.elapsed().as_secs_f64());
            let now = Instant::now();
            sources.insert(
                (t, p),
                Src {
                    engine,
                    next,
                    saved: next,
                    last_message: now,
                    consumed: 0,
                    changed: true,
                    last_progress: None,
                    last_sent: None,
                    last_export: now,
                    back: SeekBack::default(),
                    generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    assignment,
                },
            );
        }
        // Ready (`/readyz`) once every assigned partition is restored.
        let (n, restored) = {
            let assigned = self
                .consumer
                .context()
                .assigned
                .lock()
                .expect("assignment lock");
            let restored = assigned.iter().filter(|k| sources.contains_key(*k)).count();
            (assigned.len(), restored)
        };
        self.m.kafka.restored.set(restored as i64);
        self.m.set_ready(n > 0 && restored == n);
        Ok(())
    }

    /// Restores the merger when this instance is assigned the partials
    /// partition, drops it when that is revoked.
    async fn sync_merger(
        &self,
        merger: &mut Option<Merger>,
        first: Option<i64>,
    ) -> anyhow::Result<()> {
        let got_message = first.is_some();
        // A message can come before the assignment callback is seen.
        let recent = merger
            .as_ref()
            .is_some_and(|m| m.last_message.elapsed() < Duration::from_secs(5));
        let assigned = !self
            .merge_consumer
            .context()
            .assigned
            .lock()
            .expect("assignment lock")
            .is_empty();
        // `/metrics` shows the KPIs only while the partition is assigned:
        // a revoked merger kept a few seconds (`recent`) shows nothing,
        // so the next owner never exports a series at the same time.
        self.m.kpis.show(assigned);
        let held = got_message || recent || assigned;
        if !held {
            if merger.take().is_some() {
                // Its KPI series are exported by the instance that has it now.
                self.m.kpis.clear();
                tracing::info!("the merger moved to another instance");
            }
            return Ok(());
        }
        if merger.is_some() {
            return Ok(());
        }
        let (cfg, expected, fresh) = (self.cfg.clone(), self.expected.clone(), self.fresh);
        let c = self.merge_consumer.clone();
        let (engine, next) = tokio::task::spawn_blocking(move || {
            let target = first.or_else(|| committed(&c, &cfg.kafka.partials(), 0));
            restore_merger(&cfg, expected, fresh, target)
        })
        .await
        .context("restore task failed")??;
        let next = next.max(self.fresh_partials_from);
        tracing::info!(partials_next = next, "this instance runs the merger");
        *merger = Some(Merger {
            engine,
            next,
            saved: next,
            changed: true,
            back: SeekBack::default(),
            last_message: Instant::now(),
        });
        Ok(())
    }

    /// Exports the partials of every source that changed (or whose
    /// progress did, or once a second as a heartbeat).
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        sources: &mut HashMap<(String, i32), Src>,
        deliveries: &mut Vec<DeliveryFuture>,
        confirms: &mut Vec<Confirm>,
        confirmed: &Confirmed,
        idle: Duration,
        ends: &EndOffsets,
        to_end: bool,
    ) -> anyhow::Result<()> {
        let topic = &self.cfg.kafka.partials();
        for ((t, p), src) in sources.iter_mut() {
            let end = ends.get(&(t.clone(), *p)).copied();
            // End offsets unknown (not fetched yet, or not allowed):
            // idleness falls back to time alone, and no end is reached.
            let behind = end.is_some_and(|(low, high)| src.next < high || !src.verified(low));
            let quiet = src.last_message.elapsed();
            // Quiet too: some brokers (tansu 0.6) report end offsets
            // short of what they hold.
            let at_end = to_end && quiet >= self.cfg.kafka.end_quiet.0 && end.is_some() && !behind;
            if at_end && src.engine.waiting_counts() != [0, 0] {
                // End of input (`--to-end`): what still waits counts now,
                // as in file mode.
                src.engine.end_of_input();
                src.changed = true;
            }
            let progress = Progress {
                clock: src.engine.state.clock,
                max_time: src.engine.state.max_time,
                // Idle: nothing to read. A partition with messages left
                // (restoring, seeking, slow) holds the merger's clock back.
                idle: quiet >= idle && !behind,
                at_end,
            };
            let key = (t.clone(), *p);
            let sent = confirmed
                .lock()
                .expect("confirmed lock")
                .get(&key)
                .filter(|(g, _)| *g == src.generation)
                .map(|(_, p)| *p);
            if !src.changed
                && src.last_progress == Some(progress)
                && src.last_sent == sent
                && src.last_export.elapsed() < Duration::from_secs(1)
            {
                continue;
            }
            let name = source_name(t, *p);
            for part in src
                .engine
                .export(&name, src.next, sent, crate::changelog::CHUNK)
            {
                deliveries.push(
                    send(
                        self.producer,
                        topic,
                        Some(0),
                        name.as_bytes(),
                        &part.encode(),
                        None,
                    )
                    .await?,
                );
            }
            if src.consumed > 0 {
                self.m
                    .kafka
                    .consumed
                    .with_label_values(&[t.as_str()])
                    .inc_by(std::mem::take(&mut src.consumed));
            }
            confirms.push((key, src.generation, progress));
            src.changed = false;
            src.last_progress = Some(progress);
            src.last_sent = sent;
            src.last_export = Instant::now();
        }
        Ok(())
    }

    /// Hands the merger's new records, leaderboards and notifications out.
    async fn publish(
        &self,
        engine: &mut Engine,
        deliveries: &mut Vec<DeliveryFuture>,
        report: &mut RunReport,
        alerts: &Dispatcher,
    ) -> anyhow::Result<()> {
        let recs = engine.take_records();
        let boards = engine.take_leaderboards();
        alerts.dispatch(engine.take_notifications());
        report.records += recs.len() as u64;
        self.m.observe(&recs, &boards);
        let k = &self.cfg.kafka;
        let mut out: Vec<(&str, String, Vec<u8>)> = Vec::new();
        if !k.kpi_topic.is_empty() {
            out.extend(recs.iter().map(|r| {
                (
                    k.kpi_topic.as_str(),
                    record_key(r),
                    encode_record(r, k.kpi_format),
                )
            }));
        }
        if !k.leaderboard_topic.is_empty() {
            out.extend(boards.iter().map(|b| {
                (
                    k.leaderboard_topic.as_str(),
                    b.key(),
                    encode_leaderboard(b, k.kpi_format),
                )
            }));
        }
        for (topic, key, payload) in out {
            deliveries
                .push(send(self.producer, topic, None, key.as_bytes(), &payload, None).await?);
        }
        Ok(())
    }

    fn sync_metrics(&self, sources: &HashMap<(String, i32), Src>, merger: Option<&Merger>) {
        for ((t, p), s) in sources {
            self.m.sync_counters(&source_name(t, *p), &s.engine);
        }
        let mut engines: Vec<&Engine> = sources.values().map(|s| &s.engine).collect();
        if let Some(mg) = merger {
            self.m.sync_counters(MERGE_KEY, &mg.engine);
            engines.push(&mg.engine);
        }
        self.m.sync_gauges(&engines);
    }

    /// Waits until everything produced so far is acknowledged, writes the
    /// changed states to the changelog, waits for that, then commits the
    /// offsets those states have reached.
    async fn checkpoint(
        &self,
        sources: &mut HashMap<(String, i32), Src>,
        merger: Option<&mut Merger>,
        ack_tx: &mpsc::Sender<Ack>,
    ) -> anyhow::Result<()> {
        use crate::checkpoint::{CheckpointRef, InputPosition, MergeCheckpoint, SinkLengths};
        let dirty: Vec<(String, i32)> = sources
            .iter()
            .filter(|(_, s)| s.next != s.saved)
            .map(|(k, _)| k.clone())
            .collect();
        let merger = merger.filter(|mg| mg.changed);
        if dirty.is_empty() && merger.is_none() {
            return Ok(());
        }
        let t0 = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ack_tx
            .send(Ack {
                deliveries: Vec::new(),
                barrier: Some(tx),
                confirms: Vec::new(),
            })
            .await
            .map_err(|_| anyhow::anyhow!("the delivery task stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the delivery task stopped"))?;
        let k = &self.cfg.kafka;
        let mut futs = Vec::new();
        let mut bytes_total = 0usize;
        let mut offsets = Vec::new();
        for (t, p) in &dirty {
            let s = &sources[&(t.clone(), *p)];
            let pos = InputPosition::Kafka {
                topic: t.clone(),
                partition: *p,
                next: s.next,
            };
            let bytes = CheckpointRef::new(
                &s.engine.settings,
                &pos,
                SinkLengths::default(),
                &s.engine.state,
            )
            .encode()?;
            bytes_total += bytes.len();
            let key = source_key(t, *p);
            let cp = p % self.changelog_parts;
            for (i, chunk) in crate::changelog::chunks(&bytes, s.next).iter().enumerate() {
                let ck = crate::changelog::chunk_key(&key, i as u32);
                futs.push(
                    send(
                        self.producer,
                        &k.changelog(),
                        Some(cp),
                        ck.as_bytes(),
                        chunk,
                        None,
                    )
                    .await?,
                );
            }
            offsets.push(((t.clone(), *p), s.next));
        }
        let mut merge_offset = None;
        if let Some(mg) = &merger {
            let ms = mg.engine.merge_state().expect("merger mode");
            let bytes = MergeCheckpoint::encode(&mg.engine.settings, mg.next, &mg.engine.state, ms);
            bytes_total += bytes.len();
            for (i, chunk) in crate::changelog::chunks(&bytes, mg.next).iter().enumerate() {
                let ck = crate::changelog::chunk_key(MERGE_KEY, i as u32);
                futs.push(
                    send(
                        self.producer,
                        &k.changelog(),
                        Some(0),
                        ck.as_bytes(),
                        chunk,
                        None,
                    )
                    .await?,
                );
            }
            merge_offset = Some(((k.partials(), 0), mg.next));
        }
        deliver_all(self.producer, futs, self.m).await?;
        // Durable: the offsets may be committed.
        commit(self.consumer, &offsets, self.m).await;
        if let Some(o) = merge_offset {
            commit(self.merge_consumer, &[o], self.m).await;
        }
        for ((t, p), next) in offsets {
            if let Some(s) = sources.get_mut(&(t, p)) {
                s.saved = next;
            }
        }
        if let Some(mg) = merger {
            mg.saved = mg.next;
            mg.changed = false;
        }
        self.m
            .checkpoint
            .seconds
            .observe(t0.elapsed().as_secs_f64());
        self.m.checkpoint.bytes.set(bytes_total as i64);
        self.m.checkpoint.written.inc();
        tracing::debug!(
            partitions = dirty.len(),
            bytes = bytes_total,
            "checkpoint written to the changelog"
        );
        Ok(())
    }
}

/// Where each assigned partition starts (committed offset, else its
/// beginning) and ends (its end offset): a `to_end` run stops there.
/// Looked up again and again by a background thread, so the consume loop
/// never waits on the broker, and an end offset reported short (tansu
/// 0.6 lags behind what it holds) is corrected.
/// (start, end) offset by partition.
type EndOffsets = HashMap<(String, i32), (i64, i64)>;
type Ends = Arc<Mutex<EndOffsets>>;

fn watch_ends(
    consumer: Arc<Consumer_>,
    ends: Ends,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || loop {
        let todo: Vec<(String, i32)> = {
            let a = consumer.context().assigned.lock().expect("assignment lock");
            a.iter().cloned().collect()
        };
        for (t, p) in todo {
            let t10 = Duration::from_secs(10);
            let known = ends
                .lock()
                .expect("ends lock")
                .get(&(t.clone(), p))
                .copied();
            match consumer.fetch_watermarks(&t, p, t10) {
                Ok((low, high)) => {
                    let high = known.map_or(high, |(_, h)| high.max(h));
                    ends.lock().expect("ends lock").insert((t, p), (low, high));
                }
                Err(e) => {
                    tracing::debug!(topic = %t, partition = p, error = %e, "end offset not known yet")
                }
            }
        }
        if Arc::strong_count(&ends) == 1 {
            return;
        }
        std::thread::sleep(every);
    })
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
