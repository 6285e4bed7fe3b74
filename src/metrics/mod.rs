//! Every Prometheus metric salespulse exports, and the table of current
//! KPI values that `/metrics`, `/kpis` and the terminal summary read.
//!
//! The engine keeps plain counters; they are copied here once per batch,
//! not per event. KPI gauges (`salespulse_kpi_<kpi>`) are rendered by
//! [`kpis::KpiView`]: one window per kind, labels `window`, `dimension`,
//! that dimension's value and the KPI's own extra label. No lead, deal or
//! customer id is ever a label.

pub mod kpis;
pub mod postgres;
mod privacy;

use crate::decode::RejectReason;
use crate::engine::state::{
    Stats, DIMS, DUPLICATE_REASONS, ENTITY_NAMES, OUTLIER_OUTCOMES, REVISION_KINDS, WAIT_OUTCOMES,
};
use crate::engine::Engine;
use crate::event::EventType;
use crate::output::{KpiRecord, LeaderboardRecord};
use kpis::KpiView;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Metrics {
    pub registry: Registry,
    events_in: IntCounterVec,
    rejected: IntCounterVec,
    late: IntCounter,
    duplicates: IntCounterVec,
    outcomes_revised: IntCounterVec,
    deals_expired: IntCounter,
    waited: IntCounterVec,
    outliers: IntCounter,
    outliers_released: IntCounterVec,
    jumps: IntCounter,
    unknown_entity: IntCounterVec,
    evicted: IntCounterVec,
    privacy: privacy::PrivacyMetrics,
    dedup_evicted: IntCounter,
    records_out: IntCounter,
    /// Time to process one input batch, per event (seconds).
    pub event_seconds: Histogram,
    state: StateGauges,
    folded: IntCounterVec,
    /// Counters as last copied, to turn the engine's totals into increments.
    last: Mutex<HashMap<String, Stats>>,
    /// The current KPI values and leaderboards (`/metrics`, `/kpis`).
    pub kpis: KpiView,
    pub kafka: KafkaMetrics,
    pub alerts: AlertMetrics,
    pub checkpoint: CheckpointMetrics,
    pub postgres: postgres::PostgresMetrics,
    /// `/readyz`: the source is connected and events flow (Kafka: partitions assigned).
    pub ready: std::sync::atomic::AtomicBool,
}

/// The engine's state, as gauges (copied from the engines after each batch).
struct StateGauges {
    entities: IntGaugeVec,
    waiting: IntGaugeVec,
    dedup_entries: IntGauge,
    buckets: IntGauge,
    watermark: Gauge,
}

impl StateGauges {
    fn new(r: &Registry) -> StateGauges {
        let entities = IntGaugeVec::new(
            Opts::new(
                "salespulse_state_entities",
                "Leads, deals and customers in memory.",
            ),
            &["entity"],
        )
        .expect("metric");
        r.register(Box::new(entities.clone())).expect("register");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            r.register(Box::new(g.clone())).expect("register");
            g
        };
        let waiting = IntGaugeVec::new(
        Opts::new(
            "salespulse_events_waiting",
            "Events held back now: for=\"entity\" waiting for their lead, deal or customer; for=\"clock\" outliers held (docs/time.md).",
        ),
        &["for"],
    )
    .expect("metric");
        r.register(Box::new(waiting.clone())).expect("register");
        let dedup_entries = gauge(
            "salespulse_state_dedup_entries",
            "Event ids remembered for duplicate detection.",
        );
        let buckets = gauge(
            "salespulse_state_window_buckets",
            "Open window buckets (calendar windows and rolling sub-buckets).",
        );
        let watermark = Gauge::new(
            "salespulse_watermark_seconds",
            "Watermark (newest event time − out-of-orderness), Unix seconds.",
        )
        .expect("metric");
        r.register(Box::new(watermark.clone())).expect("register");
        StateGauges {
            entities,
            waiting,
            dedup_entries,
            buckets,
            watermark,
        }
    }
}

/// Kafka source and sink health (zero / absent when Kafka is off).
pub struct KafkaMetrics {
    /// Messages consumed, by topic.
    pub consumed: IntCounterVec,
    /// Consumer lag per partition (from librdkafka statistics).
    pub lag: IntGaugeVec,
    /// Time of one offset commit.
    pub commit_seconds: Histogram,
    /// Commits that failed (offsets are committed again with the next one).
    pub commit_errors: IntCounter,
    /// Deliveries that failed after librdkafka's own retries, by topic.
    pub produce_errors: IntCounterVec,
    /// Messages sent again by salespulse after a failed delivery, by topic.
    pub produce_retries: IntCounterVec,
    /// Partition assignments and revocations.
    pub rebalances: IntCounterVec,
    /// Input partitions assigned to this instance.
    pub assigned: IntGauge,
    /// Input partitions assigned and restored (consuming).
    pub restored: IntGauge,
    /// From the start of a rebalance (joining the group, or partitions
    /// revoked) to the next assignment.
    pub rebalance_seconds: Histogram,
    /// From an input message's Kafka timestamp to salespulse reading it
    /// (messages applied; not those skipped as already in the state).
    pub consume_delay: Histogram,
    /// From reading an input message to the live update that covers it
    /// handed to the producer (per partition and update, its oldest).
    pub publish_delay: Histogram,
}

impl KafkaMetrics {
    fn new(r: &Registry) -> KafkaMetrics {
        let cv = |name: &str, help: &str, label: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), label).expect("metric");
            r.register(Box::new(c.clone())).expect("register");
            c
        };
        let lag = IntGaugeVec::new(
            Opts::new(
                "salespulse_kafka_consumer_lag",
                "Messages between the committed offset and the end of each assigned partition.",
            ),
            &["topic", "partition"],
        )
        .expect("metric");
        r.register(Box::new(lag.clone())).expect("register");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "salespulse_kafka_commit_seconds",
                "Time to commit processed offsets.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        )
        .expect("metric");
        r.register(Box::new(commit_seconds.clone()))
            .expect("register");
        let commit_errors = IntCounter::new(
            "salespulse_kafka_commit_errors_total",
            "Offset commits that failed.",
        )
        .expect("metric");
        r.register(Box::new(commit_errors.clone()))
            .expect("register");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            r.register(Box::new(g.clone())).expect("register");
            g
        };
        let assigned = gauge(
            "salespulse_kafka_assigned_partitions",
            "Input partitions assigned to this instance by the consumer group.",
        );
        let restored = gauge(
            "salespulse_kafka_restored_partitions",
            "Input partitions assigned and restored from the changelog (consuming); /readyz answers ready when it equals the assigned ones and is not 0.",
        );
        let rebalance_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "salespulse_kafka_rebalance_seconds",
                "Time from the start of a rebalance (joining the group, or partitions revoked) to the next assignment.",
            )
            .buckets(vec![0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
        )
        .expect("metric");
        r.register(Box::new(rebalance_seconds.clone()))
            .expect("register");
        let delay = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]))
            .expect("metric");
            r.register(Box::new(h.clone())).expect("register");
            h
        };
        let consume_delay = delay(
            "salespulse_kafka_consume_delay_seconds",
            "From an input message's Kafka timestamp (its producer's clock, or the broker's with LogAppendTime) to salespulse reading it: the broker, the fetch wait, any backlog.",
        );
        let publish_delay = delay(
            "salespulse_kafka_publish_delay_seconds",
            "Live, on the instance that runs the merger: from reading an input message to the KPI update that covers it handed to the producer (for each of its partitions and each update, the oldest message read since the last one): the update interval.",
        );
        KafkaMetrics {
            assigned,
            restored,
            rebalance_seconds,
            consume_delay,
            publish_delay,
            consumed: cv(
                "salespulse_kafka_messages_consumed_total",
                "Kafka messages processed, by topic: input messages (counted, duplicates and dead letters alike, each once), and the partials the merger absorbed (under the partials topic).",
                &["topic"],
            ),
            lag,
            commit_seconds,
            commit_errors,
            produce_errors: cv(
                "salespulse_kafka_produce_errors_total",
                "Deliveries that failed after librdkafka's retries (each is sent again), by topic.",
                &["topic"],
            ),
            produce_retries: cv(
                "salespulse_kafka_produce_retries_total",
                "Messages sent again by salespulse after a failed delivery, by topic.",
                &["topic"],
            ),
            rebalances: cv(
                "salespulse_kafka_rebalances_total",
                "Consumer-group rebalances, by kind (assign, revoke, error).",
                &["kind"],
            ),
        }
    }
}

/// Checkpoint writes.
pub struct CheckpointMetrics {
    pub written: IntCounter,
    pub errors: IntCounter,
    /// Time to encode and durably write one checkpoint.
    pub seconds: Histogram,
    /// Size of the last checkpoint.
    pub bytes: IntGauge,
    /// Time to restore one partition's state (Kafka mode).
    pub restore_seconds: Histogram,
}

impl CheckpointMetrics {
    fn new(r: &Registry) -> CheckpointMetrics {
        let written = IntCounter::new("salespulse_checkpoints_total", "Checkpoints written.")
            .expect("metric");
        let errors = IntCounter::new(
            "salespulse_checkpoint_errors_total",
            "Checkpoints that could not be written (tried again at the next interval).",
        )
        .expect("metric");
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                "salespulse_checkpoint_seconds",
                "Time to encode and durably write one checkpoint.",
            )
            .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        )
        .expect("metric");
        let restore_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "salespulse_restore_seconds",
                "Time to read and decode one partition's checkpoint from the changelog (Kafka mode).",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
        )
        .expect("metric");
        r.register(Box::new(restore_seconds.clone()))
            .expect("register");
        let bytes = IntGauge::new(
            "salespulse_checkpoint_bytes",
            "Size of the last checkpoint written.",
        )
        .expect("metric");
        r.register(Box::new(written.clone())).expect("register");
        r.register(Box::new(errors.clone())).expect("register");
        r.register(Box::new(seconds.clone())).expect("register");
        r.register(Box::new(bytes.clone())).expect("register");
        CheckpointMetrics {
            written,
            errors,
            seconds,
            bytes,
            restore_seconds,
        }
    }
}

/// Alert rules and the delivery of their notifications.
pub struct AlertMetrics {
    /// Notifications made, by rule and state (`firing`, `resolved`).
    pub notifications: IntCounterVec,
    /// Deliveries by route and outcome: `sent`, `failed` (given up after
    /// `alerts.retry_for`), `dropped` (queue full), `unavailable` (route
    /// not usable in this mode, e.g. kafka without Kafka).
    pub deliveries: IntCounterVec,
    /// Delivery attempts that failed and were retried, by route.
    pub retries: IntCounterVec,
    /// Notifications waiting in each route's queue.
    pub queued: IntGaugeVec,
    /// Alert instances firing now, by rule.
    pub firing: IntGaugeVec,
}

impl AlertMetrics {
    fn new(r: &Registry) -> AlertMetrics {
        let cv = |name: &str, help: &str, label: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), label).expect("metric");
            r.register(Box::new(c.clone())).expect("register");
            c
        };
        let gv = |name: &str, help: &str, label: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), label).expect("metric");
            r.register(Box::new(g.clone())).expect("register");
            g
        };
        AlertMetrics {
            notifications: cv(
                "salespulse_alert_notifications_total",
                "Alert notifications made, by rule and state (firing, resolved).",
                &["rule", "state"],
            ),
            deliveries: cv(
                "salespulse_alert_deliveries_total",
                "Notification deliveries by route and outcome (sent, failed, dropped, unavailable).",
                &["route", "outcome"],
            ),
            retries: cv(
                "salespulse_alert_delivery_retries_total",
                "Failed delivery attempts that were retried, by route.",
                &["route"],
            ),
            queued: gv(
                "salespulse_alert_queue",
                "Notifications waiting for delivery, by route.",
                &["route"],
            ),
            firing: gv(
                "salespulse_alerts_firing",
                "Alert instances firing now, by rule.",
                &["rule"],
            ),
        }
    }
}

impl Metrics {
    /// Metrics exporting what the default configuration exports.
    pub fn new() -> Metrics {
        Metrics::for_config(&crate::config::Config::default())
    }

    /// Metrics exporting the KPIs `[prometheus]` of `cfg` selects.
    pub fn for_config(cfg: &crate::config::Config) -> Metrics {
        let r = Registry::new();
        register_build_and_process(&r);
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("metric");
            r.register(Box::new(c.clone())).expect("register");
            for v in values {
                c.with_label_values(&[v]);
            }
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            r.register(Box::new(c.clone())).expect("register");
            c
        };
        let events_in = counter_vec(
            "salespulse_events_in_total",
            "Events accepted, by CloudEvents type.",
            "type",
            &EventType::ALL
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>(),
        );
        let rejected = counter_vec(
            "salespulse_events_rejected_total",
            "Inputs rejected to the dead-letter sink, by reason.",
            "reason",
            &RejectReason::ALL
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
        );
        let late = counter(
            "salespulse_events_late_total",
            "Events older than watermark − grace (also in rejected{reason=\"late\"}).",
        );
        let duplicates = counter_vec(
            "salespulse_events_duplicate_total",
            "Events not counted because they repeat what was: reason \"id\" (same source + id) or \"repeated_transition\" (the same lifecycle step of the same lead, deal or customer, e.g. a re-sent webhook).",
            "reason",
            &DUPLICATE_REASONS,
        );
        let outcomes_revised = counter_vec(
            "salespulse_deal_outcomes_revised_total",
            "Deal outcomes replaced by a later one (reopen or correction): \"withdrawn\" from a window still open, or \"kept_final\" by a window already final.",
            "revision",
            &REVISION_KINDS,
        );
        let deals_expired = counter(
            "salespulse_deals_expired_total",
            "Open deals closed by pipeline.max_open_age (also the deals_expired KPI).",
        );
        let waited = counter_vec(
            "salespulse_waited_events_total",
            "Events that waited for the lead, deal or customer they name: \"attributed\" (it came in time: counted with its dimensions) or \"unknown\" (it did not: counted in the dimensions' \"unknown\" series).",
            "outcome",
            &WAIT_OUTCOMES,
        );
        let outliers = counter(
            "salespulse_time_outliers_total",
            "Events held because they were more than time.max_jump ahead of the event-time clock.",
        );
        let outliers_released = counter_vec(
            "salespulse_time_outliers_released_total",
            "Held outliers that counted: \"jump_confirmed\" (time.jump_confirmations events confirmed the jump), \"caught_up\" (the clock came within time.max_jump), \"alone\" (end of input: in their own windows, the clock unmoved).",
            "outcome",
            &OUTLIER_OUTCOMES,
        );
        let jumps = counter(
            "salespulse_time_jumps_total",
            "Jumps of the event-time clock beyond time.max_jump confirmed by time.jump_confirmations events in a row.",
        );
        let unknown_entity = counter_vec(
            "salespulse_unknown_entity_total",
            "Events naming a lead, deal or customer that is unknown (never seen, or evicted by TTL).",
            "entity",
            &[],
        );
        let evicted = counter_vec(
            "salespulse_entities_evicted_total",
            "Entities forgotten after state.entity_ttl: leads, closed deals, cancelled customers (open deals and active customers never are).",
            "entity",
            &[],
        );
        let dedup_evicted = counter(
            "salespulse_dedup_evicted_total",
            "Event ids forgotten early because state.dedup_max_entries was reached.",
        );
        let records_out = counter("salespulse_kpi_records_total", "KPI records emitted.");
        let event_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "salespulse_event_processing_seconds",
                "Processing time per event, measured per batch.",
            )
            .buckets(vec![
                1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3,
            ]),
        )
        .expect("metric");
        r.register(Box::new(event_seconds.clone()))
            .expect("register");
        let state = StateGauges::new(&r);
        let folded = counter_vec(
            "salespulse_series_folded_total",
            "Events whose dimension value was folded into \"other\" (kpis.max_series_per_dimension reached), by dimension.",
            "dimension",
            &DIMS,
        );
        let kafka = KafkaMetrics::new(&r);
        let alerts = AlertMetrics::new(&r);
        let checkpoint = CheckpointMetrics::new(&r);
        let postgres = postgres::PostgresMetrics::new(&r);
        let privacy = privacy::PrivacyMetrics::new(&r);
        Metrics {
            registry: r,
            events_in,
            rejected,
            late,
            duplicates,
            outcomes_revised,
            deals_expired,
            waited,
            outliers,
            outliers_released,
            jumps,
            unknown_entity,
            evicted,
            privacy,
            dedup_evicted,
            records_out,
            event_seconds,
            state,
            folded,
            last: Mutex::new(HashMap::new()),
            kpis: KpiView::new(kpis::Filter::from_config(cfg)),
            kafka,
            alerts,
            checkpoint,
            postgres,
            ready: Default::default(),
        }
    }

    /// Marks the process ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// Copies the engine's counters and state sizes.
    pub fn sync(&self, e: &Engine) {
        self.sync_counters("", e);
        self.sync_gauges(&[e]);
    }

    /// Turns the totals of engine `key` into counter increments (one key
    /// per engine: the Kafka mode has one per partition, and the merger).
    pub fn sync_counters(&self, key: &str, e: &Engine) {
        for (rule, n) in e.state.alerts.firing_by_rule() {
            self.alerts.firing.with_label_values(&[rule]).set(n as i64);
        }
        let s = &e.state.stats;
        let mut all = self.last.lock().expect("metrics lock");
        let last = all.entry(key.to_string()).or_default();
        let d = |now: u64, before: u64| now.saturating_sub(before);
        for (i, t) in EventType::ALL.iter().enumerate() {
            let n = d(s.events_in[i], last.events_in.get(i).copied().unwrap_or(0));
            self.events_in.with_label_values(&[t.as_str()]).inc_by(n);
        }
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            let n = d(s.rejected[i], last.rejected.get(i).copied().unwrap_or(0));
            self.rejected.with_label_values(&[r.as_str()]).inc_by(n);
            if *r == RejectReason::Late {
                self.late.inc_by(n);
            }
        }
        for (i, r) in DUPLICATE_REASONS.iter().enumerate() {
            self.duplicates
                .with_label_values(&[r])
                .inc_by(d(s.duplicates[i], last.duplicates[i]));
        }
        for (i, r) in REVISION_KINDS.iter().enumerate() {
            self.outcomes_revised
                .with_label_values(&[r])
                .inc_by(d(s.outcomes_revised[i], last.outcomes_revised[i]));
        }
        self.deals_expired
            .inc_by(d(s.deals_expired, last.deals_expired));
        for (i, o) in WAIT_OUTCOMES.iter().enumerate() {
            self.waited
                .with_label_values(&[o])
                .inc_by(d(s.waited[i + 1], last.waited[i + 1]));
        }
        self.outliers.inc_by(d(s.outliers[0], last.outliers[0]));
        for (i, o) in OUTLIER_OUTCOMES.iter().enumerate() {
            self.outliers_released
                .with_label_values(&[o])
                .inc_by(d(s.outliers[i + 1], last.outliers[i + 1]));
        }
        self.jumps.inc_by(d(s.jumps, last.jumps));
        for (i, name) in ENTITY_NAMES.iter().enumerate() {
            self.unknown_entity
                .with_label_values(&[name])
                .inc_by(d(s.unknown_entity[i], last.unknown_entity[i]));
            self.evicted
                .with_label_values(&[name])
                .inc_by(d(s.evicted[i], last.evicted[i]));
            self.privacy
                .erased
                .with_label_values(&[name])
                .inc_by(d(s.erased[i][1], last.erased[i][1]));
        }
        self.privacy
            .erased_held
            .inc_by(d(s.erased_held, last.erased_held));
        self.dedup_evicted
            .inc_by(d(s.dedup_evicted, last.dedup_evicted));
        for (i, dim) in DIMS.iter().enumerate() {
            let now = s.folded.get(i).copied().unwrap_or(0);
            let before = last.folded.get(i).copied().unwrap_or(0);
            self.folded.with_label_values(&[dim]).inc_by(d(now, before));
        }
        self.records_out.inc_by(d(s.records_out, last.records_out));
        *last = s.clone();
    }

    /// State sizes summed over `engines`; the watermark of the slowest.
    pub fn sync_gauges(&self, engines: &[&Engine]) {
        for (i, name) in ENTITY_NAMES.iter().enumerate() {
            let n: usize = engines.iter().map(|e| e.entity_counts()[i]).sum();
            self.state.entities.with_label_values(&[name]).set(n as i64);
        }
        for (i, what) in ["entity", "clock"].iter().enumerate() {
            let n: usize = engines.iter().map(|e| e.waiting_counts()[i]).sum();
            self.state.waiting.with_label_values(&[what]).set(n as i64);
        }
        self.state.dedup_entries.set(
            engines
                .iter()
                .map(|e| e.state.dedup.order.len())
                .sum::<usize>() as i64,
        );
        self.state
            .buckets
            .set(engines.iter().map(|e| e.bucket_count()).sum::<usize>() as i64);
        if let Some(w) = engines
            .iter()
            .filter(|e| e.state.max_time != i64::MIN)
            .map(|e| e.watermark())
            .min()
        {
            self.state.watermark.set(w as f64 / 1000.0);
        }
    }

    /// Takes the records and leaderboards of one engine step (see
    /// [`KpiView::observe`]).
    pub fn observe(&self, records: &[KpiRecord], boards: &[LeaderboardRecord]) {
        self.kpis.observe(records, boards);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        let mut out = String::from_utf8(buf).expect("utf-8 exposition");
        self.kpis.render(&mut out);
        out
    }

    /// Current value of a KPI for "all" in a window kind.
    pub fn current(&self, kpi: &str, window: &str) -> Option<KpiRecord> {
        self.kpis.current(kpi, window)
    }
}

/// `salespulse_build_info` and, on Linux, the `process_*` metrics.
fn register_build_and_process(r: &Registry) {
    let build = IntGaugeVec::new(
        Opts::new(
            "salespulse_build_info",
            "Always 1; the labels say which salespulse is running.",
        ),
        &["version", "rust_version"],
    )
    .expect("metric");
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_RUST_VERSION")])
        .set(1);
    r.register(Box::new(build)).expect("register");
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .expect("register");
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
