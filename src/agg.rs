//! Mergeable accumulators: what one window bucket keeps for one
//! combination of dimensions.
//!
//! Every field is a count, an integer sum or a quantile sketch, so that
//! `merge(agg(A), agg(B)) == agg(A ++ B)` holds exactly (tested with
//! proptest in `tests/merge.rs`). Money is in integer cents, durations in
//! integer milliseconds.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// Relative accuracy of the quantile sketch (1 %).
pub const SKETCH_ALPHA: f64 = 0.01;

fn sketch_config() -> SketchConfig {
    SketchConfig::new(SKETCH_ALPHA, 2048, 1e-3)
}

/// Distribution of durations: exact count and sum, quantiles from a
/// DDSketch (relative error ≤ 1 %) over seconds.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Dist {
    pub count: u64,
    /// Sum in milliseconds.
    pub sum_ms: i128,
    sketch: Option<Box<DDSketch>>,
}

impl Dist {
    pub fn add(&mut self, ms: i64) {
        self.count += 1;
        self.sum_ms += i128::from(ms);
        self.sketch
            .get_or_insert_with(|| Box::new(DDSketch::new(sketch_config())))
            .add(ms as f64 / 1000.0);
    }

    pub fn merge(&mut self, o: &Dist) {
        self.count += o.count;
        self.sum_ms += o.sum_ms;
        if let Some(os) = &o.sketch {
            match &mut self.sketch {
                Some(s) => s.merge(os).expect("every sketch has the same config"),
                None => self.sketch = Some(os.clone()),
            }
        }
    }

    /// Mean in seconds.
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms as f64 / 1000.0 / self.count as f64)
    }

    /// Quantile `q` in seconds (lower-rank convention: rank ⌊q·(n−1)⌋).
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        self.sketch
            .as_ref()
            .and_then(|s| s.quantile(q).ok().flatten())
    }
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
    /// Lead response times (first contact − creation).
    pub response: Dist,
    pub deals_won: u64,
    pub deals_lost: u64,
    /// Σ amount of won deals, in cents.
    pub revenue_cents: i64,
    /// Sales cycle lengths (won − deal creation).
    pub cycle: Dist,
    pub customers_acquired: u64,
    pub customers_cancelled: u64,
    /// Activities by [`crate::event::ActivityKind`] index.
    pub activities: [u64; 4],
}

impl Acc {
    pub fn merge(&mut self, o: &Acc) {
        self.leads_created += o.leads_created;
        self.leads_converted += o.leads_converted;
        self.response.merge(&o.response);
        self.deals_won += o.deals_won;
        self.deals_lost += o.deals_lost;
        self.revenue_cents += o.revenue_cents;
        self.cycle.merge(&o.cycle);
        self.customers_acquired += o.customers_acquired;
        self.customers_cancelled += o.customers_cancelled;
        for (a, b) in self.activities.iter_mut().zip(o.activities) {
            *a += b;
        }
    }
}

/// Open-pipeline gauge for one (stage, dimensions) cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub deals: i64,
    pub amount_cents: i64,
}
