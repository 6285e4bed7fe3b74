//! `[kafka]`: brokers, topics, group and instance ids, timings, and the
//! librdkafka properties passed through (values as text).

use super::{Dur, Format};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

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
    /// The shortest gap between two exports of a partition's partial
    /// aggregates (and two publishes of live updates by the merger) while
    /// input keeps coming. A partition whose input is caught up exports
    /// at once (at most this often): latency at low rates, big batches
    /// under load. Live, the instance that runs the merger exports at its
    /// update tick instead (`output.update_interval`, within 10 ms and
    /// 1 s): its exports feed its own merger, which publishes no sooner.
    pub export_interval: Dur,
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
            export_interval: Dur(std::time::Duration::from_millis(10)),
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
            .field("export_interval", &self.export_interval)
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
