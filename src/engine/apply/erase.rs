//! `crm.subject.erased`: the right to erasure (docs/privacy.md).
//!
//! The lead, deal and/or customer named are forgotten: their entity
//! state, and the events held back that name them (waiting for them, or
//! held as clock outliers: they carry raw ids). Nothing of them is then in
//! memory, and the next checkpoint or changelog entry has no trace of
//! them. The anonymous aggregates they were counted in stay, with one
//! exception: the *current* gauges that follow live entities — an erased
//! open deal leaves the open pipeline, an erased active customer leaves
//! the active customers — as neither could ever leave them otherwise
//! (their later events find no entity). Neither counts as an outcome.

use super::*;
use crate::event::SubjectErased;

/// The ids of (lead, deal, customer) an event names.
pub(crate) fn named_ids<'e>(p: &'e Payload<'_>) -> [Option<&'e str>; 3] {
    match p {
        Payload::LeadCreated(d) => [Some(d.lead_id.as_ref()), None, None],
        Payload::LeadQualified(d) => [Some(d.lead_id.as_ref()), None, None],
        Payload::LeadContacted(d) => [Some(d.lead_id.as_ref()), None, None],
        Payload::LeadConverted(d) => [
            Some(d.lead_id.as_ref()),
            d.deal_id.as_deref(),
            d.customer_id.as_deref(),
        ],
        Payload::DealCreated(d) => [d.lead_id.as_deref(), Some(d.deal_id.as_ref()), None],
        Payload::DealStageChanged(d) => [None, Some(d.deal_id.as_ref()), None],
        Payload::DealWon(d) | Payload::DealLost(d) => [None, Some(d.deal_id.as_ref()), None],
        Payload::OrderPlaced(d) => [None, None, Some(d.customer_id.as_ref())],
        Payload::CustomerAcquired(d) => [None, None, Some(d.customer_id.as_ref())],
        Payload::CustomerCancelled(d) => [None, None, Some(d.customer_id.as_ref())],
        Payload::SurveyAnswered(d) => [None, None, Some(d.customer_id.as_ref())],
        Payload::ActivityLogged(d) => [d.lead_id.as_deref(), d.deal_id.as_deref(), None],
        Payload::SubjectErased(d) => [
            d.lead_id.as_deref(),
            d.deal_id.as_deref(),
            d.customer_id.as_deref(),
        ],
        _ => [None, None, None],
    }
    .map(|o: Option<&str>| o.filter(|s| !s.is_empty()))
}

impl Engine {
    /// Forgets the entities `d` names, at event time `t`. Always true
    /// (an erasure is never a repeated transition).
    pub(in crate::engine) fn erase(&mut self, t: i64, d: &SubjectErased<'_>) -> bool {
        let ids = [&d.lead_id, &d.deal_id, &d.customer_id];
        let mut keys = Vec::with_capacity(3);
        for (kind, id) in ids.into_iter().enumerate() {
            let Some(id) = id.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let key = self.settings.ids.entity(id);
            let found = match kind {
                0 => match self.state.leads.remove(&key) {
                    Some(l) => {
                        self.sla_forget(l.flags, l.dims);
                        true
                    }
                    None => false,
                },
                1 => self.erase_deal(key),
                _ => self.erase_customer(t, key),
            };
            self.state.stats.erased[kind][usize::from(found)] += 1;
            keys.push((kind as u8, key));
        }
        self.drop_held(&keys);
        true
    }

    fn erase_deal(&mut self, key: u128) -> bool {
        self.touch_deal(key);
        let Some(deal) = self.state.deals.remove(&key) else {
            return false;
        };
        self.unstall(key);
        self.refresh_overdue(key);
        if deal.is_open() {
            // Out of the open pipeline (stale expiry-index entries are
            // skipped when their day comes).
            let dims = self.mask(deal.dims);
            self.pipeline_move(Some((deal.stage, dims, deal.amount_cents)), None);
            self.state.gauges_dirty = true;
        }
        true
    }

    fn erase_customer(&mut self, t: i64, key: u128) -> bool {
        self.touch_customer(key);
        self.state.rfm.remove(&key);
        let Some(c) = self.state.customers.remove(&key) else {
            return false;
        };
        if c.acquired.is_some() && c.cancelled.is_none() {
            // Out of the active customers, at the erasure (or, for an
            // erasure dated in windows already closed, when they end).
            let at = t.max(self.cutoff());
            let k = self.mask(c.key());
            self.state.ledger.add(at, k, -1);
            if let Some(tr) = self.track.as_mut() {
                tr.ledger(at);
            }
            self.state.gauges_dirty = true;
        }
        true
    }

    /// Drops the held events that name one of `erased` (kind, pseudonym).
    fn drop_held(&mut self, erased: &[(u8, u128)]) {
        if erased.is_empty() {
            return;
        }
        let ids = self.settings.ids.clone();
        let names = |held: &HeldEvent| {
            held.with(|e| {
                named_ids(&e.payload)
                    .iter()
                    .enumerate()
                    .any(|(k, id)| id.is_some_and(|id| erased.contains(&(k as u8, ids.entity(id)))))
            })
            .unwrap_or(false)
        };
        let w = &mut self.state.waiting;
        let before = w.facts.len() + w.outliers.len();
        w.facts
            .retain(|_, (ent, held)| !erased.contains(ent) && !names(held));
        w.outliers.retain(|h| !names(&h.event));
        let dropped = before - w.facts.len() - w.outliers.len();
        if dropped > 0 {
            w.rebuild();
        } else {
            // Keys of erased entities' events that already counted.
            w.prune();
        }
        self.state.stats.erased_held += dropped as u64;
    }
}
