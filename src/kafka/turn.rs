//! The steps of one turn of the Kafka loop: bring the sources in line
//! with the assignment, run or hand over the merger, export partials,
//! publish the merger's records, and checkpoint to the changelog.

use super::changelog;
use super::client::{committed, Consumer_, EndOffsets};
use super::produce::{
    commit_with_metadata, deliver_all, encode_into, encode_leaderboard, send, send_tombstone,
    write_record_key, Ack, Confirm, Confirmed,
};
use super::restore::{restore_merger, restore_source};
use super::source::{source_key, source_name, Merger, SeekBack, Src, GENERATION, MERGE_KEY};
use crate::config::Config;
use crate::engine::merge::Progress;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::output::JsonRecords;
use crate::run::RunReport;
use crate::sinks::alert::Dispatcher;
use crate::sinks::postgres::PgSink;
use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the steps of the Kafka loop share.
pub(super) struct Shared<'a> {
    pub(super) cfg: &'a Config,
    pub(super) m: &'a Arc<Metrics>,
    pub(super) producer: &'a FutureProducer,
    /// The KPI history (the merger's records), when `[postgres]` is set.
    pub(super) pg: Option<&'a PgSink>,
    pub(super) consumer: &'a Arc<Consumer_>,
    pub(super) merge_consumer: &'a Arc<Consumer_>,
    pub(super) expected: &'a std::collections::BTreeSet<String>,
    pub(super) changelog_parts: i32,
    pub(super) fresh: bool,
    /// First offset of the partials topic a merger of this run reads
    /// (`--fresh`: its end when the run started; else 0).
    pub(super) fresh_partials_from: i64,
}

impl Shared<'_> {
    /// Restores the sources of newly assigned partitions (before any of
    /// their messages is applied) and drops those of revoked ones (their
    /// new owner restores them from the changelog and replays).
    pub(super) async fn sync_sources(
        &self,
        sources: &mut HashMap<(String, i32), Src>,
        pending: &mut HashMap<(String, i32), Instant>,
        with: Option<(&(String, i32), i64)>,
    ) -> anyhow::Result<()> {
        let mut assigned: HashSet<(String, i32)> = self
            .consumer
            .context()
            .assigned
            .lock()
            .expect("assignment lock")
            .clone();
        // A message can come before the assignment callback is seen: its
        // partition is restored too, and kept for a while.
        assigned.extend(with.map(|(k, _)| k.clone()));
        sources.retain(|k, s| {
            assigned.contains(k) || s.last_message.elapsed() < Duration::from_secs(5)
        });
        let assignment = self
            .consumer
            .context()
            .assignments
            .load(std::sync::atomic::Ordering::Relaxed);
        for (k, s) in sources.iter_mut() {
            if s.assignment != assignment && assigned.contains(k) {
                s.assignment = assignment;
                // Unverified until a message comes; if none does for a
                // while, `SeekBack` seeks back (as after a restore).
                s.back = s.back.reassigned();
            }
        }
        pending.retain(|k, _| assigned.contains(k));
        for (t, p) in assigned {
            let key = (t.clone(), p);
            if sources.contains_key(&key) {
                continue;
            }
            // A partition is restored at its first message, whose offset
            // is the group's committed one: the changelog is read up to
            // that checkpoint, so no seek is needed (some brokers, tansu
            // 0.6, stall after one). One that brings no message for a few
            // seconds is restored anyway (it reports its progress).
            let first = with.filter(|(k, _)| **k == key).map(|(_, o)| o);
            let since = *pending.entry(key.clone()).or_insert_with(Instant::now);
            if first.is_none() && since.elapsed() < Duration::from_secs(3) {
                continue;
            }
            pending.remove(&key);
            let (cfg, tt, parts, fresh) = (
                self.cfg.clone(),
                t.clone(),
                self.changelog_parts,
                self.fresh,
            );
            let c = self.consumer.clone();
            let t0 = Instant::now();
            let (engine, next, chunks) = tokio::task::spawn_blocking(move || {
                // The group's committed offset; else the first message's
                // (some brokers answer the offset fetch late).
                let found = committed(&c, &tt, p);
                let target = found.map(|(o, _)| o).or(first);
                let hint = found.and_then(|(_, h)| h);
                tracing::debug!(topic = %tt, partition = p, ?target, ?hint, "restoring the partition's state");
                restore_source(&cfg, &tt, p, parts, fresh, target, hint)
            })
            .await
            .context("restore task failed")??;
            self.m
                .checkpoint
                .restore_seconds
                .observe(t0.elapsed().as_secs_f64());
            let now = Instant::now();
            sources.insert(
                (t, p),
                Src {
                    engine,
                    next,
                    saved: next,
                    chunks,
                    last_message: now,
                    consumed: 0,
                    changed: true,
                    read_since: None,
                    last_progress: None,
                    last_sent: None,
                    last_export: now,
                    back: SeekBack::default(),
                    generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    assignment,
                },
            );
        }
        // Ready (`/readyz`) once every assigned partition is restored.
        let (n, restored) = {
            let assigned = self
                .consumer
                .context()
                .assigned
                .lock()
                .expect("assignment lock");
            let restored = assigned.iter().filter(|k| sources.contains_key(*k)).count();
            (assigned.len(), restored)
        };
        self.m.kafka.restored.set(restored as i64);
        self.m.set_ready(n > 0 && restored == n);
        Ok(())
    }

    /// Restores the merger when this instance is assigned the partials
    /// partition, drops it when that is revoked.
    pub(super) async fn sync_merger(
        &self,
        merger: &mut Option<Merger>,
        first: Option<i64>,
    ) -> anyhow::Result<()> {
        let got_message = first.is_some();
        // A message can come before the assignment callback is seen.
        let recent = merger
            .as_ref()
            .is_some_and(|m| m.last_message.elapsed() < Duration::from_secs(5));
        let assigned = !self
            .merge_consumer
            .context()
            .assigned
            .lock()
            .expect("assignment lock")
            .is_empty();
        // `/metrics` shows the KPIs only while the partition is assigned:
        // a revoked merger kept a few seconds (`recent`) shows nothing,
        // so the next owner never exports a series at the same time.
        self.m.kpis.show(assigned);
        let held = got_message || recent || assigned;
        if !held {
            if merger.take().is_some() {
                // Its KPI series are exported by the instance that has it now.
                self.m.kpis.clear();
                tracing::info!("the merger moved to another instance");
            }
            return Ok(());
        }
        if merger.is_some() {
            return Ok(());
        }
        let (cfg, expected, fresh) = (self.cfg.clone(), self.expected.clone(), self.fresh);
        let c = self.merge_consumer.clone();
        let (engine, next) = tokio::task::spawn_blocking(move || {
            let found = committed(&c, &cfg.kafka.partials(), 0);
            let target = first.or(found.map(|(o, _)| o));
            restore_merger(&cfg, expected, fresh, target, found.and_then(|(_, h)| h))
        })
        .await
        .context("restore task failed")??;
        let next = next.max(self.fresh_partials_from);
        tracing::info!(partials_next = next, "this instance runs the merger");
        *merger = Some(Merger::new(engine, next));
        Ok(())
    }

    /// Exports the partials of every source that changed (or whose
    /// progress did, or once a second as a heartbeat); with `local` (the
    /// merger of this instance, live) their items go into it at once
    /// too. Under load — this turn came after a full batch with more
    /// input already fetched (`full`), or the partition is more than
    /// `input.batch_size` messages behind its end offset — a partition
    /// exports only at the update tick (`at_tick`): nearly every cell of an
    /// export changes again by the next batch, so exporting after each
    /// one re-sent the same aggregates over and over, for records that
    /// now come at most a tick later (docs/performance.md). Returns how
    /// many partitions exported news (input applied or progress moved
    /// since their last export; not a heartbeat).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn export(
        &self,
        sources: &mut HashMap<(String, i32), Src>,
        mut local: Option<&mut Merger>,
        deliveries: &mut Vec<DeliveryFuture>,
        confirms: &mut Vec<Confirm>,
        confirmed: &Confirmed,
        ends: &EndOffsets,
        (to_end, at_tick, full): (bool, bool, bool),
    ) -> anyhow::Result<usize> {
        let topic = &self.cfg.kafka.partials();
        let idle = self.cfg.kafka.idle_partition_timeout.0;
        let backlog = self.cfg.input.batch_size as i64;
        let tick = self.cfg.output.update_interval.0;
        let mut news = 0;
        for ((t, p), src) in sources.iter_mut() {
            if src.consumed > 0 {
                self.m
                    .kafka
                    .consumed
                    .with_label_values(&[t.as_str()])
                    .inc_by(std::mem::take(&mut src.consumed));
            }
            let end = ends.get(&(t.clone(), *p)).copied();
            // The end offsets are refreshed now and then: a partition is
            // at least this far behind.
            let far = end.is_some_and(|(_, high)| high - src.next > backlog);
            // End offsets unknown (not fetched yet, or not allowed):
            // idleness falls back to time alone, and no end is reached.
            let behind = end.is_some_and(|(low, high)| src.next < high || !src.verified(low));
            let quiet = src.last_message.elapsed();
            // Quiet too: some brokers (tansu 0.6) report end offsets
            // short of what they hold.
            let at_end = to_end && quiet >= self.cfg.kafka.end_quiet.0 && end.is_some() && !behind;
            if at_end && src.engine.waiting_counts() != [0, 0] {
                // End of input (`--to-end`): what still waits counts now,
                // as in file mode.
                src.engine.end_of_input();
                src.changed = true;
            }
            let progress = Progress {
                clock: src.engine.state.clock,
                max_time: src.engine.state.max_time,
                // Idle: nothing to read. A partition with messages left
                // (restoring, seeking, slow) holds the merger's clock back.
                idle: quiet >= idle && !behind,
                at_end,
            };
            let key = (t.clone(), *p);
            let sent = confirmed
                .lock()
                .expect("confirmed lock")
                .get(&key)
                .filter(|(g, _)| *g == src.generation)
                .map(|(_, p)| *p);
            // Its last export still unconfirmed a tick later: the sink is
            // slow or failing, and exporting after every batch again lets
            // the delivery channel's backpressure stop consumption within
            // a few batches (skipped, the partition read on for ticks).
            let stuck = sent != src.last_progress && src.last_export.elapsed() >= tick;
            if !at_tick && (full || far) && !stuck {
                continue;
            }
            if !src.changed
                && src.last_progress == Some(progress)
                && src.last_sent == sent
                && src.last_export.elapsed() < Duration::from_secs(1)
            {
                continue;
            }
            let name = source_name(t, *p);
            let (e, at, chunk) = (&mut src.engine, src.next, changelog::CHUNK);
            match local.as_deref_mut() {
                // The merger here takes the partials as they are.
                Some(mg) => {
                    for (part, bytes) in e.export_encoded(&name, at, sent, chunk) {
                        let key = name.as_bytes();
                        deliveries
                            .push(send(self.producer, topic, Some(0), key, &bytes, None).await?);
                        mg.absorb_own(part, bytes);
                    }
                }
                // Elsewhere: only their bytes, encoded from the state.
                None => {
                    for bytes in e.export_bytes(&name, at, sent, chunk) {
                        let key = name.as_bytes();
                        deliveries
                            .push(send(self.producer, topic, Some(0), key, &bytes, None).await?);
                    }
                }
            }
            // News: input applied, or its clock or idleness moved (windows
            // roll, held events count); not a heartbeat of the same progress.
            news += usize::from(src.changed || src.last_progress != Some(progress));
            confirms.push((key, src.generation, progress));
            let read = src.read_since.take();
            if let Some(mg) = local.as_deref_mut() {
                mg.took(read);
            }
            src.changed = false;
            src.last_progress = Some(progress);
            src.last_sent = sent;
            src.last_export = Instant::now();
        }
        Ok(news)
    }

    /// The publish step ([`crate::sinks::take`]), then the merger's new
    /// records and leaderboards sent to their topics (and the KPI
    /// history); live updates only for the series whose value changed.
    pub(super) async fn publish(
        &self,
        engine: &mut Engine,
        unchanged: &mut crate::output::Unchanged,
        deliveries: &mut Vec<DeliveryFuture>,
        report: &mut RunReport,
        alerts: &Dispatcher,
    ) -> anyhow::Result<()> {
        let (mut recs, boards) = crate::sinks::take(engine, self.m, &mut report.records, alerts);
        let before = recs.len();
        recs.retain(|r| unchanged.keep(r));
        report.records -= (before - recs.len()) as u64;
        if let Some(pg) = self.pg {
            pg.send(&recs, &boards).await?;
        }
        let k = &self.cfg.kafka;
        if !k.kpi_topic.is_empty() {
            // Each record and its key into reused buffers.
            let (mut json, mut key, mut payload) =
                (JsonRecords::default(), String::new(), Vec::new());
            for r in &recs {
                key.clear();
                write_record_key(r, &mut key);
                payload.clear();
                encode_into(&mut json, k.kpi_format, r, &mut payload);
                let topic = &k.kpi_topic;
                deliveries
                    .push(send(self.producer, topic, None, key.as_bytes(), &payload, None).await?);
            }
        }
        if !k.leaderboard_topic.is_empty() {
            for b in &boards {
                let (key, payload) = (b.key(), encode_leaderboard(b, k.kpi_format));
                let topic = &k.leaderboard_topic;
                deliveries
                    .push(send(self.producer, topic, None, key.as_bytes(), &payload, None).await?);
            }
        }
        Ok(())
    }

    pub(super) fn sync_metrics(
        &self,
        sources: &HashMap<(String, i32), Src>,
        merger: Option<&Merger>,
    ) {
        for ((t, p), s) in sources {
            self.m.sync_counters(&source_name(t, *p), &s.engine);
        }
        let mut engines: Vec<&Engine> = sources.values().map(|s| &s.engine).collect();
        if let Some(mg) = merger {
            self.m.sync_counters(MERGE_KEY, &mg.engine);
            engines.push(&mg.engine);
        }
        self.m.sync_gauges(&engines);
    }

    /// WARN when this instance has held no input partition for
    /// `kafka.unassigned_warn_after`, again at that interval.
    pub(super) fn warn_unassigned(&self, warned: &mut Option<Instant>) {
        let k = &self.cfg.kafka;
        match self.consumer.context().unassigned_for() {
            Some(d)
                if d >= k.unassigned_warn_after.0
                    && warned.is_none_or(|w| w.elapsed() >= k.unassigned_warn_after.0) =>
            {
                tracing::warn!(
                    seconds = d.as_secs(),
                    group = %k.group_id,
                    "in the consumer group without any input partition: more instances than partitions, or a rebalance that does not end (docs/operations.md, Failover)"
                );
                *warned = Some(Instant::now());
            }
            Some(_) => {}
            None => *warned = None,
        }
    }

    /// Waits until everything produced so far is acknowledged, writes the
    /// changed states to the changelog, waits for that, then commits the
    /// offsets those states have reached. Returns how long that took
    /// (zero when no state changed).
    pub(super) async fn checkpoint(
        &self,
        sources: &mut HashMap<(String, i32), Src>,
        merger: Option<&mut Merger>,
        ack_tx: &mpsc::Sender<Ack>,
    ) -> anyhow::Result<Duration> {
        use crate::checkpoint::{CheckpointRef, InputPosition, MergeCheckpoint, SinkLengths};
        let dirty: Vec<(String, i32)> = sources
            .iter()
            .filter(|(_, s)| s.next != s.saved)
            .map(|(k, _)| k.clone())
            .collect();
        let mut merger = merger.filter(|mg| mg.changed);
        if dirty.is_empty() && merger.is_none() {
            return Ok(Duration::ZERO);
        }
        let t0 = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ack_tx
            .send(Ack {
                deliveries: Vec::new(),
                barrier: Some(tx),
                confirms: Vec::new(),
            })
            .await
            .map_err(|_| anyhow::anyhow!("the delivery task stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the delivery task stopped"))?;
        // The records these states have published are in the KPI history
        // before the offsets past them are committed.
        if let Some(pg) = self.pg {
            pg.flush().await?;
        }
        let k = &self.cfg.kafka;
        let mut futs = Vec::new();
        let mut bytes_total = 0usize;
        let mut offsets = Vec::new();
        for (t, p) in &dirty {
            let s = &sources[&(t.clone(), *p)];
            let pos = InputPosition::Kafka {
                topic: t.clone(),
                partition: *p,
                next: s.next,
            };
            let bytes = CheckpointRef::new(
                &s.engine.settings,
                &pos,
                SinkLengths::default(),
                &s.engine.state,
            )
            .encode()?;
            bytes_total += bytes.len();
            let key = source_key(t, *p);
            let cp = p % self.changelog_parts;
            let chunks = changelog::chunks(&bytes, s.next);
            for (i, chunk) in chunks.iter().enumerate() {
                let ck = changelog::chunk_key(&key, i as u32);
                futs.push(
                    send(
                        self.producer,
                        &k.changelog(),
                        Some(cp),
                        ck.as_bytes(),
                        chunk,
                        None,
                    )
                    .await?,
                );
            }
            let count = chunks.len() as u32;
            for i in count..s.chunks {
                let ck = changelog::chunk_key(&key, i);
                futs.push(send_tombstone(self.producer, &k.changelog(), cp, ck.as_bytes()).await?);
            }
            offsets.push(((t.clone(), *p), s.next, count));
        }
        let mut merge_offset = None;
        if let Some(mg) = merger.as_deref_mut() {
            let (settings, state, ms) = mg.engine.merge_snapshot().expect("merger mode");
            let bytes = MergeCheckpoint::encode(settings, mg.next, state, ms);
            bytes_total += bytes.len();
            for (i, chunk) in changelog::chunks(&bytes, mg.next).iter().enumerate() {
                let ck = changelog::chunk_key(MERGE_KEY, i as u32);
                futs.push(
                    send(
                        self.producer,
                        &k.changelog(),
                        Some(0),
                        ck.as_bytes(),
                        chunk,
                        None,
                    )
                    .await?,
                );
            }
            merge_offset = Some(((k.partials(), 0), mg.next));
        }
        let landed = deliver_all(self.producer, futs, self.m).await?;
        // Durable: the offsets may be committed, each saying where in the
        // changelog its checkpoint starts at the latest (a restore reads
        // from there).
        let mut starts: HashMap<i32, i64> = HashMap::new();
        for (cp, o) in landed {
            starts
                .entry(cp)
                .and_modify(|s| *s = (*s).min(o))
                .or_insert(o);
        }
        let hint = |cp: i32| starts.get(&cp).map(|o| changelog::hint_metadata(cp, *o));
        let commits: Vec<_> = offsets
            .iter()
            .map(|((t, p), next, _)| ((t.clone(), *p), *next, hint(p % self.changelog_parts)))
            .collect();
        commit_with_metadata(self.consumer, &commits, self.m).await;
        if let Some((tp, next)) = merge_offset {
            commit_with_metadata(self.merge_consumer, &[(tp, next, hint(0))], self.m).await;
        }
        for ((t, p), next, count) in offsets {
            if let Some(s) = sources.get_mut(&(t, p)) {
                s.saved = next;
                s.chunks = count;
            }
        }
        if let Some(mg) = merger {
            mg.saved = mg.next;
            mg.changed = false;
        }
        let took = t0.elapsed();
        self.m.checkpoint.seconds.observe(took.as_secs_f64());
        self.m.checkpoint.bytes.set(bytes_total as i64);
        self.m.checkpoint.written.inc();
        tracing::debug!(
            partitions = dirty.len(),
            bytes = bytes_total,
            took_ms = took.as_millis() as u64,
            "checkpoint written to the changelog"
        );
        Ok(took)
    }
}
