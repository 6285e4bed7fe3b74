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

    /// Dimension key of a rep-bearing event: team and region from the
    /// event, else config, else what earlier events of that rep said.
    fn rep_dims(&mut self, rep: Option<&str>, team: Option<&str>, region: Option<&str>) -> DimKey {
        let s = &mut self.state;
        let rep_id = s.interner.intern_opt(rep);
        let mut key = [0; 5];
        key[REP] = rep_id;
        let cfg = rep.and_then(|r| self.settings.reps.get(r));
        let team = team.or_else(|| cfg.and_then(|c| c.0.as_deref()));
        let region = region.or_else(|| cfg.and_then(|c| c.1.as_deref()));
        let known = s.rep_info.get(&rep_id).copied().unwrap_or([0, 0]);
        key[TEAM] = team.map_or(known[0], |t| s.interner.intern(t));
        key[REGION] = region.map_or(known[1], |r| s.interner.intern(r));
        if rep_id != 0 && [key[TEAM], key[REGION]] != known {
            s.rep_info.insert(rep_id, [key[TEAM], key[REGION]]);
        }
        key
    }

    /// Adds to the day bucket and the rolling sub-buckets that contain `t`
    /// (longer calendar windows are built from days: see [`CalendarSet`]).
    fn add(&mut self, t: i64, key: DimKey, f: impl Fn(&mut Acc)) {
        let day = match self.day_cache {
            Some(b) if b.contains(t) => b,
            _ => {
                let b = self.settings.cal.bounds(CalendarKind::Day, t);
                self.day_cache = Some(b);
                b
            }
        };
        if !self.state.calendar[0].buckets.contains_key(&day.start) {
            self.open_day(day);
        }
        let bucket = self.state.calendar[0]
            .buckets
            .get_mut(&day.start)
            .expect("day bucket just opened");
        bucket.dirty = true;
        f(bucket.aggs.0.entry(key).or_default());
        for set in &mut self.state.rolling {
            set.dirty = true;
            let aggs = set.buckets.entry(sub_bucket(t, set.width)).or_default();
            f(aggs.0.entry(key).or_default());
        }
    }

    /// Opens a day bucket and, where missing, the longer windows containing it.
    fn open_day(&mut self, day: Bounds) {
        let cal = self.settings.cal;
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
                    aggs: Aggs::default(),
                }
            });
        }
    }

    fn pipeline_add(&mut self, stage: u8, key: DimKey, deals: i64, cents: i64) {
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

    pub(super) fn apply_payload(&mut self, e: &Event<'_>, stage: Option<u8>) {
        let t = e.time;
        match &e.payload {
            Payload::LeadCreated(d) => {
                let mut key =
                    self.rep_dims(d.rep.as_deref(), d.team.as_deref(), d.region.as_deref());
                key[CHANNEL] = self.state.interner.intern(&d.channel);
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
                }
            }
            Payload::LeadQualified(d) => match self.state.leads.get_mut(&entity_key(&d.lead_id)) {
                Some(l) => {
                    l.seen = l.seen.max(t);
                    l.flags |= match d.level {
                        crate::event::Level::Mql => MQL,
                        crate::event::Level::Sql => SQL,
                    };
                }
                None => self.unknown(0),
            },
            Payload::LeadContacted(d) => {
                let Some(l) = self.state.leads.get_mut(&entity_key(&d.lead_id)) else {
                    return self.unknown(0);
                };
                l.seen = l.seen.max(t);
                if l.flags & CONTACTED != 0 {
                    return;
                }
                l.flags |= CONTACTED;
                let (created, channel) = (l.created, l.dims[CHANNEL]);
                let mut key = self.rep_dims(Some(&d.rep), None, None);
                key[CHANNEL] = channel;
                let ms = (t - created).max(0);
                self.add(t, key, |a| a.response.add(ms));
            }
            Payload::LeadConverted(d) => {
                let key = match self.state.leads.get_mut(&entity_key(&d.lead_id)) {
                    Some(l) if l.flags & CONVERTED != 0 => return,
                    Some(l) => {
                        l.flags |= CONVERTED;
                        l.seen = l.seen.max(t);
                        l.dims
                    }
                    None => {
                        self.unknown(0);
                        [0; 5]
                    }
                };
                self.add(t, key, |a| a.leads_converted += 1);
            }
            Payload::DealCreated(d) => {
                let mut key = self.rep_dims(Some(&d.rep), d.team.as_deref(), d.region.as_deref());
                let lead_channel = d
                    .lead_id
                    .as_deref()
                    .and_then(|l| self.state.leads.get(&entity_key(l)))
                    .map(|l| l.dims[CHANNEL]);
                key[CHANNEL] = match d.channel.as_deref() {
                    Some(c) => self.state.interner.intern(c),
                    None => lead_channel.unwrap_or(0),
                };
                key[PRODUCT] = self.state.interner.intern_opt(d.product.as_deref());
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
                        [0; 5]
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
                if let Some(c) = d.channel.as_deref() {
                    key[CHANNEL] = self.state.interner.intern(c);
                }
                if let Some(p) = d.product.as_deref() {
                    key[PRODUCT] = self.state.interner.intern(p);
                }
                let amount = cents(d.amount);
                let cycle = deal.map(|deal| (t - deal.created).max(0));
                if won {
                    self.add(t, key, |a| {
                        a.deals_won += 1;
                        a.revenue_cents += amount;
                        if let Some(c) = cycle {
                            a.cycle.add(c);
                        }
                    });
                } else {
                    self.add(t, key, |a| a.deals_lost += 1);
                }
            }
            Payload::CustomerAcquired(d) => {
                if let Some(c) = self.state.customers.get_mut(&entity_key(&d.customer_id)) {
                    c.seen = c.seen.max(t);
                    return;
                }
                let channel = self.state.interner.intern_opt(d.channel.as_deref());
                self.state.customers.insert(
                    entity_key(&d.customer_id),
                    Customer {
                        acquired: t,
                        seen: t,
                        channel,
                    },
                );
                let key = [0, 0, 0, channel, 0];
                self.state.ledger.add(t, key, 1);
                self.state.gauges_dirty = true;
                self.add(t, key, |a| a.customers_acquired += 1);
            }
            Payload::CustomerCancelled(d) => {
                let channel = match self.state.customers.remove(&entity_key(&d.customer_id)) {
                    Some(c) => c.channel,
                    None => {
                        self.unknown(2);
                        0
                    }
                };
                let key = [0, 0, 0, channel, 0];
                self.state.ledger.add(t, key, -1);
                self.state.gauges_dirty = true;
                self.add(t, key, |a| a.customers_cancelled += 1);
            }
            Payload::ActivityLogged(d) => {
                let mut key = self.rep_dims(Some(&d.rep), None, None);
                if let Some(deal) = d
                    .deal_id
                    .as_deref()
                    .and_then(|id| self.state.deals.get(&entity_key(id)))
                {
                    key[CHANNEL] = deal.dims[CHANNEL];
                    key[PRODUCT] = deal.dims[PRODUCT];
                } else if let Some(lead) = d
                    .lead_id
                    .as_deref()
                    .and_then(|id| self.state.leads.get(&entity_key(id)))
                {
                    key[CHANNEL] = lead.dims[CHANNEL];
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
                if let Some(c) = self.state.customers.get_mut(&entity_key(&d.customer_id)) {
                    c.seen = c.seen.max(t);
                }
            }
            Payload::SurveyAnswered(d) => {
                if let Some(c) = self.state.customers.get_mut(&entity_key(&d.customer_id)) {
                    c.seen = c.seen.max(t);
                }
            }
            // Counted in `events_in`; their KPIs (CAC, revenue per employee,
            // competitive pricing) come with the rest of the catalogue.
            Payload::SpendRecorded(_)
            | Payload::HeadcountSet(_)
            | Payload::CompetitorPriceObserved(_) => {}
        }
    }
}
