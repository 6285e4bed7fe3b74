//! Exact scale-out: per-partition partial aggregates, and their merge.
//!
//! With a consumer group, each input partition has its own *source*
//! engine (entities, dedup memory, lateness: everything that needs the
//! events), wherever the partition is assigned. A source never emits KPI
//! records: it exports [`Partial`]s, the current value of every
//! aggregate it changed (a day's series, a rolling sub-bucket, the
//! customer ledger of a day, a lead cohort, the open pipeline, quotas and
//! other settings learned from events), stamped with a *version*: the
//! input offset its state has reached.
//!
//! One *merger* engine receives the partials of every source. For each
//! (source, item) it keeps the value with the highest version — a
//! replacement, never an addition — and an item's merged value is the
//! merge of its sources' values. Since every aggregate is mergeable
//! (`merge(agg(A), agg(B)) == agg(A ++ B)`) and a source's state at a
//! given offset is a deterministic function of its partition's events up
//! to that offset, the merged values equal those of one engine over all
//! events, whatever was repeated: a partial delivered twice, a source
//! restarted from an older checkpoint (it replays, and its older versions
//! are ignored), or an instance that lost a partition and still publishes
//! for a while (its versions are older than the new owner's as soon as
//! that one catches up, and equal ones carry equal values).
//!
//! The merger's event-time clock is the slowest source that is not idle,
//! so a window closes only once every source has passed it; it then
//! emits every KPI exactly like a single engine does (the emission code
//! is the same).

mod absorb;
mod export;
mod rows;
mod wire;

pub use rows::Rows;

use super::state::*;
use super::Engine;
use crate::agg::{Acc, Pipeline};
use crate::window::{sub_bucket, CalendarKind};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const DAY_MS: i64 = 86_400_000;

/// Where a source is, sent with the last message of each export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The source's event-time clock (its newest event time).
    pub clock: i64,
    pub max_time: i64,
    /// The partition had no message for `kafka.idle_partition_timeout`:
    /// it stops holding the merged clock back.
    pub idle: bool,
    /// `run --to-end`: the partition is consumed to its end.
    pub at_end: bool,
}

/// Settings learned from events (quotas, team headcount, market sizes,
/// reps' team and region).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Misc {
    pub quotas: Vec<((u32, u32), i64)>,
    pub rep_info: Vec<(u32, [u32; 2])>,
    pub headcount: Vec<(u32, i64)>,
    pub market: Vec<(u32, i64)>,
}

impl Misc {
    /// The same with every interned id passed through `f`.
    fn map_ids(&self, mut f: impl FnMut(u32) -> u32) -> Misc {
        Misc {
            quotas: self
                .quotas
                .iter()
                .map(|((r, p), v)| ((f(*r), f(*p)), *v))
                .collect(),
            rep_info: self
                .rep_info
                .iter()
                .map(|(r, [a, b])| (f(*r), [f(*a), f(*b)]))
                .collect(),
            headcount: self.headcount.iter().map(|(k, v)| (f(*k), *v)).collect(),
            market: self.market.iter().map(|(k, v)| (f(*k), *v)).collect(),
        }
    }
}

/// A bucket's accumulators by scope and by (product, competitor) pair,
/// sorted, with ids of the partial's name table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cells {
    #[serde(with = "wire")]
    pub scopes: Vec<(Scope, Acc)>,
    #[serde(with = "wire")]
    pub pairs: Vec<((u32, u32), Acc)>,
}

/// One aggregate of a source, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Day {
        start: i64,
        cells: Cells,
    },
    Rolling {
        set: u8,
        start: i64,
        cells: Cells,
    },
    /// Customer changes (15-minute slot, key, net) of one UTC day.
    Ledger {
        day: i64,
        slots: Vec<(i64, DimKey, i64)>,
    },
    Cohort {
        day: i64,
        cells: Vec<(DimKey, (u64, u64))>,
    },
    Pipeline {
        cells: Vec<((u8, DimKey), Pipeline)>,
    },
    Misc(Misc),
    /// Newest event time of each series of the `absent_for` rules, by
    /// (rule name, series key), whole.
    Seen(Vec<((u32, DimKey), i64)>),
    /// Leads awaiting their first contact, by dimensions, whole.
    Awaiting(Vec<(DimKey, i64)>),
    /// Deals touched since the last export: open (as the forecast sees
    /// them) or `None` (closed, expired, erased), by id. `sweep`: the
    /// last item of an export of every row: the source's rows older than
    /// it that it did not name are gone.
    Deals {
        rows: Vec<(u128, Option<crate::engine::forecast::OpenDeal>)>,
        sweep: bool,
    },
    /// Customers touched since the last export: active and ordering
    /// (dimensions, orders) or `None`, by id; `sweep` as for deals.
    Customers {
        rows: Vec<(u128, Option<(DimKey, Rfm)>)>,
        sweep: bool,
    },
    /// What the forecast learned from closed deals, whole.
    History(crate::engine::forecast::History),
}

/// A message from a source to the merger. Ids in `items` index `names`
/// (0 = none), so sources and merger need not share an interner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// The source partition, `topic/partition`.
    pub source: String,
    /// Hash of the settings the state layout depends on; a merger
    /// refuses partials made under other settings.
    pub layout: u64,
    /// The input offset the source's state has reached (next to read).
    pub version: i64,
    pub names: Vec<String>,
    pub items: Vec<Item>,
    /// In the last message of an export only, and only once the broker
    /// has acknowledged the export it describes and every one before it
    /// (see `kafka::run`): a partial that failed and is sent again must
    /// not find the merger's clock already past its windows.
    pub progress: Option<Progress>,
}

impl Partial {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a partial always encodes")
    }
    pub fn decode(b: &[u8]) -> Result<Partial, String> {
        postcard::from_bytes(b).map_err(|e| format!("not a salespulse partial: {e}"))
    }
}

/// The partials' format: 2 since cells are sparse ([`wire`]).
const PARTIALS_FORMAT: u32 = 2;

/// Hash of [`super::Settings::layout`] and the partials' format: a
/// partial of another layout, or of another format that happened to
/// decode, is refused.
pub fn layout_hash(s: &super::Settings) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{:?} {PARTIALS_FORMAT}", s.layout()).as_bytes())
}

/// What a source engine changed since its last export.
#[derive(Debug, Default)]
pub struct Track {
    rolling: FxHashSet<(u8, i64)>,
    ledger: BTreeSet<i64>,
    misc: Option<Misc>,
    /// An `absent_for` series had a newer event.
    pub(super) seen: bool,
    /// Cohorts retired by the TTL sweep, still to be exported.
    retiring: BTreeMap<i64, Cohort>,
    /// Deals and customers touched since the last export.
    deals: FxHashSet<u128>,
    customers: FxHashSet<u128>,
    /// The forecast history last exported.
    history: Option<crate::engine::forecast::History>,
    /// Everything is exported next time (a new or restored source).
    all: bool,
}

impl Track {
    pub(super) fn rolling(&mut self, set: usize, start: i64) {
        self.rolling.insert((set as u8, start));
    }
    pub(super) fn ledger(&mut self, t: i64) {
        self.ledger.insert(sub_bucket(t, DAY_MS));
    }
}

/// Customer changes of a day: (15-minute slot, key, net).
pub type LedgerDay = Vec<(i64, DimKey, i64)>;
/// A day's lead cohort: key → (created, converted).
pub type CohortCells = Vec<(DimKey, (u64, u64))>;

/// Per-(source, item) values kept by the merger, with their versions.
type BySource<T> = BTreeMap<String, (i64, T)>;

/// A source as the merger knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceState {
    pub version: i64,
    pub progress: Progress,
}

/// The merger's memory: the newest value of each open item per source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeState {
    pub sources: BTreeMap<String, SourceState>,
    /// Sources the merger waits for before its clock moves (every
    /// partition of the input topics).
    pub expected: BTreeSet<String>,
    pub days: BTreeMap<i64, BySource<Rolled>>,
    pub rolling: BTreeMap<(u8, i64), BySource<Rolled>>,
    pub ledger: BTreeMap<i64, BySource<LedgerDay>>,
    pub cohorts: BTreeMap<i64, BySource<CohortCells>>,
    pub pipeline: BySource<Vec<((u8, DimKey), Pipeline)>>,
    pub misc: BySource<Misc>,
    /// Newest event time of the `absent_for` series, by source.
    pub seen: BySource<Vec<((u32, DimKey), i64)>>,
    /// Leads awaiting their first contact, by source.
    pub awaiting: BySource<Vec<(DimKey, i64)>>,
    /// Open deals, by source (for the forecast).
    pub deals: Rows<crate::engine::forecast::OpenDeal>,
    /// Active customers that ordered, by source (for RFM).
    pub customers: Rows<(DimKey, Rfm)>,
    /// The forecast's history, by source.
    pub history: BySource<crate::engine::forecast::History>,
    /// Items that came for a window the merger had already closed.
    pub late_items: u64,
    /// Partials refused (other layout, undecodable).
    pub refused: u64,
    /// Customer changes before this instant are folded into the ledger's base.
    pub ledger_folded: i64,
    /// Rolling sub-buckets whose sources' values changed since they were
    /// last merged: merged once before anything reads them
    /// ([`Engine::settle`]), not at every absorbed partial. Empty in a
    /// checkpoint.
    #[serde(skip)]
    pub(crate) stale_rolling: BTreeSet<(u8, i64)>,
    /// Days whose sources' values changed since they were last merged,
    /// the same way.
    #[serde(skip)]
    pub(crate) stale_days: BTreeSet<i64>,
}

impl Default for MergeState {
    fn default() -> Self {
        MergeState {
            sources: Default::default(),
            expected: Default::default(),
            days: Default::default(),
            rolling: Default::default(),
            ledger: Default::default(),
            cohorts: Default::default(),
            pipeline: Default::default(),
            misc: Default::default(),
            seen: Default::default(),
            awaiting: Default::default(),
            deals: Default::default(),
            customers: Default::default(),
            history: Default::default(),
            late_items: 0,
            refused: 0,
            ledger_folded: i64::MIN,
            stale_rolling: Default::default(),
            stale_days: Default::default(),
        }
    }
}

/// Stores `v` for `source` if it is not older than what is there.
fn put<T>(m: &mut BySource<T>, source: &str, version: i64, v: T) -> bool {
    match m.get_mut(source) {
        Some((old, _)) if *old > version => {
            tracing::trace!(source, version, kept = *old, "older partial item ignored");
            false
        }
        Some(e) => {
            *e = (version, v);
            true
        }
        None => {
            m.insert(source.to_string(), (version, v));
            true
        }
    }
}

/// `out` set to the merge of every source's cells: the first source's
/// cloned into `out`'s tables (their capacity kept, so a day or
/// sub-bucket merged again at each read does not grow its tables
/// anew), then the others merged in.
fn merge_into(out: &mut Rolled, m: &BySource<Rolled>) {
    let mut each = m.values().map(|(_, a)| a);
    match each.next() {
        Some(first) => {
            out.scopes.clone_from(&first.scopes);
            out.pairs.clone_from(&first.pairs);
        }
        None => {
            out.scopes.clear();
            out.pairs.clear();
        }
    }
    for a in each {
        out.merge(a);
    }
}

impl Engine {
    /// Makes this a source engine: no records, partials instead (see [`Engine::export`]).
    pub fn set_source_mode(&mut self) {
        self.track = Some(Box::new(Track {
            all: true,
            ..Default::default()
        }));
    }

    pub fn is_source(&self) -> bool {
        self.track.is_some()
    }

    /// Makes this the merger of `expected` sources.
    pub fn set_merge_mode(&mut self, mut m: MergeState, expected: BTreeSet<String>) {
        self.external_clock = true;
        // Each run learns again that a partition is at its end.
        for s in m.sources.values_mut() {
            s.progress.at_end = false;
        }
        m.expected = expected;
        self.merge = Some(Box::new(m));
        self.next_close = i64::MIN;
    }

    pub fn merge_state(&self) -> Option<&MergeState> {
        self.merge.as_deref()
    }

    /// What a merger's checkpoint holds: its settings, its state with
    /// every rolling sub-bucket merged ([`Engine::settle`]), and its
    /// memory of the sources' values. None on a source.
    pub fn merge_snapshot(&mut self) -> Option<(&super::Settings, &State, &MergeState)> {
        self.settle();
        Some((&self.settings, &self.state, self.merge.as_deref()?))
    }

    /// A source forgets what is exported and can no longer change: days
    /// and longer windows that are closed, rolling sub-buckets out of
    /// every span, customer changes before the cutoff, old cohorts.
    fn source_forget(&mut self) {
        if self.state.max_time == i64::MIN {
            return;
        }
        let cutoff = self.cutoff().max(i64::MIN / 2);
        for set in &mut self.state.calendar {
            while let Some((&start, b)) = set.buckets.first_key_value() {
                if b.end > cutoff {
                    break;
                }
                set.buckets.remove(&start);
            }
        }
        let now = self.state.max_time;
        for r in &mut self.state.rolling {
            let span_start = sub_bucket(now, r.width) + r.width - r.span;
            let keep_from = span_start.min(cutoff - r.width + 1);
            r.buckets = r.buckets.split_off(&sub_bucket(keep_from, r.width));
        }
        // Whole days only: a ledger item is always a whole day, the same
        // whenever it is exported (a restarted source exports it again).
        self.state.ledger.fold_before(sub_bucket(cutoff, DAY_MS));
    }

    /// The TTL sweep of a source: cohorts past the TTL stop counting
    /// conversions (at the same event time as in one engine), and wait
    /// for the next export.
    pub(super) fn source_retire_cohorts(&mut self) {
        let horizon = self.state.clock.saturating_sub(self.settings.entity_ttl);
        let keep = self.state.cohorts.split_off(&horizon);
        let old = std::mem::replace(&mut self.state.cohorts, keep);
        if let Some(tr) = self.track.as_mut() {
            tr.retiring.extend(old.into_iter().filter(|(_, c)| c.dirty));
        }
    }
}
