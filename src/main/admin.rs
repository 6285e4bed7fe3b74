//! The operators' subcommands of the `salespulse` binary: `db migrate`,
//! `sink postgres` and `erase`.

use super::runtime;
use anyhow::Context;
use salespulse::config::Config;
use salespulse::decode::json;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const ERASE_EXAMPLES: &str = "Examples:
  salespulse erase --customer-id C-1042 --brokers localhost:9092 --input-topic crm.events
  salespulse erase --lead-id L-77 --checkpoint state.ckpt --config salespulse.toml   # salespulse stopped
  salespulse erase --customer-id C-1042 >> events.jsonl                              # the event, for a file";

#[derive(clap::Args)]
pub(crate) struct EraseArgs {
    #[arg(long)]
    lead_id: Option<String>,
    #[arg(long)]
    deal_id: Option<String>,
    #[arg(long)]
    customer_id: Option<String>,
    /// TOML configuration file (the `[privacy]` key, Kafka settings, and
    /// the layout settings a checkpoint was written under).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Erase in this checkpoint file, with salespulse stopped.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Produce the erasure to every partition of the input topic.
    #[arg(long)]
    brokers: Option<String>,
    /// The input topic (`kafka.input_topics`, the first).
    #[arg(long)]
    input_topic: Option<String>,
}

#[derive(clap::Subcommand)]
pub(crate) enum DbCmd {
    /// Create the KPI history tables, or bring them to this binary's
    /// version (`postgres.schema`; safe to run again, and from several
    /// instances at once).
    #[command(
        after_help = "Example:\n  SALESPULSE_POSTGRES__URL=postgres://salespulse@db/kpis salespulse db migrate"
    )]
    Migrate(PgArgs),
}

#[derive(clap::Subcommand)]
pub(crate) enum SinkCmd {
    /// Load a KPI topic (and leaderboard topic) into the KPI history, in
    /// its own consumer group, committing offsets once the rows are durable.
    #[command(
        after_help = "Examples:\n  salespulse sink postgres --brokers localhost:9092 --kpi-topic salespulse.kpis --postgres-url postgres://salespulse@db/kpis\n  salespulse sink postgres --config salespulse.toml --to-end   # backfill, then exit"
    )]
    Postgres(LoadArgs),
}

#[derive(clap::Args)]
pub(crate) struct PgArgs {
    /// TOML configuration file (its `[postgres]` section).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Connection string (`postgres.url`); better from the environment:
    /// SALESPULSE_POSTGRES__URL.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    pg: PgArgs,
    /// Kafka bootstrap servers (`kafka.brokers`).
    #[arg(long, value_name = "HOST:PORT[,…]")]
    brokers: Option<String>,
    /// The KPI topic (default `kafka.kpi_topic`).
    #[arg(long, value_name = "TOPIC")]
    kpi_topic: Option<String>,
    /// Also load leaderboards from this topic (default
    /// `kafka.leaderboard_topic`, if set).
    #[arg(long, value_name = "TOPIC")]
    leaderboard_topic: Option<String>,
    /// The loader's consumer group.
    #[arg(long, value_name = "ID", default_value = "salespulse-history-loader")]
    group_id: String,
    /// Stop once every partition is loaded to its end (a backfill).
    #[arg(long)]
    to_end: bool,
}

pub(crate) fn pg_config(a: &mut PgArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(a.config.as_deref())?;
    if let Some(u) = a.postgres_url.take() {
        cfg.postgres.url = u;
    }
    if !cfg.postgres.enabled() {
        anyhow::bail!(
            "postgres.url: no database (fix: give --postgres-url, SALESPULSE_POSTGRES__URL or [postgres] url)"
        );
    }
    Ok(cfg)
}

pub(crate) fn db_migrate(mut a: PgArgs) -> anyhow::Result<ExitCode> {
    let cfg = pg_config(&mut a)?;
    cfg.validate()
        .map_err(salespulse::config::LoadError::Invalid)?;
    let rt = runtime()?;
    let (from, to) = rt.block_on(async {
        let mut c = salespulse::sinks::postgres::connect(&cfg.postgres.url).await?;
        salespulse::sinks::postgres::migrate(&mut c, &cfg.postgres.schema).await
    })?;
    let s = &cfg.postgres.schema;
    match from == to {
        true => println!("schema {s}: at version {to}, nothing to do"),
        false => println!("schema {s}: migrated from version {from} to {to}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn sink_postgres(mut a: LoadArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = pg_config(&mut a.pg)?;
    if let Some(b) = a.brokers.take() {
        cfg.kafka.brokers = b;
    }
    if cfg.kafka.brokers.trim().is_empty() {
        anyhow::bail!(
            "kafka.brokers: no brokers (fix: give --brokers or SALESPULSE_KAFKA__BROKERS)"
        );
    }
    cfg.validate()
        .map_err(salespulse::config::LoadError::Invalid)?;
    let leaderboard_topic = a
        .leaderboard_topic
        .or_else(|| Some(cfg.kafka.leaderboard_topic.clone()))
        .filter(|t| !t.is_empty());
    let opts = salespulse::kafka::LoadOptions {
        kpi_topic: a.kpi_topic.unwrap_or_else(|| cfg.kafka.kpi_topic.clone()),
        leaderboard_topic,
        group: a.group_id,
        format: cfg.kafka.kpi_format,
        to_end: a.to_end,
        metrics: std::sync::Arc::new(salespulse::metrics::Metrics::for_config(&cfg)),
    };
    let rt = runtime()?;
    let r = rt.block_on(salespulse::kafka::load(&cfg, opts))?;
    eprintln!(
        "loaded {} KPI records and {} leaderboards ({} messages skipped)",
        r.records, r.leaderboards, r.skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// `check-config`: the loading and validation `run` does, every error.
pub(crate) fn erase(a: EraseArgs) -> anyhow::Result<ExitCode> {
    use salespulse::admin;
    let e = admin::erasure_event(&admin::Subject {
        lead_id: a.lead_id,
        deal_id: a.deal_id,
        customer_id: a.customer_id,
    })?;
    let mut cfg = Config::load(a.config.as_deref())?;
    if let Some(path) = a.checkpoint {
        let key = salespulse::privacy::key_next_to(&path);
        if cfg.privacy.key.is_empty()
            && cfg.privacy.key_file.as_os_str().is_empty()
            && !key.exists()
        {
            anyhow::bail!("privacy.key_file: no key given and no {} next to the checkpoint (fix: give the key the run used, privacy.key_file or SALESPULSE_PRIVACY__KEY)", key.display());
        }
        cfg.privacy
            .resolve_logged(&path, false)
            .map_err(|e| salespulse::config::LoadError::Invalid(vec![e]))?;
        let n = admin::erase_in_checkpoint(&cfg, &path, &e)?;
        tracing::info!(checkpoint = %path.display(), leads = n.entities[0], deals = n.entities[1], customers = n.entities[2], held_events = n.held, "erased");
    } else if let Some(b) = a
        .brokers
        .or_else(|| Some(cfg.kafka.brokers.clone()).filter(|b| !b.trim().is_empty()))
    {
        cfg.kafka.brokers = b;
        let topic = a
            .input_topic
            .or_else(|| cfg.kafka.input_topics.first().cloned())
            .context("kafka.input_topics: no input topic (fix: give --input-topic)")?;
        let n = runtime()?.block_on(salespulse::kafka::produce_to_every_partition(
            &cfg, &topic, &e,
        ))?;
        tracing::info!(topic, partitions = n, id = %e.id, "erasure produced to every partition");
    } else {
        println!("{}", json::encode(&e));
    }
    Ok(ExitCode::SUCCESS)
}
