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
}

/// Consumer context: partition assignment bookkeeping and lag metrics.
pub struct Ctx {
    metrics: Arc<Metrics>,
    assigned: Mutex<HashSet<(String, i32)>>,
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
                tracing::info!(partitions = ?names(tpl), "partitions assigned");
                self.metrics.set_ready(true);
                "assign"
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    a.remove(&(e.topic().to_string(), e.partition()));
                }
                tracing::info!(partitions = ?names(tpl), "partitions revoked");
                if a.is_empty() {
                    self.metrics.set_ready(false);
                }
                "revoke"
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                "error"
            }
        };
        self.metrics
            .kafka
            .rebalances
            .with_label_values(&[kind])
            .inc();
    }
}

fn names(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

type Consumer_ = StreamConsumer<Ctx>;

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

/// The consumer group member of a run.
pub fn consumer(cfg: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Consumer_>> {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    set_default(&mut c, "auto.offset.reset", "earliest");
    set_default(&mut c, "statistics.interval.ms", "5000");
    let consumer: Consumer_ = c
        .create_with_context(Ctx {
            metrics,
            assigned: Mutex::new(HashSet::new()),
        })
        .context("cannot create the Kafka consumer (check kafka.brokers and kafka.properties)")?;
    let topics: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
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
    for (n, v) in &r.dimensions {
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

/// What the committer receives per batch: deliveries to wait for, then
/// the offsets (next to read) that become committable.
struct Ack {
    deliveries: Vec<DeliveryFuture>,
    offsets: Vec<((String, i32), i64)>,
}

async fn commit(consumer: &Arc<Consumer_>, offsets: &HashMap<(String, i32), i64>, m: &Metrics) {
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
            tracing::warn!(error = %e, "offset commit failed; the next commit includes these offsets");
        }
        Err(e) => {
            m.kafka.commit_errors.inc();
            tracing::warn!(error = %e, "offset commit task failed");
        }
    }
}

/// Waits for every delivery of each batch, then commits its offsets (at
/// most once per `interval`, and at the end).
async fn committer(
    mut rx: mpsc::Receiver<Ack>,
    consumer: Arc<Consumer_>,
    producer: FutureProducer,
    m: Arc<Metrics>,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut ready: HashMap<(String, i32), i64> = HashMap::new();
    let mut last = Instant::now();
    while let Some(ack) = rx.recv().await {
        deliver_all(&producer, ack.deliveries, &m).await?;
        ready.extend(ack.offsets);
        if last.elapsed() >= interval {
            commit(&consumer, &ready, &m).await;
            ready.clear();
            last = Instant::now();
        }
    }
    commit(&consumer, &ready, &m).await;
    Ok(())
}

/// Per-partition progress: event time for the watermark, offsets for commits.
#[derive(Debug)]
struct Part {
    /// Newest event time seen in this partition.
    max_time: i64,
    last_message: Instant,
    /// Next offset to read (last processed + 1).
    next: i64,
    /// `next` changed since the last batch was handed to the committer.
    dirty: bool,
    /// Messages consumed since the last flush (for the metric).
    consumed: u64,
}

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

/// Runs the Kafka pipeline until SIGTERM / Ctrl-C, or with `to_end` until
/// every assigned partition is consumed to its end.
pub async fn run(
    cfg: &Config,
    opts: KafkaOptions,
    mut engine: Engine,
) -> anyhow::Result<(RunReport, Engine)> {
    let k = &cfg.kafka;
    let m = opts.metrics.clone();
    tracing::info!(kafka = ?k, "starting the Kafka pipeline");
    let consumer = consumer(cfg, m.clone())?;
    let producer = producer(cfg)?;
    let alerts = Dispatcher::start(
        &cfg.alerts,
        &k.alert_topic,
        Some(producer.clone()),
        m.clone(),
    )?;
    engine.set_external_clock(true);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(8);
    let committer = tokio::spawn(committer(
        ack_rx,
        consumer.clone(),
        producer.clone(),
        m.clone(),
        k.commit_interval.0,
    ));
    let mut parts: HashMap<(String, i32), Part> = HashMap::new();
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
    let ends: Ends = Default::default();
    let ends_task = opts
        .to_end
        .then(|| watch_ends(consumer.clone(), ends.clone()));
    let shutdown = crate::pipeline::shutdown_signal();
    tokio::pin!(shutdown);
    let mut t_batch = Instant::now();
    let mut last_message = Instant::now();
    let mut last_key: (String, i32) = (String::new(), -1);
    loop {
        let flush_now = tokio::select! {
            msg = consumer.recv() => {
                match msg {
                    Ok(msg) => {
                        // Messages come in runs from one partition: keep its key.
                        if last_key.1 != msg.partition() || last_key.0 != msg.topic() {
                            last_key = (msg.topic().to_string(), msg.partition());
                        }
                        let offset = msg.offset();
                        let r = process(&mut engine, &msg, k.default_format);
                        drop(msg);
                        let now = Instant::now();
                        last_message = now;
                        let part = match parts.get_mut(&last_key) {
                            Some(p) => p,
                            None => parts.entry(last_key.clone()).or_insert(Part {
                                max_time: i64::MIN,
                                last_message: now,
                                next: offset + 1,
                                dirty: true,
                                consumed: 0,
                            }),
                        };
                        part.last_message = now;
                        part.next = offset + 1;
                        part.dirty = true;
                        part.consumed += 1;
                        match r {
                            Ok(o) => {
                                part.max_time = part.max_time.max(engine.last_event_time());
                                match o {
                                    Outcome::Counted => report.accepted += 1,
                                    Outcome::Duplicate => report.duplicates += 1,
                                }
                            }
                            Err(bad) => {
                                let (rej, orig, headers) = *bad;
                                report.rejected += 1;
                                if k.dlq_topic.is_empty() {
                                    tracing::warn!(reason = rej.reason.as_str(), detail = %rej.detail, topic = orig.topic(), partition = orig.partition(), offset = orig.offset(), "rejected message (no kafka.dlq_topic)");
                                } else {
                                    deliveries.push(send(&producer, &k.dlq_topic, orig.key().unwrap_or_default(), orig.payload().unwrap_or_default(), Some(headers)).await?);
                                }
                            }
                        }
                        since_flush += 1;
                        since_flush >= batch
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        false
                    }
                }
            }
            _ = tick.tick() => {
                if opts.live_updates {
                    engine.emit_updates();
                }
                true
            }
            _ = &mut shutdown => {
                tracing::info!("stop signal received: draining");
                break;
            }
        };
        if flush_now {
            if since_flush > 0 {
                m.event_seconds
                    .observe(t_batch.elapsed().as_secs_f64() / since_flush as f64);
            }
            advance_watermark(&mut engine, &mut parts, &consumer, idle);
            flush(
                &mut engine,
                &m,
                &producer,
                cfg,
                &mut deliveries,
                &mut parts,
                &ack_tx,
                &mut report,
                &alerts,
            )
            .await?;
            since_flush = 0;
            t_batch = Instant::now();
            // Quiet for `kafka.end_quiet` too: some brokers (tansu 0.6)
            // report end offsets short of what they hold, so the end
            // offsets alone could stop the run early.
            if opts.to_end
                && last_message.elapsed() >= k.end_quiet.0
                && at_end(&consumer, &parts, &ends)
            {
                tracing::info!(
                    offsets = ?parts.iter().map(|(k, p)| (k, p.next)).collect::<Vec<_>>(),
                    ends = ?ends.lock().expect("ends lock"),
                    "every assigned partition is consumed to its end"
                );
                break;
            }
        }
    }
    if opts.to_end {
        engine.finish();
    } else {
        engine.emit_updates();
    }
    flush(
        &mut engine,
        &m,
        &producer,
        cfg,
        &mut deliveries,
        &mut parts,
        &ack_tx,
        &mut report,
        &alerts,
    )
    .await?;
    drop(ack_tx);
    committer.await.context("committer task failed")??;
    alerts.shutdown().await;
    drop(ends);
    if let Some(t) = ends_task {
        let _ = t.await;
    }
    Ok((report, engine))
}

/// Moves the engine's clock to the slowest assigned partition that is not
/// idle (or, when all are idle, the fastest). A partition that has not
/// delivered a message yet holds the clock back until it is idle, so its
/// first events are not late. (End offsets are not trusted for this: a
/// broker that reports them short would make a partition look done.)
fn advance_watermark(
    engine: &mut Engine,
    parts: &mut HashMap<(String, i32), Part>,
    consumer: &Consumer_,
    idle: Duration,
) {
    let now = Instant::now();
    {
        let assigned = consumer.context().assigned.lock().expect("assignment lock");
        for k in assigned.iter() {
            parts.entry(k.clone()).or_insert(Part {
                max_time: i64::MIN,
                last_message: now,
                next: -1,
                dirty: false,
                consumed: 0,
            });
        }
        parts.retain(|k, p| assigned.contains(k) || p.dirty);
    }
    let active: Vec<i64> = parts
        .values()
        .filter(|p| p.last_message.elapsed() < idle)
        .map(|p| p.max_time)
        .collect();
    let t = if active.is_empty() {
        parts.values().map(|p| p.max_time).max()
    } else if active.contains(&i64::MIN) {
        None
    } else {
        active.into_iter().min()
    };
    if let Some(t) = t.filter(|t| *t != i64::MIN) {
        engine.advance_clock(t);
    }
}

/// Where each assigned partition starts (committed offset, else its
/// beginning) and ends (its end offset): a `to_end` run stops there.
/// Looked up again and again by a background thread, so the consume loop
/// never waits on the broker, and an end offset reported short (tansu
/// 0.6 lags behind what it holds) is corrected.
type Ends = Arc<Mutex<HashMap<(String, i32), (i64, i64)>>>;

fn watch_ends(consumer: Arc<Consumer_>, ends: Ends) -> tokio::task::JoinHandle<()> {
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
            let start = match known {
                Some((s, _)) => Some(s),
                None => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&t, p);
                    match consumer
                        .committed_offsets(tpl, t10)
                        .ok()
                        .and_then(|l| l.elements().first().map(|e| e.offset()))
                    {
                        Some(Offset::Offset(o)) => Some(o),
                        _ => None,
                    }
                }
            };
            match consumer.fetch_watermarks(&t, p, t10) {
                Ok((low, high)) => {
                    let high = known.map_or(high, |(_, h)| high.max(h));
                    ends.lock()
                        .expect("ends lock")
                        .insert((t, p), (start.unwrap_or(low), high));
                }
                Err(e) => {
                    tracing::debug!(topic = %t, partition = p, error = %e, "end offset not known yet")
                }
            }
        }
        if Arc::strong_count(&ends) == 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    })
}

/// A `to_end` run has read this partition to its end.
fn finished(k: &(String, i32), p: &Part, ends: &HashMap<(String, i32), (i64, i64)>) -> bool {
    ends.get(k)
        .is_some_and(|(start, end)| p.next >= *end || (p.next < 0 && start >= end))
}

/// True when every assigned partition has been read to its end.
fn at_end(consumer: &Consumer_, parts: &HashMap<(String, i32), Part>, ends: &Ends) -> bool {
    let assigned = consumer.context().assigned.lock().expect("assignment lock");
    let ends = ends.lock().expect("ends lock");
    !assigned.is_empty()
        && assigned
            .iter()
            .all(|k| parts.get(k).is_some_and(|p| finished(k, p, &ends)))
}

/// Hands the engine's new records (and the batch's dead letters) to the
/// producer, and their deliveries plus the batch's offsets to the committer.
#[allow(clippy::too_many_arguments)]
async fn flush(
    engine: &mut Engine,
    m: &Metrics,
    producer: &FutureProducer,
    cfg: &Config,
    deliveries: &mut Vec<DeliveryFuture>,
    parts: &mut HashMap<(String, i32), Part>,
    ack_tx: &mpsc::Sender<Ack>,
    report: &mut RunReport,
    alerts: &Dispatcher,
) -> anyhow::Result<()> {
    let recs = engine.take_records();
    let boards = engine.take_leaderboards();
    alerts.dispatch(engine.take_notifications());
    report.records += recs.len() as u64;
    m.observe(&recs);
    m.observe_leaderboards(&boards);
    m.sync(engine);
    let k = &cfg.kafka;
    if !k.kpi_topic.is_empty() {
        for r in &recs {
            let key = record_key(r);
            let payload = encode_record(r, k.kpi_format);
            deliveries.push(send(producer, &k.kpi_topic, key.as_bytes(), &payload, None).await?);
        }
    }
    if !k.leaderboard_topic.is_empty() {
        for b in &boards {
            let payload = encode_leaderboard(b, k.kpi_format);
            deliveries.push(
                send(
                    producer,
                    &k.leaderboard_topic,
                    b.key().as_bytes(),
                    &payload,
                    None,
                )
                .await?,
            );
        }
    }
    for ((topic, _), p) in parts.iter_mut().filter(|(_, p)| p.consumed > 0) {
        m.kafka
            .consumed
            .with_label_values(&[topic.as_str()])
            .inc_by(std::mem::take(&mut p.consumed));
    }
    let offsets: Vec<_> = parts
        .iter_mut()
        .filter(|(_, p)| p.dirty && p.next >= 0)
        .map(|(k, p)| {
            p.dirty = false;
            (k.clone(), p.next)
        })
        .collect();
    if deliveries.is_empty() && offsets.is_empty() {
        return Ok(());
    }
    ack_tx
        .send(Ack {
            deliveries: std::mem::take(deliveries),
            offsets,
        })
        .await
        .map_err(|_| anyhow::anyhow!("the committer stopped"))?;
    Ok(())
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
