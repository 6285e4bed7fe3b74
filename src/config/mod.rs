//! Configuration: one TOML file, every key overridable by a `SALESPULSE_*`
//! environment variable (`SALESPULSE_TIME__ZONE=Europe/Paris`: sections are
//! joined with a double underscore), and defaults so that no file is needed.
//!
//! Every field's doc comment is its reference; docs/configuration.md
//! table repeats them. [`Config::validate`] checks cross-field rules and
//! names the field and the fix for each error.

pub mod alerts;
pub mod forecast;
mod http;
mod kafka;
mod postgres;
mod privacy;
pub mod sla;
mod validate;

pub use http::HttpConfig;
pub use kafka::KafkaConfig;
pub use postgres::PostgresConfig;
pub use privacy::PrivacyConfig;

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
    pub(crate) fn from_str_static(s: &str) -> Dur {
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
    pub alerts: alerts::AlertsConfig,
    pub checkpoint: CheckpointConfig,
    pub postgres: PostgresConfig,
    pub privacy: PrivacyConfig,
    pub sla: sla::SlaConfig,
    pub forecast: forecast::ForecastConfig,
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
    /// An open deal in this stage with no event (stage change, update or
    /// activity) for this many days is stalled (`stalled_deals`,
    /// `stalled_pipeline_value`); unset = never.
    #[serde(default)]
    pub max_days: Option<u32>,
    /// `pipeline`, `best_case` or `commit` (`forecast_by_category`);
    /// unset: by `probability` (below 0.4, below 0.7, above).
    #[serde(default)]
    pub forecast_category: Option<forecast::ForecastCategory>,
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
            ("prospecting", 0.1, 30),
            ("engaging", 0.2, 21),
            ("qualification", 0.3, 21),
            ("proposal", 0.5, 14),
            ("negotiation", 0.7, 14),
        ];
        PipelineConfig {
            stages: stages
                .iter()
                .map(|(n, p, d)| StageConfig {
                    name: n.to_string(),
                    probability: *p,
                    max_days: Some(*d),
                    forecast_category: None,
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
            dimensions: crate::event::DIMS.iter().map(|d| d.to_string()).collect(),
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
    /// JSON members whose values are replaced by `"[redacted]"` in dead
    /// letters (names, at any depth, ASCII case-insensitive); `[]` = keep
    /// whole messages. Text messages only: protobuf is kept as is.
    pub dead_letter_redact: Vec<String>,
}

/// The personal fields redacted from dead letters by default.
pub const DEFAULT_REDACT: &[&str] = &[
    "email",
    "phone",
    "mobile",
    "name",
    "first_name",
    "last_name",
    "full_name",
    "contact_name",
    "address",
    "street",
    "postal_code",
    "zip",
    "ip",
    "ip_address",
    "birth_date",
    "date_of_birth",
];

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dead_letter: PathBuf::from("salespulse-dlq.jsonl"),
            update_interval: Dur::from_str_static("1s"),
            summary_interval: Dur::from_str_static("2s"),
            dead_letter_max_bytes: 1 << 20,
            dead_letter_redact: DEFAULT_REDACT.iter().map(|s| s.to_string()).collect(),
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
                .map(|d| crate::window::rolling_name(d.ms())),
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
        let cfg = extract_all(&fig).map_err(LoadError::Invalid)?;
        cfg.validate().map_err(LoadError::Invalid)?;
        Ok(cfg)
    }

    /// Parses a TOML string (no environment), then validates: for tests.
    pub fn from_toml(s: &str) -> Result<Config, LoadError> {
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(s));
        let cfg = extract_all(&fig).map_err(LoadError::Invalid)?;
        cfg.validate().map_err(LoadError::Invalid)?;
        Ok(cfg)
    }
}

/// Extracts the configuration from `fig` with every parse error: a key
/// that cannot be read (unknown, wrong type) is reported and set aside,
/// and the rest is read again, then validated too — so one run of
/// `check-config` names every problem it can.
fn extract_all(fig: &Figment) -> Result<Config, Vec<ConfigError>> {
    let first = match fig.extract::<Config>() {
        Ok(cfg) => return Ok(cfg),
        Err(e) => e,
    };
    let mut errs = Vec::new();
    let mut data: figment::value::Dict = match fig.extract() {
        Ok(d) => d,
        Err(_) => return Err(first.into_iter().map(|e| parse_error(fig, &e)).collect()),
    };
    let mut pending = first;
    for _ in 0..64 {
        let mut set_aside = false;
        for e in pending {
            errs.push(parse_error(fig, &e));
            set_aside |= remove_path(&mut data, &e.path);
        }
        if !set_aside {
            return Err(errs);
        }
        match Figment::from(Serialized::defaults(&data)).extract::<Config>() {
            Ok(cfg) => {
                if let Err(more) = cfg.validate() {
                    errs.extend(more);
                }
                return Err(errs);
            }
            Err(e) => pending = e,
        }
    }
    Err(errs)
}

/// A parse error as a [`ConfigError`]; one that comes from a
/// `SALESPULSE_*` variable names the variable.
fn parse_error(fig: &Figment, e: &figment::Error) -> ConfigError {
    let path = e.path.join(".");
    let from_env = !path.is_empty()
        && fig
            .find_metadata(&path)
            .or(e.metadata.as_ref())
            .is_some_and(|m| m.name.contains("environment"));
    if from_env {
        let var = format!("SALESPULSE_{}", e.path.join("__").to_ascii_uppercase());
        return ConfigError {
            field: format!("{var} (environment variable, read as {path})"),
            problem: e.kind.to_string(),
            fix: format!("unset {var}, or give it a value docs/configuration.md allows for {path}"),
        };
    }
    ConfigError {
        field: if path.is_empty() {
            "configuration".into()
        } else {
            path
        },
        problem: e.kind.to_string(),
        fix: "see docs/configuration.md for the keys and their types".into(),
    }
}

/// Removes the key at `path` from `data`; false when there is none.
fn remove_path(data: &mut figment::value::Dict, path: &[String]) -> bool {
    use figment::value::Value;
    match path {
        [] => false,
        [key] => data.remove(key).is_some(),
        [key, rest @ ..] => match data.get_mut(key) {
            Some(Value::Dict(_, d)) => remove_path(d, rest),
            _ => false,
        },
    }
}
