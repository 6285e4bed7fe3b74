//! Configuration: one TOML file, every key overridable by a `SALESPULSE_*`
//! environment variable (`SALESPULSE_TIME__ZONE=Europe/Paris`: sections are
//! joined with a double underscore), and defaults so that no file is needed.
//!
//! Every field's doc comment is its reference; README's configuration
//! table repeats them. [`Config::validate`] checks cross-field rules and
//! names the field and the fix for each error.

use crate::decode::Format;
use crate::window::CalendarKind;
use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// A duration written the human way in config: `90s`, `1h`, `7d`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

impl Dur {
    pub fn ms(self) -> i64 {
        self.0.as_millis() as i64
    }
    fn parse(s: &str) -> Result<Dur, String> {
        humantime::parse_duration(s).map(Dur).map_err(|e| {
            format!("{s:?} is not a duration ({e}); write e.g. \"90s\", \"1h\", \"7d\"")
        })
    }
    fn from_str_static(s: &str) -> Dur {
        Dur::parse(s).expect("valid default duration")
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub time: TimeConfig,
    pub windows: WindowsConfig,
    pub state: StateConfig,
    pub pipeline: PipelineConfig,
    /// Team and region of each rep (events may also carry `team` / `region`).
    pub reps: Vec<RepConfig>,
    pub targets: TargetsConfig,
    pub kpis: KpisConfig,
    pub input: InputConfig,
    pub output: OutputConfig,
    pub http: HttpConfig,
    pub prometheus: PrometheusConfig,
    pub generator: GeneratorConfig,
    pub kafka: KafkaConfig,
    pub alerts: crate::alert::config::AlertsConfig,
    pub checkpoint: CheckpointConfig,
}

/// Checkpoints of the engine state and input position (file, stdin and
/// generator input; Kafka mode does not checkpoint yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Checkpoint file; empty = no checkpoints. At start-up the state is
    /// restored from it when it exists (`run --fresh` starts over).
    pub path: PathBuf,
    /// Wall time between two checkpoints (one is also written at the end
    /// of the input and on SIGTERM / Ctrl-C).
    pub interval: Dur,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            path: PathBuf::new(),
            interval: Dur::from_str_static("10s"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// IANA time zone of calendar windows (days, weeks, months…), e.g. `Europe/Paris`.
    pub zone: String,
    /// Month (1–12) the fiscal year starts in; quarters and years follow it.
    pub fiscal_year_start_month: u32,
    /// How far behind the newest event time the watermark trails.
    pub out_of_orderness: Dur,
    /// How long after the watermark passes a window's end that window still
    /// accepts events; later ones are dead-lettered with reason `late`.
    pub grace: Dur,
    /// Events dated more than this after the wall clock are dead-lettered
    /// with reason `future` (`0s` = no limit).
    pub max_future_skew: Dur,
    /// An event more than this ahead of the event-time clock (and not
    /// near the wall clock) is held as a suspected outlier instead of
    /// moving the clock (`0s` = off). See docs/time.md.
    pub max_jump: Dur,
    /// Held events in a row, with no event moving the clock in between,
    /// that confirm a jump as genuine: the clock then moves on.
    pub jump_confirmations: u32,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            zone: "UTC".into(),
            fiscal_year_start_month: 1,
            out_of_orderness: Dur::from_str_static("1h"),
            grace: Dur::from_str_static("1d"),
            max_future_skew: Dur::from_str_static("1h"),
            max_jump: Dur::from_str_static("30d"),
            jump_confirmations: 32,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Calendar windows to compute: any of `day`, `week`, `month`, `quarter`, `year`.
    pub calendar: Vec<CalendarKind>,
    /// Rolling windows to compute, as spans (`24h`, `7d`, `30d`).
    pub rolling: Vec<Dur>,
    /// Sub-buckets per rolling window: its value moves in steps of span ÷ this.
    pub rolling_buckets: u32,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            calendar: CalendarKind::ALL.to_vec(),
            rolling: ["24h", "7d", "30d"]
                .iter()
                .map(|s| Dur::from_str_static(s))
                .collect(),
            rolling_buckets: 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// How long a lead, deal or customer is remembered after its last event.
    /// B2B cycles last months: keep it above your longest sales cycle.
    pub entity_ttl: Dur,
    /// How long (in event time) an event id is remembered for duplicate detection.
    /// Must cover `time.out_of_orderness + time.grace`.
    pub dedup_horizon: Dur,
    /// Most event ids remembered for duplicate detection; the oldest go first.
    pub dedup_max_entries: usize,
    /// Most events waiting for the lead, deal or customer they name (an
    /// event that arrived before its entity); beyond it the oldest is
    /// counted at once with unknown dimensions.
    pub max_waiting: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            entity_ttl: Dur::from_str_static("400d"),
            dedup_horizon: Dur::from_str_static("2d"),
            dedup_max_entries: 5_000_000,
            max_waiting: 1_000_000,
        }
    }
}

/// One pipeline stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Stage name as the CRM sends it (matched case-insensitively).
    pub name: String,
    /// Probability of winning a deal in this stage, for the weighted pipeline (0–1).
    pub probability: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Open-deal stages in pipeline order, with win probabilities. A deal
    /// event naming another stage is dead-lettered with `unknown_stage`.
    pub stages: Vec<StageConfig>,
    /// An open deal with no event for this long (no stage change, update
    /// or activity naming it) is expired: it leaves the pipeline gauges
    /// and counts in `deals_expired` / `expired_pipeline_value` at that
    /// moment. Unset (the default): an open deal stays open until it is
    /// won or lost, however long that takes.
    #[serde(default)]
    pub max_open_age: Option<Dur>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let stages = [
            ("prospecting", 0.1),
            ("engaging", 0.2),
            ("qualification", 0.3),
            ("proposal", 0.5),
            ("negotiation", 0.7),
        ];
        PipelineConfig {
            stages: stages
                .iter()
                .map(|(n, p)| StageConfig {
                    name: n.to_string(),
                    probability: *p,
                })
                .collect(),
            max_open_age: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepConfig {
    /// Rep name as events carry it.
    pub name: String,
    pub team: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetsConfig {
    /// Company-wide monthly revenue target for sales progress; when unset,
    /// the sum of the reps' monthly quotas is the target.
    pub monthly_revenue: Option<f64>,
    /// Company headcount for revenue per employee, until a
    /// `crm.headcount.set` event without `team` says otherwise. When
    /// neither is known, the sum of the team headcounts is used.
    pub headcount: Option<u32>,
    /// Headcount by team (`{ Hunters = 12 }`), until `crm.headcount.set`
    /// events with that `team` say otherwise.
    pub team_headcount: std::collections::BTreeMap<String, u32>,
    /// Yearly revenue of the whole market, for market share, until a
    /// `crm.market.size_set` event without `product` says otherwise.
    pub market_size: Option<f64>,
    /// Yearly market revenue by product (`{ Pro = 1.2e8 }`), until
    /// `crm.market.size_set` events for that product say otherwise.
    pub product_market_size: std::collections::BTreeMap<String, f64>,
}

/// KPI options beyond windows and targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpisConfig {
    /// Dimensions KPIs are broken down by (each KPI is also computed for
    /// "all"): any of `rep`, `team`, `region`, `channel`, `product`,
    /// `campaign`, `variant`, `competitor`, `segment`. Leaving one out
    /// drops its series (and the KPIs that only exist per value of it:
    /// the A/B test needs `variant`, the price index per competitor needs
    /// `product` and `competitor`) and makes the engine cheaper.
    pub dimensions: Vec<String>,
    /// Most series a KPI has per dimension (distinct reps, campaigns…).
    /// Values beyond it are folded into the series `other`, counted in
    /// `salespulse_series_folded_total{dimension}` and logged once.
    pub max_series_per_dimension: u32,
    /// Entries per leaderboard (top N reps).
    pub leaderboard_size: u32,
    /// Closed deals a rep needs to enter the win-rate leaderboard.
    pub leaderboard_min_sample: u64,
    /// The A/B control variant every other variant is tested against;
    /// empty = the alphabetically first variant of the window.
    pub ab_control_variant: String,
}

impl Default for KpisConfig {
    fn default() -> Self {
        KpisConfig {
            dimensions: crate::engine::state::DIMS
                .iter()
                .map(|d| d.to_string())
                .collect(),
            max_series_per_dimension: 1000,
            leaderboard_size: 10,
            leaderboard_min_sample: 5,
            ab_control_variant: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Wire format of `--input`: `json` (CloudEvents, one per line) or `protobuf` (length-delimited).
    pub format: Format,
    /// Events read and processed per batch.
    pub batch_size: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            format: Format::Json,
            batch_size: 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Where rejected input goes: one JSON object per line with the reason and the original bytes.
    pub dead_letter: PathBuf,
    /// In live mode, how often provisional (non-final) KPI records are emitted.
    pub update_interval: Dur,
    /// In live mode, how often the terminal summary is printed (`0s` = never).
    pub summary_interval: Dur,
    /// Most bytes of a rejected message kept in its dead letter; a longer
    /// one keeps this many, plus its length and a hash of the whole.
    pub dead_letter_max_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dead_letter: PathBuf::from("salespulse-dlq.jsonl"),
            update_interval: Dur::from_str_static("1s"),
            summary_interval: Dur::from_str_static("2s"),
            dead_letter_max_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve `/metrics` and `/healthz` on `listen`.
    pub enabled: bool,
    /// Address of the HTTP listener.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// What `/metrics` exports of the KPIs. Every record still goes to the
/// KPI topic, the JSON output and `/kpis`; this only bounds what
/// Prometheus stores. See docs/prometheus.md for the series count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// KPIs exported (catalogue names); empty = every KPI.
    pub kpis: Vec<String>,
    /// Window kinds exported: any of the calendar windows computed
    /// (`day` … `year`), the rolling ones (`rolling_7d`…) and `gauge`.
    /// Unset: `day`, `month`, `quarter` (those computed) and `gauge`.
    pub windows: Option<Vec<String>>,
    /// Dimensions exported as breakdowns (each also needs to be in
    /// `kpis.dimensions`). Unset: every dimension computed but `campaign`
    /// and `competitor` (they have the most values and the fewest panels).
    pub dimensions: Option<Vec<String>>,
    /// `salespulse_kpi_sample_size` for `all` (only the series without a
    /// dimension), `every` series, or `none`.
    pub sample_sizes: SampleSizes,
    /// Most KPI, sample-size and leaderboard series on `/metrics`; beyond
    /// it new series are left out, counted in
    /// `salespulse_prometheus_series_refused_total` and logged.
    pub max_series: usize,
}

/// Which KPI series carry a `salespulse_kpi_sample_size` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleSizes {
    All,
    Every,
    None,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            kpis: Vec::new(),
            windows: None,
            dimensions: None,
            sample_sizes: SampleSizes::All,
            max_series: 20_000,
        }
    }
}

impl Config {
    /// Window kinds this configuration emits: calendar, rolling, `gauge`.
    pub fn window_kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .windows
            .calendar
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        k.extend(
            self.windows
                .rolling
                .iter()
                .map(|d| crate::engine::rolling_name(d.ms())),
        );
        k.push("gauge".into());
        k
    }

    /// Window kinds `/metrics` exports.
    pub fn prometheus_windows(&self) -> Vec<String> {
        match &self.prometheus.windows {
            Some(w) => w.clone(),
            None => self
                .window_kinds()
                .into_iter()
                .filter(|k| ["day", "month", "quarter", "gauge"].contains(&k.as_str()))
                .collect(),
        }
    }

    /// Dimensions `/metrics` exports.
    pub fn prometheus_dimensions(&self) -> Vec<String> {
        match &self.prometheus.dimensions {
            Some(d) => d.clone(),
            None => self
                .kpis
                .dimensions
                .iter()
                .filter(|d| *d != "campaign" && *d != "competitor")
                .cloned()
                .collect(),
        }
    }
}

/// Kafka source and sinks. Kafka is used when `brokers` is set (here,
/// by `SALESPULSE_KAFKA__BROKERS` or by `run --brokers`) and no `--input`
/// file is given.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`; empty = Kafka off.
    pub brokers: String,
    /// Topics the consumer group subscribes to.
    pub input_topics: Vec<String>,
    /// Consumer group id: consumers with the same id share the partitions.
    pub group_id: String,
    /// Topic of KPI records (key = kpi|window kind|window label|dimensions); empty = none.
    pub kpi_topic: String,
    /// Format of KPI records on `kpi_topic`.
    pub kpi_format: Format,
    /// Topic of alert notifications (key = alert fingerprint); empty = none.
    pub alert_topic: String,
    /// Topic of leaderboards (key = leaderboard|board|window kind|window
    /// label, in `kpi_format`); empty = none.
    pub leaderboard_topic: String,
    /// Dead-letter topic: rejected messages with their key, value and
    /// headers plus `salespulse.*` headers saying why; empty = the
    /// dead-letter file of `output.dead_letter`.
    pub dlq_topic: String,
    /// Format of structured messages that carry no `content-type` header.
    pub default_format: Format,
    /// A partition without a message for this long stops holding the
    /// watermark back (it no longer counts in the minimum over partitions).
    pub idle_partition_timeout: Dur,
    /// How often the state of every assigned partition (and of the
    /// merger) is written to `changelog_topic`; the input offsets are
    /// committed right after, once the broker has it. A restarted or
    /// reassigned partition replays at most this much.
    pub checkpoint_interval: Dur,
    /// Internal topic (1 partition) the partition states send their
    /// partial aggregates to; created at start if missing. Empty =
    /// `<group_id>.partials`.
    pub partials_topic: String,
    /// Internal compacted topic of the checkpoints (as many partitions as
    /// the input topic); created at start if missing. Empty =
    /// `<group_id>.changelog`.
    pub changelog_topic: String,
    /// Replication factor of the internal topics when salespulse creates
    /// them (-1 = the broker's default).
    pub internal_replication: i32,
    /// `run --to-end` stops once every partition is read to its end offset
    /// and no message came for this long (some brokers, e.g. tansu 0.6,
    /// report end offsets short of what they hold: raise it for them).
    pub end_quiet: Dur,
    /// Static group membership (KIP-345): this instance's
    /// `group.instance.id`, stable across restarts (e.g. the pod name of
    /// a StatefulSet). A restarted instance then takes its partitions
    /// back without a rebalance, as long as it is back within
    /// `session.timeout.ms`. Empty (default): dynamic membership. Two
    /// running instances must never share one.
    pub instance_id: String,
    /// A WARN is logged when the instance has been in the group without
    /// any input partition for this long (more instances than partitions,
    /// or a rebalance that does not end).
    pub unassigned_warn_after: Dur,
    /// Extra librdkafka properties for the consumer and the producers,
    /// e.g. `"security.protocol" = "SASL_SSL"`, `"sasl.mechanisms" =
    /// "SCRAM-SHA-512"`, `"sasl.username"`, `"sasl.password"`,
    /// `"ssl.ca.location"`. In the environment, write the dots as
    /// underscores: `SALESPULSE_KAFKA__PROPERTIES__SASL_PASSWORD`. Values
    /// are never logged. Numbers and booleans are taken as their text
    /// (`SALESPULSE_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS=6000`, or
    /// `"session.timeout.ms" = 6000` in TOML).
    #[serde(deserialize_with = "scalar_map")]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// A property value as TOML or the environment gives it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

/// A map of librdkafka properties: every value as text, whatever type the
/// TOML file or the environment (which figment parses: `6000` is a
/// number there) gave it.
fn scalar_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let m = std::collections::BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Uint(u) => u.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

impl KafkaConfig {
    /// The partials topic: `partials_topic`, else `<group_id>.partials`.
    pub fn partials(&self) -> String {
        if self.partials_topic.is_empty() {
            format!("{}.partials", self.group_id)
        } else {
            self.partials_topic.clone()
        }
    }

    /// The changelog topic: `changelog_topic`, else `<group_id>.changelog`.
    pub fn changelog(&self) -> String {
        if self.changelog_topic.is_empty() {
            format!("{}.changelog", self.group_id)
        } else {
            self.changelog_topic.clone()
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            input_topics: vec!["crm.events".into()],
            group_id: "salespulse".into(),
            kpi_topic: "salespulse.kpis".into(),
            kpi_format: Format::Json,
            alert_topic: "salespulse.alerts".into(),
            leaderboard_topic: String::new(),
            dlq_topic: "salespulse.dlq".into(),
            default_format: Format::Json,
            idle_partition_timeout: Dur(std::time::Duration::from_secs(30)),
            checkpoint_interval: Dur(std::time::Duration::from_secs(5)),
            partials_topic: String::new(),
            changelog_topic: String::new(),
            internal_replication: -1,
            end_quiet: Dur(std::time::Duration::from_secs(2)),
            instance_id: String::new(),
            unassigned_warn_after: Dur(std::time::Duration::from_secs(30)),
            properties: Default::default(),
        }
    }
}

impl KafkaConfig {
    /// librdkafka properties with env-style keys (`sasl_password`) turned
    /// into librdkafka's dotted names (`sasl.password`).
    pub fn librdkafka_properties(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase().replace('_', "."), v.clone()))
            .collect()
    }
}

/// Never prints property values: they hold passwords and keys.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("input_topics", &self.input_topics)
            .field("group_id", &self.group_id)
            .field("kpi_topic", &self.kpi_topic)
            .field("kpi_format", &self.kpi_format)
            .field("alert_topic", &self.alert_topic)
            .field("leaderboard_topic", &self.leaderboard_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("default_format", &self.default_format)
            .field("idle_partition_timeout", &self.idle_partition_timeout)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("partials_topic", &self.partials_topic)
            .field("changelog_topic", &self.changelog_topic)
            .field("internal_replication", &self.internal_replication)
            .field("end_quiet", &self.end_quiet)
            .field("instance_id", &self.instance_id)
            .field("unassigned_warn_after", &self.unassigned_warn_after)
            .field(
                "properties",
                &self
                    .properties
                    .keys()
                    .map(|k| format!("{k}=<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Seed of the demo generator (same seed, same events).
    pub seed: u64,
    /// Events per second the live demo feeds the pipeline.
    pub rate: f64,
    /// Events per simulated business day: with `rate`, how fast demo time runs.
    pub events_per_day: u32,
    /// Number of sales reps in the simulated company.
    pub reps: u32,
    /// First simulated instant (RFC 3339); default: 2026-01-01T00:00:00Z.
    pub start: Option<String>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            rate: 2000.0,
            events_per_day: 1000,
            reps: 12,
            start: None,
        }
    }
}

/// One configuration error: the field, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.field, self.problem, self.fix)
    }
}

/// Configuration that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("configuration error: {0}")]
    Parse(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

impl Config {
    /// Defaults, then the TOML file if any, then `SALESPULSE_*` variables; then validated.
    pub fn load(path: Option<&Path>) -> Result<Config, LoadError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                return Err(LoadError::Parse(format!(
                    "config file {} does not exist (fix: give the path of a TOML file, or omit --config to use the defaults)",
                    p.display()
                )));
            }
            fig = fig.merge(Toml::file(p));
        }
        // SALESPULSE_LOG_FORMAT is a CLI setting (`--log-format`), not a config key.
        fig = fig.merge(
            Env::prefixed("SALESPULSE_")
                .ignore(&["log_format"])
                .split("__"),
        );
        let cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e
                .into_iter()
                .map(|e| {
                    let path = e.path.join(".");
                    let fix = "see the configuration reference in README.md";
                    if path.is_empty() {
                        format!("{e} (fix: {fix})")
                    } else {
                        format!("{path}: {} (fix: {fix})", e.kind)
                    }
                })
                .collect();
            LoadError::Parse(msgs.join("; "))
        })?;
        cfg.validate().map_err(LoadError::Invalid)?;
        Ok(cfg)
    }

    /// Parses a TOML string (no environment), then validates: for tests.
    pub fn from_toml(s: &str) -> Result<Config, LoadError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(s))
            .extract()
            .map_err(|e| LoadError::Parse(e.to_string()))?;
        cfg.validate().map_err(LoadError::Invalid)?;
        Ok(cfg)
    }

    /// Cross-field checks. Returns every error, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut err = |field: &str, problem: String, fix: &str| {
            errs.push(ConfigError {
                field: field.into(),
                problem,
                fix: fix.into(),
            })
        };
        if self.time.zone.parse::<chrono_tz::Tz>().is_err() {
            err(
                "time.zone",
                format!("{:?} is not an IANA time zone", self.time.zone),
                "use a name from the tz database, e.g. \"UTC\", \"Europe/Paris\", \"America/New_York\"",
            );
        }
        if !(1..=12).contains(&self.time.fiscal_year_start_month) {
            err(
                "time.fiscal_year_start_month",
                format!("{} is not a month", self.time.fiscal_year_start_month),
                "use 1 (January) to 12 (December)",
            );
        }
        let lateness = self.time.out_of_orderness.ms() + self.time.grace.ms();
        if self.state.dedup_horizon.ms() < lateness {
            err(
                "state.dedup_horizon",
                format!(
                    "{} is shorter than time.out_of_orderness + time.grace ({} + {}), so a redelivered event could be counted twice",
                    self.state.dedup_horizon, self.time.out_of_orderness, self.time.grace
                ),
                "raise state.dedup_horizon to at least out_of_orderness + grace",
            );
        }
        if self.state.entity_ttl.ms() < lateness {
            err(
                "state.entity_ttl",
                format!(
                    "{} is shorter than out_of_orderness + grace",
                    self.state.entity_ttl
                ),
                "raise state.entity_ttl above your longest sales cycle (default 400d)",
            );
        }
        let jump = self.time.max_jump.ms();
        if jump != 0 && jump < self.time.out_of_orderness.ms() {
            err(
                "time.max_jump",
                format!(
                    "{} is shorter than time.out_of_orderness ({}): ordinary disorder would be held as outliers",
                    self.time.max_jump, self.time.out_of_orderness
                ),
                "use a span longer than the stream's quiet periods, e.g. \"7d\", or \"0s\" to turn the outlier hold off",
            );
        }
        if self.time.jump_confirmations == 0 {
            err(
                "time.jump_confirmations",
                "0 events cannot confirm a jump".into(),
                "use a positive number, e.g. 32",
            );
        }
        if self.output.dead_letter_max_bytes < 1024 {
            err(
                "output.dead_letter_max_bytes",
                format!(
                    "{} bytes is too little to show what was rejected",
                    self.output.dead_letter_max_bytes
                ),
                "use at least 1024, e.g. 1048576 (1 MiB)",
            );
        }
        if self.state.dedup_max_entries == 0 {
            err(
                "state.dedup_max_entries",
                "0 disables duplicate detection".into(),
                "use a positive number, e.g. 5000000",
            );
        }
        if self.windows.calendar.is_empty() && self.windows.rolling.is_empty() {
            err(
                "windows",
                "no calendar and no rolling window is configured".into(),
                "list at least one, e.g. calendar = [\"month\"]",
            );
        }
        if self.windows.rolling_buckets == 0 {
            err(
                "windows.rolling_buckets",
                "0 sub-buckets".into(),
                "use a positive number, e.g. 24",
            );
        }
        for (i, r) in self.windows.rolling.iter().enumerate() {
            let b = i64::from(self.windows.rolling_buckets.max(1));
            if r.ms() <= 0 || r.ms() % b != 0 || (r.ms() / b) % 1000 != 0 {
                err(
                    &format!("windows.rolling[{i}]"),
                    format!("{r} does not split into {b} whole-second sub-buckets"),
                    "use a span that is a multiple of windows.rolling_buckets seconds, e.g. \"24h\"",
                );
            }
        }
        if self.pipeline.stages.is_empty() {
            err(
                "pipeline.stages",
                "no stage is configured".into(),
                "list the open stages of your pipeline in order",
            );
        }
        if let Some(age) = self.pipeline.max_open_age {
            let lateness = self.time.out_of_orderness.ms() + self.time.grace.ms();
            if age.ms() <= lateness {
                err(
                    "pipeline.max_open_age",
                    format!(
                        "{age} is not longer than time.out_of_orderness + time.grace ({} + {}): a deal could expire before its own late events arrive",
                        self.time.out_of_orderness, self.time.grace
                    ),
                    "use a span longer than your stalest healthy deal, e.g. \"180d\", or leave it unset",
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.pipeline.stages.iter().enumerate() {
            if !(0.0..=1.0).contains(&s.probability) {
                err(
                    &format!("pipeline.stages[{i}].probability"),
                    format!("{} is not a probability", s.probability),
                    "use a number from 0 to 1",
                );
            }
            if s.name.trim().is_empty() || !seen.insert(s.name.to_lowercase()) {
                err(
                    &format!("pipeline.stages[{i}].name"),
                    format!("{:?} is empty or listed twice", s.name),
                    "give every stage a distinct name",
                );
            }
        }
        if let Some(t) = self.targets.monthly_revenue {
            if !(t > 0.0 && t.is_finite()) {
                err(
                    "targets.monthly_revenue",
                    format!("{t} is not a positive amount"),
                    "use a positive number or remove the key",
                );
            }
        }
        for (field, v) in [("targets.market_size", self.targets.market_size)]
            .into_iter()
            .chain(
                self.targets
                    .product_market_size
                    .values()
                    .map(|v| ("targets.product_market_size", Some(*v))),
            )
        {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    err(
                        field,
                        format!("{v} is not a positive amount"),
                        "use the yearly market revenue, a positive number, or remove the key",
                    );
                }
            }
        }
        if !self.kpis.dimensions.iter().any(|d| d == "rep") {
            err(
                "kpis.dimensions",
                "rep is missing: quota attainment, sales progress and the leaderboards are computed per rep".into(),
                "keep \"rep\" in the list",
            );
        }
        for (i, d) in self.kpis.dimensions.iter().enumerate() {
            if !crate::engine::state::DIMS.contains(&d.as_str()) {
                err(
                    &format!("kpis.dimensions[{i}]"),
                    format!("{d:?} is not a dimension"),
                    "use any of rep, team, region, channel, product, campaign, variant, competitor, segment",
                );
            } else if self.kpis.dimensions[..i].contains(d) {
                err(
                    &format!("kpis.dimensions[{i}]"),
                    format!("{d:?} is listed twice"),
                    "list each dimension once",
                );
            }
        }
        if self.kpis.max_series_per_dimension == 0 {
            err(
                "kpis.max_series_per_dimension",
                "0 would fold every value into \"other\"".into(),
                "use a positive number, e.g. 1000",
            );
        }
        if self.kpis.leaderboard_size == 0 {
            err(
                "kpis.leaderboard_size",
                "0 entries".into(),
                "use a positive number, e.g. 10",
            );
        }
        if self.input.batch_size == 0 {
            err(
                "input.batch_size",
                "0".into(),
                "use a positive number, e.g. 1024",
            );
        }
        if self.http.enabled && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            err(
                "http.listen",
                format!("{:?} is not a socket address", self.http.listen),
                "write HOST:PORT, e.g. \"127.0.0.1:9464\" or \"0.0.0.0:9464\"",
            );
        }
        if !(self.generator.rate > 0.0 && self.generator.rate.is_finite()) {
            err(
                "generator.rate",
                format!("{} events/s", self.generator.rate),
                "use a positive number",
            );
        }
        if self.generator.events_per_day == 0 {
            err(
                "generator.events_per_day",
                "0".into(),
                "use a positive number, e.g. 1000",
            );
        }
        if self.generator.reps == 0 {
            err("generator.reps", "0".into(), "use at least 1");
        }
        if let Some(s) = &self.generator.start {
            if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                err(
                    "generator.start",
                    format!("{s:?} is not RFC 3339"),
                    "write e.g. \"2026-01-01T00:00:00Z\"",
                );
            }
        }
        let k = &self.kafka;
        if !k.brokers.trim().is_empty() {
            if k.brokers.split(',').any(|b| {
                let b = b.trim();
                b.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            }) {
                err(
                    "kafka.brokers",
                    format!("{:?} is not a list of host:port", k.brokers),
                    "write e.g. \"localhost:9092\" or \"b1:9092,b2:9092\"",
                );
            }
            if k.input_topics.is_empty() || k.input_topics.iter().any(|t| t.trim().is_empty()) {
                err(
                    "kafka.input_topics",
                    "no topic, or an empty topic name".into(),
                    "list the topics of CRM events, e.g. [\"crm.events\"]",
                );
            }
            if k.group_id.trim().is_empty() {
                err(
                    "kafka.group_id",
                    "empty".into(),
                    "name the consumer group, e.g. \"salespulse\"",
                );
            }
            if k.checkpoint_interval.0.is_zero() {
                err(
                    "kafka.checkpoint_interval",
                    "0s".into(),
                    "use a positive duration, e.g. \"5s\"",
                );
            }
            let (partials, changelog) = (k.partials(), k.changelog());
            for (field, v) in [
                ("kafka.partials_topic", &partials),
                ("kafka.changelog_topic", &changelog),
            ] {
                if k.input_topics.contains(v)
                    || [
                        &k.kpi_topic,
                        &k.dlq_topic,
                        &k.alert_topic,
                        &k.leaderboard_topic,
                    ]
                    .contains(&v)
                {
                    err(
                        field,
                        format!("{v:?} is also another topic of the run"),
                        "give each internal topic a name of its own",
                    );
                }
            }
            if partials == changelog {
                err(
                    "kafka.changelog_topic",
                    "the same as kafka.partials_topic".into(),
                    "give each internal topic a name of its own",
                );
            }
            if k.internal_replication == 0 || k.internal_replication < -1 {
                err(
                    "kafka.internal_replication",
                    k.internal_replication.to_string(),
                    "use -1 (the broker's default) or a positive replication factor",
                );
            }
            if k.idle_partition_timeout.0.is_zero() {
                err(
                    "kafka.idle_partition_timeout",
                    "0s would ignore every partition".into(),
                    "use a positive duration, e.g. \"30s\"",
                );
            }
            for key in k.properties.keys() {
                let norm = key.to_ascii_lowercase().replace('_', ".");
                if matches!(
                    norm.as_str(),
                    "bootstrap.servers"
                        | "group.id"
                        | "enable.auto.commit"
                        | "enable.auto.offset.store"
                ) {
                    err(
                        &format!("kafka.properties.{key}"),
                        "is set by salespulse itself".into(),
                        "use kafka.brokers / kafka.group_id; offsets are always committed by salespulse after processing",
                    );
                }
                if norm == "group.instance.id" {
                    err(
                        &format!("kafka.properties.{key}"),
                        "is set by salespulse itself".into(),
                        "use kafka.instance_id (static membership of both of salespulse's consumer groups)",
                    );
                }
            }
            if k.instance_id.trim() != k.instance_id
                || k.instance_id.len() > 249
                || k.instance_id.chars().any(|c| c.is_control())
            {
                err(
                    "kafka.instance_id",
                    format!("{:?} is not a usable group.instance.id", k.instance_id),
                    "use a short stable name without spaces at the ends, e.g. the pod name \"salespulse-0\"",
                );
            }
        }
        if !self.checkpoint.path.as_os_str().is_empty() && self.checkpoint.interval.0.is_zero() {
            errs.push(ConfigError {
                field: "checkpoint.interval".into(),
                problem: "0s".into(),
                fix: "use a positive duration, e.g. \"10s\"".into(),
            });
        }
        let windows = self.window_kinds();
        self.validate_prometheus(&windows, &mut errs);
        self.alerts.validate(&windows, &mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

impl Config {
    fn validate_prometheus(&self, windows: &[String], errs: &mut Vec<ConfigError>) {
        let p = &self.prometheus;
        let mut err = |field: String, problem: String, fix: String| {
            errs.push(ConfigError {
                field,
                problem,
                fix,
            })
        };
        for (i, k) in p.kpis.iter().enumerate() {
            if !crate::kpi::CATALOGUE.iter().any(|d| d.name == k) {
                err(
                    format!("prometheus.kpis[{i}]"),
                    format!("{k:?} is not a KPI"),
                    "use names from docs/kpis.md (e.g. \"win_rate\"), or leave the list empty for every KPI".into(),
                );
            }
        }
        for (i, w) in p.windows.iter().flatten().enumerate() {
            if !windows.contains(w) {
                err(
                    format!("prometheus.windows[{i}]"),
                    format!("{w:?} is not a window this configuration computes"),
                    format!("use any of {}", windows.join(", ")),
                );
            }
        }
        for (i, d) in p.dimensions.iter().flatten().enumerate() {
            if !self.kpis.dimensions.contains(d) {
                err(
                    format!("prometheus.dimensions[{i}]"),
                    format!("{d:?} is not a dimension computed (kpis.dimensions)"),
                    format!("use any of {}", self.kpis.dimensions.join(", ")),
                );
            }
        }
        if p.max_series == 0 {
            err(
                "prometheus.max_series".into(),
                "0 would export no KPI".into(),
                "use a positive number, e.g. 20000 (docs/prometheus.md has the formula)".into(),
            );
        }
    }
}
