//! Leads: created, qualified (MQL / SQL), first contact, converted.

use super::*;
use crate::event::Event;

impl Engine {
    /// `crm.lead.created`.
    pub(super) fn lead_created(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::LeadCreated<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.lead_id);
        self.unmatch_before((0, id), t);
        if let Some(l) = self.state.leads.get_mut(&id) {
            l.seen = l.seen.max(t);
            return false;
        }
        let mut key = self.rep_dims(d.rep.as_deref(), d.team.as_deref(), d.region.as_deref());
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
        self.sla_open(id, t, key);
        self.cohort_add(t, key, true);
        self.release((0, id));
        true
    }

    /// `crm.lead.qualified`.
    pub(super) fn lead_qualified(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::LeadQualified<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.lead_id);
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
        true
    }

    /// `crm.lead.contacted`.
    pub(super) fn lead_contacted(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::LeadContacted<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.lead_id);
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
        let flags = l.flags;
        l.flags |= CONTACTED;
        let (created, lead_key) = (l.created, l.dims);
        let mut key = self.rep_dims(Some(&d.rep), None, None);
        for dim in [CHANNEL, CAMPAIGN, VARIANT, SEGMENT] {
            key[dim] = lead_key[dim];
        }
        let met = u64::from(self.sla_contact(flags, created, lead_key, t));
        let ms = (t - created).max(0);
        self.add(t, key, |a| {
            a.response.add(ms);
            a.sla_met += met;
        });
        true
    }

    /// `crm.lead.converted`.
    pub(super) fn lead_converted(
        &mut self,
        e: &Event<'_>,
        d: &crate::event::LeadConverted<'_>,
    ) -> bool {
        let t = e.time;
        let id = self.settings.ids.entity(&d.lead_id);
        if self.waits(0, id, e) {
            return true;
        }
        let mut met = 0;
        let (key, created) = match self.state.leads.get_mut(&id) {
            Some(l) if l.flags & CONVERTED != 0 => {
                l.seen = l.seen.max(t);
                return false;
            }
            Some(l) => {
                let flags = l.flags;
                l.flags |= CONVERTED;
                l.seen = l.seen.max(t);
                let (key, created) = (l.dims, l.created);
                met = u64::from(self.sla_contact(flags, created, key, t));
                (key, Some(created))
            }
            None => {
                self.unknown(0);
                (NO_DIMS, None)
            }
        };
        self.add(t, key, |a| {
            a.leads_converted += 1;
            a.sla_met += met;
        });
        if let Some(created) = created {
            self.cohort_add(created, key, false);
        }
        true
    }
}
