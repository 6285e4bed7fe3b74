//! Lead cohorts: conversion of the leads created in a window, re-emitted
//! when a later conversion changes a cohort day, and retired after
//! `windows.cohort_horizon`.

use super::*;

impl Engine {
    /// Cohort conversion of the calendar windows containing a cohort day
    /// that changed; at `finish`, of every window with cohort data, as final.
    pub(super) fn emit_cohorts(&mut self, finish: bool) {
        let days: Vec<i64> = self
            .state
            .cohorts
            .iter()
            .filter(|(_, c)| c.dirty || finish)
            .map(|(d, _)| *d)
            .collect();
        let mut windows: std::collections::BTreeSet<(u8, i64)> = Default::default();
        let cal = self.settings.cal;
        for d in &days {
            if let Some(c) = self.state.cohorts.get_mut(d) {
                c.dirty = false;
            }
            for (set, c) in self.state.calendar.iter().enumerate() {
                if c.emit {
                    windows.insert((set as u8, cal.bounds(c.kind, *d).start));
                }
            }
        }
        for (set, start) in windows {
            self.emit_cohort_window(set, start, finish);
        }
        if finish {
            self.state.cohort_revisions.clear();
        }
    }

    pub(super) fn emit_cohort_window(&mut self, set: u8, start: i64, is_final: bool) {
        let kind = self.state.calendar[set as usize].kind;
        let cal = self.settings.cal;
        let b = cal.bounds(kind, start);
        // (created, converted) by scope: plain counts, no accumulators.
        let mut rolled: FxHashMap<Scope, (u64, u64)> = FxHashMap::default();
        rolled.entry(ALL).or_default();
        for (_, c) in self.state.cohorts.range(b.start..b.end) {
            for (k, (created, converted)) in &c.cells {
                for s in scopes(k) {
                    let e = rolled.entry(s).or_default();
                    e.0 += created;
                    e.1 += converted;
                }
            }
        }
        let rev = self.state.cohort_revisions.entry((set, start)).or_default();
        *rev += 1;
        let w = Win {
            kind: kind.as_str().into(),
            start: b.start,
            end: b.end,
            label: cal.label(kind, b.start),
            revision: *rev,
            is_final,
            info: Default::default(),
        };
        let mut cells: Vec<(Scope, (u64, u64))> = rolled.into_iter().collect();
        cells.sort_unstable();
        for (s, (created, converted)) in cells {
            let v = ratio(
                kpi::COHORT_CONVERSION,
                converted as f64,
                created as f64,
                created,
            );
            self.push(&w, s, &[v]);
        }
    }

    /// Cohort windows whose leads are all past the entity TTL can no
    /// longer change: emitted as final, and their days dropped.
    pub(crate) fn retire_cohorts(&mut self) {
        let horizon = self.state.clock.saturating_sub(self.settings.entity_ttl);
        let cal = self.settings.cal;
        let done: Vec<(u8, i64)> = self
            .state
            .cohort_revisions
            .keys()
            .filter(|(set, start)| {
                let kind = self.state.calendar[*set as usize].kind;
                cal.bounds(kind, *start).end <= horizon
            })
            .copied()
            .collect();
        for (set, start) in done {
            self.emit_cohort_window(set, start, true);
            self.state.cohort_revisions.remove(&(set, start));
        }
        let keep_from = self
            .state
            .cohort_revisions
            .keys()
            .map(|(_, s)| *s)
            .min()
            .unwrap_or(i64::MAX)
            .min(horizon);
        self.state.cohorts = self.state.cohorts.split_off(&keep_from);
    }
}
