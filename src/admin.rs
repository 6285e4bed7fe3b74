//! Operators' commands that change what salespulse remembers:
//! `salespulse erase` (the right to erasure, docs/privacy.md).

use crate::checkpoint::{Checkpoint, CheckpointRef};
use crate::config::Config;
use crate::engine::{Engine, Settings};
use crate::event::{Event, Payload, SubjectErased};
use anyhow::Context as _;
use std::borrow::Cow;
use std::path::Path;

/// Who to erase: at least one id.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub lead_id: Option<String>,
    pub deal_id: Option<String>,
    pub customer_id: Option<String>,
}

/// The `crm.subject.erased` event for `s`, dated now, with a fresh id.
pub fn erasure_event(s: &Subject) -> anyhow::Result<Event<'static>> {
    let ids = [&s.lead_id, &s.deal_id, &s.customer_id];
    if ids.iter().all(|v| v.as_deref().is_none_or(str::is_empty)) {
        anyhow::bail!("nothing to erase (fix: give --lead-id, --deal-id and/or --customer-id)");
    }
    let id = crate::privacy::Pseudonyms::generate()
        .map(|k| k.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .context("no random source for the event id")?;
    let own = |v: &Option<String>| v.clone().filter(|s| !s.is_empty()).map(Cow::Owned);
    Ok(Event {
        id: Cow::Owned(format!("erase-{id}")),
        source: Cow::Borrowed("salespulse/erase"),
        time: chrono::Utc::now().timestamp_millis(),
        subject: None,
        payload: Payload::SubjectErased(SubjectErased {
            lead_id: own(&s.lead_id),
            deal_id: own(&s.deal_id),
            customer_id: own(&s.customer_id),
        }),
    })
}

/// What an offline erasure in a checkpoint found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    /// Entities found and forgotten, by lead, deal, customer.
    pub entities: [u64; 3],
    /// Held events dropped.
    pub held: u64,
}

/// Erases `e`'s subject from the checkpoint file `path` (salespulse
/// stopped): restores it under `cfg` (whose key must be the one it was
/// written with), applies the erasure, and writes it back atomically at
/// the same input position. The next run resumes from it as usual.
pub fn erase_in_checkpoint(cfg: &Config, path: &Path, e: &Event<'_>) -> anyhow::Result<Erased> {
    let Some(c) = Checkpoint::read(path)? else {
        anyhow::bail!(
            "checkpoint {} does not exist (fix: give the checkpoint file of a stopped salespulse)",
            path.display()
        );
    };
    let settings = Settings::from_config(cfg);
    c.check_layout(path, &settings)?;
    let mut engine = Engine::from_state(settings, c.state);
    let before = (engine.state.stats.erased, engine.state.stats.erased_held);
    engine
        .apply(e)
        .map_err(|r| anyhow::anyhow!("the erasure was refused: {}", r.detail))?;
    let s = &engine.state.stats;
    let erased = Erased {
        entities: std::array::from_fn(|k| s.erased[k][1] - before.0[k][1]),
        held: s.erased_held - before.1,
    };
    CheckpointRef::new(&engine.settings, &c.input, c.sinks, &engine.state)
        .write(path)
        .with_context(|| format!("cannot write checkpoint {}", path.display()))?;
    Ok(erased)
}
