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

pub mod changelog;
mod client;
mod load;
mod probe;
mod produce;
mod restore;
mod run;
mod source;
mod turn;

pub use client::{producer, FAILOVER_DEFAULTS};
pub use load::{load, LoadOptions, LoadReport};
pub use produce::{
    encode_leaderboard, encode_record, produce_events, produce_to_every_partition, record_key,
};
pub use run::run;
pub use source::source_name;

use crate::metrics::Metrics;
use std::sync::Arc;

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
    /// Show a `to_end` replay's progress on stderr (a terminal).
    pub progress: bool,
}
