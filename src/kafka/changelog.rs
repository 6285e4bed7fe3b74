//! Checkpoints in a Kafka changelog topic (scale-out mode).
//!
//! A checkpoint (the framed bytes of [`crate::checkpoint`]) is written as
//! chunks of at most [`CHUNK`] bytes, one message each, keyed by whose
//! state it is (`source/<topic>/<partition>` or `merge`), to the changelog
//! partition of that key: the input partition number modulo the
//! changelog's partition count, and partition 0 for the merger. Only the
//! newest *complete* checkpoint of a key counts: one whose chunks are all
//! there, in order, with the same snapshot id. A writer that died half
//! way leaves an incomplete one, which is skipped.
//!
//! The topic can be compacted (`cleanup.policy=compact`): the keys of the
//! chunks are `<key>#<index>`, so compaction keeps the newest chunk of
//! every index, and an old chunk that survives carries another snapshot
//! id and is ignored. When a checkpoint has fewer chunks than the one
//! before it (say after an erasure), the indexes it no longer has get a
//! tombstone, so that compaction drops the old chunks too.

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Largest chunk (below the 1 MB default `message.max.bytes` of brokers).
pub const CHUNK: usize = 900 * 1024;

/// One message of the changelog.
#[derive(Debug, Serialize, Deserialize)]
pub struct Chunk {
    /// Random id shared by the chunks of one checkpoint.
    pub snapshot: u64,
    pub index: u32,
    pub count: u32,
    /// The input position the checkpoint has reached (next offset).
    pub position: i64,
    pub data: Vec<u8>,
}

/// The message key of chunk `index` of `key`.
pub fn chunk_key(key: &str, index: u32) -> String {
    format!("{key}#{index}")
}

/// `bytes` cut into chunk messages (value bytes), in order.
pub fn chunks(bytes: &[u8], position: i64) -> Vec<Vec<u8>> {
    let snapshot = fastrand::u64(..);
    let parts: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[][..]]
    } else {
        bytes.chunks(CHUNK).collect()
    };
    let count = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            postcard::to_stdvec(&Chunk {
                snapshot,
                index: i as u32,
                count,
                position,
                data: data.to_vec(),
            })
            .expect("a chunk encodes")
        })
        .collect()
}

/// The metadata committed with an input offset: where in the changelog
/// the checkpoint of that offset starts at the latest (the first offset
/// its write landed at, in changelog partition `partition`). A restore
/// reads from there instead of the partition's start, so it reads one
/// checkpoint, not the history compaction has not removed yet.
pub fn hint_metadata(partition: i32, offset: i64) -> String {
    format!("salespulse-changelog:{partition}:{offset}")
}

/// The (changelog partition, offset) of [`hint_metadata`], if that is what
/// `metadata` holds.
pub fn parse_hint(metadata: &str) -> Option<(i32, i64)> {
    let (p, o) = metadata
        .strip_prefix("salespulse-changelog:")?
        .split_once(':')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// The newest complete checkpoint of each key in one changelog partition.
#[derive(Debug, Default)]
pub struct Latest {
    /// Key → (offset of its last chunk, input position, bytes).
    pub by_key: HashMap<String, (i64, i64, Vec<u8>)>,
}

/// Reads changelog partition `partition` of `topic` from its start,
/// keeping the newest complete checkpoint of every key for which `want`
/// is true, until its end, and until the checkpoint of `target` (key and
/// input position: the offset the group committed, which is only ever
/// committed once its checkpoint is durable) is read. End offsets are
/// looked up again and again (some brokers report them short for a
/// while); after `timeout` what was found is returned. A partition that
/// does not exist reads as empty. `from`: where to start instead of the
/// partition's start (a [`hint_metadata`] offset), when it is in range.
pub fn read_partition(
    base: &ClientConfig,
    topic: &str,
    partition: i32,
    want: impl Fn(&str) -> bool,
    target: Option<(&str, i64)>,
    from: Option<i64>,
    timeout: Duration,
) -> anyhow::Result<Latest> {
    let mut c = base.clone();
    c.set("group.id", "salespulse-changelog-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760");
    let consumer: BaseConsumer = c.create().context("cannot create the changelog reader")?;
    let (low, mut high) = match consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))
    {
        Ok((low, high)) => (
            from.filter(|f| (low..=high).contains(f)).unwrap_or(low),
            high,
        ),
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "no changelog partition: nothing to restore");
            return Ok(Latest::default());
        }
    };
    let mut latest = Latest::default();
    let reached = |l: &Latest| {
        target.is_none_or(|(k, pos)| l.by_key.get(k).is_some_and(|(_, p, _)| *p >= pos))
    };
    if high <= low && reached(&latest) {
        return Ok(latest);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    // Chunks of the snapshot being assembled, by key.
    let mut open: HashMap<String, (u64, Vec<u8>, u32)> = HashMap::new();
    let start = Instant::now();
    let mut last_watermark = Instant::now();
    let mut next = low;
    while next < high || !reached(&latest) {
        if start.elapsed() > timeout {
            tracing::warn!(topic, partition, next, high, ?target, "the changelog was not read to the committed checkpoint in time: restoring the newest one found (the partition replays from its offset)");
            break;
        }
        if next >= high && last_watermark.elapsed() > Duration::from_millis(300) {
            last_watermark = Instant::now();
            if let Ok((_, h)) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))
            {
                high = high.max(h);
            }
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg.with_context(|| format!("cannot read changelog {topic}/{partition}"))?;
        next = msg.offset() + 1;
        high = high.max(next);
        let Some(k) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let key = k.rsplit_once('#').map_or(k, |(a, _)| a);
        if !want(key) {
            continue;
        }
        if msg.payload().is_none() {
            // A tombstone: a chunk index a smaller checkpoint no longer has.
            continue;
        }
        let Ok(ch) = postcard::from_bytes::<Chunk>(msg.payload().unwrap_or_default()) else {
            // Kept as is: the checkpoint check names the damage.
            latest.by_key.insert(
                key.to_string(),
                (
                    msg.offset(),
                    i64::MAX,
                    msg.payload().unwrap_or_default().to_vec(),
                ),
            );
            continue;
        };
        let e = open
            .entry(key.to_string())
            .or_insert((ch.snapshot, Vec::new(), 0));
        if ch.index == 0 {
            *e = (ch.snapshot, Vec::new(), 0);
        }
        if e.0 != ch.snapshot || e.2 != ch.index {
            // Out of sequence: a writer died half way, or an old chunk
            // survived compaction. Wait for the next index 0.
            e.2 = u32::MAX;
            continue;
        }
        e.1.extend_from_slice(&ch.data);
        e.2 += 1;
        if e.2 == ch.count {
            let bytes = std::mem::take(&mut e.1);
            e.2 = u32::MAX;
            latest
                .by_key
                .insert(key.to_string(), (msg.offset(), ch.position, bytes));
        }
    }
    Ok(latest)
}
