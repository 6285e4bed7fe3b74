//! Applying one event: entity state, then its contributions to every
//! window bucket (calendar and rolling) and gauge.

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
    fn mask(&self, key: DimKey) -> DimKey {
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
        let day = match self.day_cache {
            Some(b) if b.contains(t) => b,
            _ => {
                let b = self.settings.cal.bounds(CalendarKind::Day, t);
                self.day_cache = Some(b);
                b
            }
        };
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
    /// sets (see [`State::rolling_staged`]). Called before anything reads
    /// or drops rolling sub-buckets.
    pub(super) fn flush_rolling(&mut self) {
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
        let p = self.state.pipeline.entry((stage, key)).or_default();
        p.deals += deals;
        p.amount_cents += cents;
        if p.deals == 0 && p.amount_cents == 0 {
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
        let day = match self.day_cache {
            Some(b) if b.contains(created) => b.start,
            _ => self.settings.cal.bounds(CalendarKind::Day, created).start,
        };
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
            self.pipeline_move(Some(from), None);
            self.count_outcome(&c, false);
            self.state.stats.deals_expired += 1;
        }
    }

    /// Indexes open deal `id` under the day of its expiry deadline when
    /// its last event moved from `old` (`None`: newly open) to `new`.
    pub(super) fn index_expiry(&mut self, id: u128, old: Option<i64>, new: i64) {
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
        let t = e.time;
        match &e.payload {
            Payload::LeadCreated(d) => {
                let id = entity_key(&d.lead_id);
                self.unmatch_before((0, id), t);
                if let Some(l) = self.state.leads.get_mut(&id) {
                    l.seen = l.seen.max(t);
                    return false;
                }
                let mut key =
                    self.rep_dims(d.rep.as_deref(), d.team.as_deref(), d.region.as_deref());
                key[CHANNEL] = self.dim(CHANNEL, Some(&d.channel));
                key[CAMPAIGN] = self.dim(CAMPAIGN, d.campaign.as_deref());
                key[VARIANT] = self.dim(VARIANT, d.variant.as_deref());
                key[SEGMENT] = self.dim(SEGMENT, d.segment.as_deref());
                self.state.leads.insert(
                    id,
                    Lead {
                        created: t,
                        seen: t,
                        dims: key,
                        flags: 0,
                    },
                );
                self.add(t, key, |a| a.leads_created += 1);
                self.cohort_add(t, key, true);
                self.release((0, id));
            }
            Payload::LeadQualified(d) => {
                let id = entity_key(&d.lead_id);
                let Some(l) = self.state.leads.get_mut(&id) else {
                    if !self.wait_for((0, id), e) {
                        self.unknown(0);
                    }
                    return true;
                };
                l.seen = l.seen.max(t);
                let reached = match d.level {
                    crate::event::Level::Mql => MQL,
                    crate::event::Level::Sql => SQL | MQL,
                };
                let new = reached & !l.flags;
                l.flags |= reached;
                let key = l.dims;
                if new == 0 {
                    return false;
                }
                self.add(t, key, |a| {
                    a.leads_mql += u64::from(new & MQL != 0);
                    a.leads_sql += u64::from(new & SQL != 0);
                });
            }
            Payload::LeadContacted(d) => {
                let id = entity_key(&d.lead_id);
                let Some(l) = self.state.leads.get_mut(&id) else {
                    if !self.wait_for((0, id), e) {
                        self.unknown(0);
                    }
                    return true;
                };
                l.seen = l.seen.max(t);
                if l.flags & CONTACTED != 0 {
                    return false;
                }
                l.flags |= CONTACTED;
                let (created, lead_key) = (l.created, l.dims);
                let mut key = self.rep_dims(Some(&d.rep), None, None);
                for dim in [CHANNEL, CAMPAIGN, VARIANT, SEGMENT] {
                    key[dim] = lead_key[dim];
                }
                let ms = (t - created).max(0);
                self.add(t, key, |a| a.response.add(ms));
            }
            Payload::LeadConverted(d) => {
                let id = entity_key(&d.lead_id);
                if self.waits(0, id, e) {
                    return true;
                }
                let (key, created) = match self.state.leads.get_mut(&id) {
                    Some(l) if l.flags & CONVERTED != 0 => {
                        l.seen = l.seen.max(t);
                        return false;
                    }
                    Some(l) => {
                        l.flags |= CONVERTED;
                        l.seen = l.seen.max(t);
                        (l.dims, Some(l.created))
                    }
                    None => {
                        self.unknown(0);
                        (NO_DIMS, None)
                    }
                };
                self.add(t, key, |a| a.leads_converted += 1);
                if let Some(created) = created {
                    self.cohort_add(created, key, false);
                }
            }
            Payload::DealCreated(d) => {
                let id = entity_key(&d.deal_id);
                self.unmatch_before((1, id), t);
                let stage = stage.expect("checked stage");
                let amount = cents(d.amount);
                if let Some(deal) = self.state.deals.get_mut(&id) {
                    // Known: a re-sync. An open deal takes the stage and
                    // amount it names; otherwise nothing changes.
                    let seen = (deal.is_open(), deal.seen);
                    deal.seen = deal.seen.max(t);
                    if seen.0 {
                        self.index_expiry(id, Some(seen.1), t);
                    }
                    let deal = self.state.deals.get_mut(&id).expect("known deal");
                    if !deal.is_open() || (deal.stage == stage && deal.amount_cents == amount) {
                        return false;
                    }
                    let from = (deal.stage, deal.dims, deal.amount_cents);
                    deal.stage = stage;
                    deal.amount_cents = amount;
                    let to = (stage, deal.dims, amount);
                    self.pipeline_move(Some(from), Some(to));
                    return true;
                }
                let mut key = self.rep_dims(Some(&d.rep), d.team.as_deref(), d.region.as_deref());
                let lead = d
                    .lead_id
                    .as_deref()
                    .and_then(|l| self.state.leads.get(&entity_key(l)))
                    .map(|l| l.dims);
                if let Some(l) = lead {
                    for dim in [CHANNEL, CAMPAIGN, VARIANT, SEGMENT] {
                        key[dim] = l[dim];
                    }
                }
                for (dim, v) in [
                    (CHANNEL, d.channel.as_deref()),
                    (CAMPAIGN, d.campaign.as_deref()),
                    (VARIANT, d.variant.as_deref()),
                    (SEGMENT, d.segment.as_deref()),
                    (PRODUCT, d.product.as_deref()),
                ] {
                    if v.is_some() {
                        key[dim] = self.dim(dim, v);
                    }
                }
                self.state.deals.insert(
                    id,
                    Deal {
                        created: Some(t),
                        seen: t,
                        dims: key,
                        stage,
                        amount_cents: amount,
                        closed: None,
                    },
                );
                self.pipeline_move(None, Some((stage, key, amount)));
                self.index_expiry(id, None, t);
                self.release((1, id));
            }
            Payload::DealStageChanged(d) => {
                let id = entity_key(&d.deal_id);
                let Some(deal) = self.state.deals.get_mut(&id) else {
                    if !self.wait_for((1, id), e) {
                        self.unknown(1);
                    }
                    return true;
                };
                let new_stage = stage.expect("checked stage");
                let new_amount = d.amount.map(cents).unwrap_or(deal.amount_cents);
                // open: its last event; reopened: none (indexed afresh)
                let seen = deal.is_open().then_some(deal.seen);
                deal.seen = deal.seen.max(t);
                let new_seen = deal.seen;
                self.index_expiry(id, seen, new_seen);
                let deal = self.state.deals.get_mut(&id).expect("known deal");
                if deal.is_open() && deal.stage == new_stage && deal.amount_cents == new_amount {
                    return false;
                }
                let (old_stage, key) = (deal.stage, deal.dims);
                let from = deal
                    .is_open()
                    .then_some((deal.stage, deal.dims, deal.amount_cents));
                // A closed deal that changes stage is reopened.
                let reopened = deal.closed.take();
                deal.stage = new_stage;
                deal.amount_cents = new_amount;
                self.pipeline_move(from, Some((new_stage, key, new_amount)));
                if reopened.is_some() {
                    self.replace_outcome(reopened);
                } else if new_stage != old_stage {
                    let next = new_stage == old_stage + 1;
                    self.add(t, key, |a| a.stage_exit(old_stage, next));
                }
            }
            Payload::DealWon(d) | Payload::DealLost(d) => {
                let won = matches!(e.payload, Payload::DealWon(_));
                let kind = if won { CloseKind::Won } else { CloseKind::Lost };
                let amount = cents(d.amount);
                let id = entity_key(&d.deal_id);
                if self.waits(1, id, e) {
                    return true;
                }
                let (mut key, previous, open_at, created) = match self.state.deals.get_mut(&id) {
                    Some(deal) => {
                        deal.seen = deal.seen.max(t);
                        let (dims, created) = (deal.dims, deal.created);
                        match &deal.closed {
                            // The same outcome again (a re-sent webhook).
                            Some(c) if c.kind == kind && (!won || deal.amount_cents == amount) => {
                                return false;
                            }
                            Some(_) => (dims, deal.closed.take(), None, created),
                            None => {
                                let open = (deal.stage, dims, deal.amount_cents);
                                (dims, None, Some(open), created)
                            }
                        }
                    }
                    None => {
                        self.unknown(1);
                        (NO_DIMS, None, None, None)
                    }
                };
                if d.rep.is_some() || d.team.is_some() || d.region.is_some() {
                    let rep = d.rep.as_deref().or_else(|| {
                        Some(self.state.interner.name(key[REP])).filter(|r| !r.is_empty())
                    });
                    let rep = rep.map(str::to_owned);
                    let k = self.rep_dims(rep.as_deref(), d.team.as_deref(), d.region.as_deref());
                    key[..3].copy_from_slice(&k[..3]);
                }
                for (dim, v) in [
                    (CHANNEL, d.channel.as_deref()),
                    (PRODUCT, d.product.as_deref()),
                    (COMPETITOR, d.competitor.as_deref()),
                ] {
                    if v.is_some() {
                        key[dim] = self.dim(dim, v);
                    }
                }
                let last_stage = self.settings.stages.len().saturating_sub(1) as u8;
                // The stage it leaves: the open stage, or for a reopened
                // deal the last stage it was open in.
                let exit = match (open_at, created, self.state.deals.get(&id)) {
                    (Some((s, _, _)), _, _) => Some(s),
                    (None, Some(_), Some(deal)) => Some(deal.stage),
                    _ => None,
                };
                let mut c = Closed {
                    kind,
                    at: t,
                    key,
                    amount_cents: amount,
                    list_cents: d.list_price.map(cents),
                    competitor: d.competitor.as_deref().is_some_and(|c| !c.is_empty()),
                    cycle: created.map(|c| (t - c).max(0)),
                    exit: exit.map(|s| (s, won && s == last_stage)),
                    counted: true,
                };
                self.pipeline_move(open_at, None);
                let old_amount = self.state.deals.get(&id).map_or(0, |d| d.amount_cents);
                match previous {
                    // A correction of a win's amount: the same win, revised.
                    Some(p) if p.kind == CloseKind::Won && won => {
                        if self.replace_outcome(Some(p.clone())) {
                            // in place, at the time (and cycle) of the win
                            c.at = p.at;
                            c.cycle = p.cycle;
                            c.exit = p.exit;
                            c.counted = p.counted;
                            c.amount_cents = amount - (old_amount - p.amount_cents);
                        } else {
                            // its window is final: this window gets the difference
                            c.counted = false;
                            c.list_cents = None;
                            c.amount_cents = amount - old_amount;
                        }
                    }
                    p => {
                        self.replace_outcome(p);
                    }
                }
                let c = Box::new(c);
                self.count_outcome(&c, false);
                match self.state.deals.get_mut(&id) {
                    Some(deal) => {
                        deal.amount_cents = amount;
                        deal.closed = Some(c);
                    }
                    None => {
                        self.state.deals.insert(
                            id,
                            Deal {
                                created: None,
                                seen: t,
                                dims: key,
                                stage: 0,
                                amount_cents: amount,
                                closed: Some(c),
                            },
                        );
                    }
                }
            }
            Payload::CustomerAcquired(d) => {
                let id = entity_key(&d.customer_id);
                self.unmatch_before((2, id), t);
                let channel = d.channel.as_deref();
                let segment = d.segment.as_deref();
                let (channel, segment) = match self.state.customers.get_mut(&id) {
                    Some(c) if c.cancelled.is_none() => {
                        c.seen = c.seen.max(t);
                        return false;
                    }
                    // Reactivation: a new acquisition, with the dimensions
                    // it names, else those it had.
                    Some(c) => (
                        channel.map_or(Ok(c.channel), Err),
                        segment.map_or(Ok(c.segment), Err),
                    ),
                    None => (Err(channel.unwrap_or("")), Err(segment.unwrap_or(""))),
                };
                // New, or known only from a cancellation: what waits for it counts now.
                let new = self
                    .state
                    .customers
                    .get(&id)
                    .is_none_or(|c| c.acquired.is_none());
                let channel = channel.unwrap_or_else(|v| self.dim(CHANNEL, Some(v)));
                let segment = segment.unwrap_or_else(|v| self.dim(SEGMENT, Some(v)));
                self.state.customers.insert(
                    id,
                    Customer {
                        acquired: Some(t),
                        seen: t,
                        channel,
                        segment,
                        cancelled: None,
                    },
                );
                let key = customer_key(channel, segment);
                let key = self.mask(key);
                self.state.ledger.add(t, key, 1);
                if let Some(tr) = self.track.as_mut() {
                    tr.ledger(t);
                }
                self.state.gauges_dirty = true;
                self.add(t, key, |a| a.customers_acquired += 1);
                if new {
                    self.release((2, id));
                }
            }
            Payload::CustomerCancelled(d) => {
                let id = entity_key(&d.customer_id);
                if self.waits(2, id, e) {
                    return true;
                }
                let (key, lifetime) = match self.state.customers.get_mut(&id) {
                    Some(c) if c.cancelled.is_some() => {
                        c.seen = c.seen.max(t);
                        return false;
                    }
                    Some(c) => {
                        c.cancelled = Some(t);
                        c.seen = c.seen.max(t);
                        let lifetime = c.acquired.map(|a| (t - a).max(0));
                        let key = c.key();
                        let key = self.mask(key);
                        // Active customers follow the known customers' state only.
                        self.state.ledger.add(t, key, -1);
                        if let Some(tr) = self.track.as_mut() {
                            tr.ledger(t);
                        }
                        self.state.gauges_dirty = true;
                        (key, lifetime)
                    }
                    None => {
                        // Unknown (acquired before the stream began, or
                        // forgotten): counted in "all", remembered as
                        // cancelled, never below the known customers'
                        // active count.
                        self.unknown(2);
                        self.state.customers.insert(
                            id,
                            Customer {
                                acquired: None,
                                seen: t,
                                channel: 0,
                                segment: 0,
                                cancelled: Some(t),
                            },
                        );
                        (NO_DIMS, None)
                    }
                };
                self.add(t, key, |a| {
                    a.customers_cancelled += 1;
                    if let Some(l) = lifetime {
                        a.lifetimes += 1;
                        a.lifetime_ms += i128::from(l);
                    }
                });
            }
            Payload::ActivityLogged(d) => {
                // An activity on a deal (or lead) not seen yet waits for it.
                let waits_for = match (&d.deal_id, &d.lead_id) {
                    (Some(id), _) => Some((1, entity_key(id))),
                    (None, Some(id)) => Some((0, entity_key(id))),
                    (None, None) => None,
                };
                if waits_for.is_some_and(|(k, id)| self.waits(k, id, e)) {
                    return true;
                }
                let mut key = self.rep_dims(Some(&d.rep), None, None);
                // An activity keeps its deal (or lead) from going stale.
                let deal_id = d.deal_id.as_deref().map(entity_key);
                if let Some((id, deal)) =
                    deal_id.and_then(|id| Some(id).zip(self.state.deals.get_mut(&id)))
                {
                    let seen = deal.is_open().then_some(deal.seen);
                    deal.seen = deal.seen.max(t);
                    for dim in [CHANNEL, PRODUCT, CAMPAIGN, SEGMENT] {
                        key[dim] = deal.dims[dim];
                    }
                    if let Some(old) = seen {
                        self.index_expiry(id, Some(old), old.max(t));
                    }
                } else if let Some(lead) = d
                    .lead_id
                    .as_deref()
                    .and_then(|id| self.state.leads.get_mut(&entity_key(id)))
                {
                    lead.seen = lead.seen.max(t);
                    for dim in [CHANNEL, CAMPAIGN, SEGMENT] {
                        key[dim] = lead.dims[dim];
                    }
                }
                let k = d.kind as usize;
                self.add(t, key, |a| a.activities[k] += 1);
            }
            Payload::QuotaSet(d) => {
                let key = self.rep_dims(Some(&d.rep), None, None);
                let period = self.state.interner.intern(&d.period);
                self.state
                    .quotas
                    .insert((key[REP], period), cents(d.amount));
            }
            Payload::OrderPlaced(d) => {
                let id = entity_key(&d.customer_id);
                if self.waits(3, id, e) {
                    return true;
                }
                let key = match self.state.customers.get_mut(&id) {
                    Some(c) => {
                        c.seen = c.seen.max(t);
                        c.key()
                    }
                    None => {
                        self.unknown(2);
                        NO_DIMS
                    }
                };
                let (kind, amount) = (d.kind as usize, cents(d.amount));
                let buyer = xxhash_rust::xxh3::xxh3_64(d.customer_id.as_bytes());
                self.add(t, key, |a| {
                    a.orders[kind] += 1;
                    a.order_revenue_cents += amount;
                    a.buyers.insert(buyer);
                });
            }
            Payload::SurveyAnswered(d) => {
                let id = entity_key(&d.customer_id);
                if self.waits(3, id, e) {
                    return true;
                }
                let key = match self.state.customers.get_mut(&id) {
                    Some(c) => {
                        c.seen = c.seen.max(t);
                        c.key()
                    }
                    None => {
                        self.unknown(2);
                        NO_DIMS
                    }
                };
                let class = match d.nps {
                    0..=6 => 0,
                    7..=8 => 1,
                    _ => 2,
                };
                let csat = d.csat.map(|c| (c * 1000.0).round() as i64);
                self.add(t, key, |a| {
                    a.nps[class] += 1;
                    if let Some(c) = csat {
                        a.csat_count += 1;
                        a.csat_milli += c;
                    }
                });
            }
            Payload::SpendRecorded(d) => {
                let mut key = NO_DIMS;
                key[CHANNEL] = self.dim(CHANNEL, Some(&d.channel));
                let (cat, amount) = (d.category as usize, cents(d.amount));
                self.add(t, key, |a| a.spend_cents[cat] += amount);
            }
            Payload::CompetitorPriceObserved(d) => {
                let mut key = NO_DIMS;
                key[PRODUCT] = self.dim(PRODUCT, Some(&d.product));
                key[COMPETITOR] = self.dim(COMPETITOR, Some(&d.competitor));
                let (ours, theirs) = (cents(d.our_price), cents(d.price));
                self.add_to(t, key, true, false, |a| {
                    a.price_obs += 1;
                    a.our_price_cents += ours;
                    a.their_price_cents += theirs;
                });
            }
            Payload::HeadcountSet(d) => {
                let team = self.dim(TEAM, d.team.as_deref());
                self.state.headcount.insert(team, d.count);
            }
            Payload::MarketSizeSet(d) => {
                let product = self.dim(PRODUCT, d.product.as_deref());
                self.state.market_size.insert(product, cents(d.amount));
            }
        }
        true
    }
}
