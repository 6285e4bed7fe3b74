//! File and live mode: a source task ([`crate::sources`]) feeds batches
//! of raw messages through a bounded channel (backpressure), this loop
//! processes them and writes KPI records and dead letters
//! ([`crate::sinks`]), and — in live mode — timers emit provisional
//! updates and the terminal summary. Checkpoints are written between
//! batches.

use super::{shutdown_signal, Progress, RunReport};
use crate::checkpoint::{CheckpointRef, InputPosition, SinkLengths};
use crate::config::Config;
use crate::decode::{Format, RejectReason};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::output::DeadLetter;
use crate::sinks::alert::Dispatcher;
use crate::sinks::file::{cut_back, file_len, open_output, Sinks};
use crate::sinks::postgres::PgSink;
use crate::sources::{read_file, run_generator, start_of, Batch, Source};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn summary(m: &Metrics, e: &Engine, rate: f64) -> String {
    let get = |k: &str| m.current(k, "month").and_then(|r| r.value);
    let pct = |v: Option<f64>| v.map_or("  –  ".into(), |v| format!("{:5.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
    let days = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}d", v / 86400.0));
    let month = m
        .current("revenue", "month")
        .map(|r| r.window.label.clone())
        .unwrap_or_default();
    let pipeline = m.current("pipeline_value", "gauge").and_then(|r| r.value);
    format!(
        "[{month}] leads {} conv {} | win {} revenue {} avg deal {} cycle p50 {} | pipeline {} | churn {} | quota≥100% {} | {:.0} ev/s, {} rejected",
        num(get("leads_created")),
        pct(get("lead_conversion_rate")),
        pct(get("win_rate")),
        num(get("revenue")),
        num(get("average_deal_size")),
        days(get("sales_cycle_seconds_p50")),
        num(pipeline),
        pct(get("churn_rate")),
        pct(get("quota_reps_at_target_ratio")),
        rate,
        e.state.stats.rejected.iter().sum::<u64>(),
    )
}

/// How one run is wired.
pub struct RunOptions {
    pub source: Source,
    pub format: Format,
    /// `-` for standard output; `None` = no record output.
    pub output: Option<PathBuf>,
    pub dead_letter: PathBuf,
    /// Live mode: periodic provisional updates, summary, and run until stopped.
    pub live: bool,
    /// Show a file replay's progress on stderr (a terminal).
    pub progress: bool,
    pub metrics: Arc<Metrics>,
    /// Checkpoints to write, and the input position to resume from.
    pub checkpoint: Option<CheckpointOptions>,
}

/// Where checkpoints go and where the input resumes.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub path: PathBuf,
    pub interval: Duration,
    /// From the restored checkpoint ([`InputPosition::Start`] when none was).
    pub resume: InputPosition,
    /// Output file lengths to cut back to (from the restored checkpoint).
    pub sinks: SinkLengths,
}

/// A quiet live input does not move event time: `absent_for` rules see it
/// move on by the wall time since the clock last moved (`clock_moved`).
fn quiet_tick(engine: &mut Engine, clock_moved: &mut (i64, Instant)) {
    if !engine.watches_absence() {
        return;
    }
    if engine.state.clock != clock_moved.0 {
        *clock_moved = (engine.state.clock, Instant::now());
    } else {
        engine.evaluate_quiet(clock_moved.1.elapsed().as_millis() as i64);
    }
}

/// A live update: the open windows' provisional records published and
/// the files flushed; `last` (given when events came since the last
/// update) moves when it published records. Updates come at the tick
/// (`output.update_interval`), and at once for news after a quiet spell
/// (no update with news and records for an interval), not at the next
/// tick.
async fn live_update(
    engine: &mut Engine,
    sinks: &mut Sinks,
    m: &Metrics,
    report: &mut RunReport,
    alerts: &Dispatcher,
    last: Option<&mut Option<Instant>>,
) -> anyhow::Result<()> {
    engine.emit_updates();
    let before = report.records;
    sinks
        .publish(m, engine, &mut report.records, alerts)
        .await?;
    sinks.flush_files()?;
    if let Some(last) = last.filter(|_| report.records > before) {
        *last = Some(Instant::now());
    }
    Ok(())
}

/// The input file's length (for progress), if it is a file.
fn file_len_of(source: &Source) -> Option<u64> {
    match source {
        Source::File(p) if p.as_os_str() != "-" => std::fs::metadata(p).ok().map(|m| m.len()),
        _ => None,
    }
}

/// The tick of the periodic checkpoints (its first, immediate tick taken).
async fn checkpoint_tick(cp: Option<&CheckpointOptions>) -> tokio::time::Interval {
    let every = cp.map_or(Duration::from_secs(3600), |c| c.interval);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tick
}

/// Runs the pipeline until the input ends (file mode) or a stop signal (live mode).
pub async fn run(
    cfg: &Config,
    opts: RunOptions,
    mut engine: Engine,
) -> anyhow::Result<(RunReport, Engine)> {
    let (tx, mut rx) = mpsc::channel::<Batch>(4);
    let format = opts.format;
    let resume = opts
        .checkpoint
        .as_ref()
        .map_or(InputPosition::Start, |c| c.resume.clone());
    let resumed = resume != InputPosition::Start;
    let mut position = resume.clone();
    if let Some(c) = &opts.checkpoint {
        if let Some(o) = &opts.output {
            cut_back(o, c.sinks.output)?;
        }
        if opts.dead_letter.exists() {
            cut_back(&opts.dead_letter, c.sinks.dead_letter)?;
        }
    }
    let reader = match opts.source.clone() {
        Source::File(p) => {
            let bs = cfg.input.batch_size;
            start_of(&p, &resume)?;
            tokio::task::spawn_blocking(move || read_file(p, format, bs, tx, resume))
        }
        Source::Generator { gen, rate, limit } => {
            let skip = match resume {
                InputPosition::Start => 0,
                InputPosition::Generator { events } => events,
                other => anyhow::bail!(
                    "the checkpoint was taken reading {other:?}, and this run uses the generator (fix: give the same input, or start over with --fresh)"
                ),
            };
            tokio::spawn(async move {
                run_generator(gen, rate, limit, format, tx, skip).await;
                Ok(())
            })
        }
    };
    let mut sinks = Sinks {
        output_path: opts.output.clone(),
        output: opts
            .output
            .as_ref()
            .map(|p| open_output(p, resumed))
            .transpose()?,
        dlq_path: opts.dead_letter.clone(),
        dlq: None,
        json: Default::default(),
        pg: match cfg.postgres.enabled() {
            true => Some(PgSink::start(cfg, opts.metrics.clone()).await?),
            false => None,
        },
    };
    let m = opts.metrics.clone();
    let alerts = Dispatcher::start(&cfg.alerts, "", None, m.clone())?;
    m.set_ready(true);
    let every = cfg.output.update_interval.0.max(Duration::from_millis(10));
    let mut update = tokio::time::interval(every);
    let (mut last_update, mut news): (Option<Instant>, bool) = (None, false);
    let summary_every = cfg.output.summary_interval.0;
    let mut summary_tick = tokio::time::interval(summary_every.max(Duration::from_millis(100)));
    let mut report = RunReport::default();
    let (mut last_count, mut last_at) = (0u64, Instant::now());
    let cp = opts.checkpoint.clone();
    let mut cp_tick = checkpoint_tick(cp.as_ref()).await;
    let mut stopped = false;
    let mut clock_moved = (engine.state.clock, Instant::now());
    let input_len = file_len_of(&opts.source);
    let mut progress = Progress::new(opts.progress && !opts.live);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                position = batch.end.clone();
                apply_batch(cfg, &mut engine, &batch, format, &mut report, &mut sinks, &m)?;
                if opts.live && last_update.is_none_or(|t| t.elapsed() >= every) {
                    update.reset();
                    news = false;
                    live_update(&mut engine, &mut sinks, &m, &mut report, &alerts, Some(&mut last_update)).await?;
                } else {
                    sinks.publish(&m, &mut engine, &mut report.records, &alerts).await?;
                    news = true;
                }
                let total = report.accepted + report.duplicates + report.rejected;
                progress.show(total, engine.state.clock, done_of(&position, input_len));
            }
            _ = update.tick(), if opts.live => {
                quiet_tick(&mut engine, &mut clock_moved);
                let pace = std::mem::take(&mut news).then_some(&mut last_update);
                live_update(&mut engine, &mut sinks, &m, &mut report, &alerts, pace).await?;
            }
            _ = summary_tick.tick(), if opts.live && !summary_every.is_zero() => {
                let total = report.accepted + report.duplicates + report.rejected;
                let rate = (total - last_count) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
                (last_count, last_at) = (total, Instant::now());
                eprintln!("{}", summary(&m, &engine, rate));
            }
            _ = cp_tick.tick(), if cp.is_some() => {
                let c = cp.as_ref().expect("checkpointing");
                let took = write_checkpoint(c, &engine, &position, &m, &mut sinks).await?;
                cp_tick.reset_after(crate::checkpoint::next_after(c.interval, took));
            }
            _ = &mut shutdown => {
                tracing::info!("stop signal received: draining");
                stopped = true;
                break;
            }
        }
    }
    drop(rx);
    progress.finish();
    if let Some(c) = cp.as_ref().filter(|_| stopped) {
        // Windows stay open: the next run resumes them from this checkpoint.
        reader.abort();
        sinks
            .publish(&m, &mut engine, &mut report.records, &alerts)
            .await?;
        write_checkpoint(c, &engine, &position, &m, &mut sinks).await?;
        sinks.close().await?;
        alerts.shutdown().await;
        return Ok((report, engine));
    }
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(anyhow::anyhow!("input task failed: {e}")),
    }
    if let Some(c) = &cp {
        // Before closing every window, so that more input can follow.
        sinks
            .publish(&m, &mut engine, &mut report.records, &alerts)
            .await?;
        write_checkpoint(c, &engine, &position, &m, &mut sinks).await?;
    }
    engine.finish();
    sinks
        .publish(&m, &mut engine, &mut report.records, &alerts)
        .await?;
    sinks.close().await?;
    alerts.shutdown().await;
    Ok((report, engine))
}

/// Decodes and applies one batch; rejections go to the dead-letter file.
fn apply_batch(
    cfg: &Config,
    engine: &mut Engine,
    batch: &Batch,
    format: Format,
    report: &mut RunReport,
    sinks: &mut Sinks,
    m: &Metrics,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for (bytes, msg) in batch.iter() {
        let r = if let Some(problem) = &msg.framing_error {
            engine.count_external_reject(RejectReason::MalformedProtobuf);
            Err(crate::decode::Reject::new(
                RejectReason::MalformedProtobuf,
                problem.clone(),
            ))
        } else {
            match format {
                Format::Json => engine.process_json(bytes),
                Format::Protobuf => engine.process_protobuf(bytes),
            }
        };
        match r {
            Ok(crate::engine::Outcome::Counted) => report.accepted += 1,
            Ok(crate::engine::Outcome::Duplicate) => report.duplicates += 1,
            Err(rej) => {
                report.rejected += 1;
                sinks.dead_letter(&DeadLetter::new(
                    &rej,
                    bytes,
                    batch.origin(msg),
                    cfg.output.dead_letter_max_bytes,
                    &cfg.output.dead_letter_redact,
                ))?;
            }
        }
    }
    if !batch.is_empty() {
        m.event_seconds
            .observe(t0.elapsed().as_secs_f64() / batch.len() as f64);
    }
    Ok(())
}

/// How far a file replay is: (bytes read, file size).
fn done_of(position: &InputPosition, len: Option<u64>) -> Option<(u64, u64)> {
    match (position, len) {
        (InputPosition::File { offset, .. }, Some(len)) => Some((*offset, len)),
        _ => None,
    }
}

/// Writes the records and dead letters so far, then the checkpoint of the
/// state that produced them. A failed write is logged and counted; the
/// run goes on and tries again at the next interval. Returns how long the
/// run was paused for it.
async fn write_checkpoint(
    c: &CheckpointOptions,
    engine: &Engine,
    position: &InputPosition,
    m: &Metrics,
    sinks: &mut Sinks,
) -> anyhow::Result<Duration> {
    let paused = Instant::now();
    sinks.flush().await?;
    let lengths = SinkLengths {
        output: sinks.output_path.as_deref().and_then(file_len),
        dead_letter: file_len(&sinks.dlq_path),
    };
    let t0 = Instant::now();
    match CheckpointRef::new(&engine.settings, position, lengths, &engine.state).write(&c.path) {
        Ok(bytes) => {
            m.checkpoint.seconds.observe(t0.elapsed().as_secs_f64());
            m.checkpoint.bytes.set(bytes as i64);
            m.checkpoint.written.inc();
            let took_ms = paused.elapsed().as_millis() as u64;
            tracing::debug!(path = %c.path.display(), bytes, took_ms, ?position, "checkpoint written");
        }
        Err(e) => {
            m.checkpoint.errors.inc();
            tracing::error!(path = %c.path.display(), error = %e, "cannot write the checkpoint; trying again at the next interval");
        }
    }
    Ok(paused.elapsed())
}
