//! The engine's serializable state: entities, window buckets, gauges,
//! dedup memory and counters. Everything here round-trips through serde,
//! which is what checkpoints are made of.

pub use super::hold::{HeldEvent, DECODED_CAP};
use crate::agg::{Acc, Pipeline};
pub use crate::intern::UNKNOWN;
use crate::intern::{as_pairs, Interner};
use crate::window::CalendarKind;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::{BTreeMap, VecDeque};

pub use crate::event::{
    CAMPAIGN, CHANNEL, COMPETITOR, DIMS, NDIMS, PRODUCT, REGION, REP, SEGMENT, TEAM, VARIANT,
};

/// The scope of dimension `d` = value `v`.
pub fn scope(d: usize, v: u32) -> Scope {
    (d as u8 + 1, v)
}

/// Interned dimension values of an event or entity (0 = none).
///
/// A newtype over the array for speed on the hot path: it is hashed in
/// five words instead of nine and compared without a `memcmp` call (lead
/// cohorts, the open pipeline and the customer ledger are keyed by it).
/// Serialized as the bare array.
#[derive(Clone, Copy, Default, Debug, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DimKey(pub [u32; NDIMS]);

/// The key with no dimension set.
pub const NO_DIMS: DimKey = DimKey([0; NDIMS]);

impl PartialEq for DimKey {
    #[inline]
    fn eq(&self, o: &DimKey) -> bool {
        self.0.iter().zip(&o.0).fold(0, |d, (a, b)| d | (a ^ b)) == 0
    }
}
impl Eq for DimKey {}

impl std::hash::Hash for DimKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let k = &self.0;
        for i in 0..NDIMS / 2 {
            h.write_u64(u64::from(k[2 * i]) | u64::from(k[2 * i + 1]) << 32);
        }
        if NDIMS % 2 == 1 {
            h.write_u32(k[NDIMS - 1]);
        }
    }
}

impl std::ops::Deref for DimKey {
    type Target = [u32; NDIMS];
    fn deref(&self) -> &[u32; NDIMS] {
        &self.0
    }
}
impl std::ops::DerefMut for DimKey {
    fn deref_mut(&mut self) -> &mut [u32; NDIMS] {
        &mut self.0
    }
}

/// A rolled-up scope: `(0, 0)` is "all", `(d + 1, v)` is dimension `d` = value `v`.
pub type Scope = (u8, u32);
pub const ALL: Scope = (0, 0);

/// The scopes a dimension key contributes to: "all" and each set dimension.
pub fn scopes(key: &DimKey) -> impl Iterator<Item = Scope> + '_ {
    std::iter::once(ALL).chain(
        key.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(d, v)| (d as u8 + 1, *v)),
    )
}

/// A bucket's accumulators by scope — what its records are made of — and
/// by (product, competitor) pair, for the price index.
///
/// An event adds to "all" and to the scope of each of its dimensions
/// (about ten small-table updates) rather than to one cell per
/// combination of nine dimensions rolled up when the window closes: the
/// scopes of a bucket number in the hundreds and stay in cache, whereas
/// a busy day has tens of thousands of combinations, one cache miss per
/// event, and rolling them up was as costly as the events themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rolled {
    /// Always holds "all" once anything was added.
    #[serde(with = "as_pairs")]
    pub scopes: FxHashMap<Scope, Acc>,
    #[serde(with = "as_pairs")]
    pub pairs: FxHashMap<(u32, u32), Acc>,
}

impl Rolled {
    pub fn with_capacity(n: usize) -> Rolled {
        Rolled {
            scopes: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            pairs: FxHashMap::default(),
        }
    }

    /// Applies `f` to every scope of `key` ("all" and each dimension it
    /// has), and with `pair` to its (product, competitor) pair if it has both.
    #[inline]
    pub fn update(&mut self, key: &DimKey, pair: bool, f: &impl Fn(&mut Acc)) {
        // The scopes of [`scopes`], unrolled: this runs for every event
        // and bucket, and the iterator chain costs 1.4 % more instructions.
        f(self.scopes.entry(ALL).or_default());
        for (d, v) in key.iter().enumerate() {
            if *v != 0 {
                f(self.scopes.entry(scope(d, *v)).or_default());
            }
        }
        if pair && ![0, UNKNOWN].contains(&key[PRODUCT]) && ![0, UNKNOWN].contains(&key[COMPETITOR])
        {
            f(self
                .pairs
                .entry((key[PRODUCT], key[COMPETITOR]))
                .or_default());
        }
    }

    pub fn merge(&mut self, o: &Rolled) {
        for (s, a) in &o.scopes {
            self.scopes.entry(*s).or_default().merge(a);
        }
        for (p, a) in &o.pairs {
            self.pairs.entry(*p).or_default().merge(a);
        }
    }

    /// Revenue in cents by scope (for month-over-month growth).
    pub fn revenue_by_scope<C: FromIterator<(Scope, i64)>>(&self) -> C {
        self.scopes
            .iter()
            .map(|(s, a)| (*s, a.revenue_cents))
            .collect()
    }
}

pub const CONTACTED: u8 = 1;
pub const CONVERTED: u8 = 2;
pub const MQL: u8 = 4;
pub const SQL: u8 = 8;
/// Its first-contact SLA breach is counted.
pub const SLA_BREACHED: u8 = 16;

/// What is remembered of a lead between its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lead {
    /// Creation time (ms), for the response time.
    pub created: i64,
    /// Time of its newest event (ms), for the TTL.
    pub seen: i64,
    /// rep, team, region, channel, campaign, variant, segment.
    pub dims: DimKey,
    /// CONTACTED | CONVERTED | MQL | SQL: each is counted once.
    pub flags: u8,
}

/// What is remembered of a deal: while it is open, and once closed (won,
/// lost, expired) for `state.entity_ttl` after its last event, so that a
/// re-sent outcome is recognised as such and a reopen can move it
/// (docs/entities.md). An open deal is never forgotten by inactivity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deal {
    /// Creation time (ms), for the sales cycle; `None` when its
    /// creation was never seen (closed while unknown).
    pub created: Option<i64>,
    pub seen: i64,
    pub dims: DimKey,
    /// Index into the configured stages.
    pub stage: u8,
    pub amount_cents: i64,
    /// How it closed, as counted; `None` while open.
    pub closed: Option<Box<Closed>>,
}

impl Deal {
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}

/// How a deal closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseKind {
    Won,
    Lost,
    /// Open longer than `pipeline.max_open_age` without an event.
    Expired,
}

/// A deal's outcome as it was counted: what a later outcome withdraws
/// from the window that still holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    pub kind: CloseKind,
    /// Event time it was counted at.
    pub at: i64,
    /// The dimensions it was counted with (before `kpis.dimensions`).
    pub key: DimKey,
    pub amount_cents: i64,
    pub list_cents: Option<i64>,
    pub competitor: bool,
    /// Sales cycle (ms), when the creation was seen.
    pub cycle: Option<i64>,
    /// Stage exit counted: (stage, advanced).
    pub exit: Option<(u8, bool)>,
    /// Whether the deal itself was counted (won / lost count, cycle,
    /// competitor, stage exit); false for a change of a won amount whose
    /// first win is in a final window: then only the difference of
    /// amount (in `amount_cents`) was counted.
    pub counted: bool,
}

/// What is remembered of a customer: while active, and once cancelled
/// for `state.entity_ttl` after its last event. An active customer is
/// never forgotten by inactivity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    /// Acquisition time (ms); `None` when it was never seen (cancelled while unknown).
    pub acquired: Option<i64>,
    pub seen: i64,
    /// Acquisition channel (interned).
    pub channel: u32,
    /// Segment (interned).
    pub segment: u32,
    /// Cancellation time (ms); `None` while active.
    pub cancelled: Option<i64>,
}

impl Customer {
    /// The dimension key of what a customer does: channel and segment.
    pub fn key(&self) -> DimKey {
        customer_key(self.channel, self.segment)
    }
}

pub fn customer_key(channel: u32, segment: u32) -> DimKey {
    let mut k = NO_DIMS;
    k[CHANNEL] = channel;
    k[SEGMENT] = segment;
    k
}

/// A customer's orders: newest order time, count, Σ amount in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rfm {
    pub last: i64,
    pub orders: u32,
    pub cents: i64,
}

/// Leads created on one day (a cohort), and how many of them converted
/// so far, by dimension key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cohort {
    #[serde(with = "as_pairs")]
    pub cells: FxHashMap<DimKey, (u64, u64)>,
    pub dirty: bool,
}

/// Which values of each dimension have a series of their own
/// (`kpis.max_series_per_dimension`); the others fold into `other`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Admitted {
    /// One bit set per admitted interned id, by dimension.
    pub bits: Vec<Vec<u64>>,
    pub counts: Vec<u32>,
}

impl Admitted {
    pub fn contains(&self, d: usize, id: u32) -> bool {
        self.bits
            .get(d)
            .and_then(|b| b.get(id as usize / 64))
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
    pub fn admit(&mut self, d: usize, id: u32) {
        if self.bits.len() < NDIMS {
            self.bits.resize(NDIMS, Vec::new());
            self.counts.resize(NDIMS, 0);
        }
        let b = &mut self.bits[d];
        let w = id as usize / 64;
        if b.len() <= w {
            b.resize(w + 1, 0);
        }
        b[w] |= 1 << (id % 64);
        self.counts[d] += 1;
    }
    pub fn count(&self, d: usize) -> u32 {
        self.counts.get(d).copied().unwrap_or(0)
    }
}

/// One calendar window instance being accumulated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    pub end: i64,
    pub label: String,
    /// Times this window has been emitted.
    pub revision: u32,
    /// Changed since it was last emitted (days only: a longer window is
    /// changed when one of its open days is).
    pub dirty: bool,
    /// For a day, what its events added (empty for a longer window).
    pub aggs: Rolled,
    /// For a longer window, the days that closed inside it, rolled up:
    /// its value is these plus its open days (see
    /// `Engine::window_rolled`). Empty for a day.
    pub folded: Rolled,
}

/// Open windows of one calendar kind, by start.
///
/// `State::calendar[0]` is always the day set, even when days are not
/// emitted: events only ever update a day bucket (and rolling
/// sub-buckets), and every longer calendar window, being a union of local
/// days, is built from its days. That keeps the per-event cost
/// independent of how many calendar kinds are configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalendarSet {
    pub kind: CalendarKind,
    /// Whether records are emitted for this kind (it is configured).
    pub emit: bool,
    pub buckets: BTreeMap<i64, Bucket>,
}

/// Sub-buckets of one rolling window, by sub-bucket start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollingSet {
    pub span: i64,
    pub width: i64,
    pub buckets: BTreeMap<i64, Rolled>,
    pub revision: u32,
    pub dirty: bool,
}

/// Net customer changes (acquired − cancelled) over time, in 15-minute
/// slots (every time zone's offset is a multiple of 15 minutes), so that
/// "active at the start of window W" is exact for any window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Net change folded in from slots older than every open window.
    #[serde(with = "as_pairs")]
    pub base: FxHashMap<DimKey, i64>,
    pub slots: BTreeMap<i64, Vec<(DimKey, i64)>>,
    /// Active now, by key (base + every slot).
    #[serde(with = "as_pairs")]
    pub active: FxHashMap<DimKey, i64>,
}

pub const LEDGER_SLOT_MS: i64 = 15 * 60 * 1000;

impl Ledger {
    pub fn add(&mut self, t: i64, key: DimKey, delta: i64) {
        let slot = self
            .slots
            .entry(crate::window::sub_bucket(t, LEDGER_SLOT_MS))
            .or_default();
        match slot.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += delta,
            None => slot.push((key, delta)),
        }
        *self.active.entry(key).or_default() += delta;
    }

    /// Active customers by scope at instant `t` (changes strictly before `t`).
    pub fn active_at(&self, t: i64) -> FxHashMap<Scope, i64> {
        let mut out: FxHashMap<Scope, i64> = FxHashMap::default();
        let mut add = |k: &DimKey, n: i64| {
            for s in scopes(k) {
                *out.entry(s).or_default() += n;
            }
        };
        self.base.iter().for_each(|(k, n)| add(k, *n));
        for (_, slot) in self.slots.range(..t) {
            slot.iter().for_each(|(k, n)| add(k, *n));
        }
        out
    }

    /// Folds slots that start before `t` into the base.
    pub fn fold_before(&mut self, t: i64) {
        let keep = self
            .slots
            .split_off(&crate::window::sub_bucket(t, LEDGER_SLOT_MS));
        for (_, slot) in std::mem::replace(&mut self.slots, keep) {
            for (k, n) in slot {
                *self.base.entry(k).or_default() += n;
            }
        }
    }
}

/// Bounded memory of event ids, for duplicate detection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dedup {
    /// (event time, id hash) in arrival order; the set is rebuilt from it.
    pub order: VecDeque<(i64, u128)>,
    #[serde(skip)]
    pub seen: FxHashSet<u128>,
}

impl Dedup {
    pub fn rebuild(&mut self) {
        self.seen = self.order.iter().map(|(_, h)| *h).collect();
    }
    pub fn contains(&self, h: u128) -> bool {
        self.seen.contains(&h)
    }
    pub fn insert(&mut self, h: u128, t: i64) {
        if self.seen.insert(h) {
            self.order.push_back((t, h));
        }
    }
    /// Forgets ids older than `before` and the oldest beyond `max`; returns how many beyond `max`.
    pub fn expire(&mut self, before: i64, max: usize) -> u64 {
        let mut over = 0;
        while let Some(&(t, h)) = self.order.front() {
            let full = self.order.len() > max;
            if t >= before && !full {
                break;
            }
            over += u64::from(full && t >= before);
            self.order.pop_front();
            self.seen.remove(&h);
        }
        over
    }
}

/// Counters of what the engine did, cumulative since it started (or was restored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Accepted events by [`crate::event::EventType`] index.
    pub events_in: Vec<u64>,
    /// Rejections by [`crate::decode::RejectReason`] index (including `late`).
    pub rejected: Vec<u64>,
    /// Events not counted because they repeat what was counted, by
    /// [`DUPLICATE_REASONS`] index: the same `source` + `id`, or the same
    /// lifecycle transition of an entity (a re-sent webhook).
    pub duplicates: [u64; 2],
    /// Deal outcomes replaced by a later one (a reopen or a correction):
    /// withdrawn from a window still open, or kept by a final one.
    pub outcomes_revised: [u64; 2],
    /// Open deals closed by `pipeline.max_open_age`.
    pub deals_expired: u64,
    /// Events naming a lead / deal / customer that is not (or no longer) known.
    pub unknown_entity: [u64; 3],
    /// Entities forgotten by TTL: lead, closed deal, cancelled customer.
    pub evicted: [u64; 3],
    /// Event ids forgotten because `state.dedup_max_entries` was reached.
    pub dedup_evicted: u64,
    /// Dimension values folded into `other` (`kpis.max_series_per_dimension`), by dimension.
    pub folded: Vec<u64>,
    /// Lead conversions whose creation-day cohort was already dropped
    /// (counted in the conversion rate, not in the cohort rate).
    pub conversions_out_of_cohort: u64,
    pub records_out: u64,
    /// Events about an entity not yet seen: [held to wait for it,
    /// counted with its dimensions when it came, counted as unknown].
    pub waited: [u64; 3],
    /// Events far ahead of the clock (`time.max_jump`): [held, counted
    /// when a jump was confirmed, counted when the clock caught up,
    /// counted alone at the end of input].
    pub outliers: [u64; 4],
    /// Jumps of the clock confirmed by `time.jump_confirmations` events.
    pub jumps: u64,
    /// Erasure requests (`crm.subject.erased`) by entity (lead, deal,
    /// customer): [not known here, erased].
    pub erased: [[u64; 2]; 3],
    /// Held events dropped because they named an erased entity.
    pub erased_held: u64,
}

/// Label values of `salespulse_waited_events_total{outcome}` (`Stats::waited[1..]`).
pub const WAIT_OUTCOMES: [&str; 2] = ["attributed", "unknown"];
/// Label values of `salespulse_time_outliers_released_total{outcome}` (`Stats::outliers[1..]`).
pub const OUTLIER_OUTCOMES: [&str; 3] = ["jump_confirmed", "caught_up", "alone"];

/// An entity an event can wait for: (0 lead, 1 deal, 2 customer; `privacy::Pseudonyms::entity`).
pub type EntityRef = (u8, u128);

/// An event held as a suspected clock outlier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    pub time: i64,
    /// The run of outliers it belongs to (`Waiting::run_id`).
    pub run: u64,
    pub event: HeldEvent,
}

/// Events the engine holds back (docs/time.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Waiting {
    /// Events about an entity not yet seen, by (event time, arrival
    /// number): the entity, and the event. Each waits until its entity
    /// arrives or until it would be late.
    pub facts: super::facts::Facts,
    /// The keys of `facts` by entity, rebuilt at restore. Lazy: an event
    /// [`Waiting::pop_before`] takes out keeps its key here (removing it
    /// would cost a lookup in this table, a cache miss, per event) until
    /// [`Waiting::prune`]; every key above `popped` is in `facts`.
    #[serde(skip)]
    pub by_entity: FxHashMap<EntityRef, SmallVec<[(i64, u64); 1]>>,
    /// The greatest key `pop_before` took out of `facts`.
    #[serde(skip)]
    pub popped: (i64, u64),
    /// Keys `pop_before` took out since the last prune: at least as many
    /// as the stale keys in `by_entity`.
    #[serde(skip)]
    pub stale: usize,
    /// Suspected outliers, in arrival order.
    pub outliers: Vec<Held>,
    /// Outliers held in a row, with no event moving the clock between them.
    pub run: u32,
    pub run_id: u64,
    /// Arrival number of the next held event.
    pub seq: u64,
}

pub const ENTITY_NAMES: [&str; 3] = ["lead", "deal", "customer"];

/// Label values of `salespulse_events_duplicate_total{reason}`.
pub const DUPLICATE_REASONS: [&str; 2] = ["id", "repeated_transition"];
pub const DUP_ID: usize = 0;
pub const DUP_TRANSITION: usize = 1;

/// Label values of `salespulse_deal_outcomes_revised_total{window}`:
/// the earlier outcome was withdrawn from its open window, or its window
/// was final and keeps it.
pub const REVISION_KINDS: [&str; 2] = ["withdrawn", "kept_final"];

/// What slippage needs of the open deals (docs/kpis.md, "Slippage").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Slippage {
    /// Open deals with an `expected_close`: the instant they are overdue
    /// (the start of the local day after it).
    #[serde(with = "as_pairs")]
    pub expected: FxHashMap<u128, i64>,
    /// Open deals counted as overdue, with the (stage, dimensions,
    /// amount) they count with in the pipeline gauges.
    #[serde(with = "as_pairs")]
    pub overdue: FxHashMap<u128, (u8, DimKey, i64)>,
    /// Deals of `expected` not overdue yet, by that instant (stale
    /// entries are skipped). Rebuilt at restore.
    #[serde(skip)]
    pub overdue_index: BTreeMap<i64, Vec<u128>>,
}

/// Everything the engine knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub interner: Interner,
    /// Entities by `privacy::Pseudonyms::entity` of their id: the raw CRM ids are not kept.
    #[serde(with = "as_pairs")]
    pub leads: FxHashMap<u128, Lead>,
    #[serde(with = "as_pairs")]
    pub deals: FxHashMap<u128, Deal>,
    #[serde(with = "as_pairs")]
    pub customers: FxHashMap<u128, Customer>,
    /// Team and region learned from events, by rep.
    #[serde(with = "as_pairs")]
    pub rep_info: FxHashMap<u32, [u32; 2]>,
    /// Quota in cents by (rep, period label), both interned.
    #[serde(with = "as_pairs")]
    pub quotas: FxHashMap<(u32, u32), i64>,
    pub dedup: Dedup,
    /// Newest event time seen (ms), `i64::MIN` before the first event.
    pub max_time: i64,
    /// The event-time clock the watermark follows: `max_time` for one
    /// ordered source; for Kafka, the slowest active partition's newest
    /// time (see `Engine::advance_clock`).
    pub clock: i64,
    /// Event time of the last TTL sweep.
    pub last_sweep: i64,
    /// Watermark of the last `pipeline.max_open_age` pass.
    pub last_expiry: i64,
    /// No open deal is due to expire before this instant (a lower bound):
    /// the first day of [`State::expiry_index`].
    pub next_expiry: i64,
    /// Open deals by the UTC day of their `pipeline.max_open_age`
    /// deadline, when it is on: a deal is added under its new day when
    /// an event moves its deadline to another day (stale entries are
    /// skipped when their day comes), so an expiry pass visits the deals
    /// due, not every deal. Rebuilt from the deals at restore.
    #[serde(skip)]
    pub expiry_index: BTreeMap<i64, Vec<u128>>,
    /// Open deals counted as stalled, with the (stage, dimensions,
    /// amount) they count with in the pipeline gauges.
    #[serde(with = "as_pairs")]
    pub stalled: FxHashMap<u128, (u8, DimKey, i64)>,
    /// Open deals not stalled, by the UTC day their stage's `max_days`
    /// runs out (entries made stale by a newer event are skipped or
    /// moved when their day comes). Rebuilt from the deals at restore.
    #[serde(skip)]
    pub stall_index: BTreeMap<i64, Vec<u128>>,
    /// Leads not contacted yet, by dimensions (the
    /// `leads_awaiting_first_contact` gauge).
    #[serde(with = "as_pairs")]
    pub awaiting: FxHashMap<DimKey, i64>,
    /// Leads whose first-contact SLA is still open, (deadline (ms),
    /// lead) in deadline order, then arrival order: a deadline grows with
    /// the creation time, so a new one goes at (or near) the back.
    /// Rebuilt from the leads at restore.
    #[serde(skip)]
    pub sla_index: VecDeque<(i64, u128)>,
    /// Expected close dates and overdue deals.
    pub slip: Slippage,
    /// What the forecast learned from closed deals.
    pub forecast: crate::engine::forecast::History,
    /// Orders of each known customer that ordered, for RFM.
    #[serde(with = "as_pairs")]
    pub rfm: FxHashMap<u128, Rfm>,
    pub calendar: Vec<CalendarSet>,
    pub rolling: Vec<RollingSet>,
    /// A sub-bucket start of the fine rolling set (`Settings::rolling_fine`)
    /// whose events are in that set only, not yet in the wider sets: an
    /// event of the newest sub-bucket updates one rolling set instead of
    /// all of them, and the sub-bucket is merged into the others once
    /// (when a newer sub-bucket starts, or before they are read).
    pub rolling_staged: Option<i64>,
    /// The newest fine sub-bucket merged into the wider sets: a sub-bucket
    /// at or before it is updated in every set directly.
    pub rolling_flushed: i64,
    /// Open deals by (stage, dimensions).
    #[serde(with = "as_pairs")]
    pub pipeline: FxHashMap<(u8, DimKey), Pipeline>,
    pub gauges_dirty: bool,
    pub gauges_revision: u32,
    pub ledger: Ledger,
    /// Revenue by scope of the last month that closed, for month-over-month growth.
    pub last_closed_month: Option<(i64, Vec<(Scope, i64)>)>,
    /// Alert instances and their lifecycle.
    #[serde(default)]
    pub alerts: crate::alert::AlertState,
    /// Newest event time of each series an `absent_for` rule watches, by
    /// (interned rule name, the series' filter and group_by dimensions),
    /// and whether its alert is firing.
    #[serde(with = "as_pairs")]
    pub absent_seen: FxHashMap<(u32, DimKey), (i64, bool)>,
    /// The latest instant `absent_for` rules were evaluated at: the clock,
    /// or past it while a live input was quiet (never goes back).
    pub absent_clock: i64,
    /// Lead cohorts by creation day start.
    pub cohorts: BTreeMap<i64, Cohort>,
    /// Revision of each cohort window emitted so far, by (calendar set, window start).
    pub cohort_revisions: BTreeMap<(u8, i64), u32>,
    /// Headcount by team (0 = the company), from events.
    #[serde(with = "as_pairs")]
    pub headcount: FxHashMap<u32, i64>,
    /// Yearly market size in cents by product (0 = the whole market), from events.
    #[serde(with = "as_pairs")]
    pub market_size: FxHashMap<u32, i64>,
    pub admitted: Admitted,
    /// Events held back: facts waiting for their entity, clock outliers.
    pub waiting: Waiting,
    pub stats: Stats,
}
