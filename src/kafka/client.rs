//! The Kafka clients: the consumer context (assignment bookkeeping,
//! rebalance and lag metrics, readiness), consumer and producer settings
//! (the failover defaults), topic administration, committed and end
//! offsets.

use crate::config::Config;
use crate::metrics::Metrics;
use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Consumer context: partition assignment bookkeeping and lag metrics.
pub struct Ctx {
    pub(super) metrics: Arc<Metrics>,
    pub(super) assigned: Mutex<HashSet<(String, i32)>>,
    /// Readiness follows this consumer's assignment (the input one).
    pub(super) drives_ready: bool,
    /// When the current rebalance began (joining the group, or a
    /// revocation), until the next assignment.
    pub(super) rebalance_start: Mutex<Option<Instant>>,
    /// Since when the consumer has held no partition (`None`: it holds some).
    pub(super) unassigned_since: Mutex<Option<Instant>>,
    /// Assignments seen (see `Src::assignment`).
    pub(super) assignments: std::sync::atomic::AtomicU64,
    /// The group's rebalance protocol is incremental (a cooperative
    /// assignor, or `group.protocol = consumer`): known from the
    /// settings, see `rebalance`.
    cooperative: bool,
}

impl Ctx {
    fn new(metrics: Arc<Metrics>, drives_ready: bool, cooperative: bool) -> Ctx {
        Ctx {
            cooperative,
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
    /// librdkafka's own errors (a broker down, a refused password), in
    /// the log with what to check.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        match super::probe::hint(code, reason) {
            Some(hint) => tracing::error!(%error, reason, hint, "Kafka client error"),
            None => tracing::warn!(%error, reason, "Kafka client error"),
        }
    }

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
    /// rdkafka's default, except that the protocol (incremental or
    /// eager) comes from the settings: the default asks librdkafka
    /// (`rd_kafka_rebalance_protocol`), and that call blocks for good
    /// when the callback runs inside the consumer's close — seen when a
    /// SIGTERM came while the group was first joining: the assignment
    /// arrived during the close and the process never exited
    /// (librdkafka #4041, rust-rdkafka #509).
    fn rebalance(
        &self,
        base: &rdkafka::consumer::BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use RDKafkaRespErr::{
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as ASSIGN,
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS as REVOKE,
        };
        let done = match (err, self.cooperative) {
            (ASSIGN, true) => base.incremental_assign(tpl),
            (ASSIGN, false) => base.assign(tpl),
            (REVOKE, true) => base.incremental_unassign(tpl),
            _ => base.unassign(),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "cannot apply the rebalance");
        }
        let rebalance = match err {
            ASSIGN => Rebalance::Assign(tpl),
            REVOKE => Rebalance::Revoke(tpl),
            e => Rebalance::Error(rdkafka::error::KafkaError::Rebalance(e.into())),
        };
        self.post_rebalance(base, &rebalance);
    }

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

pub(super) fn names(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

pub(super) type Consumer_ = StreamConsumer<Ctx>;

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
/// - the incremental `cooperative-sticky` assignor (KIP-429): when a
///   member joins or leaves, only the partitions that move are revoked;
///   the others keep consuming. (With the eager default every member
///   stops, and tansu 0.6 never hands a dead member's partitions to the
///   survivor.)
///
/// With `group.protocol = consumer` (KIP-848) the broker decides all of
/// this: none is set.
pub const FAILOVER_DEFAULTS: [(&str, &str); 4] = [
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("max.poll.interval.ms", "120000"),
    ("partition.assignment.strategy", "cooperative-sticky"),
];

/// How long a fetch may wait on the broker for data, unless
/// `kafka.properties` sets it (librdkafka's default: 500 ms). An event
/// crosses two consumers (input, then partials) before its KPI is
/// published, and some brokers (tansu 0.6) wait the whole time even when
/// data is there: at 500 ms produce → KPI p50 was 0.9 s, at 50 ms 0.24 s
/// (docs/performance.md). The price is idle fetching: 20 requests a
/// second per consumer instead of 2 (measured on tansu, idle: salespulse
/// 1.6 % of a core instead of 1.2 %, the broker 3.3 % instead of 0.7 %).
pub const FETCH_WAIT_MAX_MS: &str = "50";

/// Sets `key` unless `kafka.properties` already did.
pub(super) fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// Base librdkafka settings plus the user's `kafka.properties`.
pub(super) fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in cfg.kafka.librdkafka_properties() {
        c.set(k, v);
    }
    c
}

/// A consumer group member subscribed to `topics` (offsets committed by
/// salespulse only, after checkpoints).
pub(super) fn group_consumer(
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
    set_default(&mut c, "fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
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
    // librdkafka refuses a list mixing eager and cooperative assignors.
    let cooperative = !classic
        || c.get("partition.assignment.strategy")
            .is_some_and(|s| s.contains("cooperative"));

    let consumer: Consumer_ = c
        .create_with_context(Ctx::new(metrics, drives_ready, cooperative))
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

/// Creates the partials and changelog topics when they do not exist.
pub(super) async fn ensure_internal_topics(
    cfg: &Config,
    input_partitions: i32,
) -> anyhow::Result<()> {
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
pub(super) async fn input_partitions(
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

pub(super) use super::probe::partition_counts;

/// The offset the group of `consumer` committed for a partition, if any,
/// and where its checkpoint starts in the changelog (partition, offset),
/// when the commit says (see [`super::changelog::hint_metadata`]).
pub(super) fn committed(
    consumer: &Consumer_,
    topic: &str,
    partition: i32,
) -> Option<(i64, Option<(i32, i64)>)> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let tpl = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    let e = tpl.elements().into_iter().next()?;
    match e.offset() {
        Offset::Offset(o) => Some((o, super::changelog::parse_hint(e.metadata()))),
        _ => None,
    }
}

/// Where each assigned partition starts (committed offset, else its
/// beginning) and ends (its end offset): a `to_end` run stops there.
/// Looked up again and again by a background thread, so the consume loop
/// never waits on the broker, and an end offset reported short (tansu
/// 0.6 lags behind what it holds) is corrected.
/// (start, end) offset by partition.
pub(super) type EndOffsets = HashMap<(String, i32), (i64, i64)>;
pub(super) type Ends = Arc<Mutex<EndOffsets>>;

pub(super) fn watch_ends(
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
