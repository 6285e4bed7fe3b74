//! A fresh engine state for the given settings.

use super::state::*;
use super::Settings;
use crate::decode::RejectReason;
use crate::event::EventType;
use crate::window::CalendarKind;
use std::collections::BTreeMap;

impl State {
    /// The state of an engine that has seen nothing.
    pub fn new(settings: &Settings) -> State {
        State {
            interner: Default::default(),
            leads: Default::default(),
            deals: Default::default(),
            customers: Default::default(),
            rep_info: Default::default(),
            quotas: Default::default(),
            dedup: Default::default(),
            max_time: i64::MIN,
            clock: i64::MIN,
            last_sweep: i64::MIN,
            last_expiry: i64::MIN,
            next_expiry: i64::MAX,
            expiry_index: Default::default(),
            stalled: Default::default(),
            stall_index: Default::default(),
            awaiting: Default::default(),
            sla_index: Default::default(),
            slip: Default::default(),
            forecast: Default::default(),
            rfm: Default::default(),
            calendar: std::iter::once(CalendarKind::Day)
                .chain(
                    settings
                        .calendar
                        .iter()
                        .copied()
                        .filter(|k| *k != CalendarKind::Day),
                )
                .map(|kind| CalendarSet {
                    kind,
                    emit: settings.calendar.contains(&kind),
                    buckets: BTreeMap::new(),
                })
                .collect(),
            rolling: settings
                .rolling
                .iter()
                .map(|&(span, width)| RollingSet {
                    span,
                    width,
                    buckets: BTreeMap::new(),
                    revision: 0,
                    dirty: false,
                })
                .collect(),
            rolling_staged: None,
            rolling_flushed: i64::MIN,
            pipeline: Default::default(),
            gauges_dirty: false,
            gauges_revision: 0,
            ledger: Default::default(),
            last_closed_month: None,
            alerts: Default::default(),
            absent_seen: Default::default(),
            absent_clock: i64::MIN,
            cohorts: Default::default(),
            cohort_revisions: Default::default(),
            headcount: Default::default(),
            market_size: Default::default(),
            admitted: Default::default(),
            waiting: Default::default(),
            stats: Stats {
                events_in: vec![0; EventType::ALL.len()],
                rejected: vec![0; RejectReason::ALL.len()],
                ..Default::default()
            },
        }
    }
}
