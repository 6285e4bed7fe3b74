//! The `salespulse` command line.

/// mimalloc: KPI records and entity maps are many small allocations, which
/// it serves markedly faster than the system allocator (see
/// docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use salespulse::config::Config;
use salespulse::decode::{json, proto, Format};
use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
use salespulse::engine::Engine;
use salespulse::metrics::Metrics;
use salespulse::run::local::{self, CheckpointOptions, RunOptions};
use salespulse::run::RunReport;
use salespulse::sources::Source;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[path = "main/admin.rs"]
mod admin;
use admin::*;

#[derive(Parser)]
#[command(
    name = "salespulse",
    version,
    about = "Live sales KPIs from a CRM event stream"
)]
struct Cli {
    /// Log format on stderr: `text` (default) or `json` (one object per line).
    #[arg(long, global = true, value_enum, env = "SALESPULSE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline: on the built-in demo generator (default: live,
    /// until Ctrl-C), on a file or stdin (to its end), or on Kafka topics
    /// (`--brokers`, or `kafka.brokers`: a consumer group that scales out).
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Write the demo generator's events (CloudEvents JSON lines or
    /// length-delimited protobuf) to stdout, a file, or a Kafka topic.
    #[command(after_help = GENERATE_EXAMPLES)]
    Generate(GenerateArgs),
    /// Validate a configuration file (and the `SALESPULSE_*` environment)
    /// exactly as `run` does; prints every error with its field and fix.
    #[command(
        after_help = "Example:\n  salespulse check-config examples/salespulse.toml\n\nExit status: 0 valid, 1 invalid."
    )]
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Exit 0 if a salespulse answers 200 on URL (a container HEALTHCHECK
    /// needing no curl in the image).
    #[command(
        after_help = "Example:\n  salespulse healthcheck --url http://127.0.0.1:9464/readyz"
    )]
    Healthcheck {
        /// The URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
    },
    /// The KPI history database: `salespulse db migrate` creates or
    /// upgrades its tables (docs/history.md).
    #[command(subcommand)]
    Db(DbCmd),
    /// Load records from Kafka into a sink apart from the engine:
    /// `salespulse sink postgres` (docs/history.md).
    #[command(subcommand)]
    Sink(SinkCmd),
    /// Erase a lead, deal and/or customer (right to erasure): in a stopped
    /// run's checkpoint (`--checkpoint`), through Kafka (`--brokers`: to
    /// every partition of the input topic), or print the event to feed a
    /// file or stdin run (docs/privacy.md).
    #[command(after_help = ERASE_EXAMPLES)]
    Erase(EraseArgs),
    /// Convert the Maven Analytics CRM CSV export in DIR into CloudEvents JSON lines.
    #[command(
        after_help = "Example:\n  salespulse convert-maven tests/data/maven-crm > maven.jsonl\n  salespulse run --input maven.jsonl --output kpis.jsonl"
    )]
    ConvertMaven {
        /// The directory holding sales_pipeline.csv, sales_teams.csv, products.csv, accounts.csv.
        dir: PathBuf,
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

const RUN_EXAMPLES: &str = "Examples:
  salespulse run                                          # live demo, http://127.0.0.1:9464/metrics
  salespulse run --input events.jsonl --output kpis.jsonl # a file to its end, then exit
  salespulse run --input events.jsonl --listen 127.0.0.1:9464 --checkpoint state.ckpt
  salespulse run --brokers localhost:9092 --input-topic crm.events --kpi-topic salespulse.kpis
  salespulse run --brokers localhost:9092 --input-topic crm.events --to-end   # Kafka replay, then exit

Every option is also a configuration key (--config FILE) and a SALESPULSE_* variable,
e.g. SALESPULSE_KAFKA__BROKERS. Reference: docs/configuration.md.";

const GENERATE_EXAMPLES: &str = "Examples:
  salespulse generate --events 100000 --seed 7 > events.jsonl
  salespulse generate --events 0 --rate 2000 --brokers localhost:9092 --topic crm.events";

#[derive(clap::Args)]
struct RunArgs {
    /// Read events from FILE (`-` = stdin) to its end, close every window and exit.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Input format (default: `input.format` from config, else json).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write KPI records as JSON lines to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dead-letter file (default: `output.dead_letter`).
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// HTTP listen address for /metrics and /healthz (default: `http.listen`).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Generator: stop generating after N events (the process keeps serving until stopped).
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Generator: events per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Generator: seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Kafka bootstrap servers: consume from Kafka instead of the generator (`kafka.brokers`).
    #[arg(long, value_name = "HOST:PORT[,…]")]
    brokers: Option<String>,
    /// Kafka topic of CRM events; repeat for several (`kafka.input_topics`).
    #[arg(long, value_name = "TOPIC")]
    input_topic: Vec<String>,
    /// Kafka topic of KPI records (`kafka.kpi_topic`).
    #[arg(long, value_name = "TOPIC")]
    kpi_topic: Option<String>,
    /// Kafka topic of alerts (`kafka.alert_topic`).
    #[arg(long, value_name = "TOPIC")]
    alert_topic: Option<String>,
    /// Kafka dead-letter topic (`kafka.dlq_topic`).
    #[arg(long, value_name = "TOPIC")]
    dlq_topic: Option<String>,
    /// Kafka consumer group (`kafka.group_id`).
    #[arg(long, value_name = "ID")]
    group_id: Option<String>,
    /// Kafka static group membership: this instance's stable id
    /// (`kafka.instance_id`, e.g. the pod name of a StatefulSet).
    #[arg(long, value_name = "ID")]
    instance_id: Option<String>,
    /// Kafka: consume every assigned partition to its current end, close
    /// every window, commit and exit (a replay or backfill).
    #[arg(long)]
    to_end: bool,
    /// Checkpoint file (`checkpoint.path`): the state is restored from it
    /// at start when it exists, and written every `checkpoint.interval`,
    /// at the end of the input and on SIGTERM / Ctrl-C.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Write every KPI record to PostgreSQL too (`postgres.url`; better
    /// from the environment: SALESPULSE_POSTGRES__URL). docs/history.md.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    /// Start over: move an existing checkpoint aside (`<file>.rejected`)
    /// and read the input from its start.
    #[arg(long)]
    fresh: bool,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// How many events (0 with --brokers: no end).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Seed: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First simulated instant, RFC 3339 (default 2026-01-01T00:00:00Z).
    #[arg(long)]
    start: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Events per simulated day.
    #[arg(long, default_value_t = 1000)]
    events_per_day: u32,
    /// Produce to Kafka instead of writing a file (keyed by entity id);
    /// with it, `--events 0` means no end.
    #[arg(long, value_name = "HOST:PORT[,…]")]
    brokers: Option<String>,
    /// Kafka topic for `--brokers`.
    #[arg(long, default_value = "crm.events")]
    topic: String,
    /// Events per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
}

fn writer(p: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match p {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        _ => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

fn log_done(report: &RunReport) {
    tracing::info!(
        accepted = report.accepted,
        duplicates = report.duplicates,
        rejected = report.rejected,
        records = report.records,
        "done"
    );
}

/// GET `http://host:port/path`; Ok when the answer is 200.
/// `https://` is checked for an answer, not for the certificate's
/// identity (a liveness probe of the local process, often self-signed).
fn healthcheck(url: &str) -> anyhow::Result<()> {
    use std::io::Read;
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => anyhow::bail!("--url must start with http:// or https://"),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let s = std::net::TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut s: Box<dyn ReadWrite> = if tls {
        use tokio_native_tls::native_tls::TlsConnector;
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let c = TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true)
            .build()?;
        Box::new(
            c.connect(name, s)
                .map_err(|e| anyhow::anyhow!("TLS to {host}: {e}"))?,
        )
    } else {
        Box::new(s)
    };
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "{url} answered {}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

fn parse_start(s: Option<&str>) -> anyhow::Result<i64> {
    match s {
        None => Ok(DEFAULT_START),
        Some(s) => Ok(chrono::DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--start {s:?} is not RFC 3339 (e.g. 2026-01-01T00:00:00Z)"))?
            .timestamp_millis()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: no escape codes in files and journals.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let format = cli.log_format;
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            match format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Healthcheck { url } => Ok(match healthcheck(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::from(1)
            }
        }),
        Cmd::CheckConfig { file } => Ok(check_config(&file)),
        Cmd::Generate(args) => generate(args),
        Cmd::ConvertMaven { dir, output } => convert_maven(&dir, output.as_ref()),
        Cmd::Run(args) => run(*args),
        Cmd::Db(DbCmd::Migrate(a)) => db_migrate(a),
        Cmd::Sink(SinkCmd::Postgres(a)) => sink_postgres(a),
        Cmd::Erase(a) => erase(a),
    }
}

/// The configuration with `[postgres]` from the command line, validated;
/// fails when no database is named.
fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(Some(file)) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}

fn generate(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let g = Generator::new(GenConfig {
        seed: a.seed,
        start: parse_start(a.start.as_deref())?,
        events_per_day: a.events_per_day,
        reps: 12,
    });
    if let Some(b) = a.brokers {
        let mut cfg = Config::load(None)?;
        cfg.kafka.brokers = b;
        cfg.validate()
            .map_err(salespulse::config::LoadError::Invalid)?;
        let take = if a.events == 0 {
            usize::MAX
        } else {
            a.events as usize
        };
        let rt = runtime()?;
        let n = rt.block_on(salespulse::kafka::produce_events(
            &cfg,
            &a.topic,
            g.take(take),
            a.format,
            a.rate,
        ))?;
        tracing::info!(events = n, topic = a.topic, "produced");
        return Ok(ExitCode::SUCCESS);
    }
    let mut w = writer(a.output.as_ref())?;
    for e in g.take(a.events as usize) {
        match a.format {
            Format::Json => writeln!(w, "{}", json::encode(&e))?,
            Format::Protobuf => w.write_all(&proto::encode_delimited(&e))?,
        }
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn convert_maven(dir: &std::path::Path, output: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let (events, report) = salespulse::demo::maven::convert(dir)?;
    let mut w = writer(output)?;
    for e in &events {
        writeln!(w, "{}", json::encode(e))?;
    }
    w.flush()?;
    eprintln!(
        "converted {} rows into {} events; {} rows skipped (no engage date)",
        report.rows, report.events, report.skipped_no_date
    );
    for (p, n) in &report.unknown_products {
        eprintln!(
            "warning: product {p:?} ({n} rows) is not in products.csv: no list price for those deals"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The configuration of a `run`: the file and environment, then the
/// command line on top, validated. Also whether the run reads Kafka.
fn run_config(a: &mut RunArgs) -> anyhow::Result<(Config, bool)> {
    let mut cfg = Config::load(a.config.as_deref())?;
    if let Some(c) = a.checkpoint.take() {
        cfg.checkpoint.path = c;
    }
    let k = &mut cfg.kafka;
    if let Some(b) = a.brokers.take() {
        k.brokers = b;
    }
    if !a.input_topic.is_empty() {
        k.input_topics = std::mem::take(&mut a.input_topic);
    }
    for (v, slot) in [
        (a.kpi_topic.take(), &mut k.kpi_topic),
        (a.alert_topic.take(), &mut k.alert_topic),
        (a.dlq_topic.take(), &mut k.dlq_topic),
        (a.group_id.take(), &mut k.group_id),
        (a.instance_id.take(), &mut k.instance_id),
    ] {
        if let Some(v) = v {
            *slot = v;
        }
    }
    let kafka = a.input.is_none() && !cfg.kafka.brokers.trim().is_empty();
    if kafka && !cfg.checkpoint.path.as_os_str().is_empty() {
        anyhow::bail!(
            "checkpoint.path: checkpoints are written for file, stdin and generator input; Kafka mode does not checkpoint yet (fix: remove checkpoint.path / --checkpoint for Kafka runs)"
        );
    }
    if a.to_end && !kafka {
        anyhow::bail!(
            "--to-end applies to Kafka: give --brokers (or kafka.brokers) and no --input"
        );
    }
    if let Some(l) = a.listen.clone() {
        cfg.http.listen = l;
    }
    if let Some(u) = a.postgres_url.take() {
        cfg.postgres.url = u;
    }
    if let Some(r) = a.rate {
        cfg.generator.rate = r;
    }
    if let Some(s) = a.seed {
        cfg.generator.seed = s;
    }
    cfg.validate()
        .map_err(salespulse::config::LoadError::Invalid)?;
    cfg.privacy
        .resolve_logged(&cfg.checkpoint.path.clone(), kafka)
        .map_err(|e| salespulse::config::LoadError::Invalid(vec![e]))?;
    if a.input.is_none() && !kafka {
        // The demo generator runs on simulated time, which soon
        // passes the wall clock: no `future` guard for it.
        cfg.time.max_future_skew = salespulse::config::Dur(std::time::Duration::ZERO);
    }
    Ok((cfg, kafka))
}

fn run(mut a: RunArgs) -> anyhow::Result<ExitCode> {
    let (cfg, kafka) = run_config(&mut a)?;
    let live = a.input.is_none();
    let source = match a.input.clone() {
        Some(p) => Source::File(p),
        None => Source::Generator {
            gen: GenConfig {
                seed: cfg.generator.seed,
                start: parse_start(cfg.generator.start.as_deref())?,
                events_per_day: cfg.generator.events_per_day,
                reps: cfg.generator.reps,
            },
            rate: cfg.generator.rate,
            limit: a.events,
        },
    };
    let metrics = Arc::new(Metrics::for_config(&cfg));
    let rt = runtime()?;
    let code = rt.block_on(async {
        // File mode serves /metrics too when --listen is given.
        if (live || kafka || a.listen.is_some()) && cfg.http.enabled {
            let addr = salespulse::http::serve(
                &cfg.http,
                metrics.clone(),
                salespulse::run::shutdown_signal(),
            )
            .await?;
            let scheme = if cfg.http.tls() { "https" } else { "http" };
            tracing::info!(%addr, auth = cfg.http.auth(), "serving {scheme}://{addr}/metrics and /healthz");
        }
        let report = if kafka {
            let opts = salespulse::kafka::KafkaOptions {
                to_end: a.to_end,
                live_updates: !a.to_end,
                metrics,
                fresh: a.fresh,
                progress: a.to_end && std::io::stderr().is_terminal(),
            };
            salespulse::kafka::run(&cfg, opts).await?
        } else {
            let (engine, checkpoint) = restore(&cfg, a.fresh)?;
            let opts = RunOptions {
                checkpoint,
                source,
                format: a.format.unwrap_or(cfg.input.format),
                output: a.output.clone(),
                dead_letter: a
                    .dead_letter
                    .clone()
                    .unwrap_or_else(|| cfg.output.dead_letter.clone()),
                live,
                metrics,
                progress: std::io::stderr().is_terminal(),
            };
            local::run(&cfg, opts, engine).await?.0
        };
        log_done(&report);
        anyhow::Ok(ExitCode::SUCCESS)
    });
    // A reader blocked on stdin must not hold the exit: all that
    // matters is written (records, dead letters, checkpoint, alerts).
    rt.shutdown_background();
    code
}

/// The engine to start with: restored from `checkpoint.path` when the file
/// exists (unless `--fresh`), with the input position to resume from.
fn restore(cfg: &Config, fresh: bool) -> anyhow::Result<(Engine, Option<CheckpointOptions>)> {
    use salespulse::checkpoint::{Checkpoint, InputPosition};
    let path = cfg.checkpoint.path.clone();
    if path.as_os_str().is_empty() {
        if fresh {
            anyhow::bail!("--fresh needs a checkpoint file (--checkpoint FILE or checkpoint.path)");
        }
        return Ok((Engine::from_config(cfg), None));
    }
    if fresh {
        if let Some(aside) = Checkpoint::set_aside(&path)
            .with_context(|| format!("cannot move checkpoint {} aside", path.display()))?
        {
            tracing::warn!(checkpoint = %path.display(), moved_to = %aside.display(), "--fresh: starting over from the start of the input");
        }
    }
    let settings = salespulse::engine::Settings::from_config(cfg);
    let t0 = std::time::Instant::now();
    let (engine, resume, sinks) = match Checkpoint::read(&path)? {
        Some(c) => {
            c.check_layout(&path, &settings)?;
            tracing::info!(
                checkpoint = %path.display(),
                written_at = %c.written_at,
                input = ?c.input,
                seconds = t0.elapsed().as_secs_f64(),
                "state restored"
            );
            (Engine::from_state(settings, c.state), c.input, c.sinks)
        }
        None => (
            Engine::new(settings),
            InputPosition::Start,
            Default::default(),
        ),
    };
    Ok((
        engine,
        Some(CheckpointOptions {
            path,
            interval: cfg.checkpoint.interval.0,
            resume,
            sinks,
        }),
    ))
}
