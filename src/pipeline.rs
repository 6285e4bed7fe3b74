//! The async shell around the engine: a source task feeds batches of raw
//! messages through a bounded channel (backpressure), the engine task
//! processes them and writes KPI records and dead letters, and — in live
//! mode — timers emit provisional updates and the terminal summary.

use crate::alert::deliver::Dispatcher;
use crate::checkpoint::{CheckpointRef, InputPosition, SinkLengths};
use crate::config::Config;
use crate::decode::{json, proto, Format, RejectReason};
use crate::engine::Engine;
use crate::generator::{GenConfig, Generator};
use crate::metrics::Metrics;
use crate::output::{DeadLetter, KpiRecord};
use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, or `-` for standard input, read to its end.
    File(PathBuf),
    /// The built-in generator, paced at `rate` events/s; stops after `limit` events if set.
    Generator {
        gen: GenConfig,
        rate: f64,
        limit: Option<u64>,
    },
}

/// One raw message, where it came from, and a framing error if the
/// reader could not cut a whole message out of the input.
struct Msg {
    bytes: Vec<u8>,
    origin: String,
    framing_error: Option<String>,
}

impl Msg {
    fn new(bytes: Vec<u8>, origin: String) -> Msg {
        Msg {
            bytes,
            origin,
            framing_error: None,
        }
    }
}

/// A batch of raw messages, and where the input is after its last one.
struct Batch {
    msgs: Vec<Msg>,
    end: InputPosition,
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

/// Cuts a file back to `len` bytes (what it held at the checkpoint).
fn cut_back(p: &Path, len: Option<u64>) -> anyhow::Result<()> {
    let Some(len) = len else { return Ok(()) };
    if p.as_os_str() == "-" {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .with_context(|| format!("cannot open {} to resume it", p.display()))?;
    let now = f.metadata()?.len();
    if now < len {
        anyhow::bail!(
            "{} holds {now} bytes, fewer than the {len} it held at the checkpoint: it was replaced or cut (fix: put it back, or start over with --fresh)",
            p.display()
        );
    }
    f.set_len(len)?;
    Ok(())
}

fn file_len(p: &Path) -> Option<u64> {
    (p.as_os_str() != "-").then(|| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
}

/// What a run did, for the caller.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub records: u64,
}

/// Opens the record output; `append` when resuming from a checkpoint
/// (records after the checkpoint are written again, with the same revisions).
fn open_output(p: &PathBuf, append: bool) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(if p.as_os_str() == "-" {
        Box::new(BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(p)
            .with_context(|| format!("cannot create output file {}", p.display()))?;
        Box::new(BufWriter::new(f))
    })
}

/// Reads one length-delimited protobuf frame; `Ok(None)` at a clean end.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Result<Vec<u8>, String>>> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            return Ok(if i == 0 {
                None
            } else {
                Some(Err("input ends inside a length prefix".into()))
            });
        }
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            let mut buf = vec![0; len as usize];
            return Ok(Some(match r.read_exact(&mut buf) {
                Ok(()) => Ok(buf),
                Err(_) => Err(format!("input ends inside a {len}-byte message")),
            }));
        }
    }
    Ok(Some(Err("length prefix longer than 10 bytes".into())))
}

/// Where a file or stdin reader starts: byte offset and messages read
/// (file), or messages to skip (stdin, which cannot seek).
fn start_of(path: &Path, resume: &InputPosition) -> anyhow::Result<(u64, u64, u64)> {
    let stdin = path.as_os_str() == "-";
    let name = path.display().to_string();
    match resume {
        InputPosition::Start => Ok((0, 0, 0)),
        InputPosition::Stdin { messages } if stdin => Ok((0, 0, *messages)),
        InputPosition::File {
            path: p,
            offset,
            messages,
        } if !stdin && *p == name => Ok((*offset, *messages, 0)),
        other => anyhow::bail!(
            "the checkpoint was taken reading {other:?}, and this run reads {}: its position does not apply (fix: give the same input, or start over with --fresh)",
            if stdin { "stdin" } else { name.as_str() }
        ),
    }
}

fn read_file(
    path: PathBuf,
    format: Format,
    batch: usize,
    tx: mpsc::Sender<Batch>,
    resume: InputPosition,
) -> anyhow::Result<()> {
    let (mut offset, mut read, skip) = start_of(&path, &resume)?;
    let stdin = path.as_os_str() == "-";
    let (name, input): (String, Box<dyn Read + Send>) = if stdin {
        ("stdin".into(), Box::new(std::io::stdin()))
    } else {
        let mut f =
            File::open(&path).with_context(|| format!("cannot open input {}", path.display()))?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))
            .with_context(|| format!("cannot seek {} to the checkpoint", path.display()))?;
        (path.display().to_string(), Box::new(f))
    };
    let position = |offset: u64, read: u64| {
        if stdin {
            InputPosition::Stdin { messages: read }
        } else {
            InputPosition::File {
                path: name.clone(),
                offset,
                messages: read,
            }
        }
    };
    let mut r = BufReader::with_capacity(1 << 20, input);
    let mut msgs = Vec::with_capacity(batch);
    // Line (or frame) numbers in origins continue from the checkpoint.
    let mut n = read;
    loop {
        n += 1;
        let item = match format {
            Format::Json => {
                let mut line = Vec::new();
                let len = r.read_until(b'\n', &mut line)?;
                if len == 0 {
                    break;
                }
                offset += len as u64;
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                line
            }
            Format::Protobuf => match read_frame(&mut r)? {
                None => break,
                Some(Ok(m)) => {
                    offset += varint_len(m.len() as u64) + m.len() as u64;
                    m
                }
                Some(Err(e)) => {
                    msgs.push(Msg {
                        bytes: Vec::new(),
                        origin: format!("{name}:{n}"),
                        framing_error: Some(e),
                    });
                    break;
                }
            },
        };
        read += 1;
        if read <= skip {
            continue;
        }
        msgs.push(Msg::new(item, format!("{name}:{n}")));
        if msgs.len() >= batch
            && tx
                .blocking_send(Batch {
                    msgs: std::mem::take(&mut msgs),
                    end: position(offset, read),
                })
                .is_err()
        {
            return Ok(());
        }
    }
    if !msgs.is_empty() {
        let _ = tx.blocking_send(Batch {
            msgs,
            end: position(offset, read),
        });
    }
    Ok(())
}

/// Bytes of a protobuf varint.
fn varint_len(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

async fn run_generator(
    gen: GenConfig,
    rate: f64,
    limit: Option<u64>,
    format: Format,
    tx: mpsc::Sender<Batch>,
    skip: u64,
) {
    let mut g = Generator::new(gen);
    // Seeded: skipping what a checkpoint already holds resumes the same stream.
    for _ in 0..skip {
        g.next();
    }
    let tick = Duration::from_millis(50);
    let per_tick = (rate * tick.as_secs_f64()).max(1.0);
    let mut interval = tokio::time::interval(tick);
    let (mut sent, mut owed) = (skip, 0.0f64);
    loop {
        interval.tick().await;
        owed += per_tick;
        let mut msgs = Vec::new();
        while owed >= 1.0 && limit.is_none_or(|l| sent < l) {
            let e = g.next().expect("the generator never ends");
            let bytes = match format {
                Format::Json => json::encode(&e).into_bytes(),
                Format::Protobuf => prost::Message::encode_to_vec(&proto::from_event(&e)),
            };
            msgs.push(Msg::new(bytes, "generator".to_string()));
            owed -= 1.0;
            sent += 1;
        }
        if !msgs.is_empty()
            && tx
                .send(Batch {
                    msgs,
                    end: InputPosition::Generator { events: sent },
                })
                .await
                .is_err()
        {
            return;
        }
        if limit.is_some_and(|l| sent >= l) {
            // Keep the channel open: a live run serves until it is stopped.
            tx.closed().await;
            return;
        }
    }
}

struct Sinks {
    output_path: Option<PathBuf>,
    output: Option<Box<dyn Write + Send>>,
    dlq_path: PathBuf,
    dlq: Option<BufWriter<File>>,
}

impl Sinks {
    /// Writes the engine's new records, updates the KPI table and copies its counters.
    fn publish(
        &mut self,
        m: &Metrics,
        engine: &mut Engine,
        report: &mut RunReport,
        alerts: &Dispatcher,
    ) -> anyhow::Result<()> {
        let recs: Vec<KpiRecord> = engine.take_records();
        let boards = engine.take_leaderboards();
        alerts.dispatch(engine.take_notifications());
        report.records += recs.len() as u64;
        m.observe(&recs, &boards);
        if let Some(o) = &mut self.output {
            for r in &recs {
                serde_json::to_writer(&mut *o, r)?;
                o.write_all(b"\n")?;
            }
            for b in &boards {
                serde_json::to_writer(&mut *o, b)?;
                o.write_all(b"\n")?;
            }
        }
        m.sync(engine);
        Ok(())
    }

    fn dead_letter(&mut self, d: &DeadLetter) -> anyhow::Result<()> {
        if self.dlq.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.dlq_path)
                .with_context(|| {
                    format!("cannot open dead-letter file {}", self.dlq_path.display())
                })?;
            self.dlq = Some(BufWriter::new(f));
        }
        let w = self.dlq.as_mut().expect("opened");
        serde_json::to_writer(&mut *w, d)?;
        w.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(o) = &mut self.output {
            o.flush()?;
        }
        if let Some(d) = &mut self.dlq {
            d.flush()?;
        }
        Ok(())
    }
}

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
    };
    let m = opts.metrics.clone();
    let alerts = Dispatcher::start(&cfg.alerts, "", None, m.clone())?;
    m.set_ready(true);
    let mut update =
        tokio::time::interval(cfg.output.update_interval.0.max(Duration::from_millis(10)));
    let summary_every = cfg.output.summary_interval.0;
    let mut summary_tick = tokio::time::interval(summary_every.max(Duration::from_millis(100)));
    let mut report = RunReport::default();
    let (mut last_count, mut last_at) = (0u64, Instant::now());
    let cp = opts.checkpoint.clone();
    let mut cp_tick = tokio::time::interval(cp.as_ref().map_or(Duration::from_secs(3600), |c| {
        c.interval.max(Duration::from_millis(10))
    }));
    cp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    cp_tick.tick().await;
    let mut stopped = false;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                position = batch.end.clone();
                let t0 = Instant::now();
                let n = batch.msgs.len();
                for msg in &batch.msgs {
                    let r = if let Some(problem) = &msg.framing_error {
                        engine.count_external_reject(RejectReason::MalformedProtobuf);
                        Err(crate::decode::Reject::new(RejectReason::MalformedProtobuf, problem.clone()))
                    } else {
                        match format {
                            Format::Json => engine.process_json(&msg.bytes),
                            Format::Protobuf => engine.process_protobuf(&msg.bytes),
                        }
                    };
                    match r {
                        Ok(crate::engine::Outcome::Counted) => report.accepted += 1,
                        Ok(crate::engine::Outcome::Duplicate) => report.duplicates += 1,
                        Err(rej) => {
                            report.rejected += 1;
                            sinks.dead_letter(&DeadLetter::new(&rej, &msg.bytes, msg.origin.clone(), cfg.output.dead_letter_max_bytes))?;
                        }
                    }
                }
                if n > 0 {
                    m.event_seconds.observe(t0.elapsed().as_secs_f64() / n as f64);
                }
                sinks.publish(&m, &mut engine, &mut report, &alerts)?;
            }
            _ = update.tick(), if opts.live => {
                engine.emit_updates();
                sinks.publish(&m, &mut engine, &mut report, &alerts)?;
                sinks.flush()?;
            }
            _ = summary_tick.tick(), if opts.live && !summary_every.is_zero() => {
                let total = report.accepted + report.duplicates + report.rejected;
                let rate = (total - last_count) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
                (last_count, last_at) = (total, Instant::now());
                eprintln!("{}", summary(&m, &engine, rate));
            }
            _ = cp_tick.tick(), if cp.is_some() => {
                let c = cp.as_ref().expect("checkpointing");
                write_checkpoint(c, &engine, &position, &m, &mut sinks)?;
            }
            _ = &mut shutdown => {
                tracing::info!("stop signal received: draining");
                stopped = true;
                break;
            }
        }
    }
    drop(rx);
    if let Some(c) = cp.as_ref().filter(|_| stopped) {
        // Windows stay open: the next run resumes them from this checkpoint.
        reader.abort();
        sinks.publish(&m, &mut engine, &mut report, &alerts)?;
        write_checkpoint(c, &engine, &position, &m, &mut sinks)?;
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
        sinks.publish(&m, &mut engine, &mut report, &alerts)?;
        write_checkpoint(c, &engine, &position, &m, &mut sinks)?;
    }
    engine.finish();
    sinks.publish(&m, &mut engine, &mut report, &alerts)?;
    sinks.flush()?;
    alerts.shutdown().await;
    Ok((report, engine))
}

/// Writes the records and dead letters so far, then the checkpoint of the
/// state that produced them. A failed write is logged and counted; the
/// run goes on and tries again at the next interval.
fn write_checkpoint(
    c: &CheckpointOptions,
    engine: &Engine,
    position: &InputPosition,
    m: &Metrics,
    sinks: &mut Sinks,
) -> anyhow::Result<()> {
    sinks.flush()?;
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
            tracing::debug!(path = %c.path.display(), bytes, ?position, "checkpoint written");
        }
        Err(e) => {
            m.checkpoint.errors.inc();
            tracing::error!(path = %c.path.display(), error = %e, "cannot write the checkpoint; trying again at the next interval");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The signal handlers are registered
/// when this is called, not when the future is first polled: a signal
/// that comes before (during a restore, while waiting for a topic) is
/// not lost. Each caller gets its own future, and every one of them
/// resolves on one signal.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! { _ = wait(int) => {}, _ = wait(term) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
