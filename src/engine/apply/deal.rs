//! Deals: created, moved between stages, won or lost (reopened, corrected).

use super::*;
use crate::event::Event;

impl Engine {
    /// `crm.deal.created`.
    pub(super) fn deal_created(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::DealCreated<'_>,
        stage: Option<u8>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.deal_id);
        self.touch_deal(id);
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
            let dated = self.expect_close(id, t, d.expected_close.as_deref());
            let deal = self.state.deals.get_mut(&id).expect("known deal");
            if !deal.is_open() || (deal.stage == stage && deal.amount_cents == amount) {
                self.refresh_overdue(id);
                return dated;
            }
            let from = (deal.stage, deal.dims, deal.amount_cents);
            deal.stage = stage;
            deal.amount_cents = amount;
            let to = (stage, deal.dims, amount);
            self.pipeline_move(Some(from), Some(to));
            self.refresh_overdue(id);
            return true;
        }
        let mut key = self.rep_dims(Some(&d.rep), d.team.as_deref(), d.region.as_deref());
        let lead = d
            .lead_id
            .as_deref()
            .and_then(|l| self.state.leads.get(&self.settings.ids.entity(l)))
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
        self.expect_close(id, t, d.expected_close.as_deref());
        self.refresh_overdue(id);
        self.release((1, id));
        true
    }

    /// `crm.deal.stage_changed`.
    pub(super) fn deal_stage_changed(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::DealStageChanged<'_>,
        stage: Option<u8>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.deal_id);
        self.touch_deal(id);
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
        let dated = self.expect_close(id, t, d.expected_close.as_deref());
        let deal = self.state.deals.get_mut(&id).expect("known deal");
        if deal.is_open() && deal.stage == new_stage && deal.amount_cents == new_amount {
            self.refresh_overdue(id);
            return dated;
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
        // Indexed under its new stage's max_days (and open again, if reopened).
        self.deal_alive(id, new_seen);
        // A reopened deal takes the date its reopening names.
        self.expect_close(id, t, d.expected_close.as_deref());
        self.refresh_overdue(id);
        if reopened.is_some() {
            self.replace_outcome(reopened);
        } else if new_stage != old_stage {
            let next = new_stage == old_stage + 1;
            self.add(t, key, |a| a.stage_exit(old_stage, next));
            self.state.forecast.moved(old_stage, new_stage);
        }
        true
    }

    /// `crm.deal.won` and `crm.deal.lost`.
    pub(super) fn deal_closed(&mut self, e: &Event<'_>, d: &crate::event::DealClosed<'_>) -> bool {
        let t = e.time;
        let won = matches!(e.payload, Payload::DealWon(_));
        let kind = if won { CloseKind::Won } else { CloseKind::Lost };
        let amount = cents(d.amount);
        let id = self.settings.ids.entity(&d.deal_id);
        self.touch_deal(id);
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
            // The event's rep borrows from the event; the deal's is
            // copied out of the interner (`rep_dims` takes `&mut self`).
            let known_rep;
            let rep = match d.rep.as_deref() {
                Some(r) => Some(r),
                None => {
                    known_rep = self.state.interner.name(key[REP]).to_owned();
                    Some(known_rep.as_str()).filter(|r| !r.is_empty())
                }
            };
            let k = self.rep_dims(rep, d.team.as_deref(), d.region.as_deref());
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
        self.unstall(id);
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
        self.refresh_overdue(id);
        true
    }
}
