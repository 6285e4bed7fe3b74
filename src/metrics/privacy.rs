//! Erasure metrics (docs/privacy.md).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

pub struct PrivacyMetrics {
    /// Entities forgotten by an erasure that found them, by entity.
    pub erased: IntCounterVec,
    /// Held events dropped because they named an erased entity.
    pub erased_held: IntCounter,
}

impl PrivacyMetrics {
    pub fn new(r: &Registry) -> PrivacyMetrics {
        let erased = IntCounterVec::new(
            Opts::new(
                "salespulse_entities_erased_total",
                "Leads, deals and customers forgotten by an erasure request (crm.subject.erased) that found them here.",
            ),
            &["entity"],
        )
        .expect("metric");
        let erased_held = IntCounter::new(
            "salespulse_erased_held_events_total",
            "Events held back (waiting for their entity, or clock outliers) dropped because they named an erased entity.",
        )
        .expect("metric");
        r.register(Box::new(erased.clone())).expect("register");
        r.register(Box::new(erased_held.clone())).expect("register");
        PrivacyMetrics {
            erased,
            erased_held,
        }
    }
}
