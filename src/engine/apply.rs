//! Applying one event: entity state, then its contributions to every
//! window bucket (calendar and rolling) and gauge.

use super::state::*;
use super::Engine;
use crate::agg::Acc;
use crate::decode::{Reject, RejectReason};
use crate::event::{Event, Payload};
use crate::window::{sub_bucket, Bounds, CalendarKind};

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
    if s.admitted.contains(d, id) {
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

    /// `key` with the dimensions that are off (`kpis.dimensions`) cleared.
    fn mask(&self, key: DimKey) -> DimKey {
        let m = &self.settings.dims_mask;
        DimKey(std::array::from_fn(|d| key[d] & m[d]))
    }

    /// Applies `f` to the series of `key` ("all" and one per dimension) in
    /// the day bucket and the rolling sub-buckets that contain `t` (longer
    /// calendar windows are built from days: see [`CalendarSet`]; wider
    /// rolling windows may get it through the staged sub-bucket: see
    /// [`State::rolling_staged`]).
    fn add(&mut self, t: i64, key: DimKey, f: impl Fn(&mut Acc)) {
        self.add_to(t, key, false, f)
    }

    /// [`Engine::add`], and with `pair` to the (product, competitor) pair
    /// of the key too (price observations).
    fn add_to(&mut self, t: i64, key: DimKey, pair: bool, f: impl Fn(&mut Acc)) {
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
            set.dirty = true;
            let sub = self.sub_cache[i];
            if let Some(tr) = self.track.as_mut() {
                tr.rolling(i, sub);
            }
            if staged.is_some_and(|fine| fine != i) {
                continue;
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

    pub(super) fn apply_payload(&mut self, e: &Event<'_>, stage: Option<u8>) {
        let t = e.time;
        match &e.payload {
            Payload::LeadCreated(d) => {
                let mut key =
                    self.rep_dims(d.rep.as_deref(), d.team.as_deref(), d.region.as_deref());
                key[CHANNEL] = self.dim(CHANNEL, Some(&d.channel));
                key[CAMPAIGN] = self.dim(CAMPAIGN, d.campaign.as_deref());
                key[VARIANT] = self.dim(VARIANT, d.variant.as_deref());
                key[SEGMENT] = self.dim(SEGMENT, d.segment.as_deref());
                let fresh = self
                    .state
                    .leads
                    .insert(
                        entity_key(&d.lead_id),
                        Lead {
                            created: t,
                            seen: t,
                            dims: key,
                            flags: 0,
                        },
                    )
                    .is_none();
                if fresh {
                    self.add(t, key, |a| a.leads_created += 1);
                    self.cohort_add(t, key, true);
                }
            }
            Payload::LeadQualified(d) => {
                let Some(l) = self.state.leads.get_mut(&entity_key(&d.lead_id)) else {
                    return self.unknown(0);
                };
                l.seen = l.seen.max(t);
                let reached = match d.level {
                    crate::event::Level::Mql => MQL,
                    crate::event::Level::Sql => SQL | MQL,
                };
                let new = reached & !l.flags;
                l.flags |= reached;
                let key = l.dims;
                if new != 0 {
                    self.add(t, key, |a| {
                        a.leads_mql += u64::from(new & MQL != 0);
                        a.leads_sql += u64::from(new & SQL != 0);
                    });
                }
            }
            Payload::LeadContacted(d) => {
                let Some(l) = self.state.leads.get_mut(&entity_key(&d.lead_id)) else {
                    return self.unknown(0);
                };
                l.seen = l.seen.max(t);
                if l.flags & CONTACTED != 0 {
                    return;
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
                let (key, created) = match self.state.leads.get_mut(&entity_key(&d.lead_id)) {
                    Some(l) if l.flags & CONVERTED != 0 => return,
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
                let stage = stage.expect("checked stage");
                let amount = cents(d.amount);
                let old = self.state.deals.insert(
                    entity_key(&d.deal_id),
                    Deal {
                        created: t,
                        seen: t,
                        dims: key,
                        stage,
                        amount_cents: amount,
                    },
                );
                if let Some(o) = old {
                    // Re-created (a CRM re-sync): the newer record replaces the older.
                    self.pipeline_add(o.stage, o.dims, -1, -o.amount_cents);
                }
                self.pipeline_add(stage, key, 1, amount);
            }
            Payload::DealStageChanged(d) => {
                let Some(deal) = self.state.deals.get_mut(&entity_key(&d.deal_id)) else {
                    return self.unknown(1);
                };
                let (old_stage, old_amount, key) = (deal.stage, deal.amount_cents, deal.dims);
                deal.seen = deal.seen.max(t);
                deal.stage = stage.expect("checked stage");
                if let Some(a) = d.amount {
                    deal.amount_cents = cents(a);
                }
                let (new_stage, new_amount) = (deal.stage, deal.amount_cents);
                self.pipeline_add(old_stage, key, -1, -old_amount);
                self.pipeline_add(new_stage, key, 1, new_amount);
                if new_stage != old_stage {
                    let next = new_stage == old_stage + 1;
                    self.add(t, key, |a| a.stage_exit(old_stage, next));
                }
            }
            Payload::DealWon(d) | Payload::DealLost(d) => {
                let won = matches!(e.payload, Payload::DealWon(_));
                let deal = self.state.deals.remove(&entity_key(&d.deal_id));
                let mut key = match &deal {
                    Some(deal) => {
                        self.pipeline_add(deal.stage, deal.dims, -1, -deal.amount_cents);
                        deal.dims
                    }
                    None => {
                        self.unknown(1);
                        NO_DIMS
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
                let amount = cents(d.amount);
                let list = d.list_price.map(cents);
                let competitor = d.competitor.as_deref().is_some_and(|c| !c.is_empty());
                let last_stage = self.settings.stages.len().saturating_sub(1) as u8;
                let exit = deal.as_ref().map(|deal| deal.stage);
                let cycle = deal.map(|deal| (t - deal.created).max(0));
                if won {
                    self.add(t, key, |a| {
                        a.deals_won += 1;
                        a.revenue_cents += amount;
                        if let Some(c) = cycle {
                            a.cycle.add(c);
                        }
                        a.won_vs_competitor += u64::from(competitor);
                        if let Some(l) = list {
                            a.priced_won += 1;
                            a.list_cents += l;
                            a.priced_amount_cents += amount;
                        }
                        if let Some(s) = exit {
                            a.stage_exit(s, s == last_stage);
                        }
                    });
                } else {
                    self.add(t, key, |a| {
                        a.deals_lost += 1;
                        a.lost_vs_competitor += u64::from(competitor);
                        if let Some(s) = exit {
                            a.stage_exit(s, false);
                        }
                    });
                }
            }
            Payload::CustomerAcquired(d) => {
                if let Some(c) = self.state.customers.get_mut(&entity_key(&d.customer_id)) {
                    c.seen = c.seen.max(t);
                    return;
                }
                let channel = self.dim(CHANNEL, d.channel.as_deref());
                let segment = self.dim(SEGMENT, d.segment.as_deref());
                self.state.customers.insert(
                    entity_key(&d.customer_id),
                    Customer {
                        acquired: t,
                        seen: t,
                        channel,
                        segment,
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
            }
            Payload::CustomerCancelled(d) => {
                let (key, lifetime) = match self.state.customers.remove(&entity_key(&d.customer_id))
                {
                    Some(c) => (c.key(), Some((t - c.acquired).max(0))),
                    None => {
                        self.unknown(2);
                        (NO_DIMS, None)
                    }
                };
                let key = self.mask(key);
                self.state.ledger.add(t, key, -1);
                if let Some(tr) = self.track.as_mut() {
                    tr.ledger(t);
                }
                self.state.gauges_dirty = true;
                self.add(t, key, |a| {
                    a.customers_cancelled += 1;
                    if let Some(l) = lifetime {
                        a.lifetimes += 1;
                        a.lifetime_ms += i128::from(l);
                    }
                });
            }
            Payload::ActivityLogged(d) => {
                let mut key = self.rep_dims(Some(&d.rep), None, None);
                if let Some(deal) = d
                    .deal_id
                    .as_deref()
                    .and_then(|id| self.state.deals.get(&entity_key(id)))
                {
                    for dim in [CHANNEL, PRODUCT, CAMPAIGN, SEGMENT] {
                        key[dim] = deal.dims[dim];
                    }
                } else if let Some(lead) = d
                    .lead_id
                    .as_deref()
                    .and_then(|id| self.state.leads.get(&entity_key(id)))
                {
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
                let key = match self.state.customers.get_mut(&entity_key(&d.customer_id)) {
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
                let key = match self.state.customers.get_mut(&entity_key(&d.customer_id)) {
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
                self.add_to(t, key, true, |a| {
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
    }
}
