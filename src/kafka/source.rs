//! The per-partition source engines and the merger, where a message
//! stands against the offset a state expects, and decoding one message
//! into its engine (with the dead-letter headers of a rejection).

use super::client::Consumer_;
use crate::decode::{json::BinaryAttrs, wire_of, Format, Reject, Wire};
use crate::engine::merge::{Partial, Progress};
use crate::engine::{Engine, Outcome};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

/// A source engine: the state of one input partition.
pub(super) struct Src {
    pub(super) engine: Engine,
    /// Next offset to apply: smaller ones are already in the state.
    pub(super) next: i64,
    /// `next` in the last checkpoint.
    pub(super) saved: i64,
    /// Chunks of the last checkpoint in the changelog (0: none).
    pub(super) chunks: u32,
    pub(super) last_message: Instant,
    pub(super) consumed: u64,
    /// Applied something since the last export.
    pub(super) changed: bool,
    /// When the first message applied since the last export was read
    /// (for `salespulse_kafka_publish_delay_seconds`).
    pub(super) read_since: Option<Instant>,
    /// Progress at the last export, and the (confirmed) progress it sent.
    pub(super) last_progress: Option<Progress>,
    pub(super) last_sent: Option<Progress>,
    pub(super) last_export: Instant,
    /// Seeking back: see [`SeekBack`].
    pub(super) back: SeekBack,
    /// Tells this source's confirmations from those of an earlier one
    /// of the same partition.
    pub(super) generation: u64,
    /// The consumer's assignment count when this source last saw its
    /// partition assigned. A source kept across a revocation whose
    /// partition comes back (eager rebalancing revokes everything) has
    /// its fetch position reset to the committed offset, possibly inside
    /// a batch: its position is unverified again (see [`Src::verified`]).
    pub(super) assignment: u64,
}

impl Src {
    /// The fetch position is known to be right: a message came since the
    /// restore (librdkafka then reads on in order), or the state starts at
    /// the partition's first offset. Until then the end offset proves
    /// nothing: tansu 0.6 reports the base offset of the last batch + 1 as
    /// the end, and serves nothing to a fetch from inside that batch.
    pub(super) fn verified(&self, low: i64) -> bool {
        self.back.seen.is_some() || self.next <= low
    }
}

/// Seeking back to the offset a restored state expects, further each
/// time: some brokers (tansu 0.6) serve a fetch from inside a record
/// batch from the *next* batch, or nothing at all when it is the last
/// one. Whatever comes before the expected offset is skipped.
#[derive(Default)]
pub(super) struct SeekBack {
    pub(super) last: Option<Instant>,
    pub(super) tries: u32,
    /// Last message of the partition, applied or skipped.
    pub(super) seen: Option<Instant>,
    /// Last warning that the partition stalls (kept across resets).
    pub(super) warned: Option<Instant>,
}

impl SeekBack {
    /// Seeks `topic/partition` back from `next` (at most once a second):
    /// 4, 16, 64… × `step` offsets, the further the more tries.
    pub(super) fn seek(
        &mut self,
        c: &Consumer_,
        topic: &str,
        partition: i32,
        next: i64,
        step: i64,
    ) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        let to = self.next_target(next, step);
        tracing::info!(
            topic,
            partition,
            next,
            seek = to,
            "seeking back to the restored checkpoint's offset"
        );
        if let Err(e) = seek(c, topic, partition, to) {
            tracing::warn!(topic, partition, error = %e, "seek failed; trying again later");
        }
    }

    /// The offset of the next seek back from `next`, a try more.
    fn next_target(&mut self, next: i64, step: i64) -> i64 {
        self.last = Some(Instant::now());
        self.tries += 1;
        (next - step * (1i64 << (2 * self.tries.min(10)))).max(0)
    }

    /// After a rebalance that (re)assigned the partition: unverified
    /// again until a message comes (the fetch position may have been
    /// reset), the stall timer restarted. The tries so far are kept: a
    /// group that rebalances every few seconds must not bring every
    /// partition with no message back to the shortest seek, or one whose
    /// expected offset is deep inside a large last batch is never served.
    pub(super) fn reassigned(&self) -> SeekBack {
        SeekBack {
            last: Some(Instant::now()),
            tries: self.tries,
            seen: None,
            warned: self.warned,
        }
    }

    /// Warns (every 30 s at most) about a partition that has brought no
    /// message for 30 s since `quiet_since` although it holds offsets
    /// from `next` on, with what librdkafka thinks of it.
    pub(super) fn warn_if_stalled(
        &mut self,
        c: &Consumer_,
        topic: &str,
        partition: i32,
        next: i64,
        quiet_since: Instant,
    ) {
        const STALL: Duration = Duration::from_secs(30);
        if quiet_since.elapsed() < STALL || self.warned.is_some_and(|t| t.elapsed() < STALL) {
            return;
        }
        self.warned = Some(Instant::now());
        let assigned = c
            .assignment()
            .ok()
            .map(|a| a.find_partition(topic, partition).is_some());
        let position = c.position().ok().and_then(|p| {
            p.find_partition(topic, partition)
                .map(|e| format!("{:?}", e.offset()))
        });
        tracing::warn!(
            topic,
            partition,
            next,
            quiet_s = quiet_since.elapsed().as_secs(),
            ?assigned,
            ?position,
            "no message from this partition for this long although it holds offsets from the one expected, seeking back or not: its KPIs stall until the broker serves it (a restart of this instance moves the partition)"
        );
    }

    /// No message for 2 s (none at all since the restore, or none since
    /// the last seek) although the partition holds offsets from `next`
    /// on: the fetch is stuck inside a batch.
    pub(super) fn stuck(&self, since: Instant) -> bool {
        let quiet = |t: Instant| t.elapsed() > Duration::from_secs(2);
        quiet(self.seen.unwrap_or(since).max(self.last.unwrap_or(since)))
    }
}

/// Numbers the sources this process creates (see `Src::generation`).
pub(super) static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The merger: the one engine that emits KPI records.
pub(super) struct Merger {
    pub(super) engine: Engine,
    /// Next offset of the partials topic to read.
    pub(super) next: i64,
    pub(super) saved: i64,
    pub(super) changed: bool,
    pub(super) back: SeekBack,
    pub(super) last_message: Instant,
    /// What the live updates have sent, so that they repeat nothing.
    pub(super) unchanged: crate::output::Unchanged,
    /// The merger's clock and when it last moved (wall time): how long
    /// the input has been quiet, for `absent_for` rules.
    pub(super) clock_moved: (i64, Instant),
    /// Partials this instance's sources exported whose items the merger
    /// took in at once ([`Engine::absorb_items`]), by their bytes:
    /// read back from the topic, only their progress is new.
    /// Keyed by their xxh3 hash.
    pub(super) own: rustc_hash::FxHashMap<u64, Own>,
    /// The bytes `own` holds.
    pub(super) own_bytes: usize,
    /// Live: when the oldest message of each export of this instance's
    /// sources taken in since the last update was read; observed as
    /// `salespulse_kafka_publish_delay_seconds` once an update is out.
    pub(super) reads: Vec<Instant>,
}

impl Merger {
    /// The merger of this instance, its engine restored up to `next`
    /// (the partials topic's offset it reads on from).
    pub(super) fn new(engine: Engine, next: i64) -> Merger {
        Merger {
            engine,
            next,
            saved: next,
            changed: true,
            back: SeekBack::default(),
            last_message: Instant::now(),
            unchanged: Default::default(),
            clock_moved: (i64::MIN, Instant::now()),
            own: Default::default(),
            own_bytes: 0,
            reads: Vec::new(),
        }
    }

    /// An export of a source here taken in, whose oldest message was
    /// read at `read` (at most 4,096 kept between two updates).
    pub(super) fn took(&mut self, read: Option<Instant>) {
        if let Some(t) = read.filter(|_| self.reads.len() < 4096) {
            self.reads.push(t);
        }
    }

    /// A live update was handed to the producer: the delays of what it covers.
    pub(super) fn published(&mut self, m: &crate::metrics::Metrics) {
        for t in self.reads.drain(..) {
            m.kafka.publish_delay.observe(t.elapsed().as_secs_f64());
        }
    }
}

/// Seconds from a message's Kafka timestamp to now (0 when that clock is
/// ahead of this one), if it has one.
pub(super) fn consume_delay(ts: rdkafka::Timestamp) -> Option<f64> {
    let ms = ts.to_millis()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    Some((now - ms).max(0) as f64 / 1000.0)
}

/// See [`Merger::own`].
pub(super) struct Own {
    bytes: Vec<u8>,
    source: String,
    version: i64,
    progress: Option<Progress>,
}

impl Merger {
    /// Most partials (and bytes) remembered in `own`: they are read back
    /// within moments, unless their sending failed or the partials
    /// topic is read slowly (a backlog: exports of up to megabytes);
    /// past this, forgotten (read back, they are absorbed whole again:
    /// the same result).
    const OWN_MAX: usize = 1024;
    const OWN_MAX_BYTES: usize = 64 << 20;

    /// A partial of this instance's source, its items absorbed now.
    pub(super) fn absorb_own(&mut self, p: Partial, bytes: Vec<u8>) {
        if self.own.len() >= Self::OWN_MAX || self.own_bytes >= Self::OWN_MAX_BYTES {
            self.own.clear();
            self.own_bytes = 0;
        }
        self.own_bytes += bytes.len();
        let own = Own {
            source: p.source.clone(),
            version: p.version,
            progress: p.progress,
            bytes,
        };
        self.engine.absorb_items(p);
        if let Some(old) = self.own.insert(xxh3_64(&own.bytes), own) {
            self.own_bytes -= old.bytes.len();
        }
    }

    /// A message of the partials topic: only its progress when it is one
    /// of [`Merger::absorb_own`]'s, else decoded and absorbed whole.
    /// True when it brought items (another instance's partial, or one
    /// of this instance's not absorbed at its export); false for this
    /// instance's own read back (its progress only) or an undecodable one.
    pub(super) fn absorb_message(&mut self, offset: i64, payload: &[u8]) -> bool {
        let hash = xxh3_64(payload);
        if self.own.get(&hash).is_some_and(|o| o.bytes == payload) {
            let o = self.own.remove(&hash).expect("just found");
            self.own_bytes -= o.bytes.len();
            self.engine
                .absorb_progress(&o.source, o.version, o.progress);
            return false;
        }
        match Partial::decode(payload) {
            Ok(p) => {
                self.engine.absorb(p);
                true
            }
            Err(e) => {
                tracing::error!(offset, error = %e, "undecodable message in the partials topic, skipped");
                false
            }
        }
    }
}

/// Moves the fetch position of an assigned partition.
pub(super) fn seek(c: &Consumer_, topic: &str, partition: i32, offset: i64) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    for e in c.seek_partitions(tpl, Duration::from_secs(5))?.elements() {
        if let Err(err) = e.error() {
            anyhow::bail!("{err}");
        }
    }
    Ok(())
}

/// Where a message stands against the next offset a state expects.
pub(super) enum Pos {
    Apply,
    /// Already in the state (read again after a restore or a seek).
    Skip,
    /// Offsets were skipped (the group's committed offset is past the
    /// restored checkpoint): seek back.
    Gap,
}

pub(super) fn position(next: i64, offset: i64) -> Pos {
    match offset.cmp(&next) {
        std::cmp::Ordering::Equal => Pos::Apply,
        std::cmp::Ordering::Less => Pos::Skip,
        std::cmp::Ordering::Greater => Pos::Gap,
    }
}

/// `topic/partition`: a source's name in partials.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

pub(super) fn source_key(topic: &str, partition: i32) -> String {
    format!("source/{topic}/{partition}")
}

pub(super) const MERGE_KEY: &str = "merge";

/// Header value as UTF-8, if present.
pub(super) fn header<'a>(msg: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let h = msg.headers()?;
    h.iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The original headers plus `salespulse.*` headers saying why and where from.
pub(super) fn dead_letter_headers(msg: &BorrowedMessage<'_>, rej: &Reject) -> OwnedHeaders {
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
pub(super) fn process(
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

/// The output of a future that is ready now (a message already fetched),
/// else `None` (the future is dropped: `recv` is cancellation safe).
pub(super) fn ready<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// The loop's tick: `output.update_interval`, within 10 ms and 1 s.
pub(super) fn tick_period(update: Duration) -> Duration {
    update.clamp(Duration::from_millis(10), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::merge::{MergeState, Progress};

    /// Each seek back goes further (4, 16, 64… × the step), down to the
    /// partition's start, and a rebalance that keeps the partition does
    /// not start the series over (the CI stall of 2026-12-06: a group
    /// rebalancing every 10 s kept a partition seeking 64…4,096 offsets
    /// back for ten minutes).
    #[test]
    fn seeks_back_go_further_each_time_and_a_rebalance_does_not_start_them_over() {
        let mut b = SeekBack::default();
        let mut targets = Vec::new();
        for i in 0..6 {
            if i == 3 {
                b = b.reassigned();
                assert!(b.seen.is_none() && b.last.is_some());
            }
            targets.push(b.next_target(9_931, 16));
        }
        assert_eq!(targets, [9_867, 9_675, 8_907, 5_835, 0, 0]);
        b.seen = Some(Instant::now());
        b.tries = 0; // a message applied
        assert_eq!(b.reassigned().next_target(9_931, 16), 9_867);
    }

    fn merger(cfg: &crate::config::Config) -> Merger {
        let mut engine = Engine::from_config(cfg);
        engine.set_merge_mode(MergeState::default(), ["t/0".to_string()].into());
        Merger::new(engine, 0)
    }

    /// `absorb_own` remembers an export by its bytes; its copy read back
    /// brings only the progress and frees them; at most `OWN_MAX_BYTES`
    /// are held (a backlog's exports run to megabytes), and a copy
    /// forgotten is decoded and absorbed whole.
    #[test]
    fn own_exports_are_remembered_by_their_bytes_within_a_memory_bound() {
        let cfg = crate::config::Config::from_toml("").unwrap();
        let mut src = Engine::from_config(&cfg);
        src.set_source_mode();
        let progress = Progress {
            clock: 0,
            max_time: 0,
            idle: false,
            at_end: false,
        };
        let parts = src.export_encoded("t/0", 0, progress, 1 << 20);
        let (part, bytes) = parts.into_iter().last().expect("a first export");
        let mut mg = merger(&cfg);
        mg.absorb_own(part.clone(), bytes.clone());
        assert_eq!((mg.own.len(), mg.own_bytes), (1, bytes.len()));
        assert!(!mg.absorb_message(0, &bytes), "its own copy: progress only");
        assert_eq!((mg.own.len(), mg.own_bytes), (0, 0));
        assert!(
            mg.absorb_message(1, &bytes),
            "not remembered: absorbed whole"
        );

        let big = |fill: u8| vec![fill; 40 << 20];
        mg.absorb_own(part.clone(), big(1));
        mg.absorb_own(part.clone(), big(2));
        assert_eq!((mg.own.len(), mg.own_bytes), (2, 80 << 20));
        mg.absorb_own(part.clone(), big(3));
        assert_eq!(
            (mg.own.len(), mg.own_bytes),
            (1, 40 << 20),
            "past the bound, what was held is forgotten"
        );
        mg.absorb_own(part, bytes.clone());
        assert!(!mg.absorb_message(2, &bytes));
        assert_eq!(mg.own_bytes, 40 << 20);
    }
}
