//! Customers and their orders: acquired, cancelled, orders, survey answers.

use super::*;
use crate::event::Event;

impl Engine {
    /// `crm.customer.acquired`.
    pub(super) fn customer_acquired(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::CustomerAcquired<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.customer_id);
        self.touch_customer(id);
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
        true
    }

    /// `crm.customer.cancelled`.
    pub(super) fn customer_cancelled(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::CustomerCancelled<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.customer_id);
        self.touch_customer(id);
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
        true
    }

    /// `crm.order.placed`.
    pub(super) fn order_placed(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::OrderPlaced<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.customer_id);
        self.touch_customer(id);
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
        if self.state.customers.contains_key(&id) {
            let r = self.state.rfm.entry(id).or_default();
            r.last = r.last.max(t);
            r.orders += 1;
            r.cents += amount;
            self.state.gauges_dirty = true;
        }
        let buyer = xxhash_rust::xxh3::xxh3_64(d.customer_id.as_bytes());
        self.add(t, key, |a| {
            a.orders[kind] += 1;
            a.order_revenue_cents += amount;
            a.buyers.insert(buyer);
        });
        true
    }

    /// `crm.survey.answered`.
    pub(super) fn survey_answered(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::SurveyAnswered<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.customer_id);
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
        true
    }
}
