//! The KPI history's tables: migrations, connections, and the two
//! upsert statements (one row per key, the highest revision kept).

use super::{BoardRow, KpiRow};
use anyhow::Context as _;
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
    -- breakdown follows from dimensions: in the key, it makes the key's
    -- prefix the index of the panel queries (kpi, kind, breakdown, time).
    PRIMARY KEY (kpi, window_kind, breakdown, window_start, dimensions)
);
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

/// A connection with its two upsert statements.
pub(super) struct Conn {
    pub(super) client: Client,
    kpi: Statement,
    board: Statement,
}

/// The connection's two upsert statements, prepared.
pub(super) async fn prepare(client: Client, s: &str) -> anyhow::Result<Conn> {
    {
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
                 ON CONFLICT (kpi, window_kind, breakdown, window_start, dimensions) DO UPDATE SET
                     window_end = EXCLUDED.window_end,
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
}

pub(super) async fn write_kpis(c: &Conn, rows: &[KpiRow]) -> Result<u64, tokio_postgres::Error> {
    let col = |f: fn(&KpiRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let num = |f: fn(&KpiRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let (kpi, kind, start) = (col(|r| &r.kpi), col(|r| &r.kind), col(|r| &r.start));
    let (dims, bd, end, label, unit) = (
        col(|r| &r.dimensions),
        col(|r| &r.breakdown),
        col(|r| &r.end),
        col(|r| &r.label),
        col(|r| &r.unit),
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

pub(super) async fn write_boards(
    c: &Conn,
    rows: &[BoardRow],
) -> Result<u64, tokio_postgres::Error> {
    let col = |f: fn(&BoardRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let fin: Vec<bool> = rows.iter().map(|r| r.is_final).collect();
    let rev: Vec<i64> = rows.iter().map(|r| r.revision).collect();
    c.client
        .execute(
            &c.board,
            &[
                &col(|r| &r.board),
                &col(|r| &r.kind),
                &col(|r| &r.start),
                &col(|r| &r.end),
                &col(|r| &r.label),
                &col(|r| &r.unit),
                &col(|r| &r.entries),
                &fin,
                &rev,
            ],
        )
        .await
}
