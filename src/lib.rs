//! salespulse: live sales KPIs from a CRM event stream.
//!
//! # Layout
//!
//! The modules follow the data path:
//!
//! - [`event`]: the one typed event model (CloudEvents attributes + typed `data`).
//! - [`decode`]: bytes → [`event::Event`] for CloudEvents JSON (a lean
//!   reader for the common shape, serde_json for the rest) and protobuf,
//!   validation, and the [`decode::RejectReason`] of every rejection.
//! - [`window`]: calendar windows in a time zone (DST, ISO weeks, fiscal
//!   years) and rolling sub-buckets.
//! - [`agg`]: mergeable accumulators (counts, integer sums, DDSketch).
//! - [`engine`]: the single-writer core: entity state, dedup, watermark,
//!   window buckets, gauges, and the records they emit.
//! - [`kpi`]: the KPI catalogue and its formulas.
//! - [`output`]: KPI records and dead letters.
//! - [`config`]: the TOML / environment configuration and its validation.
//! - [`metrics`]: every Prometheus metric, and the KPI table the HTTP
//!   handlers read.
//! - [`pipeline`], [`http`]: the thin async shell (source → engine → sinks,
//!   `/metrics`, `/healthz`); [`kafka`]: the consumer-group source and the
//!   KPI / dead-letter topics, with commits after delivery.
//! - [`alert`]: alert rules over KPI records, their lifecycle (part of the
//!   engine state), and delivery to Kafka, Slack, e-mail, Alertmanager,
//!   webhooks and files.
//! - [`checkpoint`]: the engine state and input position saved atomically
//!   to a file, and restored with checks.
//! - [`generator`]: the seeded synthetic CRM of the demo; [`maven`]: the
//!   Maven CRM CSV → CloudEvents conversion.

pub mod agg;
pub mod alert;
pub mod changelog;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod engine;
pub mod event;
pub mod generator;
pub mod http;
pub mod intern;
pub mod kafka;
pub mod kpi;
pub mod maven;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod window;

/// Types generated from `proto/salespulse/v1/events.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/salespulse.v1.rs"));
}
