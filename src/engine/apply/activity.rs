//! Everything else: sales activities, quotas, spend, competitor prices, team headcount, market sizes.

use super::*;
use crate::event::Event;

impl Engine {
    /// `crm.activity.logged`.
    pub(super) fn activity_logged(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::ActivityLogged<'_>,
    ) -> bool {
        let t = e.time;
        // An activity on a deal (or lead) not seen yet waits for it.
        let waits_for = match (&d.deal_id, &d.lead_id) {
            (Some(id), _) => Some((1, self.settings.ids.entity(id))),
            (None, Some(id)) => Some((0, self.settings.ids.entity(id))),
            (None, None) => None,
        };
        if waits_for.is_some_and(|(k, id)| self.waits(k, id, e)) {
            return true;
        }
        let mut key = self.rep_dims(Some(&d.rep), None, None);
        // An activity keeps its deal (or lead) from going stale.
        let deal_id = d.deal_id.as_deref().map(|id| self.settings.ids.entity(id));
        if let Some((id, deal)) = deal_id.and_then(|id| Some(id).zip(self.state.deals.get_mut(&id)))
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
            .and_then(|id| self.state.leads.get_mut(&self.settings.ids.entity(id)))
        {
            lead.seen = lead.seen.max(t);
            for dim in [CHANNEL, CAMPAIGN, SEGMENT] {
                key[dim] = lead.dims[dim];
            }
        }
        let k = d.kind as usize;
        self.add(t, key, |a| a.activities[k] += 1);
        true
    }

    /// `crm.quota.set`.
    pub(super) fn quota_set(&mut self, d: &crate::event::QuotaSet<'_>) -> bool {
        let key = self.rep_dims(Some(&d.rep), None, None);
        let period = self.state.interner.intern(&d.period);
        self.state
            .quotas
            .insert((key[REP], period), cents(d.amount));
        true
    }

    /// `crm.spend.recorded`.
    pub(super) fn spend_recorded(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::SpendRecorded<'_>,
    ) -> bool {
        let t = e.time;
        let mut key = NO_DIMS;
        key[CHANNEL] = self.dim(CHANNEL, Some(&d.channel));
        let (cat, amount) = (d.category as usize, cents(d.amount));
        self.add(t, key, |a| a.spend_cents[cat] += amount);
        true
    }

    /// `crm.competitor.price_observed`.
    pub(super) fn competitor_price_observed(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::CompetitorPriceObserved<'_>,
    ) -> bool {
        let t = e.time;
        let mut key = NO_DIMS;
        key[PRODUCT] = self.dim(PRODUCT, Some(&d.product));
        key[COMPETITOR] = self.dim(COMPETITOR, Some(&d.competitor));
        let (ours, theirs) = (cents(d.our_price), cents(d.price));
        self.add_to(t, key, true, false, |a| {
            a.price_obs += 1;
            a.our_price_cents += ours;
            a.their_price_cents += theirs;
        });
        true
    }

    /// `crm.headcount.set`.
    pub(super) fn headcount_set(&mut self, d: &crate::event::HeadcountSet<'_>) -> bool {
        let team = self.dim(TEAM, d.team.as_deref());
        self.state.headcount.insert(team, d.count);
        true
    }

    /// `crm.market.size_set`.
    pub(super) fn market_size_set(&mut self, d: &crate::event::MarketSizeSet<'_>) -> bool {
        let product = self.dim(PRODUCT, d.product.as_deref());
        self.state.market_size.insert(product, cents(d.amount));
        true
    }
}
