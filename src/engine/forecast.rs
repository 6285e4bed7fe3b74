//! The revenue forecast of the current month and quarter: a seeded Monte
//! Carlo over the open deals, each won by the period's end with its
//! stage's win probability (observed once enough deals left each stage)
//! times its chance of closing by then (from the observed sales cycles
//! of won deals, given its age), plus the revenue already won
//! (docs/kpis.md, "Forecast").

use super::state::State;
use super::Settings;
use crate::config::forecast::{ForecastCategory, ForecastConfig};
use crate::config::StageConfig;
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;
/// Sales cycles are kept in whole days up to this many (longer ones in the last).
const CYCLE_DAYS: usize = 1096;

/// A stage's forecast category: the configured one, else by probability.
pub fn category(s: &StageConfig) -> ForecastCategory {
    s.forecast_category
        .unwrap_or_else(|| ForecastCategory::by_probability(s.probability))
}

/// What the forecast learns from closed deals since the state began.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// By stage: [deals that left it (closed or moved), of which won
    /// from it].
    pub exits: Vec<[u64; 2]>,
    /// Moves to a later stage: ((from, to), count), sorted.
    pub moves: Vec<((u8, u8), u64)>,
    /// Won deals' sales cycles, by whole days (sparse: (day, count)).
    pub cycle_days: Vec<(u16, u64)>,
    pub cycles: u64,
}

impl History {
    /// Counts (`s` = 1) or withdraws (`s` = −1) a close from `stage`.
    pub fn exit(&mut self, stage: u8, won: bool, s: i64) {
        let i = stage as usize;
        if self.exits.len() <= i {
            self.exits.resize(i + 1, [0; 2]);
        }
        let e = &mut self.exits[i];
        e[0] = e[0].saturating_add_signed(s);
        if won {
            e[1] = e[1].saturating_add_signed(s);
        }
    }

    /// Counts a move from stage `from` to `to`.
    pub fn moved(&mut self, from: u8, to: u8) {
        self.exit(from, false, 1);
        if to > from {
            add_sorted(&mut self.moves, (from, to), 1);
        }
    }

    /// Counts or withdraws a won deal's cycle (ms).
    pub fn cycle(&mut self, ms: i64, s: i64) {
        let d = (ms.max(0) / DAY_MS).min(CYCLE_DAYS as i64 - 1) as u16;
        add_sorted(&mut self.cycle_days, d, s);
        self.cycles = self.cycles.saturating_add_signed(s);
    }

    /// Adds `o`'s counts (another partition's history).
    pub fn merge(&mut self, o: &History) {
        if self.exits.len() < o.exits.len() {
            self.exits.resize(o.exits.len(), [0; 2]);
        }
        for (a, b) in self.exits.iter_mut().zip(&o.exits) {
            a[0] += b[0];
            a[1] += b[1];
        }
        for &(k, n) in &o.moves {
            add_sorted(&mut self.moves, k, n as i64);
        }
        for &(d, n) in &o.cycle_days {
            add_sorted(&mut self.cycle_days, d, n as i64);
        }
        self.cycles += o.cycles;
    }

    /// Won cycles of at most `d` days.
    fn cycles_upto(&self, d: i64) -> u64 {
        self.cycle_days
            .iter()
            .take_while(|x| i64::from(x.0) <= d)
            .map(|x| x.1)
            .sum()
    }
}

/// Adds `s` to the count of `k` in `v` (sorted by key); a key not there
/// is inserted when `s` is positive.
fn add_sorted<K: Ord + Copy>(v: &mut Vec<(K, u64)>, k: K, s: i64) {
    match v.binary_search_by_key(&k, |x| x.0) {
        Ok(i) => v[i].1 = v[i].1.saturating_add_signed(s),
        Err(i) if s > 0 => v.insert(i, (k, s as u64)),
        Err(_) => {}
    }
}

/// The chance that a deal in each stage is won: observed once the
/// stage was left `min_history` times (won from it, plus each move to a
/// later stage times that stage's chance), else the configured probability.
pub fn win_probabilities(settings: &Settings, h: &History) -> Vec<f64> {
    let n = settings.stages.len();
    let mut out: Vec<f64> = settings.stages.iter().map(|s| s.1).collect();
    for s in (0..n).rev() {
        let Some(&[left, won]) = h.exits.get(s) else {
            continue;
        };
        if left < settings.forecast.min_history {
            continue;
        }
        let later: f64 = h
            .moves
            .iter()
            .filter(|m| m.0 .0 as usize == s && (m.0 .1 as usize) < n)
            .map(|m| m.1 as f64 * out[m.0 .1 as usize])
            .sum();
        out[s] = ((won as f64 + later) / left as f64).min(1.0);
    }
    out
}

/// The chance that a deal created at `created` (unknown: `None`) and
/// open at `now` closes by `end`: from the observed cycles once
/// `min_history` wins were seen, given that it is still open (0 when it
/// is older than every won deal was); before that, 1 when its expected
/// close (`due`: the instant after that day) is by `end` or unknown, 0
/// when after.
pub fn close_probability(
    cfg: &ForecastConfig,
    h: &History,
    created: Option<i64>,
    due: Option<i64>,
    now: i64,
    end: i64,
) -> f64 {
    if h.cycles >= cfg.min_history {
        let age = created.map_or(0, |c| (now - c).max(0) / DAY_MS);
        let by_end = (end - created.unwrap_or(now)).max(0) / DAY_MS;
        let before = if age == 0 { 0 } else { h.cycles_upto(age - 1) };
        let alive = h.cycles - before;
        // Older than every won deal was: deals this old did not close.
        if alive == 0 {
            return 0.0;
        }
        return (h.cycles_upto(by_end) - before) as f64 / alive as f64;
    }
    match due {
        Some(d) if d > end => 0.0,
        _ => 1.0,
    }
}

/// `draws` sums of amounts, each deal in each draw counting with its
/// probability scaled by the draw's common factor (lognormal, mean 1,
/// σ = `spread`: how much a whole period's close rate varies beyond
/// the luck of single deals); sorted. Deterministic for the same deals
/// (in the same order), spread and seed.
pub fn simulate(deals: &[(f64, i64)], draws: usize, spread: f64, seed: u64) -> Vec<i64> {
    let mut sure = 0i64;
    // (probability × 2³², amount); probability 1 = always
    let mut maybe: Vec<(u64, i64)> = Vec::with_capacity(deals.len());
    for &(p, amount) in deals {
        if p >= 1.0 {
            sure += amount;
        } else if p > 0.0 {
            maybe.push(((p * 4_294_967_296.0) as u64, amount));
        }
    }
    // Nothing uncertain: every draw is the sure sum (the draws' factors
    // would multiply nothing; live updates forecast every window each
    // time, most often with no open deal).
    if maybe.is_empty() {
        return vec![sure; draws];
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    // A deal counts when a uniform u32 is below its threshold times the
    // draw's factor (16.16 fixed point): integer work only, and one
    // 64-bit random number for two deals.
    let hit =
        |u: u64, (thr, amount): (u64, i64), fi: u64| amount & -i64::from(u < (thr * fi) >> 16);
    let mut sums: Vec<i64> = (0..draws)
        .map(|_| {
            let f = if spread > 0.0 {
                // Box–Muller: one standard normal from two uniforms.
                let (u, v) = (1.0 - rng.f64(), rng.f64());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                (spread * z - spread * spread / 2.0).exp()
            } else {
                1.0
            };
            let fi = (f.min(60_000.0) * 65_536.0) as u64;
            let mut s = sure;
            let mut pairs = maybe.chunks_exact(2);
            for p in &mut pairs {
                let r = rng.u64(..);
                s += hit(r & 0xffff_ffff, p[0], fi) + hit(r >> 32, p[1], fi);
            }
            if let [last] = pairs.remainder() {
                s += hit(u64::from(rng.u32(..)), *last, fi);
            }
            s
        })
        .collect();
    sums.sort_unstable();
    sums
}

/// The nearest-rank `q` quantile of sorted `v` (`q` in (0, 1]).
pub fn quantile(v: &[i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A forecast of one period: P10, P50, P90 of the open deals won by its
/// end (cents, without the revenue already won), and the open amount
/// expected by then in each category (pipeline, best case, commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    pub open_p: [i64; 3],
    pub categories: [i64; 3],
    pub deals: u64,
}

/// What the forecast needs of an open deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDeal {
    pub stage: u8,
    pub amount_cents: i64,
    pub created: Option<i64>,
    /// The instant after its expected close day.
    pub due: Option<i64>,
}

/// Deal `id` as the forecast sees it, while it is open.
pub fn open_deal(state: &State, id: &u128) -> Option<OpenDeal> {
    let d = state.deals.get(id).filter(|d| d.is_open())?;
    Some(OpenDeal {
        stage: d.stage,
        amount_cents: d.amount_cents,
        created: d.created,
        due: state.slip.expected.get(id).copied(),
    })
}

/// The forecast of the period ending at `end`, as of `now`, from an
/// engine's own state.
pub fn forecast(settings: &Settings, state: &State, now: i64, end: i64) -> Forecast {
    forecast_of(settings, &state.forecast, open_deals(state), now, end)
}

/// The open deals of an engine's own state, by id, in no order.
pub fn open_deals(state: &State) -> Vec<(u128, OpenDeal)> {
    state
        .deals
        .keys()
        .filter_map(|id| Some((*id, open_deal(state, id)?)))
        .collect()
}

/// The forecast of the period ending at `end`, as of `now`, over the
/// open deals `open` (by id, in any order) and history `h`.
pub fn forecast_of(
    settings: &Settings,
    h: &History,
    open: Vec<(u128, OpenDeal)>,
    now: i64,
    end: i64,
) -> Forecast {
    forecast_memo(settings, h, open, now, end, &mut Memo::default())
}

/// The last draws' percentiles by the deals drawn (probability bits and
/// amount, in id order): [`simulate`] is a pure function of those (its
/// draws, spread and seed are settings), and live updates forecast the
/// same month and quarter over unchanged deals with every update — a
/// deal's probability moves only when its stage, age in days or the
/// history does. A hit is the very result the draws would give.
#[derive(Debug, Default)]
pub struct Memo {
    entries: std::collections::VecDeque<(DrawKey, [i64; 3])>,
}

/// The deals of one forecast's draws: (probability bits, amount in cents).
type DrawKey = Vec<(u64, i64)>;

impl Memo {
    /// Entries kept: a few periods (month, quarter) forecast in turn.
    const SIZE: usize = 4;

    fn percentiles(&mut self, deals: &[(f64, i64)], draw: impl FnOnce() -> [i64; 3]) -> [i64; 3] {
        let same = |k: &[(u64, i64)]| {
            k.len() == deals.len()
                && k.iter()
                    .zip(deals)
                    .all(|(a, b)| a.0 == b.0.to_bits() && a.1 == b.1)
        };
        if let Some((_, p)) = self.entries.iter().find(|e| same(&e.0)) {
            return *p;
        }
        let p = draw();
        if self.entries.len() == Self::SIZE {
            self.entries.pop_front();
        }
        let key = deals.iter().map(|d| (d.0.to_bits(), d.1)).collect();
        self.entries.push_back((key, p));
        p
    }
}

/// [`forecast_of`], reusing the draws of the same deals from `memo`.
pub fn forecast_memo(
    settings: &Settings,
    h: &History,
    mut open: Vec<(u128, OpenDeal)>,
    now: i64,
    end: i64,
    memo: &mut Memo,
) -> Forecast {
    let cfg = &settings.forecast;
    let win = win_probabilities(settings, h);
    let mut categories = [0i64; 3];
    // The map's order depends on its history: draw in id order.
    open.sort_unstable_by_key(|x| x.0);
    let deals: Vec<(f64, i64)> = open
        .iter()
        .map(|(_, d)| {
            if d.due.is_none_or(|due| due <= end) {
                let c = settings.stage_category[d.stage as usize] as usize;
                categories[c] += d.amount_cents;
            }
            let p = close_probability(cfg, h, d.created, d.due, now, end);
            (win[d.stage as usize] * p, d.amount_cents)
        })
        .collect();
    let open_p = memo.percentiles(&deals, || {
        let sums = simulate(&deals, cfg.draws as usize, cfg.spread, cfg.seed);
        [0.1, 0.5, 0.9].map(|q| quantile(&sums, q))
    });
    Forecast {
        open_p,
        categories,
        deals: open.len() as u64,
    }
}
