//! KPI history in PostgreSQL (docs/history.md): every KPI and leaderboard
//! record upserted into one row per (kpi, window kind, window start,
//! dimensions), keeping the highest revision, so that resent records,
//! restarts and replays leave exactly one row per window and series.
//!
//! The loops hand records over through a bounded queue ([`PgSink::send`])
//! to one writer task, which keeps the newest revision of each row in
//! memory and upserts them in batches (`UNNEST` of arrays: one statement
//! per batch). A failed write keeps its rows and is tried again with a
//! growing backoff; while the database is away the queue fills and the
//! engine waits (backpressure): nothing is dropped. Checkpoints call
//! [`PgSink::flush`] first, so that what a checkpoint has emitted is in
//! the database before the input position moves past it. The tables,
//! their migrations and the upsert statements are in `schema`.

use crate::config::{Config, PostgresConfig};
use crate::metrics::Metrics;
use crate::output::{KpiRecord, LeaderboardRecord};
use chrono::{DateTime, TimeZone as _};
use schema::{prepare, write_boards, write_kpis, Conn};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod schema;

pub use schema::{check_version, connect, migrate, SCHEMA_VERSION};

/// One `kpi_history` row.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiRow {
    pub kpi: String,
    pub kind: String,
    /// RFC 3339.
    pub start: String,
    /// JSON object, keys sorted.
    pub dimensions: String,
    /// The dimension names, sorted, joined by `,` (`""` for the total).
    pub breakdown: String,
    pub end: String,
    pub label: String,
    pub value: Option<f64>,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    pub sample_size: i64,
    pub unit: String,
    pub is_final: bool,
    pub revision: i64,
}

/// One `leaderboard_history` row.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardRow {
    pub board: String,
    pub kind: String,
    pub start: String,
    pub end: String,
    pub label: String,
    pub unit: String,
    /// JSON array of the entries, best first.
    pub entries: String,
    pub is_final: bool,
    pub revision: i64,
}

/// Which records become rows, and how.
#[derive(Clone)]
pub struct Rows {
    tz: chrono_tz::Tz,
    windows: Vec<String>,
    calendar: Vec<String>,
}

impl Rows {
    pub fn new(cfg: &Config) -> Rows {
        Rows {
            tz: cfg.time.zone.parse().unwrap_or(chrono_tz::UTC),
            windows: cfg.postgres.windows.clone(),
            calendar: cfg
                .windows
                .calendar
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
        }
    }

    fn keeps(&self, kind: &str) -> bool {
        PostgresConfig::kept(&self.windows, kind, &self.calendar)
    }

    /// The row of a KPI record; `None` for a window kind not kept. A gauge
    /// (start = end = the time of its value) becomes the row of its local
    /// day: start = the day's midnight in `time.zone`, label = the date,
    /// end = the time of the value.
    pub fn kpi(&self, r: &KpiRecord) -> Option<KpiRow> {
        if !self.keeps(&r.window.kind) {
            return None;
        }
        let (start, label) = if r.window.kind == "gauge" {
            self.day_of(&r.window.start)?
        } else {
            (r.window.start.clone(), r.window.label.clone())
        };
        Some(KpiRow {
            kpi: r.kpi.to_string(),
            kind: r.window.kind.clone(),
            start,
            dimensions: serde_json::to_string(&*r.dimensions).expect("a map of strings"),
            breakdown: r
                .dimensions
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(","),
            end: r.window.end.clone(),
            label,
            value: r.value,
            numerator: r.numerator,
            denominator: r.denominator,
            sample_size: r.sample_size.min(i64::MAX as u64) as i64,
            unit: r.unit.to_string(),
            is_final: r.is_final,
            revision: r.revision as i64,
        })
    }

    pub fn board(&self, b: &LeaderboardRecord) -> Option<BoardRow> {
        if !self.keeps(&b.window.kind) {
            return None;
        }
        Some(BoardRow {
            board: b.board.to_string(),
            kind: b.window.kind.clone(),
            start: b.window.start.clone(),
            end: b.window.end.clone(),
            label: b.window.label.clone(),
            unit: b.unit.to_string(),
            entries: serde_json::to_string(&b.entries).expect("entries serialize"),
            is_final: b.is_final,
            revision: b.revision as i64,
        })
    }

    /// (local midnight as RFC 3339, `YYYY-MM-DD`) of an RFC 3339 time.
    fn day_of(&self, t: &str) -> Option<(String, String)> {
        let t = DateTime::parse_from_rfc3339(t)
            .ok()?
            .with_timezone(&self.tz);
        let day = t.date_naive();
        let midnight = day.and_hms_opt(0, 0, 0)?;
        // A day that starts inside a DST gap starts at its first instant.
        let start = self
            .tz
            .from_local_datetime(&midnight)
            .earliest()
            .unwrap_or(t);
        Some((
            start.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            day.format("%Y-%m-%d").to_string(),
        ))
    }
}

type KpiKey = (String, String, String, String);
type BoardKey = (String, String, String);

enum Msg {
    Rows(Vec<KpiRow>, Vec<BoardRow>),
    Flush(oneshot::Sender<()>),
}

/// The history sink of one run: a bounded queue to its writer task.
pub struct PgSink {
    tx: mpsc::Sender<Msg>,
    task: tokio::task::JoinHandle<()>,
    rows: Rows,
    m: Arc<Metrics>,
}

impl PgSink {
    /// Connects, migrates (or checks the version), and starts the writer.
    /// Fails at once when the database cannot be reached or the tables
    /// are missing: a wrong `postgres.url` is found at start-up.
    pub async fn start(cfg: &Config, m: Arc<Metrics>) -> anyhow::Result<PgSink> {
        let rows = Rows::new(cfg);
        let p = &cfg.postgres;
        let mut client = connect(&p.url).await?;
        if p.migrate_on_start {
            let (from, to) = migrate(&mut client, &p.schema).await?;
            if from != to {
                tracing::info!(schema = %p.schema, from, to, "KPI history tables migrated");
            }
        } else {
            check_version(&client, &p.schema).await?;
        }
        let (tx, rx) = mpsc::channel(p.queue_capacity);
        let mut conns = vec![None; p.connections.max(1)];
        conns[0] = Some(Arc::new(prepare(client, &p.schema).await?));
        let writer = Writer {
            url: p.url.clone(),
            schema: p.schema.clone(),
            conns,
            kpis: HashMap::new(),
            boards: HashMap::new(),
            m: m.clone(),
            batch_size: p.batch_size,
            max_backoff: p.max_backoff.0,
            retention: p.non_final_retention.0,
            last_expire: None,
        };
        let task = tokio::spawn(writer.run(rx, p.flush_interval.0.max(Duration::from_millis(10))));
        Ok(PgSink { tx, task, rows, m })
    }

    /// Hands the records that are kept over to the writer; waits while
    /// its queue is full.
    pub async fn send(
        &self,
        recs: &[KpiRecord],
        boards: &[LeaderboardRecord],
    ) -> anyhow::Result<()> {
        let k: Vec<KpiRow> = recs.iter().filter_map(|r| self.rows.kpi(r)).collect();
        let b: Vec<BoardRow> = boards.iter().filter_map(|b| self.rows.board(b)).collect();
        self.send_rows(k, b).await
    }

    pub async fn send_rows(&self, k: Vec<KpiRow>, b: Vec<BoardRow>) -> anyhow::Result<()> {
        if k.is_empty() && b.is_empty() {
            return Ok(());
        }
        self.m
            .postgres
            .queued
            .set((self.tx.max_capacity() - self.tx.capacity()) as i64 + 1);
        self.tx
            .send(Msg::Rows(k, b))
            .await
            .map_err(|_| anyhow::anyhow!("the KPI history writer stopped"))
    }

    /// Returns once every row handed over so far is in the database
    /// (waiting as long as the database is away).
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Flush(ack))
            .await
            .map_err(|_| anyhow::anyhow!("the KPI history writer stopped"))?;
        done.await
            .map_err(|_| anyhow::anyhow!("the KPI history writer stopped"))
    }

    /// Writes what is left and stops the writer.
    pub async fn close(self) -> anyhow::Result<()> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("the KPI history writer failed: {e}"))
    }
}

struct Writer {
    url: String,
    schema: String,
    /// `postgres.connections` slots, each written concurrently; `None`
    /// until (re)connected.
    conns: Vec<Option<Arc<Conn>>>,
    /// Newest revision of each row not yet written.
    kpis: HashMap<KpiKey, KpiRow>,
    boards: HashMap<BoardKey, BoardRow>,
    m: Arc<Metrics>,
    batch_size: usize,
    max_backoff: Duration,
    retention: Duration,
    last_expire: Option<Instant>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    self.m.postgres.queued.set(rx.len() as i64);
                    match msg {
                        None => {
                            self.write_all().await;
                            self.last_expire = None;
                            self.expire().await;
                            return;
                        }
                        Some(Msg::Rows(k, b)) => {
                            self.add(k, b);
                            if self.kpis.len() + self.boards.len() >= self.batch_size {
                                self.write_all().await;
                            }
                        }
                        Some(Msg::Flush(ack)) => {
                            self.write_all().await;
                            let _ = ack.send(());
                        }
                    }
                }
                _ = tick.tick() => {
                    self.write_all().await;
                    self.expire().await;
                }
            }
        }
    }

    /// Keeps the highest revision of each row.
    fn add(&mut self, k: Vec<KpiRow>, b: Vec<BoardRow>) {
        for r in k {
            let key = (
                r.kpi.clone(),
                r.kind.clone(),
                r.start.clone(),
                r.dimensions.clone(),
            );
            match self.kpis.get(&key) {
                Some(old) if old.revision >= r.revision => {}
                _ => {
                    self.kpis.insert(key, r);
                }
            }
        }
        for r in b {
            let key = (r.board.clone(), r.kind.clone(), r.start.clone());
            match self.boards.get(&key) {
                Some(old) if old.revision >= r.revision => {}
                _ => {
                    self.boards.insert(key, r);
                }
            }
        }
    }

    /// Writes every row held, trying again (with a growing backoff, the
    /// rows kept) until the database takes them.
    async fn write_all(&mut self) {
        if self.kpis.is_empty() && self.boards.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        let mut paused: Option<Instant> = None;
        loop {
            match self.try_write().await {
                Ok(()) => break,
                Err(e) => {
                    self.m.postgres.errors.inc();
                    if paused.is_none() {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cannot write the KPI history; holding its rows and trying again"
                        );
                        paused = Some(Instant::now());
                        self.m.postgres.paused.set(1);
                    } else {
                        tracing::debug!(error = format!("{e:#}"), "KPI history write failed again");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
        if let Some(t) = paused {
            let ms = t.elapsed().as_millis() as u64;
            self.m.postgres.paused.set(0);
            self.m.postgres.paused_ms.inc_by(ms);
            tracing::info!(paused_ms = ms, "KPI history writes resumed");
        }
    }

    /// Writes every row held over the connections at once, each taking
    /// a contiguous share of the rows in key order (no two connections
    /// lock the same row; a loader writing the same rows locks them in
    /// the same order). Rows not written stay held; a failed connection
    /// is opened again at the next attempt.
    async fn try_write(&mut self) -> anyhow::Result<()> {
        for slot in &mut self.conns {
            if slot.is_none() {
                let client = connect(&self.url).await?;
                *slot = Some(Arc::new(prepare(client, &self.schema).await?));
            }
        }
        let mut kpis: Vec<KpiRow> = self.kpis.drain().map(|(_, r)| r).collect();
        kpis.sort_unstable_by(|a, b| kpi_key(a).cmp(&kpi_key(b)));
        let mut boards: Vec<BoardRow> = self.boards.drain().map(|(_, r)| r).collect();
        boards.sort_unstable_by(|a, b| board_key(a).cmp(&board_key(b)));
        let n = self.conns.len();
        let (ks, bs) = (
            kpis.len().div_ceil(n).max(1),
            boards.len().div_ceil(n).max(1),
        );
        let (mut kpis, mut boards) = (kpis.into_iter(), boards.into_iter());
        let mut tasks = Vec::new();
        for (i, slot) in self.conns.iter().enumerate() {
            let k: Vec<KpiRow> = kpis.by_ref().take(ks).collect();
            let b: Vec<BoardRow> = boards.by_ref().take(bs).collect();
            if k.is_empty() && b.is_empty() {
                continue;
            }
            let conn = slot.clone().expect("connected");
            let (m, size) = (self.m.clone(), self.batch_size);
            tasks.push((i, tokio::spawn(write_share(conn, k, b, size, m))));
        }
        let mut failed = None;
        for (i, t) in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err((e, k, b))) => {
                    self.add(k, b);
                    self.conns[i] = None;
                    failed = Some(e);
                }
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Deletes the non-final rows older than `postgres.non_final_retention`
    /// (at most once a minute, and when the run ends).
    async fn expire(&mut self) {
        if self.retention.is_zero()
            || self
                .last_expire
                .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        let Some(conn) = self.conns.iter().flatten().next().cloned() else {
            return;
        };
        self.last_expire = Some(Instant::now());
        let secs = self.retention.as_secs_f64();
        let s = &self.schema;
        for table in ["kpi_history", "leaderboard_history"] {
            let sql = format!(
                "DELETE FROM {s}.{table} WHERE NOT final AND updated_at < now() - make_interval(secs => $1)"
            );
            match conn.client.execute(&sql, &[&secs]).await {
                Ok(n) => self.m.postgres.expired.inc_by(n),
                Err(e) => {
                    tracing::warn!(error = %e, table, "cannot delete expired KPI history rows")
                }
            }
        }
    }
}

fn kpi_key(r: &KpiRow) -> (&str, &str, &str, &str) {
    (&r.kpi, &r.kind, &r.start, &r.dimensions)
}

fn board_key(r: &BoardRow) -> (&str, &str, &str) {
    (&r.board, &r.kind, &r.start)
}

type Unwritten = (anyhow::Error, Vec<KpiRow>, Vec<BoardRow>);

/// One connection's share, in batches; on a failure, what is not written.
async fn write_share(
    conn: Arc<Conn>,
    mut k: Vec<KpiRow>,
    mut b: Vec<BoardRow>,
    size: usize,
    m: Arc<Metrics>,
) -> Result<(), Unwritten> {
    let mut done = 0;
    while done < k.len() {
        let end = (done + size).min(k.len());
        let t0 = Instant::now();
        if let Err(e) = write_kpis(&conn, &k[done..end]).await {
            return Err((e.into(), k.split_off(done), b));
        }
        m.postgres.write_seconds.observe(t0.elapsed().as_secs_f64());
        m.postgres
            .rows
            .with_label_values(&["kpi_history"])
            .inc_by((end - done) as u64);
        done = end;
    }
    let mut done = 0;
    while done < b.len() {
        let end = (done + size).min(b.len());
        if let Err(e) = write_boards(&conn, &b[done..end]).await {
            return Err((e.into(), Vec::new(), b.split_off(done)));
        }
        m.postgres
            .rows
            .with_label_values(&["leaderboard_history"])
            .inc_by((end - done) as u64);
        done = end;
    }
    Ok(())
}
