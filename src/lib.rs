//! salespulse: live sales KPIs from a CRM event stream.
//!
//! # Layout
//!
//! The folders follow the data path, from the words every part shares
//! to the loops that run them. A module imports only from modules listed
//! before it here (test code aside); `tests/layout.rs` checks that, and
//! that no file is over 700 lines and no function over 150.
//!
//! The vocabulary:
//! - [`window`]: calendar windows in a time zone (DST, ISO weeks, fiscal
//!   years), rolling sub-buckets, window names, time formatting.
//! - [`event`]: the typed event model (CloudEvents attributes + typed
//!   `data`) and the dimension names.
//! - [`intern`]: interned dimension values; [`agg`]: mergeable
//!   accumulators (counts, integer sums, DDSketch).
//! - [`kpi`]: the KPI catalogue and every KPI's formula.
//! - `decode/` ([`decode`]): bytes → [`event::Event`] for CloudEvents JSON
//!   and protobuf, validation, and the reason of every rejection.
//! - [`privacy`]: the keyed pseudonyms entities are kept under, and the
//!   redaction of personal fields in dead letters.
//! - [`output`]: KPI records, leaderboards, dead letters.
//! - `config/` ([`config`]): the TOML / environment configuration as plain
//!   data, one file per large section (`kafka`, `alerts`, `postgres`), and its
//!   validation (`validate`).
//!
//! The engine:
//! - `alert/` ([`alert`]): alert rules over KPI records and their
//!   lifecycle (part of the engine state), notification texts.
//! - `engine/` ([`engine`]): the single-writer core. `apply/` applies an
//!   event to entity state and aggregates, one file per entity (`lead`,
//!   `deal`, `customer`, `activity`); `emit/` turns buckets into records
//!   (`family`: KPIs beyond one rollup, `cohort`: lead cohorts); `state`
//!   is the serializable state; `hold` the events waiting for an entity or
//!   the clock; `merge/` the exact scale-out (partials and their merge).
//! - [`checkpoint`]: the engine state and input position saved atomically
//!   to a file, and restored with checks.
//!
//! Around it:
//! - `metrics/` ([`metrics`]): every Prometheus metric, and the KPI view
//!   `/metrics` and `/kpis` show; [`http`]: the endpoints.
//! - `demo/` ([`demo`]): the seeded synthetic CRM and the Maven CRM import.
//! - `sources/` ([`sources`]): files, stdin and the demo generator, read in
//!   batches.
//! - `sinks/` ([`sinks`]): the publish step every loop shares, the record
//!   and dead-letter files, the KPI history in PostgreSQL (`postgres/`:
//!   the writer, and its tables in `schema`),
//!   and alert delivery (Slack, e-mail, Alertmanager, webhooks, Kafka,
//!   files).
//! - `run/` ([`run`]): the file / live loop, the run report, shutdown,
//!   replay progress.
//! - `kafka/` ([`kafka`]): the Kafka loop — clients and topics (`client`),
//!   producing and commits (`produce`), per-partition sources and the
//!   merger (`source`), restore from the changelog (`restore`,
//!   `changelog`), the loop (`run`) cut into the steps of a turn
//!   (`turn`), and the KPI topic loader into PostgreSQL (`load`).
//! - [`admin`]: operators' commands on what salespulse remembers
//!   (`salespulse erase`, offline in a checkpoint or through Kafka).
//!
//! # Finding a KPI
//!
//! Its name, unit and help are its entry in [`kpi::CATALOGUE`]
//! (`src/kpi.rs`), and its formula is [`kpi::window_kpis`] over a merged
//! [`agg::Acc`]; what feeds the accumulator is in
//! `engine/apply/<entity>.rs`; KPIs that need more than one rollup
//! (quota, progress, A/B, leaderboards, cohorts) are in `engine/emit/`.
//! Its tests are in `tests/kpi_formulas.rs` (the formula on hand-built
//! events) and `tests/kpi_catalogue.rs` (every KPI, every dimension,
//! against a plain computation); its metric is `salespulse_kpi_<name>`
//! (docs/prometheus.md), and docs/kpis.md documents it.

pub mod admin;
pub mod agg;
pub mod alert;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod demo;
pub mod engine;
pub mod event;
pub mod http;
pub mod intern;
pub mod kafka;
pub mod kpi;
pub mod metrics;
pub mod output;
pub mod privacy;
pub mod run;
pub mod sinks;
pub mod sources;
pub mod window;

/// Types generated from `proto/salespulse/v1/events.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/salespulse.v1.rs"));
}
