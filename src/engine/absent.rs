//! `absent_for` alert rules: the newest event time of each watched series
//! (recorded as events update their series), and their evaluation at an
//! event-time instant: before an event that passes a deadline, after
//! each batch at the clock, and — in live mode — while the input is quiet.
//! In Kafka mode sources export these times with their partials and the
//! merger evaluates the rules on their maximum.

use super::state::*;
use super::Engine;
use std::collections::BTreeMap;

impl Engine {
    /// Evaluates the `absent_for` rules as if event time had moved on by
    /// `quiet_ms` past the clock: live runs call it while their input is
    /// caught up and quiet, so a silent input still fires them (the
    /// event-time clock only moves with events). Notifications wait in
    /// [`Engine::take_notifications`].
    pub fn evaluate_quiet(&mut self, quiet_ms: i64) {
        if self.state.clock != i64::MIN {
            self.evaluate_absent(self.state.clock.saturating_add(quiet_ms.max(0)));
        }
    }

    /// Whether `absent_for` rules are configured (live runs then call
    /// [`Engine::evaluate_quiet`] while the input is quiet).
    pub fn watches_absence(&self) -> bool {
        !self.settings.alerts.absent().is_empty()
    }

    /// Records that an event of the current type updated the series of
    /// `key` (masked) at `t`, for each `absent_for` rule it belongs to.
    pub(super) fn mark_seen(&mut self, t: i64, key: DimKey) {
        let watches = self.settings.alerts.absent();
        'rules: for (w, (rule, ids)) in watches.iter().zip(self.absent_ids.iter_mut()) {
            if !w.counts(self.cur_type) {
                continue;
            }
            let mut k = NO_DIMS;
            for ((d, v), id) in w.filter.iter().zip(ids.iter_mut()) {
                let id = match id {
                    Some(id) => *id,
                    None => match self.state.interner.get(v) {
                        Some(x) => *id.insert(x),
                        None => continue 'rules,
                    },
                };
                if key[*d] != id {
                    continue 'rules;
                }
                k[*d] = id;
            }
            for d in &w.group {
                k[*d] = key[*d];
            }
            let e = self
                .state
                .absent_seen
                .entry((*rule, k))
                .or_insert((i64::MIN, false));
            if t > e.0 {
                e.0 = t;
                if e.1 {
                    // Firing and heard from again: resolved before the
                    // next event counts (its `ended_at` is this event).
                    self.absent_deadline = i64::MIN;
                }
                if let Some(tr) = self.track.as_mut() {
                    tr.seen = true;
                }
            }
        }
    }

    /// Before an event at `t` counts: series whose deadline passed
    /// before `t` fire now (the event may be the one that ends their
    /// silence: it then resolves them at the next evaluation).
    #[inline]
    pub(super) fn absent_before(&mut self, t: i64) {
        if t > self.absent_deadline {
            self.evaluate_absent_at(t, true);
        }
    }

    /// Evaluates the `absent_for` rules at event time `now` (the clock;
    /// in live mode, the clock moved on by the wall time the input has
    /// been quiet: see `Engine::evaluate_quiet`). A rule without
    /// `group_by` watches its one series from the first evaluation even
    /// if no event of it ever came.
    pub(super) fn evaluate_absent(&mut self, now: i64) {
        self.evaluate_absent_at(now, false)
    }

    /// `before`: evaluated before the events at `now` count, so a series
    /// due exactly at `now` is not judged yet (an event at `now` may be its).
    fn evaluate_absent_at(&mut self, now: i64, before: bool) {
        let watches = self.settings.alerts.absent();
        if watches.is_empty() || self.track.is_some() || now == i64::MIN {
            self.absent_deadline = i64::MAX;
            return;
        }
        // Quiet time already counted is not taken back by a clock that
        // is behind it.
        let now = now.max(self.state.absent_clock);
        self.state.absent_clock = now;
        for (w, (rule, ids)) in watches.iter().zip(self.absent_ids.iter_mut()) {
            if w.group.is_empty() {
                let mut k = NO_DIMS;
                for ((d, v), id) in w.filter.iter().zip(ids.iter_mut()) {
                    k[*d] = *id.get_or_insert_with(|| self.state.interner.intern(v));
                }
                self.state
                    .absent_seen
                    .entry((*rule, k))
                    .or_insert((now, false));
            }
        }
        // Only the series whose alert may change: silent past the span
        // and not firing, firing and heard from again, or re-notifying.
        let mut series = Vec::new();
        let mut deadline = i64::MAX;
        for (i, (w, (rule, _))) in watches.iter().zip(&self.absent_ids).enumerate() {
            for ((r, k), (last, firing)) in self.state.absent_seen.iter_mut() {
                if r != rule {
                    continue;
                }
                let due = last.saturating_add(w.span);
                let passed = if before { due < now } else { due <= now };
                let change = if *firing {
                    due > now || w.renotify
                } else {
                    passed
                };
                if !change {
                    if !*firing {
                        deadline = deadline.min(due);
                    }
                    continue;
                }
                *firing = if *firing { due <= now } else { passed };
                if !*firing {
                    deadline = deadline.min(due);
                }
                let dims: BTreeMap<String, String> = w
                    .filter
                    .iter()
                    .map(|(d, _)| d)
                    .chain(&w.group)
                    .map(|d| {
                        let v = self.state.interner.name(k[*d]);
                        (DIMS[*d].to_string(), v.to_string())
                    })
                    .collect();
                series.push((i, dims, *last));
            }
        }
        self.absent_deadline = deadline;
        if series.is_empty() {
            return;
        }
        series.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let notes = self
            .settings
            .alerts
            .evaluate_absent(&mut self.state.alerts, &series, now);
        self.notes.extend(notes);
    }
}
