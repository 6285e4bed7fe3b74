//! The Kafka loop ([`run`]): one task owns every engine of this
//! instance; each turn of the loop is a named step of [`super::turn`].

use super::client::{
    client_config, ensure_internal_topics, group_consumer, input_partitions, partition_counts,
    producer, watch_ends, Ends,
};
use super::produce::{deliverer, send, Ack, Confirm, Confirmed};
use super::source::{position, process, ready, source_name, tick_period, Merger, Pos, Src};
use super::turn::Shared;
use super::KafkaOptions;
use crate::config::Config;
use crate::decode::Reject;
use crate::engine::Outcome;
use crate::run::RunReport;
use crate::sinks::alert::Dispatcher;
use crate::sinks::postgres::PgSink;
use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::DeliveryFuture;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Runs the Kafka pipeline until SIGTERM / Ctrl-C, or with `to_end` until
/// every partition is consumed to its end and (on the instance that
/// holds the merger) every window is closed.
///
/// Each assigned input partition has its own source engine, restored
/// from the changelog topic when the partition is assigned. Sources
/// export partials to the partials topic (one partition); the instance
/// assigned that partition (consumer group `<group_id>.merge`) runs the
/// merger, which emits the KPI records, leaderboards and alerts. Every
/// `kafka.checkpoint_interval`: wait until everything produced is
/// acknowledged, write each changed state to the changelog, wait for
/// that, then commit the input offsets those states have reached.
pub async fn run(cfg: &Config, opts: KafkaOptions) -> anyhow::Result<RunReport> {
    let k = &cfg.kafka;
    let m = opts.metrics.clone();
    tracing::info!(kafka = ?k, "starting the Kafka pipeline");
    let base = client_config(cfg);
    // Registered now: a SIGTERM while waiting for topics or restoring counts.
    let shutdown = crate::run::shutdown_signal();
    tokio::pin!(shutdown);
    let Some(counts) = input_partitions(&base, &k.input_topics, &mut shutdown).await? else {
        tracing::info!("stopped before the input topics existed");
        return Ok(RunReport::default());
    };
    let max_parts = counts.iter().map(|(_, n)| *n).max().unwrap_or(1);
    ensure_internal_topics(cfg, max_parts).await?;
    let changelog_parts = {
        let (b, t) = (base.clone(), vec![k.changelog()]);
        tokio::task::spawn_blocking(move || partition_counts(&b, &t))
            .await??
            .first()
            .map_or(1, |(_, n)| (*n).max(1))
    };
    let expected: std::collections::BTreeSet<String> = counts
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| source_name(t, p)))
        .collect();
    let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
    let consumer = group_consumer(cfg, &k.group_id, &topics, m.clone(), true)?;
    let merge_group = format!("{}.merge", k.group_id);
    let merge_consumer = group_consumer(
        cfg,
        &merge_group,
        &[k.partials().as_str()],
        m.clone(),
        false,
    )?;
    let producer = producer(cfg)?;
    let alerts = Dispatcher::start(
        &cfg.alerts,
        &k.alert_topic,
        Some(producer.clone()),
        m.clone(),
    )?;
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(8);
    let confirmed: Confirmed = Default::default();
    let deliverer = tokio::spawn(deliverer(
        ack_rx,
        producer.clone(),
        m.clone(),
        confirmed.clone(),
    ));
    let ends: Ends = Default::default();
    // End offsets: for `--to-end`, and to tell a partition stuck inside
    // a batch (see `SeekBack`) from one with nothing to read.
    let every = Duration::from_millis(if opts.to_end { 250 } else { 2_000 });
    let ends_task = watch_ends(consumer.clone(), ends.clone(), every);
    // `--fresh`: the partials already in the topic belong to the state
    // being discarded (and may say every source is at its end): a merger
    // of this run reads only those written from now on.
    let fresh_partials_from = if opts.fresh {
        let (c, t) = (merge_consumer.clone(), k.partials());
        tokio::task::spawn_blocking(move || {
            c.fetch_watermarks(&t, 0, Duration::from_secs(10))
                .map(|(_, high)| high)
        })
        .await?
        .context("cannot read the end offset of the partials topic")?
    } else {
        0
    };
    let pg = match cfg.postgres.enabled() {
        true => Some(PgSink::start(cfg, m.clone()).await?),
        false => None,
    };
    let ctx = Shared {
        cfg,
        pg: pg.as_ref(),
        m: &m,
        producer: &producer,
        consumer: &consumer,
        merge_consumer: &merge_consumer,
        expected: &expected,
        changelog_parts,
        fresh: opts.fresh,
        fresh_partials_from,
    };
    let mut lp = Loop::new(
        &opts,
        k.checkpoint_interval.0,
        alerts,
        ack_tx,
        confirmed,
        ends,
    );
    let mut tick = tokio::time::interval(tick_period(cfg.output.update_interval.0));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = cfg.input.batch_size;
    loop {
        let mut ticked = false;
        let due = lp.due(k.export_interval.0, cfg.output.update_interval.0);
        tokio::select! {
            msg = consumer.recv() => lp.on_fetched(&ctx, msg, batch).await?,
            msg = merge_consumer.recv() => match msg {
                Ok(msg) => lp.on_partial(&ctx, &msg).await?,
                Err(e) => tracing::warn!(error = %e, "Kafka consumer error (partials)"),
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {}
            _ = tick.tick() => { ticked = true; }
            _ = &mut shutdown => {
                tracing::info!("stop signal received: draining");
                break;
            }
        }
        let now = Instant::now();
        let reached = due.is_some_and(|d| d <= now);
        let turn = ticked || lp.since_flush >= batch || reached;
        // An update turn comes at the tick, or when news is due (live,
        // the merger here): both export every partition and publish.
        let update_turn = ticked || (reached && lp.live_here());
        let last_update = lp.last_update;
        if turn && lp.turn(&ctx, update_turn).await? {
            break;
        }
        if let Some(at) = lp.last_update.filter(|_| lp.last_update != last_update) {
            // The next tick a period after this update, not sooner.
            tick.reset_at((at + tick_period(cfg.output.update_interval.0)).into());
        }
    }
    lp.checkpoint(&ctx).await?;
    let Loop {
        ack_tx,
        alerts,
        report,
        ends,
        mut progress,
        ..
    } = lp;
    progress.finish();
    drop(ack_tx);
    deliverer.await.context("delivery task failed")??;
    alerts.shutdown().await;
    if let Some(pg) = pg {
        pg.close().await?;
    }
    drop(ends);
    let _ = ends_task.await;
    Ok(report)
}

/// The state of the Kafka loop between its steps.
struct Loop {
    to_end: bool,
    live_updates: bool,
    alerts: Dispatcher,
    ack_tx: mpsc::Sender<Ack>,
    confirmed: Confirmed,
    ends: Ends,
    sources: HashMap<(String, i32), Src>,
    /// Assigned partitions waiting for their first message, since when.
    pending: HashMap<(String, i32), Instant>,
    merger: Option<Merger>,
    report: RunReport,
    /// Produced since the last hand-over to the delivery task.
    deliveries: Vec<DeliveryFuture>,
    confirms: Vec<Confirm>,
    /// Input messages since the last turn, and when that turn ended.
    since_flush: usize,
    /// [`Loop::on_input`]'s reused key.
    key: (String, i32),
    t_batch: Instant,
    /// The last input read found nothing more fetched.
    caught_up: bool,
    /// Partials absorbed since the last turn.
    absorbed: bool,
    /// News (partials exported here or absorbed) since the last live
    /// update, and when the last update with news that published records
    /// began (none yet: the first news goes out at once).
    updates_pending: bool,
    last_update: Option<Instant>,
    /// When the current turn began (an update's pace counts from it).
    turn_began: Instant,
    last_message: Instant,
    /// When the next checkpoint is due ([`crate::checkpoint::next_after`]).
    next_checkpoint: Instant,
    at_end_since: Option<Instant>,
    /// When the last "no partition" warning was logged.
    warned: Option<Instant>,
    progress: crate::run::Progress,
}

impl Loop {
    fn new(
        opts: &KafkaOptions,
        checkpoint_interval: Duration,
        alerts: Dispatcher,
        ack_tx: mpsc::Sender<Ack>,
        confirmed: Confirmed,
        ends: Ends,
    ) -> Loop {
        Loop {
            to_end: opts.to_end,
            live_updates: opts.live_updates,
            alerts,
            ack_tx,
            confirmed,
            ends,
            sources: HashMap::new(),
            pending: HashMap::new(),
            merger: None,
            report: RunReport::default(),
            deliveries: Vec::new(),
            confirms: Vec::new(),
            since_flush: 0,
            key: Default::default(),
            t_batch: Instant::now(),
            caught_up: false,
            absorbed: false,
            updates_pending: false,
            last_update: None,
            turn_began: Instant::now(),
            last_message: Instant::now(),
            next_checkpoint: Instant::now()
                + crate::checkpoint::next_after(checkpoint_interval, Duration::ZERO),
            at_end_since: None,
            warned: None,
            progress: crate::run::Progress::new(opts.progress),
        }
    }

    /// When the next turn is due, if before the next tick: `gap`
    /// (`kafka.export_interval`) after the last turn once input read up
    /// to what is fetched (or partials absorbed) waits for it; live
    /// updates of absorbed partials `update` (`output.update_interval`)
    /// after the last ones. Under load, turns come every
    /// `input.batch_size` messages instead (see `Shared::export` for
    /// which partitions export then).
    fn due(&self, gap: Duration, update: Duration) -> Option<Instant> {
        // Live, with the merger here, exports feed only it: a turn between
        // its updates would export what nothing reads sooner. News (input
        // read up to what is fetched, partials absorbed) turns `update`
        // after the last update, at once after a quiet spell; under load
        // (never caught up) the tick and `input.batch_size` messages do.
        if self.live_here() {
            let news = (self.since_flush > 0 && self.caught_up) || self.updates_pending;
            return news.then(|| self.next_update(update));
        }
        let export =
            ((self.since_flush > 0 && self.caught_up) || self.absorbed).then(|| self.t_batch + gap);
        let live = (self.live_updates && self.updates_pending && self.merger.is_some())
            .then(|| self.next_update(update));
        export.into_iter().chain(live).min()
    }

    /// `update` after the last update with news; now if none yet.
    fn next_update(&self, update: Duration) -> Instant {
        self.last_update.map_or_else(Instant::now, |l| l + update)
    }

    /// Live, with the merger on this instance.
    fn live_here(&self) -> bool {
        self.live_updates && !self.to_end && self.merger.is_some()
    }

    /// An input message, then what is already fetched, up to a batch; a
    /// turn follows soon once the input is caught up (see `Loop::due`).
    async fn on_fetched(
        &mut self,
        ctx: &Shared<'_>,
        first: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
        batch: usize,
    ) -> anyhow::Result<()> {
        match first {
            Ok(msg) => self.on_input(ctx, msg).await?,
            Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
        }
        self.caught_up = false;
        while self.since_flush < batch {
            match ready(ctx.consumer.recv()) {
                Some(Ok(msg)) => self.on_input(ctx, msg).await?,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    break;
                }
                None => {
                    self.caught_up = true;
                    break;
                }
            }
        }
        Ok(())
    }

    /// One input message: into its partition's source engine, or skipped
    /// (already in the state), or a seek back (a gap); a rejection goes
    /// to the dead-letter topic.
    async fn on_input(&mut self, ctx: &Shared<'_>, msg: BorrowedMessage<'_>) -> anyhow::Result<()> {
        // The partition's key in a reused string: no allocation per message.
        let mut key = std::mem::take(&mut self.key);
        key.0.clear();
        key.0.push_str(msg.topic());
        key.1 = msg.partition();
        let r = self.on_input_keyed(ctx, msg, &key).await;
        self.key = key;
        r
    }

    async fn on_input_keyed(
        &mut self,
        ctx: &Shared<'_>,
        msg: BorrowedMessage<'_>,
        key: &(String, i32),
    ) -> anyhow::Result<()> {
        if !self.sources.contains_key(key) {
            ctx.sync_sources(
                &mut self.sources,
                &mut self.pending,
                Some((key, msg.offset())),
            )
            .await?;
        }
        let now = Instant::now();
        self.last_message = now;
        let Some(src) = self.sources.get_mut(key) else {
            return Ok(());
        };
        src.back.seen = Some(now);
        let offset = msg.offset();
        match position(src.next, offset) {
            Pos::Skip => return Ok(()),
            Pos::Gap => {
                src.back.seek(ctx.consumer, &key.0, key.1, src.next, 16);
                return Ok(());
            }
            Pos::Apply => {}
        }
        if let Some(d) = super::source::consume_delay(msg.timestamp()) {
            ctx.m.kafka.consume_delay.observe(d);
        }
        let r = process(&mut src.engine, &msg, ctx.cfg.kafka.default_format);
        drop(msg);
        src.next = offset + 1;
        src.back.tries = 0;
        src.last_message = now;
        src.changed = true;
        src.read_since.get_or_insert(now);
        src.consumed += 1;
        self.since_flush += 1;
        match r {
            Ok(Outcome::Counted) => self.report.accepted += 1,
            Ok(Outcome::Duplicate) => self.report.duplicates += 1,
            Err(bad) => {
                self.report.rejected += 1;
                self.dead_letter(ctx, *bad).await?;
            }
        }
        Ok(())
    }

    /// A rejected message to the dead-letter topic (clipped to
    /// `output.dead_letter_max_bytes`), or a WARN without one.
    async fn dead_letter(
        &mut self,
        ctx: &Shared<'_>,
        (rej, orig, headers): (Reject, OwnedMessage, OwnedHeaders),
    ) -> anyhow::Result<()> {
        let k = &ctx.cfg.kafka;
        if k.dlq_topic.is_empty() {
            tracing::warn!(reason = rej.reason.as_str(), detail = %rej.detail, topic = orig.topic(), partition = orig.partition(), offset = orig.offset(), "rejected message (no kafka.dlq_topic)");
            return Ok(());
        }
        let (value, redacted) = crate::privacy::redact(
            orig.payload().unwrap_or_default(),
            &ctx.cfg.output.dead_letter_redact,
        );
        let (value, cut) = crate::output::clip_raw(&value, ctx.cfg.output.dead_letter_max_bytes);
        let headers = if redacted > 0 {
            headers.insert(Header {
                key: "salespulse.redacted",
                value: Some(&redacted.to_string()),
            })
        } else {
            headers
        };
        let headers = match &cut {
            Some((len, hash)) => headers
                .insert(Header {
                    key: "salespulse.original_length",
                    value: Some(&len.to_string()),
                })
                .insert(Header {
                    key: "salespulse.original_xxh3",
                    value: Some(hash.as_str()),
                }),
            None => headers,
        };
        let key = orig.key().unwrap_or_default();
        let d = send(ctx.producer, &k.dlq_topic, None, key, value, Some(headers)).await?;
        self.deliveries.push(d);
        Ok(())
    }

    /// One message of the partials topic, into the merger.
    async fn on_partial(
        &mut self,
        ctx: &Shared<'_>,
        msg: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        if self.merger.is_none() {
            ctx.sync_merger(&mut self.merger, Some(msg.offset()))
                .await?;
        }
        let Some(mg) = self.merger.as_mut() else {
            return Ok(());
        };
        mg.back.seen = Some(Instant::now());
        let offset = msg.offset();
        match position(mg.next, offset) {
            Pos::Skip => {}
            Pos::Gap => mg
                .back
                .seek(ctx.merge_consumer, msg.topic(), msg.partition(), mg.next, 1),
            Pos::Apply => {
                let items = mg.absorb_message(offset, msg.payload().unwrap_or_default());
                mg.next = offset + 1;
                mg.back.tries = 0;
                mg.changed = true;
                self.absorbed = true;
                // This instance's own partial read back moves progress
                // only: the next tick publishes what it changes.
                self.updates_pending |= items;
                mg.last_message = Instant::now();
                // The merger at work, by its topic (operations.md, Metrics).
                ctx.m.kafka.consumed.with_label_values(&[msg.topic()]).inc();
            }
        }
        Ok(())
    }

    /// A turn, every `input.batch_size` messages, at the update tick, or
    /// when news is due (see `Loop::due`): follow
    /// the assignment, export partials, advance and publish the merger,
    /// hand deliveries over, checkpoint when due. True when the run is
    /// over (`--to-end`).
    async fn turn(&mut self, ctx: &Shared<'_>, update_turn: bool) -> anyhow::Result<bool> {
        self.turn_began = Instant::now();
        if self.since_flush > 0 {
            ctx.m
                .event_seconds
                .observe(self.t_batch.elapsed().as_secs_f64() / self.since_flush as f64);
        }
        ctx.sync_sources(&mut self.sources, &mut self.pending, None)
            .await?;
        ctx.sync_merger(&mut self.merger, None).await?;
        ctx.warn_unassigned(&mut self.warned);
        let ends_now = self.ends.lock().expect("ends lock").clone();
        for ((t, p), src) in self.sources.iter_mut() {
            let Some(&(low, high)) = ends_now.get(&(t.clone(), *p)) else {
                continue;
            };
            if (src.next < high || !src.verified(low)) && src.back.stuck(src.last_message) {
                src.back.seek(ctx.consumer, t, *p, src.next, 16);
                let heard = src
                    .back
                    .seen
                    .map_or(src.last_message, |s| s.max(src.last_message));
                src.back
                    .warn_if_stalled(ctx.consumer, t, *p, src.next, heard);
            }
        }
        // With the merger here, it takes its instance's exports in as
        // they are sent: live KPIs need not wait for the partials topic,
        // and the topic's copies, read back, are not decoded again (see
        // `Engine::absorb_items`).
        let local = self.merger.as_mut();
        let is_local = local.is_some();
        let news = ctx
            .export(
                &mut self.sources,
                local,
                &mut self.deliveries,
                &mut self.confirms,
                &self.confirmed,
                &ends_now,
                (self.to_end, update_turn, !self.caught_up),
            )
            .await?;
        if is_local && news > 0 {
            self.updates_pending = true;
        }
        let finished = self.advance_merger(ctx, update_turn).await?;
        self.show_progress(&ends_now);
        ctx.sync_metrics(&self.sources, self.merger.as_ref());
        self.hand_over().await?;
        self.since_flush = 0;
        self.absorbed = false;
        self.t_batch = Instant::now();
        if finished {
            tracing::info!("every partition is consumed to its end and every window is closed");
            return Ok(true);
        }
        if Instant::now() >= self.next_checkpoint {
            self.checkpoint(ctx).await?;
        }
        Ok(self.to_end && self.sources_done_elsewhere(ctx))
    }

    /// A checkpoint now; the next one `kafka.checkpoint_interval` later,
    /// or later if this one took long (`checkpoint::next_after`).
    async fn checkpoint(&mut self, ctx: &Shared<'_>) -> anyhow::Result<()> {
        let took = ctx
            .checkpoint(&mut self.sources, self.merger.as_mut(), &self.ack_tx)
            .await?;
        let wait = crate::checkpoint::next_after(ctx.cfg.kafka.checkpoint_interval.0, took);
        self.next_checkpoint = Instant::now() + wait;
        Ok(())
    }

    /// A `--to-end` replay's progress: offsets consumed of those to read.
    fn show_progress(&mut self, ends: &super::client::EndOffsets) {
        let (mut pos, mut total) = (0u64, 0u64);
        for (key, src) in &self.sources {
            if let Some(&(low, high)) = ends.get(key) {
                total += (high - low).max(0) as u64;
                pos += (src.next.min(high) - low).max(0) as u64;
            }
        }
        let clock = self
            .merger
            .as_ref()
            .map_or(i64::MIN, |m| m.engine.state.clock);
        let r = &self.report;
        let events = r.accepted + r.duplicates + r.rejected;
        self.progress.show(events, clock, Some((pos, total)));
    }

    /// The merger's clock moves to the slowest source; at the end of a
    /// `--to-end` run it checkpoints, then closes every window. Its new
    /// records are published. True when it finished.
    async fn advance_merger(
        &mut self,
        ctx: &Shared<'_>,
        update_turn: bool,
    ) -> anyhow::Result<bool> {
        let Some(mg) = self.merger.as_mut() else {
            return Ok(false);
        };
        mg.engine.merge_advance();
        let at_end = self.to_end && mg.engine.merge_at_end();
        if mg.engine.watches_absence() {
            // An idle input does not move event time: `absent_for` rules
            // see it move on by the wall time every partition has been
            // quiet since the clock last moved.
            let clock = mg.engine.state.clock;
            if clock != mg.clock_moved.0 {
                mg.clock_moved = (clock, Instant::now());
            } else if !at_end && mg.engine.merge_all_idle() {
                mg.engine
                    .evaluate_quiet(mg.clock_moved.1.elapsed().as_millis() as i64);
            }
        }
        if at_end {
            // The merger's last checkpoint is its state before the last
            // windows close (as in file mode): a merger restored from it
            // (this instance stopped, another one holds the partials
            // now) finishes again with the same finals. Restored from a
            // finished state it would open those windows again with only
            // the partials read after it, and publish wrong finals.
            // As at every checkpoint, what the saved state has emitted
            // (windows the last partials closed) is handed out first.
            ctx.publish(
                &mut mg.engine,
                &mut mg.unchanged,
                &mut self.deliveries,
                &mut self.report,
                &self.alerts,
            )
            .await?;
            mg.changed = true;
            self.hand_over().await?;
            self.checkpoint(ctx).await?;
        }
        // Live updates: news goes out `output.update_interval` after the
        // last news did, at once after a quiet spell (`Loop::due`); a tick
        // publishes too (it may come a little early: a quarter of its
        // period is allowed, so that ticks, not the instants just after
        // them, publish).
        let every = ctx.cfg.output.update_interval.0;
        let since = self.last_update.map_or(Duration::MAX, |l| l.elapsed());
        let update_due = (update_turn && since.saturating_add(tick_period(every) / 4) >= every)
            || (self.updates_pending && since >= every);
        let update = self.live_updates && update_due && !at_end;
        let news = update && std::mem::take(&mut self.updates_pending);
        let mg = self.merger.as_mut().expect("merger");
        if at_end {
            mg.engine.finish();
            // Not saved again (see above).
            mg.changed = false;
        } else if update {
            mg.engine.emit_updates();
        }
        let records = self.report.records;
        ctx.publish(
            &mut mg.engine,
            &mut mg.unchanged,
            &mut self.deliveries,
            &mut self.report,
            &self.alerts,
        )
        .await?;
        if update {
            // An update with news that published records paces the next
            // one (`Loop::due`); a quiet tick, or news the merger cannot
            // show yet, does not.
            if news && self.report.records > records {
                self.last_update = Some(self.turn_began);
            }
            mg.published(ctx.m);
        }
        Ok(at_end)
    }

    /// What was produced since the last hand-over goes to the delivery
    /// task, with the progress it confirms.
    async fn hand_over(&mut self) -> anyhow::Result<()> {
        if self.deliveries.is_empty() {
            return Ok(());
        }
        self.ack_tx
            .send(Ack {
                deliveries: std::mem::take(&mut self.deliveries),
                barrier: None,
                confirms: std::mem::take(&mut self.confirms),
            })
            .await
            .map_err(|_| anyhow::anyhow!("the delivery task stopped"))
    }

    /// `--to-end` on an instance without the merger: every source at its
    /// end and quiet for `kafka.end_quiet`, then `end_quiet` more in case
    /// the merger comes to it.
    fn sources_done_elsewhere(&mut self, ctx: &Shared<'_>) -> bool {
        let quiet = ctx.cfg.kafka.end_quiet.0;
        let all_end = !self.sources.is_empty()
            && self
                .sources
                .values()
                .all(|s| s.last_sent.is_some_and(|p| p.at_end))
            && self.last_message.elapsed() >= quiet;
        if !(all_end && self.merger.is_none()) {
            self.at_end_since = None;
            return false;
        }
        let since = *self.at_end_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= quiet {
            tracing::info!(
                "this instance's partitions are consumed to their end; the merger is elsewhere"
            );
            return true;
        }
        false
    }
}
