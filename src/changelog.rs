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
//! id and is ignored.

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
    pub data: Vec<u8>,
}

/// The message key of chunk `index` of `key`.
pub fn chunk_key(key: &str, index: u32) -> String {
    format!("{key}#{index}")
}

/// `bytes` cut into chunk messages (value bytes), in order.
pub fn chunks(bytes: &[u8]) -> Vec<Vec<u8>> {
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
                data: data.to_vec(),
            })
            .expect("a chunk encodes")
        })
        .collect()
}

/// The newest complete checkpoint of each key in one changelog partition.
#[derive(Debug, Default)]
pub struct Latest {
    /// Key → (offset of its last chunk, bytes).
    pub by_key: HashMap<String, (i64, Vec<u8>)>,
}

/// Reads changelog partition `partition` of `topic` from its start to its
/// end, keeping the newest complete checkpoint of every key for which
/// `want` is true. A partition that does not exist reads as empty.
pub fn read_partition(
    base: &ClientConfig,
    topic: &str,
    partition: i32,
    want: impl Fn(&str) -> bool,
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
    let (low, high) = match consumer.fetch_watermarks(topic, partition, timeout) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "no changelog partition: nothing to restore");
            return Ok(Latest::default());
        }
    };
    let mut latest = Latest::default();
    if high <= low {
        return Ok(latest);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    // Chunks of the snapshot being assembled, by key.
    let mut open: HashMap<String, (u64, Vec<u8>, u32)> = HashMap::new();
    let mut last_progress = Instant::now();
    let mut next = low;
    while next < high {
        if last_progress.elapsed() > timeout {
            anyhow::bail!(
                "reading changelog {topic}/{partition} stalled at offset {next} of {high} for {timeout:?}"
            );
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.with_context(|| format!("cannot read changelog {topic}/{partition}"))?;
        last_progress = Instant::now();
        next = msg.offset() + 1;
        let Some(k) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let key = k.rsplit_once('#').map_or(k, |(a, _)| a);
        if !want(key) {
            continue;
        }
        let Ok(ch) = postcard::from_bytes::<Chunk>(msg.payload().unwrap_or_default()) else {
            // Kept as is: the checkpoint check names the damage.
            latest.by_key.insert(
                key.to_string(),
                (msg.offset(), msg.payload().unwrap_or_default().to_vec()),
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
                .insert(key.to_string(), (msg.offset(), bytes));
        }
    }
    Ok(latest)
}
