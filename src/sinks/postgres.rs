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
//! the database before the input position moves past it.

use crate::config::{Config, PostgresConfig};
use crate::metrics::Metrics;
use crate::output::{KpiRecord, LeaderboardRecord};
use anyhow::Context as _;
use chrono::{DateTime, TimeZone as _};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls, Statement};

/// Schema version this binary writes.
pub const SCHEMA_VERSION: i32 = 1;

/// The migrations in order: (version, SQL; `{schema}` is the schema).
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE {schema}.kpi_history (
    kpi          text             NOT NULL,
    window_kind  text             NOT NULL,
    window_start timestamptz      NOT NULL,
    dimensions   jsonb            NOT NULL DEFAULT '{}',
    breakdown    text             NOT NULL DEFAULT '',
    window_end   timestamptz      NOT NULL,
    window_label text             NOT NULL,
    value        double precision,
    numerator    double precision,
    denominator  double precision,
    sample_size  bigint           NOT NULL,
    unit         text             NOT NULL,
    final        boolean          NOT NULL,
    revision     bigint           NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (kpi, window_kind, window_start, dimensions)
);
CREATE INDEX kpi_history_panel ON {schema}.kpi_history (kpi, window_kind, breakdown, window_start);
CREATE INDEX kpi_history_open ON {schema}.kpi_history (updated_at) WHERE NOT final;
CREATE TABLE {schema}.leaderboard_history (
    board        text        NOT NULL,
    window_kind  text        NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    window_label text        NOT NULL,
    unit         text        NOT NULL,
    entries      jsonb       NOT NULL,
    final        boolean     NOT NULL,
    revision     bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board, window_kind, window_start)
);
CREATE INDEX leaderboard_history_open ON {schema}.leaderboard_history (updated_at) WHERE NOT final;
"#,
)];

/// Opens a connection (its driver runs on its own task). The error never
/// shows the connection string.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("cannot connect to PostgreSQL (postgres.url)")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Creates the schema's tables or brings them to [`SCHEMA_VERSION`], under
/// an advisory lock (instances starting together migrate once). Returns
/// the version found and the version now.
pub async fn migrate(client: &mut Client, schema: &str) -> anyhow::Result<(i32, i32)> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("salespulse.migrate.{schema}")],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .with_context(|| format!("cannot create schema {schema}"))?;
    let from = version_in(&tx, schema).await?;
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        tx.batch_execute(&sql.replace("{schema}", schema))
            .await
            .with_context(|| format!("migration {v} of schema {schema} failed"))?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[v],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((from, SCHEMA_VERSION))
}

async fn version_in(c: &impl tokio_postgres::GenericClient, schema: &str) -> anyhow::Result<i32> {
    let from: i32 = c
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"),
            &[],
        )
        .await?
        .get(0);
    if from > SCHEMA_VERSION {
        anyhow::bail!(
            "schema {schema} is at version {from}, newer than this binary's {SCHEMA_VERSION} (fix: run a newer salespulse, or set postgres.schema to another schema)"
        );
    }
    Ok(from)
}

/// Checks that the tables exist at this binary's version (for
/// `postgres.migrate_on_start = false`).
pub async fn check_version(client: &Client, schema: &str) -> anyhow::Result<()> {
    let v = version_in(client, schema).await.with_context(|| {
        format!("schema {schema} has no salespulse tables (fix: run `salespulse db migrate`, or set postgres.migrate_on_start = true)")
    })?;
    if v < SCHEMA_VERSION {
        anyhow::bail!(
            "schema {schema} is at version {v}, this binary writes version {SCHEMA_VERSION} (fix: run `salespulse db migrate`)"
        );
    }
    Ok(())
}

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
    all: bool,
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
            all: false,
        }
    }

    /// Every window kind (the loader: the engine chose already).
    pub fn every_window(mut self) -> Rows {
        self.all = true;
        self
    }

    fn keeps(&self, kind: &str) -> bool {
        if self.all {
            return true;
        }
        let p = PostgresConfig {
            windows: self.windows.clone(),
            ..PostgresConfig::default()
        };
        p.keeps(kind, &self.calendar)
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
        PgSink::start_with(cfg, Rows::new(cfg), m).await
    }

    pub async fn start_with(cfg: &Config, rows: Rows, m: Arc<Metrics>) -> anyhow::Result<PgSink> {
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
        let writer = Writer {
            url: p.url.clone(),
            schema: p.schema.clone(),
            conn: None,
            kpis: HashMap::new(),
            boards: HashMap::new(),
            m: m.clone(),
            batch_size: p.batch_size,
            max_backoff: p.max_backoff.0,
            retention: p.non_final_retention.0,
            last_expire: None,
        };
        let conn = writer.prepare(client).await?;
        let writer = Writer {
            conn: Some(conn),
            ..writer
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

/// A connection with its two upsert statements.
struct Conn {
    client: Client,
    kpi: Statement,
    board: Statement,
}

struct Writer {
    url: String,
    schema: String,
    conn: Option<Conn>,
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
    async fn prepare(&self, client: Client) -> anyhow::Result<Conn> {
        let s = &self.schema;
        let kpi = client
            .prepare(&format!(
                "INSERT INTO {s}.kpi_history AS h (kpi, window_kind, window_start, dimensions,
                     breakdown, window_end, window_label, value, numerator, denominator,
                     sample_size, unit, final, revision, updated_at)
                 SELECT t.kpi, t.kind, t.ws::timestamptz, t.dims::jsonb, t.bd, t.we::timestamptz,
                     t.wl, t.v, t.n, t.d, t.ss, t.u, t.f, t.r, now()
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::float8[], $9::float8[], $10::float8[],
                     $11::int8[], $12::text[], $13::bool[], $14::int8[])
                     AS t(kpi, kind, ws, dims, bd, we, wl, v, n, d, ss, u, f, r)
                 ON CONFLICT (kpi, window_kind, window_start, dimensions) DO UPDATE SET
                     breakdown = EXCLUDED.breakdown, window_end = EXCLUDED.window_end,
                     window_label = EXCLUDED.window_label, value = EXCLUDED.value,
                     numerator = EXCLUDED.numerator, denominator = EXCLUDED.denominator,
                     sample_size = EXCLUDED.sample_size, unit = EXCLUDED.unit,
                     final = EXCLUDED.final, revision = EXCLUDED.revision, updated_at = now()
                 WHERE h.revision < EXCLUDED.revision"
            ))
            .await
            .context("cannot prepare the kpi_history upsert")?;
        let board = client
            .prepare(&format!(
                "INSERT INTO {s}.leaderboard_history AS h (board, window_kind, window_start,
                     window_end, window_label, unit, entries, final, revision, updated_at)
                 SELECT t.b, t.kind, t.ws::timestamptz, t.we::timestamptz, t.wl, t.u,
                     t.e::jsonb, t.f, t.r, now()
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::bool[], $9::int8[])
                     AS t(b, kind, ws, we, wl, u, e, f, r)
                 ON CONFLICT (board, window_kind, window_start) DO UPDATE SET
                     window_end = EXCLUDED.window_end, window_label = EXCLUDED.window_label,
                     unit = EXCLUDED.unit, entries = EXCLUDED.entries, final = EXCLUDED.final,
                     revision = EXCLUDED.revision, updated_at = now()
                 WHERE h.revision < EXCLUDED.revision"
            ))
            .await
            .context("cannot prepare the leaderboard_history upsert")?;
        Ok(Conn { client, kpi, board })
    }

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
                    self.conn = None;
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

    async fn try_write(&mut self) -> anyhow::Result<()> {
        if self.conn.is_none() {
            let client = connect(&self.url).await?;
            self.conn = Some(self.prepare(client).await?);
        }
        let conn = self.conn.as_ref().expect("connected");
        // In key order, so that two writers of the same rows (an engine
        // and a loader) lock them in the same order.
        let mut keys: Vec<KpiKey> = self.kpis.keys().cloned().collect();
        keys.sort_unstable();
        for chunk in keys.chunks(self.batch_size) {
            let rows: Vec<&KpiRow> = chunk.iter().map(|k| &self.kpis[k]).collect();
            let t0 = Instant::now();
            write_kpis(conn, &rows).await?;
            self.m
                .postgres
                .write_seconds
                .observe(t0.elapsed().as_secs_f64());
            self.m
                .postgres
                .rows
                .with_label_values(&["kpi_history"])
                .inc_by(rows.len() as u64);
            for k in chunk {
                self.kpis.remove(k);
            }
        }
        let mut keys: Vec<BoardKey> = self.boards.keys().cloned().collect();
        keys.sort_unstable();
        for chunk in keys.chunks(self.batch_size) {
            let rows: Vec<&BoardRow> = chunk.iter().map(|k| &self.boards[k]).collect();
            write_boards(conn, &rows).await?;
            self.m
                .postgres
                .rows
                .with_label_values(&["leaderboard_history"])
                .inc_by(rows.len() as u64);
            for k in chunk {
                self.boards.remove(k);
            }
        }
        Ok(())
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
        let Some(conn) = &self.conn else { return };
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

async fn write_kpis(c: &Conn, rows: &[&KpiRow]) -> Result<u64, tokio_postgres::Error> {
    let col = |f: fn(&KpiRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<String>>();
    let num = |f: fn(&KpiRow) -> Option<f64>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let (kpi, kind, start) = (
        col(|r| r.kpi.clone()),
        col(|r| r.kind.clone()),
        col(|r| r.start.clone()),
    );
    let (dims, bd, end, label, unit) = (
        col(|r| r.dimensions.clone()),
        col(|r| r.breakdown.clone()),
        col(|r| r.end.clone()),
        col(|r| r.label.clone()),
        col(|r| r.unit.clone()),
    );
    let (v, n, d) = (
        num(|r| r.value),
        num(|r| r.numerator),
        num(|r| r.denominator),
    );
    let ss: Vec<i64> = rows.iter().map(|r| r.sample_size).collect();
    let fin: Vec<bool> = rows.iter().map(|r| r.is_final).collect();
    let rev: Vec<i64> = rows.iter().map(|r| r.revision).collect();
    c.client
        .execute(
            &c.kpi,
            &[
                &kpi, &kind, &start, &dims, &bd, &end, &label, &v, &n, &d, &ss, &unit, &fin, &rev,
            ],
        )
        .await
}

async fn write_boards(c: &Conn, rows: &[&BoardRow]) -> Result<u64, tokio_postgres::Error> {
    let col = |f: fn(&BoardRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<String>>();
    let fin: Vec<bool> = rows.iter().map(|r| r.is_final).collect();
    let rev: Vec<i64> = rows.iter().map(|r| r.revision).collect();
    c.client
        .execute(
            &c.board,
            &[
                &col(|r| r.board.clone()),
                &col(|r| r.kind.clone()),
                &col(|r| r.start.clone()),
                &col(|r| r.end.clone()),
                &col(|r| r.label.clone()),
                &col(|r| r.unit.clone()),
                &col(|r| r.entries.clone()),
                &fin,
                &rev,
            ],
        )
        .await
}
