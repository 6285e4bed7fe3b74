//! Speed-to-lead: a lead not contacted within `sla.first_contact` of its
//! creation (working time only, with `sla.working_hours`) breaches the
//! SLA when the watermark passes its deadline — not only when the late
//! contact finally comes. `first_contact_sla_breaches` counts it in the
//! window of its deadline; a contact (or a conversion) by the deadline
//! counts as met in the window of the contact; the
//! `leads_awaiting_first_contact` gauge holds the leads not contacted yet.

use super::*;
use crate::config::sla::WorkingHours;
use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;

/// The instant `minute` of the day `date` starts in `tz` (the first
/// instant after it when a DST gap swallows it).
fn at(tz: Tz, date: NaiveDate, minute: u32) -> i64 {
    let (date, minute) = if minute >= 1440 {
        (
            date.succ_opt().expect("a date before the year 262143"),
            minute - 1440,
        )
    } else {
        (date, minute)
    };
    let naive = date
        .and_hms_opt(minute / 60, minute % 60, 0)
        .expect("a minute of the day");
    for shift in 0..4 {
        let n = naive + chrono::Duration::minutes(30 * shift);
        if let Some(t) = tz.from_local_datetime(&n).earliest() {
            return t.timestamp_millis();
        }
    }
    naive.and_utc().timestamp_millis()
}

/// The first-contact deadline of a lead created at `created`: `ms` of
/// working time later (of any time without working hours).
pub fn deadline(created: i64, ms: i64, working: Option<WorkingHours>, tz: Tz) -> i64 {
    let Some(w) = working else {
        return created.saturating_add(ms);
    };
    let mut left = ms;
    let mut date = match tz.timestamp_millis_opt(created).single() {
        Some(t) => t.date_naive(),
        None => return created.saturating_add(ms),
    };
    // At most a few years of working days (a long SLA, one working day a week).
    for _ in 0..5_000 {
        if w.days & (1 << date.weekday().num_days_from_monday()) != 0 {
            let (start, end) = (at(tz, date, w.start_min), at(tz, date, w.end_min));
            let from = start.max(created);
            if from < end {
                if left <= end - from {
                    return from + left;
                }
                left -= end - from;
            }
        }
        date = match date.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    created.saturating_add(ms)
}

/// Rebuilds the SLA index of a restored state: the leads whose SLA is
/// still open, under their deadline.
pub fn index_slas(settings: &crate::engine::Settings, state: &mut State) {
    state.sla_index.clear();
    let Some((ms, working)) = settings.first_contact else {
        return;
    };
    for (k, l) in &state.leads {
        if l.flags & (CONTACTED | CONVERTED | SLA_BREACHED) == 0 {
            let d = deadline(l.created, ms, working, settings.cal.tz);
            sla_push(&mut state.sla_index, d, *k);
        }
    }
}

/// Adds lead `id` with deadline `d` to the SLA index, after the leads
/// with the same or an earlier deadline.
fn sla_push(index: &mut std::collections::VecDeque<(i64, u128)>, d: i64, id: u128) {
    crate::engine::facts::push_sorted(index, (d, id), |(d, _)| *d);
}

impl Engine {
    /// A new lead: awaiting its first contact, its SLA timed.
    pub(super) fn sla_open(&mut self, id: u128, created: i64, key: DimKey) {
        self.awaiting_add(key, 1);
        if let Some((ms, working)) = self.settings.first_contact {
            let d = deadline(created, ms, working, self.settings.cal.tz);
            sla_push(&mut self.state.sla_index, d, id);
        }
    }

    fn awaiting_add(&mut self, key: DimKey, n: i64) {
        let key = self.mask(key);
        let v = self.state.awaiting.entry(key).or_default();
        *v += n;
        if *v == 0 {
            self.state.awaiting.remove(&key);
        }
        self.state.gauges_dirty = true;
    }

    /// Lead `id` (with `flags` before this event and dimensions
    /// `lead_key`) is contacted — or converted — at `t`: it leaves the
    /// awaiting gauge; true when its SLA is met (the caller counts it
    /// with the contact, in the same update); if the deadline had passed
    /// unnoticed (the watermark was behind), the breach counts now.
    pub(super) fn sla_contact(
        &mut self,
        flags: u8,
        created: i64,
        lead_key: DimKey,
        t: i64,
    ) -> bool {
        if flags & (CONTACTED | CONVERTED) != 0 {
            return false;
        }
        self.awaiting_add(lead_key, -1);
        let Some((ms, working)) = self.settings.first_contact else {
            return false;
        };
        let d = deadline(created, ms, working, self.settings.cal.tz);
        if flags & SLA_BREACHED != 0 {
            if t <= d {
                // In time after all: the contact arrived after the
                // watermark had passed the deadline. The breach counted
                // at the deadline is withdrawn (its windows are still
                // open: the contact is not late), so the counts depend on
                // event times only, not on arrival order.
                self.add_to(d, lead_key, false, true, |a| {
                    a.sla_breached = a.sla_breached.saturating_sub(1)
                });
            }
            return t <= d;
        }
        if t > d {
            let at = d.max(self.cutoff());
            self.add(at, lead_key, |a| a.sla_breached += 1);
        }
        t <= d
    }

    /// A lead leaves memory (TTL, erasure) with `flags` and `key`.
    pub(in crate::engine) fn sla_forget(&mut self, flags: u8, key: DimKey) {
        if flags & (CONTACTED | CONVERTED) == 0 {
            self.awaiting_add(key, -1);
        }
    }

    /// Counts the breaches of the leads whose deadline the watermark has
    /// passed without a contact, each at its deadline (or at `open_from`,
    /// the oldest instant still open, if later).
    pub(in crate::engine) fn sla_pass(&mut self, open_from: i64) {
        let wm = self.watermark();
        while let Some(&(d, id)) = self.state.sla_index.front() {
            if d > wm {
                break;
            }
            self.state.sla_index.pop_front();
            let Some(l) = self.state.leads.get_mut(&id) else {
                continue;
            };
            if l.flags & (CONTACTED | CONVERTED | SLA_BREACHED) != 0 {
                continue;
            }
            l.flags |= SLA_BREACHED;
            let key = l.dims;
            // At the deadline: a contact dated before it that still
            // comes withdraws it from there (see `sla_contact`).
            self.add(d.max(open_from), key, |a| a.sla_breached += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sla_push;

    #[test]
    fn the_sla_index_keeps_deadline_order_then_arrival_order() {
        let mut q = std::collections::VecDeque::new();
        for (d, id) in [(10, 1), (20, 2), (15, 3), (20, 4), (5, 5), (15, 6), (25, 7)] {
            sla_push(&mut q, d, id);
        }
        let want = [(5, 5), (10, 1), (15, 3), (15, 6), (20, 2), (20, 4), (25, 7)];
        assert_eq!(q.into_iter().collect::<Vec<_>>(), want);
    }
}
