//! The KPI history sink's metrics (`salespulse_postgres_*`).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Writes to PostgreSQL (docs/history.md).
pub struct PostgresMetrics {
    /// Rows upserted, by table (`kpi_history`, `leaderboard_history`).
    pub rows: IntCounterVec,
    /// Statements that failed (each is tried again: nothing is dropped).
    pub errors: IntCounter,
    /// 1 while the sink cannot write and holds its rows (the engine waits
    /// once the queue is full), else 0.
    pub paused: IntGauge,
    /// Total time spent paused, in milliseconds.
    pub paused_ms: IntCounter,
    /// Emissions waiting in the hand-over to the writer.
    pub queued: IntGauge,
    /// Time to write one batch.
    pub write_seconds: Histogram,
    /// Non-final rows deleted by `postgres.non_final_retention`.
    pub expired: IntCounter,
}

impl PostgresMetrics {
    pub(super) fn new(r: &Registry) -> PostgresMetrics {
        let rows = IntCounterVec::new(
            Opts::new(
                "salespulse_postgres_rows_total",
                "Rows upserted into the KPI history, by table.",
            ),
            &["table"],
        )
        .expect("metric");
        for t in ["kpi_history", "leaderboard_history"] {
            rows.with_label_values(&[t]);
        }
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("metric");
        let m = PostgresMetrics {
            rows,
            errors: counter(
                "salespulse_postgres_errors_total",
                "KPI history writes that failed and were tried again.",
            ),
            paused: gauge(
                "salespulse_postgres_paused",
                "1 while the KPI history sink cannot write (rows are held; the engine waits once its queue is full).",
            ),
            paused_ms: counter(
                "salespulse_postgres_paused_milliseconds_total",
                "Time the KPI history sink spent unable to write.",
            ),
            queued: gauge(
                "salespulse_postgres_queued",
                "Emissions waiting for the KPI history writer.",
            ),
            write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "salespulse_postgres_write_seconds",
                    "Time to upsert one batch into the KPI history.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            )
            .expect("metric"),
            expired: counter(
                "salespulse_postgres_expired_rows_total",
                "Non-final KPI history rows deleted by postgres.non_final_retention.",
            ),
        };
        r.register(Box::new(m.rows.clone())).expect("register");
        r.register(Box::new(m.errors.clone())).expect("register");
        r.register(Box::new(m.paused.clone())).expect("register");
        r.register(Box::new(m.paused_ms.clone())).expect("register");
        r.register(Box::new(m.queued.clone())).expect("register");
        r.register(Box::new(m.write_seconds.clone()))
            .expect("register");
        r.register(Box::new(m.expired.clone())).expect("register");
        m
    }
}
