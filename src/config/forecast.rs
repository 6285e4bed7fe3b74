//! `[forecast]` and the stages' forecast categories (docs/kpis.md, "Forecast").

use super::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Monte Carlo draws per forecast (each draw decides every open deal).
    pub draws: u32,
    /// Seed of the draws: a given state and seed give the same forecast.
    pub seed: u64,
    /// Observed closes needed before the forecast uses them instead of
    /// the configured stage probabilities (per stage exit count) and
    /// before it uses the observed sales cycles (won deals).
    pub min_history: u64,
    /// How much a whole period's close rate varies beyond the luck of
    /// single deals: σ of a lognormal factor (mean 1) on every deal's
    /// probability, drawn once per draw; 0 = deals independent.
    pub spread: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            draws: 2000,
            seed: 1,
            min_history: 30,
            spread: 0.3,
        }
    }
}

/// A stage's forecast category (`pipeline.stages[].forecast_category`);
/// `closed` is the revenue won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastCategory {
    Pipeline,
    BestCase,
    Commit,
}

impl ForecastCategory {
    /// The category of a stage that names none: by its win probability
    /// (below 0.4 pipeline, below 0.7 best case, else commit).
    pub fn by_probability(p: f64) -> ForecastCategory {
        if p < 0.4 {
            ForecastCategory::Pipeline
        } else if p < 0.7 {
            ForecastCategory::BestCase
        } else {
            ForecastCategory::Commit
        }
    }
}

impl ForecastConfig {
    pub fn validate(&self, errs: &mut Vec<ConfigError>) {
        if !(1..=1_000_000).contains(&self.draws) {
            errs.push(ConfigError {
                field: "forecast.draws".into(),
                problem: format!("{} is outside 1..=1000000", self.draws),
                fix: "use a few thousand draws (2000 is the default; the cost grows with draws × open deals)".into(),
            });
        }
        if !(0.0..=2.0).contains(&self.spread) {
            errs.push(ConfigError {
                field: "forecast.spread".into(),
                problem: format!("{} is outside 0..=2", self.spread),
                fix: "use 0 (independent deals) to about 0.5; 0.3 is the default".into(),
            });
        }
        if self.min_history == 0 {
            errs.push(ConfigError {
                field: "forecast.min_history".into(),
                problem: "0 would trust a single observed close".into(),
                fix: "use at least 1 (30 is the default)".into(),
            });
        }
    }
}
