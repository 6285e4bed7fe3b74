//! Restoring a source engine or the merger from the changelog topic
//! when its partition is assigned.

use super::changelog;
use super::client::client_config;
use super::source::{source_key, MERGE_KEY};
use crate::config::Config;
use crate::engine::Engine;
use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use std::time::Duration;

/// Where the restore of a checkpoint came from, for errors.
pub(super) fn changelog_name(
    topic: &str,
    partition: i32,
    offset: i64,
    key: &str,
) -> std::path::PathBuf {
    format!("kafka changelog {topic} partition {partition} offset {offset} ({key})").into()
}

pub(super) const KAFKA_FIX: &str = "the changelog holds a damaged or incompatible checkpoint; to rebuild every partition from the start of its input topic instead, run once with `salespulse run --fresh …`, which ignores the changelog (the input topics must still hold every event)";

/// Restores the source engine of one input partition from the changelog
/// (or a new one at the partition's start); returns it, its next offset
/// and the chunk count of the checkpoint it came from (0: none).
pub(super) fn restore_source(
    cfg: &Config,
    topic: &str,
    partition: i32,
    changelog_partitions: i32,
    fresh: bool,
    target: Option<i64>,
    hint: Option<(i32, i64)>,
) -> anyhow::Result<(Engine, i64, u32)> {
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
        changelog::read_partition(
            &base,
            &cfg.kafka.changelog(),
            cp,
            |k| k == key,
            target.map(|t| (key.as_str(), t)),
            hint.filter(|(p, _)| *p == cp).map(|(_, o)| o),
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
        return Ok((e, low, 0));
    };
    let chunks = bytes.len().div_ceil(changelog::CHUNK).max(1) as u32;
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
    Ok((e, next, chunks))
}

/// Restores the merger from the changelog (or a new one).
pub(super) fn restore_merger(
    cfg: &Config,
    expected: std::collections::BTreeSet<String>,
    fresh: bool,
    target: Option<i64>,
    hint: Option<(i32, i64)>,
) -> anyhow::Result<(Engine, i64)> {
    use crate::checkpoint::{check_layout, unframe, CheckpointError, MergeCheckpoint};
    let settings = crate::engine::Settings::from_config(cfg);
    let found = if fresh {
        None
    } else {
        changelog::read_partition(
            &client_config(cfg),
            &cfg.kafka.changelog(),
            0,
            |k| k == MERGE_KEY,
            target.filter(|t| *t > 0).map(|t| (MERGE_KEY, t)),
            hint.filter(|(p, _)| *p == 0).map(|(_, o)| o),
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
