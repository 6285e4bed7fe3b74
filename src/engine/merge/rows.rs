//! Entity rows in scale-out: the open deals the forecast draws from and
//! the ordering customers RFM scores, with the forecast's history.
//!
//! Unlike the aggregates, these are not sums: the merger needs each
//! entity. A source exports the rows it touched since its last export
//! (every row, the first time): the current value, or `None` once the
//! deal closed or the customer left. The merger keeps, per source, the
//! newest version of each row, so a row sent again, or older than one
//! it has (a replay after the merger took a newer export in at once),
//! changes nothing. A removed row stays as a tombstone until the
//! source's progress read from the topic has passed it; from then on a
//! message older than that progress is refused whole, so that a source
//! restarted from an older checkpoint cannot bring a closed deal back
//! while it replays (its rows are those the merger already has, once it
//! is past that progress again).

use super::export::Names;
use super::*;
use crate::engine::forecast::{self, History, OpenDeal};

/// Per source: row id → (version, value; `None` = removed).
pub type Rows<T> = BTreeMap<String, FxHashMap<u128, (i64, Option<T>)>>;

/// Rows per item, so that a large first export splits into messages.
const ROWS_PER_ITEM: usize = 4096;

impl Engine {
    /// Deal `id` may have changed for the forecast (sources only).
    pub(in crate::engine) fn touch_deal(&mut self, id: u128) {
        if let Some(t) = self.track.as_mut() {
            t.deals.insert(id);
        }
    }

    /// Customer `id` may have changed for RFM (sources only).
    pub(in crate::engine) fn touch_customer(&mut self, id: u128) {
        if let Some(t) = self.track.as_mut() {
            t.customers.insert(id);
        }
    }

    /// The open deals of every source (merger only).
    pub(in crate::engine) fn merged_open_deals(&self) -> Vec<(u128, OpenDeal)> {
        let Some(m) = self.merge.as_deref() else {
            return Vec::new();
        };
        let rows = m.deals.values().flat_map(|r| r.iter());
        rows.filter_map(|(id, (_, d))| Some((*id, (*d)?))).collect()
    }

    /// The active customers that ordered, of every source (merger only).
    pub(in crate::engine) fn merged_rfm(&self) -> Vec<(DimKey, Rfm)> {
        let Some(m) = self.merge.as_deref() else {
            return Vec::new();
        };
        let rows = m.customers.values().flat_map(|r| r.values());
        rows.filter_map(|(_, c)| *c).collect()
    }

    /// The history of one source; the merged history is their sum.
    pub(super) fn absorb_history(&mut self, m: &mut MergeState, src: &str, v: i64, h: History) {
        if put(&mut m.history, src, v, h) {
            let mut out = History::default();
            for (_, h) in m.history.values() {
                out.merge(h);
            }
            self.state.forecast = out;
            self.state.gauges_dirty = true;
        }
    }
}

/// A source's rows of one kind, at version `v`; with `sweep`, its other
/// rows older than `v` are gone.
pub(super) fn absorb_rows<T: Copy>(
    rows: &mut Rows<T>,
    sources: &BTreeMap<String, SourceState>,
    (src, v): (&str, i64),
    x: impl Iterator<Item = (u128, Option<T>)>,
    sweep: bool,
) -> bool {
    if sources.get(src).is_some_and(|s| s.version > v) {
        tracing::trace!(source = src, version = v, "older entity rows ignored");
        return false;
    }
    let mine = rows.entry(src.to_string()).or_default();
    let mut changed = false;
    for (id, val) in x {
        match mine.get_mut(&id) {
            Some(r) if r.0 > v => {}
            Some(r) => {
                *r = (v, val);
                changed = true;
            }
            None => {
                mine.insert(id, (v, val));
                changed = true;
            }
        }
    }
    if sweep {
        for r in mine.values_mut().filter(|r| r.0 < v && r.1.is_some()) {
            *r = (v, None);
            changed = true;
        }
    }
    changed
}

/// Drops the tombstones the progress of `src` (its version) has passed.
pub(super) fn prune_rows(m: &mut MergeState, src: &str) {
    let Some(v) = m.sources.get(src).map(|s| s.version) else {
        return;
    };
    if let Some(r) = m.deals.get_mut(src) {
        r.retain(|_, (rv, d)| d.is_some() || *rv >= v);
    }
    if let Some(r) = m.customers.get_mut(src) {
        r.retain(|_, (rv, c)| c.is_some() || *rv >= v);
    }
}

/// The row items of what `tr` saw touched (of every row, with `all`),
/// and the history when it changed.
pub(super) fn export_rows(
    s: &State,
    tr: &mut Track,
    all: bool,
    n: &mut Names<'_>,
    items: &mut Vec<Item>,
) {
    let deals = ids_to_send(all, s.deals.keys(), &mut tr.deals);
    let rows = deals
        .iter()
        .map(|id| (*id, forecast::open_deal(s, id)))
        .filter(|r| !all || r.1.is_some());
    let rows: Vec<_> = rows.collect();
    push_chunks(items, &rows, all, |rows, sweep| Item::Deals { rows, sweep });
    let customers = ids_to_send(all, s.rfm.keys(), &mut tr.customers);
    let rows = customers.iter().map(|id| {
        let c = s
            .customers
            .get(id)
            .filter(|c| c.acquired.is_some() && c.cancelled.is_none());
        let row = c.and_then(|c| Some((n.key(&c.key()), *s.rfm.get(id)?)));
        (*id, row)
    });
    let rows: Vec<_> = rows.filter(|r| !all || r.1.is_some()).collect();
    push_chunks(items, &rows, all, |rows, sweep| Item::Customers {
        rows,
        sweep,
    });
    if all || tr.history.as_ref() != Some(&s.forecast) {
        tr.history = Some(s.forecast.clone());
        items.push(Item::History(s.forecast.clone()));
    }
}

/// The ids to send, sorted: every one of `every` with `all`, else the
/// `touched` ones (which are forgotten).
fn ids_to_send<'a>(
    all: bool,
    every: impl Iterator<Item = &'a u128>,
    touched: &mut FxHashSet<u128>,
) -> Vec<u128> {
    let mut ids: Vec<u128> = if all {
        every.copied().collect()
    } else {
        touched.iter().copied().collect()
    };
    touched.clear();
    ids.sort_unstable();
    ids
}

/// `rows` in items of at most [`ROWS_PER_ITEM`]; with `all`, the last
/// one (there is one even with no rows) sweeps.
fn push_chunks<T: Clone>(
    items: &mut Vec<Item>,
    rows: &[T],
    all: bool,
    item: impl Fn(Vec<T>, bool) -> Item,
) {
    let n = rows.len().div_ceil(ROWS_PER_ITEM);
    for (i, c) in rows.chunks(ROWS_PER_ITEM).enumerate() {
        items.push(item(c.to_vec(), all && i + 1 == n));
    }
    if all && rows.is_empty() {
        items.push(item(Vec::new(), true));
    }
}
