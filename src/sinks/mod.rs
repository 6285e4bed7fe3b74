//! Where KPI records, leaderboards, notifications and dead letters go.
//!
//! Every loop (file and live mode in [`crate::run`], the Kafka loop in
//! [`crate::kafka`]) publishes through the same step, [`take`]; then it
//! writes the records where its run sends them: [`mod@file`] (JSON lines, a
//! dead-letter file) or Kafka topics, and — when `[postgres]` is set —
//! hands them to the KPI history writer ([`postgres`]). [`alert`] delivers notifications
//! along their routes (Slack, e-mail, Alertmanager, webhooks, Kafka,
//! files), each route on its own task.

pub mod alert;
pub mod file;
pub mod postgres;

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::output::{KpiRecord, LeaderboardRecord};
use alert::Dispatcher;

/// The publish step every loop shares: the engine's new records and
/// leaderboards, its notifications handed to `alerts`, `/metrics`' KPI
/// view updated under one lock, and the records counted in `records`.
/// The caller writes the returned records out.
pub fn take(
    engine: &mut Engine,
    m: &Metrics,
    records: &mut u64,
    alerts: &Dispatcher,
) -> (Vec<KpiRecord>, Vec<LeaderboardRecord>) {
    let recs = engine.take_records();
    let boards = engine.take_leaderboards();
    alerts.dispatch(engine.take_notifications());
    *records += recs.len() as u64;
    m.observe(&recs, &boards);
    (recs, boards)
}
