//! `[postgres]`: the KPI history sink (docs/history.md).

use super::{ConfigError, Dur};
use serde::{Deserialize, Serialize};
use std::fmt;

/// KPI history in PostgreSQL: every KPI and leaderboard record upserted
/// into one row per (kpi, window kind, window start, dimensions), the
/// highest revision kept. Off while `url` is empty.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Connection string, as a URL (`postgres://user:password@host:5432/db`)
    /// or libpq key/values (`host=… port=… user=… dbname=…`); empty = no
    /// history sink. Never logged (it may hold a password); set it from
    /// the environment (`SALESPULSE_POSTGRES__URL`) to keep it out of files.
    pub url: String,
    /// Schema of the tables (created when missing).
    pub schema: String,
    /// Create or migrate the tables at start-up (`salespulse db migrate`
    /// does it by hand). Off: the tables must exist at the current version.
    pub migrate_on_start: bool,
    /// Window kinds written: calendar kinds, `rolling_*` and `gauge`
    /// (gauges are kept as one row per local day: the day's last value).
    /// Empty = every calendar window and `gauge`.
    pub windows: Vec<String>,
    /// Most rows in one statement.
    pub batch_size: usize,
    /// Connections written over at once, each with its share of the rows
    /// (the database's work on a batch is most of a write's cost).
    pub connections: usize,
    /// Longest a record waits in memory before it is written.
    pub flush_interval: Dur,
    /// Emissions the hand-over to the writer holds; when the database is
    /// slow or down and it is full, the engine waits (backpressure).
    pub queue_capacity: usize,
    /// Rows still not final and not updated for this long are deleted
    /// (windows whose run stopped, superseded rolling windows); `0s` = kept.
    pub non_final_retention: Dur,
    /// Longest wait between two attempts while the database cannot be
    /// reached (the wait starts at 100 ms and doubles).
    pub max_backoff: Dur,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            schema: "salespulse".into(),
            migrate_on_start: true,
            windows: Vec::new(),
            batch_size: 2000,
            connections: 2,
            flush_interval: Dur::from_str_static("1s"),
            queue_capacity: 64,
            non_final_retention: Dur::from_str_static("0s"),
            max_backoff: Dur::from_str_static("10s"),
        }
    }
}

impl PostgresConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Whether records of window kind `kind` are written, by `windows`
    /// (`postgres.windows`) and the calendar kinds computed.
    pub fn kept(windows: &[String], kind: &str, calendar: &[String]) -> bool {
        if windows.is_empty() {
            kind == "gauge" || calendar.iter().any(|c| c == kind)
        } else {
            windows.iter().any(|w| w == kind)
        }
    }

    pub(super) fn validate(&self, kinds: &[String], errs: &mut Vec<ConfigError>) {
        let mut err = |field: &str, problem: String, fix: &str| {
            errs.push(ConfigError {
                field: field.into(),
                problem,
                fix: fix.into(),
            })
        };
        if !self.enabled() {
            return;
        }
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            err(
                "postgres.url",
                format!("not a PostgreSQL connection string ({e})"),
                "write postgres://user:password@host:5432/dbname or \"host=… port=… user=… dbname=…\"",
            );
        }
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ident(&self.schema) {
            err(
                "postgres.schema",
                format!("{:?} is not a plain SQL identifier", self.schema),
                "use lower-case letters, digits and _ (starting with a letter), e.g. \"salespulse\"",
            );
        }
        for w in &self.windows {
            if !kinds.contains(w) {
                err(
                    "postgres.windows",
                    format!("{w:?} is not a window kind of this configuration"),
                    &format!("use some of {}", kinds.join(", ")),
                );
            }
        }
        if self.batch_size == 0 {
            err(
                "postgres.batch_size",
                "0 rows per statement".into(),
                "use a positive number, e.g. 2000",
            );
        }
        if !(1..=32).contains(&self.connections) {
            err(
                "postgres.connections",
                format!("{} connections", self.connections),
                "use 1 to 32, e.g. 2",
            );
        }
        if self.queue_capacity == 0 {
            err(
                "postgres.queue_capacity",
                "0 emissions".into(),
                "use a positive number, e.g. 64",
            );
        }
        if self.max_backoff.0.is_zero() {
            err(
                "postgres.max_backoff",
                "0s would retry a down database in a busy loop".into(),
                "use e.g. \"10s\"",
            );
        }
    }
}

/// Never prints the connection string: it may hold a password.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field(
                "url",
                &if self.url.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("schema", &self.schema)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("windows", &self.windows)
            .field("batch_size", &self.batch_size)
            .field("connections", &self.connections)
            .field("flush_interval", &self.flush_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("non_final_retention", &self.non_final_retention)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}
