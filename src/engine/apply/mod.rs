//! Applying one event: entity state, then its contributions to every
//! window bucket (calendar and rolling) and gauge.

mod activity;
mod customer;
mod deal;
mod erase;
mod lead;
mod sla;
mod slip;
mod stall;

pub use sla::deadline as sla_deadline;
pub(super) use sla::index_slas;
pub(super) use stall::index_stalls;

use super::state::*;
use super::Engine;
use crate::agg::Acc;
use crate::decode::{Reject, RejectReason};
use crate::event::{Event, Payload};
use crate::window::{sub_bucket, Bounds, CalendarKind};

/// Adds `d` (±1 or 0) to a count; a withdrawal only takes back what was added.
fn bump(x: &mut u64, d: i64) {
    *x = x
        .checked_add_signed(d)
        .expect("a withdrawal takes back only what was counted");
}

const DAY_MS: i64 = 86_400_000;

fn cents(v: f64) -> i64 {
    (v * 100.0).round() as i64
}

/// The series values beyond `kpis.max_series_per_dimension` fold into.
pub const OTHER: &str = "other";

/// Interns `v` as a value of dimension `d`, or `other` once `d` has `max` values.
fn fold_dim(s: &mut State, max: u32, d: usize, v: Option<&str>) -> u32 {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return 0;
    };
    let id = s.interner.intern(v);
    if id == UNKNOWN || s.admitted.contains(d, id) {
        return id;
    }
    if s.admitted.count(d) < max {
        s.admitted.admit(d, id);
        return id;
    }
    if s.stats.folded.len() < NDIMS {
        s.stats.folded.resize(NDIMS, 0);
    }
    if s.stats.folded[d] == 0 {
        tracing::warn!(
            dimension = DIMS[d],
            value = v,
            cap = max,
            "dimension has reached kpis.max_series_per_dimension: further values are folded into \"other\" (counted in salespulse_series_folded_total)"
        );
    }
    s.stats.folded[d] += 1;
    let other = s.interner.intern(OTHER);
    if !s.admitted.contains(d, other) {
        s.admitted.admit(d, other);
    }
    other
}

impl Engine {
    fn stage_id(&self, name: &str) -> Result<u8, Reject> {
        self.settings
            .stages
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|i| i as u8)
            .ok_or_else(|| {
                Reject::new(
                    RejectReason::UnknownStage,
                    format!(
                        "stage {name:?} is not one of pipeline.stages ({})",
                        self.settings
                            .stages
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// Rejects unknown stages before anything is counted; returns the new stage if any.
    pub(super) fn check_stages(&self, e: &Event<'_>) -> Result<Option<u8>, Reject> {
        match &e.payload {
            Payload::DealCreated(d) => self.stage_id(&d.stage).map(Some),
            Payload::DealStageChanged(d) => {
                self.stage_id(&d.from)?;
                self.stage_id(&d.to).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Interns a dimension value, folding it into `other` once the
    /// dimension has `kpis.max_series_per_dimension` values.
    pub(super) fn dim(&mut self, d: usize, v: Option<&str>) -> u32 {
        fold_dim(&mut self.state, self.settings.max_series, d, v)
    }

    /// Dimension key of a rep-bearing event: team and region from the
    /// event, else config, else what earlier events of that rep said.
    fn rep_dims(&mut self, rep: Option<&str>, team: Option<&str>, region: Option<&str>) -> DimKey {
        let (s, max) = (&mut self.state, self.settings.max_series);
        let rep_id = fold_dim(s, max, REP, rep);
        let mut key = NO_DIMS;
        key[REP] = rep_id;
        let cfg = rep.and_then(|r| self.settings.reps.get(r));
        let team = team.or_else(|| cfg.and_then(|c| c.0.as_deref()));
        let region = region.or_else(|| cfg.and_then(|c| c.1.as_deref()));
        let known = s.rep_info.get(&rep_id).copied().unwrap_or([0, 0]);
        key[TEAM] = match team {
            Some(t) => fold_dim(s, max, TEAM, Some(t)),
            None => known[0],
        };
        key[REGION] = match region {
            Some(r) => fold_dim(s, max, REGION, Some(r)),
            None => known[1],
        };
        if rep_id != 0 && [key[TEAM], key[REGION]] != known {
            s.rep_info.insert(rep_id, [key[TEAM], key[REGION]]);
        }
        key
    }

    /// `key` with the dimensions that are off (`kpis.dimensions`)
    /// cleared, and those that are on but have no value set to [`UNKNOWN`].
    pub(super) fn mask(&self, key: DimKey) -> DimKey {
        let m = &self.settings.dims_mask;
        DimKey(std::array::from_fn(|d| {
            if key[d] == 0 {
                m[d] & UNKNOWN
            } else {
                key[d] & m[d]
            }
        }))
    }

    /// Applies `f` to the series of `key` ("all" and one per dimension) in
    /// the day bucket and the rolling sub-buckets that contain `t` (longer
    /// calendar windows are built from days: see [`CalendarSet`]; wider
    /// rolling windows may get it through the staged sub-bucket: see
    /// [`State::rolling_staged`]).
    fn add(&mut self, t: i64, key: DimKey, f: impl Fn(&mut Acc)) {
        self.add_to(t, key, false, false, f)
    }

    /// [`Engine::add`], and with `pair` to the (product, competitor) pair
    /// of the key too (price observations). With `existing`, only buckets
    /// that exist are updated (a withdrawal: what it takes back is in
    /// them, and a bucket that is gone must not come back).
    fn add_to(&mut self, t: i64, key: DimKey, pair: bool, existing: bool, f: impl Fn(&mut Acc)) {
        let key = self.mask(key);
        if !self.absent_ids.is_empty() && self.cur_time.is_some() {
            self.mark_seen(t, key);
        }
        let day = self.day_cache.day(&self.settings.cal, t);
        match self.state.calendar[0].buckets.get_mut(&day.start) {
            Some(bucket) => {
                bucket.dirty = true;
                bucket.aggs.update(&key, pair, &f);
            }
            None if existing => {}
            None => {
                self.open_day(day);
                let bucket = self.state.calendar[0]
                    .buckets
                    .get_mut(&day.start)
                    .expect("day bucket just opened");
                bucket.dirty = true;
                bucket.aggs.update(&key, pair, &f);
            }
        }
        // Sub-bucket starts, by rolling set: most events fall in the same
        // ones as the event before (no division).
        for (i, set) in self.state.rolling.iter().enumerate() {
            let c = &mut self.sub_cache[i];
            if !(t >= *c && t < c.saturating_add(set.width)) {
                *c = sub_bucket(t, set.width);
            }
        }
        // The newest sub-bucket of the fine set stages the wider sets' events.
        let staged = self.settings.rolling_fine.filter(|&fine| {
            let sub = self.sub_cache[fine];
            match self.state.rolling_staged {
                Some(s) if s == sub => true,
                Some(s) if s > sub => false,
                _ => {
                    self.flush_rolling();
                    let stage = sub > self.state.rolling_flushed;
                    if stage {
                        self.state.rolling_staged = Some(sub);
                    }
                    stage
                }
            }
        });
        for (i, set) in self.state.rolling.iter_mut().enumerate() {
            let sub = self.sub_cache[i];
            if staged.is_some_and(|fine| fine != i) {
                set.dirty = true;
                if let Some(tr) = self.track.as_mut() {
                    tr.rolling(i, sub);
                }
                continue;
            }
            if existing && !set.buckets.contains_key(&sub) {
                continue;
            }
            set.dirty = true;
            if let Some(tr) = self.track.as_mut() {
                tr.rolling(i, sub);
            }
            if !set.buckets.contains_key(&sub) {
                // Sized like the newest sub-bucket: no rehashing of big accumulators as it fills.
                let hint = set
                    .buckets
                    .values()
                    .next_back()
                    .map_or(0, |a| a.scopes.len());
                set.buckets.insert(sub, Rolled::with_capacity(hint));
            }
            let aggs = set.buckets.get_mut(&sub).expect("sub-bucket just opened");
            aggs.update(&key, pair, &f);
        }
    }

    /// Merges the staged sub-bucket of the fine rolling set into the wider
    /// sets (see [`State::rolling_staged`]); on the merger, merges the
    /// sub-buckets partials changed ([`Engine::settle`]). Called before
    /// anything reads or drops rolling sub-buckets.
    pub(super) fn flush_rolling(&mut self) {
        self.settle();
        let (Some(fine), Some(start)) = (self.settings.rolling_fine, self.state.rolling_staged)
        else {
            return;
        };
        self.state.rolling_staged = None;
        self.state.rolling_flushed = self.state.rolling_flushed.max(start);
        let sets = &mut self.state.rolling;
        let Some(staged) = sets[fine].buckets.remove(&start) else {
            return;
        };
        for (i, set) in sets.iter_mut().enumerate() {
            if i != fine {
                set.buckets
                    .entry(sub_bucket(start, set.width))
                    .or_default()
                    .merge(&staged);
            }
        }
        sets[fine].buckets.insert(start, staged);
    }

    /// Opens a day bucket and, where missing, the longer windows containing it.
    pub(super) fn open_day(&mut self, day: Bounds) {
        let cal = self.settings.cal;
        // Sized like the newest open day: no rehashing of big accumulators as it fills.
        let hint = self.state.calendar[0]
            .buckets
            .values()
            .next_back()
            .map_or(0, |b| b.aggs.scopes.len());
        for set in &mut self.state.calendar {
            let b = cal.bounds(set.kind, day.start);
            let next_close = &mut self.next_close;
            set.buckets.entry(b.start).or_insert_with(|| {
                *next_close = (*next_close).min(b.end);
                Bucket {
                    end: b.end,
                    label: cal.label(set.kind, b.start),
                    revision: 0,
                    dirty: false,
                    aggs: if set.kind == CalendarKind::Day {
                        Rolled::with_capacity(hint)
                    } else {
                        Rolled::default()
                    },
                    folded: Rolled::default(),
                }
            });
        }
    }

    fn pipeline_add(&mut self, stage: u8, key: DimKey, deals: i64, cents: i64) {
        let key = self.mask(key);
        if let Some(t) = self.cur_time.filter(|_| !self.absent_ids.is_empty()) {
            self.mark_seen(t, key);
        }
        self.pipeline_cell(stage, key, |p| {
            p.deals += deals;
            p.amount_cents += cents;
        });
    }

    /// Changes one open-pipeline cell (`key` already masked), dropping it
    /// at zero.
    pub(super) fn pipeline_cell(
        &mut self,
        stage: u8,
        key: DimKey,
        f: impl FnOnce(&mut crate::agg::Pipeline),
    ) {
        let p = self.state.pipeline.entry((stage, key)).or_default();
        f(p);
        if p.is_zero() {
            self.state.pipeline.remove(&(stage, key));
        }
        self.state.gauges_dirty = true;
    }

    fn unknown(&mut self, entity: usize) {
        self.state.stats.unknown_entity[entity] += 1;
    }

    /// Counts a conversion in the creation-day cohort of the lead.
    fn cohort_add(&mut self, created: i64, key: DimKey, new_lead: bool) {
        let key = self.mask(key);
        let day = self.day_cache.peek(&self.settings.cal, created).start;
        match self.state.cohorts.get_mut(&day) {
            Some(c) => {
                let cell = c.cells.entry(key).or_default();
                if new_lead {
                    cell.0 += 1;
                } else {
                    cell.1 += 1;
                }
                c.dirty = true;
            }
            None if new_lead => {
                let mut c = Cohort {
                    dirty: true,
                    ..Default::default()
                };
                c.cells.insert(key, (1, 0));
                self.state.cohorts.insert(day, c);
            }
            None => self.state.stats.conversions_out_of_cohort += 1,
        }
    }

    /// Counts (or, with `withdraw`, takes back) a deal outcome in the
    /// window of its time. A withdrawal only touches buckets that exist:
    /// the caller checked that the outcome's window is still open.
    fn count_outcome(&mut self, c: &Closed, withdraw: bool) {
        let Closed {
            kind,
            amount_cents: amount,
            list_cents: list,
            competitor,
            cycle,
            exit,
            counted,
            ..
        } = *c;
        let s: i64 = if withdraw { -1 } else { 1 };
        let f = move |a: &mut Acc| {
            match kind {
                CloseKind::Won => {
                    a.revenue_cents += s * amount;
                    if let Some(l) = list {
                        bump(&mut a.priced_won, s);
                        a.list_cents += s * l;
                        a.priced_amount_cents += s * amount;
                    }
                }
                CloseKind::Lost => {}
                CloseKind::Expired => {
                    bump(&mut a.deals_expired, s);
                    a.expired_cents += s * amount;
                }
            }
            if !counted {
                return;
            }
            match kind {
                CloseKind::Won => {
                    bump(&mut a.deals_won, s);
                    bump(&mut a.won_vs_competitor, s * i64::from(competitor));
                    match cycle {
                        Some(c) if withdraw => {
                            a.cycle.remove(c);
                        }
                        Some(c) => a.cycle.add(c),
                        None => {}
                    }
                }
                CloseKind::Lost => {
                    bump(&mut a.deals_lost, s);
                    bump(&mut a.lost_vs_competitor, s * i64::from(competitor));
                }
                CloseKind::Expired => {}
            }
            match exit {
                Some((st, adv)) if withdraw => a.stage_unexit(st, adv),
                Some((st, adv)) => a.stage_exit(st, adv),
                None => {}
            }
        };
        self.add_to(c.at, c.key, false, withdraw, f);
        if counted {
            let h = &mut self.state.forecast;
            if let (CloseKind::Won, Some(ms)) = (kind, cycle) {
                h.cycle(ms, s);
            }
            if let Some((st, _)) = exit {
                h.exit(st, kind == CloseKind::Won, s);
            }
        }
    }

    /// A deal's new outcome `new` replaces its earlier one (a reopen or a
    /// correction): the earlier is withdrawn from its window if that is
    /// still open; a final window keeps it.
    fn replace_outcome(&mut self, old: Option<Box<Closed>>) -> bool {
        let Some(old) = old else {
            return true;
        };
        if old.at >= self.cutoff() {
            self.count_outcome(&old, true);
            self.state.stats.outcomes_revised[0] += 1;
            true
        } else {
            self.state.stats.outcomes_revised[1] += 1;
            false
        }
    }

    /// Opens or closes a deal in the pipeline gauges: they are the sum of
    /// the open deals' (stage, amount), changed only here, with the deal.
    fn pipeline_move(&mut self, from: Option<(u8, DimKey, i64)>, to: Option<(u8, DimKey, i64)>) {
        if from == to {
            return;
        }
        if let Some((st, k, a)) = from {
            self.pipeline_add(st, k, -1, -a);
        }
        if let Some((st, k, a)) = to {
            self.pipeline_add(st, k, 1, a);
        }
    }

    /// Closes open deals with no event for `pipeline.max_open_age` by the
    /// watermark, each at its deadline, or at `open_from` (the oldest
    /// instant whose windows are still open) if that is later: out of the
    /// pipeline gauges, into `deals_expired`. Visits only the deals
    /// indexed under a deadline day that has begun (see
    /// [`State::expiry_index`]).
    pub(super) fn expire_deals(&mut self, open_from: i64) {
        let Some(age) = self.settings.max_open_age else {
            return;
        };
        let wm = self.watermark();
        let today = wm.div_euclid(DAY_MS) * DAY_MS;
        let days: Vec<i64> = self
            .state
            .expiry_index
            .range(..=today)
            .map(|(d, _)| *d)
            .collect();
        let mut due: Vec<(i64, u128)> = Vec::new();
        for day in days {
            let keys = self.state.expiry_index.remove(&day).unwrap_or_default();
            let mut keep = Vec::new();
            for k in keys {
                let Some(d) = self.state.deals.get(&k).filter(|d| d.is_open()) else {
                    continue;
                };
                let deadline = d.seen.saturating_add(age);
                if deadline <= wm {
                    due.push((deadline, k));
                } else if deadline.div_euclid(DAY_MS) * DAY_MS == day {
                    keep.push(k);
                }
                // else: indexed again under its later deadline day
            }
            if !keep.is_empty() {
                self.state.expiry_index.insert(day, keep);
            }
        }
        self.state.next_expiry = self
            .state
            .expiry_index
            .keys()
            .next()
            .copied()
            .unwrap_or(i64::MAX);
        due.sort_unstable();
        due.dedup();
        for (deadline, k) in due {
            let d = self.state.deals.get_mut(&k).expect("due deal");
            if !d.is_open() {
                continue;
            }
            let c = Box::new(Closed {
                kind: CloseKind::Expired,
                at: deadline.max(open_from),
                key: d.dims,
                amount_cents: d.amount_cents,
                list_cents: None,
                competitor: false,
                cycle: None,
                exit: None,
                counted: true,
            });
            d.closed = Some(c.clone());
            let from = (d.stage, d.dims, d.amount_cents);
            self.touch_deal(k);
            self.unstall(k);
            self.pipeline_move(Some(from), None);
            self.refresh_overdue(k);
            self.count_outcome(&c, false);
            self.state.stats.deals_expired += 1;
        }
    }

    /// Indexes open deal `id` under the day of its expiry deadline when
    /// its last event moved from `old` (`None`: newly open) to `new`.
    pub(super) fn index_expiry(&mut self, id: u128, old: Option<i64>, new: i64) {
        self.deal_alive(id, new);
        let Some(age) = self.settings.max_open_age else {
            return;
        };
        let day = |seen: i64| seen.saturating_add(age).div_euclid(DAY_MS) * DAY_MS;
        let d = day(new);
        if old.map(day) != Some(d) {
            self.state.expiry_index.entry(d).or_default().push(id);
            self.state.next_expiry = self.state.next_expiry.min(d);
        }
    }

    /// Whether `e`, about entity `id` of `kind` (0 lead, 1 deal, 2
    /// customer), waits for it: the entity is not known (see
    /// [`Engine::wait_for`]).
    ///
    /// Kind 3: a customer's order or survey, which also waits while the
    /// customer is known only from a cancellation that did not find it
    /// (its dimensions would depend on whether that cancellation was
    /// counted before or after the order arrived).
    fn waits(&mut self, kind: u8, id: u128, e: &Event<'_>) -> bool {
        if !self.may_wait() {
            return false;
        }
        let known = match kind {
            0 => self.state.leads.contains_key(&id),
            1 => self.state.deals.contains_key(&id),
            2 => self.state.customers.contains_key(&id),
            _ => self
                .state
                .customers
                .get(&id)
                .is_some_and(|c| c.acquired.is_some()),
        };
        !known && self.wait_for((kind.min(2), id), e)
    }

    /// Applies one event to entity state and aggregates. Returns false
    /// when it repeats a lifecycle transition already counted (a re-sent
    /// webhook): nothing was counted (docs/entities.md).
    pub(super) fn apply_payload(&mut self, e: &Event<'_>, stage: Option<u8>) -> bool {
        self.cur_type = e.payload.event_type() as u8;
        self.cur_time = Some(e.time);
        let counted = self.apply_payload_inner(e, stage);
        self.cur_time = None;
        counted
    }

    fn apply_payload_inner(&mut self, e: &Event<'_>, stage: Option<u8>) -> bool {
        match &e.payload {
            Payload::LeadCreated(d) => self.lead_created(e, d),
            Payload::LeadQualified(d) => self.lead_qualified(e, d),
            Payload::LeadContacted(d) => self.lead_contacted(e, d),
            Payload::LeadConverted(d) => self.lead_converted(e, d),
            Payload::DealCreated(d) => self.deal_created(e, d, stage),
            Payload::DealStageChanged(d) => self.deal_stage_changed(e, d, stage),
            Payload::DealWon(d) | Payload::DealLost(d) => self.deal_closed(e, d),
            Payload::CustomerAcquired(d) => self.customer_acquired(e, d),
            Payload::CustomerCancelled(d) => self.customer_cancelled(e, d),
            Payload::ActivityLogged(d) => self.activity_logged(e, d),
            Payload::QuotaSet(d) => self.quota_set(d),
            Payload::OrderPlaced(d) => self.order_placed(e, d),
            Payload::SurveyAnswered(d) => self.survey_answered(e, d),
            Payload::SpendRecorded(d) => self.spend_recorded(e, d),
            Payload::CompetitorPriceObserved(d) => self.competitor_price_observed(e, d),
            Payload::HeadcountSet(d) => self.headcount_set(d),
            Payload::MarketSizeSet(d) => self.market_size_set(d),
            // Handled before windows and dedup (`Engine::apply_inner`).
            Payload::SubjectErased(d) => self.erase(e.time, d),
        }
    }
}
