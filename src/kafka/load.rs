//! `salespulse sink postgres`: loads an existing KPI topic (and
//! leaderboard topic) into the KPI history, apart from the engine — to
//! backfill, or to run the loader on its own. Its own consumer group;
//! offsets are committed only once the rows before them are in the
//! database, so a crash or restart loads some records again, which the
//! upsert (highest revision kept) absorbs.

use super::client::{group_consumer, watch_ends, Ends};
use super::produce::commit;
use crate::config::Config;
use crate::decode::Format;
use crate::metrics::Metrics;
use crate::output::{KpiRecord, LeaderboardEntry, LeaderboardRecord, WindowInfo};
use crate::sinks::postgres::PgSink;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to load.
#[derive(Clone)]
pub struct LoadOptions {
    pub kpi_topic: String,
    /// Also load leaderboards from this topic.
    pub leaderboard_topic: Option<String>,
    /// The loader's consumer group.
    pub group: String,
    /// Format of the records (`kafka.kpi_format`).
    pub format: Format,
    /// Stop once every partition is loaded to its end (a backfill).
    pub to_end: bool,
    pub metrics: Arc<Metrics>,
}

/// What a load did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    pub records: u64,
    pub leaderboards: u64,
    /// Messages that are no KPI record or leaderboard (logged, skipped).
    pub skipped: u64,
}

/// Loads until stopped (or, with `to_end`, until every partition is read).
pub async fn load(cfg: &Config, opts: LoadOptions) -> anyhow::Result<LoadReport> {
    let m = opts.metrics.clone();
    let pg = PgSink::start(cfg, m.clone()).await?;
    let mut topics = vec![opts.kpi_topic.as_str()];
    topics.extend(opts.leaderboard_topic.as_deref());
    let consumer = group_consumer(cfg, &opts.group, &topics, m.clone(), true)?;
    let ends: Ends = Default::default();
    let ends_task = watch_ends(consumer.clone(), ends.clone(), Duration::from_millis(500));
    let shutdown = crate::run::shutdown_signal();
    tokio::pin!(shutdown);
    let mut report = LoadReport::default();
    // Next offset to commit, by partition, once the rows are durable.
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let mut seen: HashMap<(String, i32), i64> = HashMap::new();
    let (mut recs, mut boards) = (Vec::new(), Vec::new());
    let mut tick =
        tokio::time::interval(cfg.postgres.flush_interval.0.max(Duration::from_millis(50)));
    let mut last_message = Instant::now();
    tracing::info!(topics = ?topics, group = %opts.group, "loading the KPI topic into PostgreSQL");
    loop {
        tokio::select! {
            msg = consumer.recv() => match msg {
                Ok(msg) => {
                    last_message = Instant::now();
                    let key = (msg.topic().to_string(), msg.partition());
                    next.insert(key.clone(), msg.offset() + 1);
                    seen.insert(key, msg.offset() + 1);
                    let board_topic = opts.leaderboard_topic.as_deref() == Some(msg.topic());
                    match decode(msg.payload().unwrap_or_default(), opts.format, board_topic) {
                        Ok(Decoded::Kpi(r)) => recs.push(r),
                        Ok(Decoded::Board(b)) => boards.push(b),
                        Err(e) => {
                            report.skipped += 1;
                            tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "not a KPI record: skipped");
                        }
                    }
                    if recs.len() + boards.len() >= cfg.postgres.batch_size {
                        hand_over(&pg, &mut recs, &mut boards, &mut report).await?;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
            },
            _ = tick.tick() => {
                hand_over(&pg, &mut recs, &mut boards, &mut report).await?;
                durable_then_commit(&pg, &consumer, &mut next, &m).await?;
                if opts.to_end && at_end(&consumer, &ends, &seen, last_message, cfg) {
                    break;
                }
            }
            _ = &mut shutdown => {
                tracing::info!("stop signal received: writing what was read");
                break;
            }
        }
    }
    hand_over(&pg, &mut recs, &mut boards, &mut report).await?;
    durable_then_commit(&pg, &consumer, &mut next, &m).await?;
    pg.close().await?;
    drop(ends);
    let _ = ends_task.await;
    tracing::info!(?report, "KPI topic loaded");
    Ok(report)
}

async fn hand_over(
    pg: &PgSink,
    recs: &mut Vec<KpiRecord>,
    boards: &mut Vec<LeaderboardRecord>,
    report: &mut LoadReport,
) -> anyhow::Result<()> {
    report.records += recs.len() as u64;
    report.leaderboards += boards.len() as u64;
    pg.send(recs, boards).await?;
    recs.clear();
    boards.clear();
    Ok(())
}

/// Waits until the rows handed over are in the database, then commits
/// the offsets after them.
async fn durable_then_commit(
    pg: &PgSink,
    consumer: &Arc<super::client::Consumer_>,
    next: &mut HashMap<(String, i32), i64>,
    m: &Metrics,
) -> anyhow::Result<()> {
    if next.is_empty() {
        return Ok(());
    }
    pg.flush().await?;
    let offsets: Vec<((String, i32), i64)> = next.drain().collect();
    commit(consumer, &offsets, m).await;
    Ok(())
}

/// Every assigned partition read to its end offset, and quiet for
/// `kafka.end_quiet` (brokers that report short end offsets).
fn at_end(
    consumer: &super::client::Consumer_,
    ends: &Ends,
    seen: &HashMap<(String, i32), i64>,
    last_message: Instant,
    cfg: &Config,
) -> bool {
    let assigned = consumer
        .context()
        .assigned
        .lock()
        .expect("assignment lock")
        .clone();
    if assigned.is_empty() || last_message.elapsed() < cfg.kafka.end_quiet.0 {
        return false;
    }
    let ends = ends.lock().expect("ends lock");
    assigned.iter().all(|k| match (ends.get(k), seen.get(k)) {
        (Some((_, high)), Some(at)) => at >= high,
        // Nothing read: at its committed end (or empty) once quiet.
        (Some(_), None) => true,
        (None, _) => false,
    })
}

enum Decoded {
    Kpi(KpiRecord),
    Board(LeaderboardRecord),
}

/// A record of the KPI or leaderboard topic, in `format`.
fn decode(bytes: &[u8], format: Format, board_topic: bool) -> anyhow::Result<Decoded> {
    match format {
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(bytes)?;
            if v.get("record").and_then(|r| r.as_str()) == Some("leaderboard") {
                Ok(Decoded::Board(serde_json::from_value(v)?))
            } else {
                Ok(Decoded::Kpi(serde_json::from_value(v)?))
            }
        }
        Format::Protobuf if board_topic => {
            let b: crate::pb::Leaderboard = prost::Message::decode(bytes)?;
            Ok(Decoded::Board(LeaderboardRecord {
                record: "leaderboard".into(),
                board: b.board.into(),
                unit: b.unit.into(),
                window: window(b.window_kind, b.window_start, b.window_end, b.window_label),
                entries: b
                    .entries
                    .into_iter()
                    .map(|e| LeaderboardEntry {
                        rank: e.rank,
                        rep: e.rep,
                        value: e.value,
                        sample_size: e.sample_size,
                    })
                    .collect(),
                is_final: b.r#final,
                revision: b.revision,
            }))
        }
        Format::Protobuf => {
            let r: crate::pb::KpiRecord = prost::Message::decode(bytes)?;
            Ok(Decoded::Kpi(KpiRecord {
                kpi: r.kpi.into(),
                unit: r.unit.into(),
                window: window(r.window_kind, r.window_start, r.window_end, r.window_label),
                dimensions: Arc::new(r.dimensions.into_iter().collect::<BTreeMap<_, _>>()),
                value: r.value,
                numerator: r.numerator,
                denominator: r.denominator,
                sample_size: r.sample_size,
                is_final: r.r#final,
                revision: r.revision,
            }))
        }
    }
}

fn window(
    kind: String,
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
    label: String,
) -> Arc<WindowInfo> {
    let ms = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or(0, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000)
    };
    Arc::new(WindowInfo {
        kind,
        start: crate::window::format_time(ms(&start)),
        end: crate::window::format_time(ms(&end)),
        label,
        start_ms: ms(&start),
    })
}
