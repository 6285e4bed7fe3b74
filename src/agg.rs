//! Mergeable accumulators: what one window bucket keeps for one
//! combination of dimensions.
//!
//! Every field is a count, an integer sum or a quantile sketch, so that
//! `merge(agg(A), agg(B)) == agg(A ++ B)` holds exactly (tested with
//! proptest in `tests/merge.rs`). Money is in integer cents, durations in
//! integer milliseconds.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::Config as SketchConfig;

/// Relative accuracy of the quantile sketch (1 %).
pub const SKETCH_ALPHA: f64 = 0.01;

/// The configuration of every [`Dist`] sketch (they must all match to merge).
pub fn sketch_config() -> SketchConfig {
    SketchConfig::new(SKETCH_ALPHA, 2048, 1e-3)
}

/// Values a [`Dist`] keeps as they are before it builds a sketch.
const SMALL: usize = 16;

/// The sketch configuration, built once (its constructor takes logarithms).
fn cfg() -> &'static SketchConfig {
    static CFG: std::sync::OnceLock<SketchConfig> = std::sync::OnceLock::new();
    CFG.get_or_init(sketch_config)
}

/// Distribution of durations: exact count and sum, quantiles from a
/// DDSketch (relative error ≤ 1 %) over seconds.
///
/// Up to [`SMALL`] values are kept as they are and the sketch is built
/// only beyond: most cells of a bucket hold a handful of values, and
/// folding a handful of values into a scope is far cheaper than merging
/// a sketch. A DDSketch's bins depend only on the multiset of values, so
/// quantiles are the same whichever way the values arrived.
///
/// A value can also be taken out again ([`Dist::remove`]: a win that a
/// reopen withdraws takes its sales cycle with it), which is why the
/// sketch is [`Sketch`], DDSketch's bins kept here, not the crate's type.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Dist {
    pub count: u64,
    /// Sum in milliseconds.
    pub sum_ms: i128,
    /// The values (ms) while there is no sketch.
    small: Vec<i64>,
    sketch: Option<Box<Sketch>>,
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl Dist {
    /// Nothing added, nothing held: `Dist::default()`.
    pub fn is_default(&self) -> bool {
        self.count == 0 && self.sum_ms == 0 && self.small.is_empty() && self.sketch.is_none()
    }

    pub fn add(&mut self, ms: i64) {
        self.count += 1;
        self.sum_ms += i128::from(ms);
        self.insert(ms);
    }

    /// Takes one value `ms` out again (it must have been added): count,
    /// sum and every quantile strictly between 0 and 1 are then those of
    /// the remaining values. Returns false, changing nothing, when no
    /// such value is held.
    pub fn remove(&mut self, ms: i64) -> bool {
        let found = match &mut self.sketch {
            Some(s) => s.remove(seconds(ms)),
            None => match self.small.iter().position(|v| *v == ms) {
                Some(i) => {
                    self.small.swap_remove(i);
                    true
                }
                None => false,
            },
        };
        if found {
            self.count -= 1;
            self.sum_ms -= i128::from(ms);
            if self.count == 0 {
                *self = Dist::default();
            }
        }
        found
    }

    /// Adds a value to the small list or the sketch (not to count and sum).
    fn insert(&mut self, ms: i64) {
        match &mut self.sketch {
            Some(s) => s.add(seconds(ms)),
            None if self.small.len() < SMALL => self.small.push(ms),
            None => {
                let mut s = Box::<Sketch>::default();
                add_widest_first(&mut s, &self.small);
                s.add(seconds(ms));
                self.small = Vec::new();
                self.sketch = Some(s);
            }
        }
    }

    pub fn merge(&mut self, o: &Dist) {
        self.count += o.count;
        self.sum_ms += o.sum_ms;
        match &o.sketch {
            None => o.small.iter().for_each(|v| self.insert(*v)),
            Some(os) => match &mut self.sketch {
                Some(s) => s.merge(os),
                None => {
                    let mut s = os.clone();
                    add_widest_first(&mut s, &self.small);
                    self.small = Vec::new();
                    self.sketch = Some(s);
                }
            },
        }
    }

    /// Mean in seconds.
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms as f64 / 1000.0 / self.count as f64)
    }

    /// Quantile `q` in seconds (lower-rank convention: rank ⌊q·(n−1)⌋).
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        self.quantiles_seconds([q])[0]
    }

    /// Several quantiles at once: a distribution without a sketch builds
    /// its sketch once for all of them.
    pub fn quantiles_seconds<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        match &self.sketch {
            Some(s) => qs.map(|q| s.quantile(q)),
            None if self.small.is_empty() => [None; N],
            None => small_quantiles(&self.small, qs),
        }
    }
}

/// The bins of one sign of a [`Sketch`]: counts by DDSketch key, dense
/// from `offset`.
#[derive(Clone, Default, Debug, PartialEq, Serialize, Deserialize)]
struct Bins {
    offset: i32,
    counts: Vec<u64>,
    total: u64,
}

impl Bins {
    /// Adds `n` (possibly 0: the key's bin then just exists) to the bin of `key`.
    fn add(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(0);
        } else if key < self.offset {
            let grow = (self.offset - key) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = key;
        }
        let i = (key - self.offset) as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
        self.total += n;
    }

    fn remove(&mut self, key: i32) -> bool {
        let Some(c) = usize::try_from(key - self.offset)
            .ok()
            .and_then(|i| self.counts.get_mut(i))
            .filter(|c| **c > 0)
        else {
            return false;
        };
        *c -= 1;
        self.total -= 1;
        true
    }

    fn merge(&mut self, o: &Bins) {
        if o.total == 0 {
            return;
        }
        // Both ends first: the range grows once.
        self.add(o.offset, 0);
        self.add(o.offset + o.counts.len() as i32 - 1, 0);
        for (i, c) in o.counts.iter().enumerate() {
            self.counts[(o.offset - self.offset) as usize + i] += c;
        }
        self.total += o.total;
    }

    /// The key holding the value of rank `rank` (from 0, ascending).
    fn key_at_rank(&self, rank: u64) -> i32 {
        let mut n = 0;
        for (i, c) in self.counts.iter().enumerate() {
            n += c;
            if n > rank {
                return self.offset + i as i32;
            }
        }
        self.offset + self.counts.len() as i32 - 1
    }

    fn lowest(&self) -> Option<i32> {
        let i = self.counts.iter().position(|c| *c > 0)?;
        Some(self.offset + i as i32)
    }

    fn highest(&self) -> Option<i32> {
        let i = self.counts.iter().rposition(|c| *c > 0)?;
        Some(self.offset + i as i32)
    }
}

/// A DDSketch with the bins, keys and quantile rule of
/// `sketches_ddsketch` (so its quantiles are that crate's: tested in
/// `tests/merge.rs`), which can also take a value out. Unlike the
/// crate's store it never collapses its lowest bins: durations between
/// a millisecond and a century need about 1,600 bins at 1 % accuracy.
///
/// The minimum and maximum (quantiles 0 and 1) are exact as long as no
/// value was removed; after a removal of the minimum or maximum they are
/// the value of the remaining extreme bin (within 1 %).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sketch {
    pos: Bins,
    neg: Bins,
    zero: u64,
    min: f64,
    max: f64,
}

impl Default for Sketch {
    fn default() -> Sketch {
        Sketch {
            pos: Bins::default(),
            neg: Bins::default(),
            zero: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Sketch {
    fn total(&self) -> u64 {
        self.pos.total + self.neg.total + self.zero
    }

    fn add(&mut self, v: f64) {
        let c = cfg();
        if v > c.min_possible() {
            self.pos.add(c.key(v), 1);
        } else if v < -c.min_possible() {
            self.neg.add(c.key(-v), 1);
        } else {
            self.zero += 1;
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn remove(&mut self, v: f64) -> bool {
        let c = cfg();
        let found = if v > c.min_possible() {
            self.pos.remove(c.key(v))
        } else if v < -c.min_possible() {
            self.neg.remove(c.key(-v))
        } else if self.zero > 0 {
            self.zero -= 1;
            true
        } else {
            false
        };
        if found && (v == self.min || v == self.max) {
            let low = self.neg.highest().map(|k| -c.value(k));
            let low = low.or((self.zero > 0).then_some(0.0));
            let low = low.or(self.pos.lowest().map(|k| c.value(k)));
            let high = self.pos.highest().map(|k| c.value(k));
            let high = high.or((self.zero > 0).then_some(0.0));
            let high = high.or(self.neg.lowest().map(|k| -c.value(k)));
            if v == self.min {
                self.min = low.unwrap_or(f64::INFINITY);
            }
            if v == self.max {
                self.max = high.unwrap_or(f64::NEG_INFINITY);
            }
        }
        found
    }

    fn merge(&mut self, o: &Sketch) {
        self.pos.merge(&o.pos);
        self.neg.merge(&o.neg);
        self.zero += o.zero;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// `DDSketch::quantile`, with `None` for an empty sketch or a `q`
    /// outside [0, 1].
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if !(0.0..=1.0).contains(&q) || total == 0 {
            return None;
        }
        if q == 0.0 {
            return Some(self.min);
        }
        if q == 1.0 {
            return Some(self.max);
        }
        let c = cfg();
        let rank = (q * (total as f64 - 1.0)) as u64;
        let n_neg = self.neg.total;
        Some(if rank < n_neg {
            -c.value(self.neg.key_at_rank(n_neg - rank - 1))
        } else if rank < self.zero + n_neg {
            0.0
        } else {
            c.value(self.pos.key_at_rank(rank - self.zero - n_neg))
        })
    }
}

/// Adds `values` (ms) to `s`, smallest and largest first: the bins then
/// take the whole span at once instead of growing at the front for each
/// new minimum. Bins depend only on the multiset of values, not the order.
fn add_widest_first(s: &mut Sketch, values: &[i64]) {
    let lo = (0..values.len()).min_by_key(|&i| values[i]);
    let hi = (0..values.len()).max_by_key(|&i| values[i]);
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return;
    };
    s.add(seconds(values[lo]));
    if hi != lo {
        s.add(seconds(values[hi]));
    }
    for (i, v) in values.iter().enumerate() {
        if i != lo && i != hi {
            s.add(seconds(*v));
        }
    }
}

/// What `DDSketch::quantile` returns for a sketch of `values` (at most
/// [`SMALL`]), without building one: the same bins (`Config::key`), the
/// same rank, the same bin value (`Config::value`), zero and negative
/// values handled as the sketch's zero count and negative store do.
/// `tests/merge.rs` checks it against a real sketch.
pub fn small_quantiles<const N: usize>(values: &[i64], qs: [f64; N]) -> [Option<f64>; N] {
    let c = cfg();
    let min_possible = c.min_possible();
    let (mut neg, mut pos) = ([0i32; SMALL], [0i32; SMALL]);
    let (mut n_neg, mut n_pos, mut zero) = (0, 0, 0u64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &ms in values {
        let v = seconds(ms);
        if v > min_possible {
            pos[n_pos] = c.key(v);
            n_pos += 1;
        } else if v < -min_possible {
            neg[n_neg] = c.key(-v);
            n_neg += 1;
        } else {
            zero += 1;
        }
        min = min.min(v);
        max = max.max(v);
    }
    let (neg, pos) = (&mut neg[..n_neg], &mut pos[..n_pos]);
    neg.sort_unstable();
    pos.sort_unstable();
    let total = values.len() as u64;
    qs.map(|q| {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        if q == 0.0 {
            return Some(min);
        }
        if q == 1.0 {
            return Some(max);
        }
        let rank = (q * (total as f64 - 1.0)) as u64;
        let n_neg = neg.len() as u64;
        Some(if rank < n_neg {
            -c.value(neg[(n_neg - rank - 1) as usize])
        } else if rank < zero + n_neg {
            0.0
        } else {
            c.value(pos[(rank - zero - n_neg) as usize])
        })
    })
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dist")
            .field("count", &self.count)
            .field("sum_ms", &self.sum_ms)
            .field("p50", &self.quantile_seconds(0.5))
            .finish()
    }
}

impl PartialEq for Dist {
    fn eq(&self, o: &Self) -> bool {
        self.count == o.count
            && self.sum_ms == o.sum_ms
            && [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]
                .iter()
                .all(|&q| self.quantile_seconds(q) == o.quantile_seconds(q))
    }
}

/// Everything a window bucket counts for one dimension combination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    pub leads_created: u64,
    pub leads_converted: u64,
    /// Leads that reached MQL (an SQL without an MQL before counts as both).
    pub leads_mql: u64,
    pub leads_sql: u64,
    /// Lead response times (first contact − creation).
    pub response: Dist,
    /// First contacts by the SLA deadline (at the contact), and leads
    /// past it without one (at the deadline).
    pub sla_met: u64,
    pub sla_breached: u64,
    pub deals_won: u64,
    pub deals_lost: u64,
    /// Open deals whose `expected_close` moved to a later month, and
    /// their amount in cents, at the event that moved it.
    pub deals_pushed: u64,
    pub slipped_cents: i64,
    /// Open deals closed by `pipeline.max_open_age`, and their amount in cents.
    pub deals_expired: u64,
    pub expired_cents: i64,
    /// Σ amount of won deals, in cents.
    pub revenue_cents: i64,
    /// Sales cycle lengths (won − deal creation).
    pub cycle: Dist,
    /// By pipeline stage index: [deals leaving the stage, of which to the
    /// next stage (for the last stage: won)].
    pub stage_moves: Vec<[u64; 2]>,
    /// Won and lost deals that named a competitor.
    pub won_vs_competitor: u64,
    pub lost_vs_competitor: u64,
    /// Won deals with a list price: count, Σ list price, Σ amount (cents).
    pub priced_won: u64,
    pub list_cents: i64,
    pub priced_amount_cents: i64,
    /// Competitor price observations: count, Σ our price, Σ their price (cents).
    pub price_obs: u64,
    pub our_price_cents: i64,
    pub their_price_cents: i64,
    pub customers_acquired: u64,
    pub customers_cancelled: u64,
    /// Lifetimes (cancelled − acquired) of the cancelled customers whose
    /// acquisition was seen: count and Σ milliseconds.
    pub lifetimes: u64,
    pub lifetime_ms: i128,
    /// Orders by kind ([`crate::event::OrderKind`] index) and their revenue.
    pub orders: [u64; 4],
    pub order_revenue_cents: i64,
    /// Distinct customers that ordered (64-bit hashes of their ids).
    pub buyers: Buyers,
    /// Spend in cents: [marketing, sales].
    pub spend_cents: [i64; 2],
    /// Survey answers: [detractors 0–6, passives 7–8, promoters 9–10].
    pub nps: [u64; 3],
    /// CSAT answers: count and Σ score in thousandths.
    pub csat_count: u64,
    pub csat_milli: i64,
    /// Activities by [`crate::event::ActivityKind`] index.
    pub activities: [u64; 4],
}

/// An exact set of customer hashes (unique customers for CLV's purchase
/// frequency); empty sets allocate nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buyers(pub Option<Box<rustc_hash::FxHashSet<u64>>>);

impl Buyers {
    pub fn insert(&mut self, h: u64) {
        self.0.get_or_insert_with(Default::default).insert(h);
    }
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn merge(&mut self, o: &Buyers) {
        if let Some(os) = &o.0 {
            match &mut self.0 {
                Some(s) => s.extend(os.iter().copied()),
                None => self.0 = Some(os.clone()),
            }
        }
    }
}

fn add_all<const N: usize, T: Copy + std::ops::AddAssign>(a: &mut [T; N], b: &[T; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

impl Acc {
    pub fn merge(&mut self, o: &Acc) {
        self.leads_created += o.leads_created;
        self.leads_converted += o.leads_converted;
        self.leads_mql += o.leads_mql;
        self.leads_sql += o.leads_sql;
        self.response.merge(&o.response);
        self.sla_met += o.sla_met;
        self.sla_breached += o.sla_breached;
        self.deals_pushed += o.deals_pushed;
        self.slipped_cents += o.slipped_cents;
        self.deals_won += o.deals_won;
        self.deals_lost += o.deals_lost;
        self.deals_expired += o.deals_expired;
        self.expired_cents += o.expired_cents;
        self.revenue_cents += o.revenue_cents;
        self.cycle.merge(&o.cycle);
        if self.stage_moves.len() < o.stage_moves.len() {
            self.stage_moves.resize(o.stage_moves.len(), [0; 2]);
        }
        for (a, b) in self.stage_moves.iter_mut().zip(&o.stage_moves) {
            add_all(a, b);
        }
        self.won_vs_competitor += o.won_vs_competitor;
        self.lost_vs_competitor += o.lost_vs_competitor;
        self.priced_won += o.priced_won;
        self.list_cents += o.list_cents;
        self.priced_amount_cents += o.priced_amount_cents;
        self.price_obs += o.price_obs;
        self.our_price_cents += o.our_price_cents;
        self.their_price_cents += o.their_price_cents;
        self.customers_acquired += o.customers_acquired;
        self.customers_cancelled += o.customers_cancelled;
        self.lifetimes += o.lifetimes;
        self.lifetime_ms += o.lifetime_ms;
        add_all(&mut self.orders, &o.orders);
        self.order_revenue_cents += o.order_revenue_cents;
        self.buyers.merge(&o.buyers);
        add_all(&mut self.spend_cents, &o.spend_cents);
        add_all(&mut self.nps, &o.nps);
        self.csat_count += o.csat_count;
        self.csat_milli += o.csat_milli;
        add_all(&mut self.activities, &o.activities);
    }

    /// Counts a deal leaving stage `from` (index), for stage conversion.
    pub fn stage_exit(&mut self, from: u8, advanced: bool) {
        let i = from as usize;
        if self.stage_moves.len() <= i {
            self.stage_moves.resize(i + 1, [0; 2]);
        }
        self.stage_moves[i][0] += 1;
        self.stage_moves[i][1] += u64::from(advanced);
    }

    /// Takes back a [`Acc::stage_exit`] (a withdrawn outcome).
    pub fn stage_unexit(&mut self, from: u8, advanced: bool) {
        if let Some(m) = self.stage_moves.get_mut(from as usize) {
            m[0] -= 1;
            m[1] -= u64::from(advanced);
        }
    }
}

/// Open-pipeline gauge for one (stage, dimensions) cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub deals: i64,
    pub amount_cents: i64,
    /// Of these, the deals stalled (no event for their stage's
    /// `max_days`) and their amount.
    pub stalled: i64,
    pub stalled_cents: i64,
    /// Of these, the deals open past their `expected_close` and their amount.
    pub overdue: i64,
    pub overdue_cents: i64,
}

impl Pipeline {
    /// Adds another cell's counts.
    pub fn add(&mut self, o: &Pipeline) {
        self.deals += o.deals;
        self.amount_cents += o.amount_cents;
        self.stalled += o.stalled;
        self.stalled_cents += o.stalled_cents;
        self.overdue += o.overdue;
        self.overdue_cents += o.overdue_cents;
    }

    pub fn is_zero(&self) -> bool {
        *self == Pipeline::default()
    }
}
