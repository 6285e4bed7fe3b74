//! Slippage: a deal's `expected_close` (on `crm.deal.created` and
//! `crm.deal.stage_changed`) moved to a later month counts in
//! `deals_pushed` and `slipped_pipeline_value` at that event; an open
//! deal still open once the watermark passes the end of its expected
//! close day counts in the `overdue_deals` and `overdue_pipeline_value`
//! gauges until it closes or is given a later date.

use super::*;
use chrono::Datelike;

/// Rebuilds the overdue index of a restored state.
pub fn index_overdue(state: &mut State) {
    let slip = &mut state.slip;
    slip.overdue_index.clear();
    for (k, at) in &slip.expected {
        if !slip.overdue.contains_key(k) {
            slip.overdue_index.entry(*at).or_default().push(*k);
        }
    }
}

/// Months since year 0 of the local date of instant `t`.
fn month_of(cal: &crate::window::Calendar, t: i64) -> i32 {
    let d = cal.local_date(t);
    d.year() * 12 + d.month0() as i32
}

impl Engine {
    /// Deal `id` (open) had an event at `t` naming `expected_close`
    /// `date` (validated): remembers it, and counts a push to a later
    /// month. Returns whether the date changed.
    pub(super) fn expect_close(&mut self, id: u128, t: i64, date: Option<&str>) -> bool {
        let Ok(Some(date)) = crate::decode::close_date(date) else {
            return false;
        };
        let Some(deal) = self.state.deals.get(&id).filter(|d| d.is_open()) else {
            return false;
        };
        let (key, cents) = (deal.dims, deal.amount_cents);
        let next_day = date.succ_opt().unwrap_or(date);
        let at = self.settings.cal.day_start(next_day);
        let old = self.state.slip.expected.insert(id, at);
        if old == Some(at) {
            return false;
        }
        if let Some(old) = old {
            let cal = &self.settings.cal;
            if month_of(cal, at - 1) > month_of(cal, old - 1) {
                self.add(t, key, |a| {
                    a.deals_pushed += 1;
                    a.slipped_cents += cents;
                });
            }
        }
        true
    }

    /// Deal `id` changed (stage, amount, expected close, open or not):
    /// it leaves the overdue gauges and comes back with its new values
    /// if it is still open past its expected close.
    pub(super) fn refresh_overdue(&mut self, id: u128) {
        if let Some((stage, key, cents)) = self.state.slip.overdue.remove(&id) {
            self.overdue_add(stage, key, -1, -cents);
        }
        let Some(d) = self.state.deals.get(&id).filter(|d| d.is_open()) else {
            self.state.slip.expected.remove(&id);
            return;
        };
        let Some(&at) = self.state.slip.expected.get(&id) else {
            return;
        };
        let cell = (d.stage, d.dims, d.amount_cents);
        if at <= self.watermark() {
            self.state.slip.overdue.insert(id, cell);
            self.overdue_add(cell.0, cell.1, 1, cell.2);
        } else {
            self.state
                .slip
                .overdue_index
                .entry(at)
                .or_default()
                .push(id);
        }
    }

    fn overdue_add(&mut self, stage: u8, key: DimKey, deals: i64, cents: i64) {
        self.pipeline_cell(stage, self.mask(key), |p| {
            p.overdue += deals;
            p.overdue_cents += cents;
        });
    }

    /// Marks overdue the open deals whose expected close the watermark
    /// has passed; visits only the index entries due.
    pub(super) fn overdue_pass(&mut self) {
        let wm = self.watermark();
        while let Some((&at, _)) = self.state.slip.overdue_index.first_key_value() {
            if at > wm {
                break;
            }
            let ids = self
                .state
                .slip
                .overdue_index
                .remove(&at)
                .unwrap_or_default();
            for id in ids {
                let slip = &self.state.slip;
                if slip.expected.get(&id) != Some(&at) || slip.overdue.contains_key(&id) {
                    continue;
                }
                let Some(d) = self.state.deals.get(&id).filter(|d| d.is_open()) else {
                    continue;
                };
                let cell = (d.stage, d.dims, d.amount_cents);
                self.state.slip.overdue.insert(id, cell);
                self.overdue_add(cell.0, cell.1, 1, cell.2);
            }
        }
    }
}
