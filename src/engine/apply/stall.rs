//! Stalled deals: an open deal with no event (stage change, update or
//! activity) for its stage's `max_days` counts in the `stalled_deals` and
//! `stalled_pipeline_value` gauges from the moment the watermark passes
//! that deadline until its next event (or its close).

use super::*;

/// Rebuilds the stall index of a restored state: every open deal not
/// stalled, under the day its stage's `max_days` runs out.
pub fn index_stalls(settings: &crate::engine::Settings, state: &mut State) {
    state.stall_index.clear();
    for (k, d) in state.deals.iter().filter(|(_, d)| d.is_open()) {
        if state.stalled.contains_key(k) {
            continue;
        }
        if let Some(after) = settings
            .stall_after
            .get(d.stage as usize)
            .copied()
            .flatten()
        {
            let day = d.seen.saturating_add(after).div_euclid(DAY_MS) * DAY_MS;
            state.stall_index.entry(day).or_default().push(*k);
        }
    }
    super::slip::index_overdue(state);
}

impl Engine {
    /// Open deal `id` had an event at `seen`: it is no longer stalled,
    /// and is indexed under the day its stage's `max_days` runs out.
    pub(super) fn deal_alive(&mut self, id: u128, seen: i64) {
        self.unstall(id);
        let Some(d) = self.state.deals.get(&id).filter(|d| d.is_open()) else {
            return;
        };
        if let Some(after) = self.stall_after(d.stage) {
            let day = seen.saturating_add(after).div_euclid(DAY_MS) * DAY_MS;
            self.state.stall_index.entry(day).or_default().push(id);
        }
    }

    fn stall_after(&self, stage: u8) -> Option<i64> {
        self.settings
            .stall_after
            .get(stage as usize)
            .copied()
            .flatten()
    }

    /// Deal `id` leaves the stalled gauges (an event, its close, erasure).
    pub(super) fn unstall(&mut self, id: u128) {
        if let Some((stage, key, cents)) = self.state.stalled.remove(&id) {
            self.stalled_add(stage, key, -1, -cents);
        }
    }

    fn stalled_add(&mut self, stage: u8, key: DimKey, deals: i64, cents: i64) {
        self.pipeline_cell(stage, self.mask(key), |p| {
            p.stalled += deals;
            p.stalled_cents += cents;
        });
    }

    /// Marks stalled the open deals whose deadline the watermark has
    /// passed; visits only the index days that have begun.
    pub(in crate::engine) fn stall_deals(&mut self) {
        self.overdue_pass();
        let wm = self.watermark();
        if self
            .state
            .stall_index
            .first_key_value()
            .is_none_or(|(d, _)| *d > wm)
        {
            return;
        }
        let today = wm.div_euclid(DAY_MS) * DAY_MS;
        let days: Vec<i64> = self
            .state
            .stall_index
            .range(..=today)
            .map(|(d, _)| *d)
            .collect();
        for day in days {
            let keys = self.state.stall_index.remove(&day).unwrap_or_default();
            let mut keep = Vec::new();
            for k in keys {
                let Some(d) = self.state.deals.get(&k).filter(|d| d.is_open()) else {
                    continue;
                };
                if self.state.stalled.contains_key(&k) {
                    continue;
                }
                let Some(after) = self.stall_after(d.stage) else {
                    continue;
                };
                let deadline = d.seen.saturating_add(after);
                let (stage, dims, cents) = (d.stage, d.dims, d.amount_cents);
                let due_day = deadline.div_euclid(DAY_MS) * DAY_MS;
                if deadline <= wm {
                    self.state.stalled.insert(k, (stage, dims, cents));
                    self.stalled_add(stage, dims, 1, cents);
                } else if due_day == day {
                    keep.push(k);
                } else if due_day > day && !self.indexed_later(k, due_day) {
                    // Its stage changed to one with a longer max_days.
                    self.state.stall_index.entry(due_day).or_default().push(k);
                }
            }
            if !keep.is_empty() {
                self.state.stall_index.insert(day, keep);
            }
        }
    }

    /// Whether `k` is already indexed under `day` (an event put it there).
    fn indexed_later(&self, k: u128, day: i64) -> bool {
        self.state
            .stall_index
            .get(&day)
            .is_some_and(|v| v.contains(&k))
    }
}
