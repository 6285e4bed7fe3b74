//! Forecast records of the current month and quarter (see
//! `engine::forecast`): with each provisional emission of the window
//! that holds the newest event, for "all" only.

use super::*;
use crate::engine::forecast;

/// Label values of `forecast_by_category{category}`.
pub const CATEGORIES: [&str; 4] = ["pipeline", "best_case", "commit", "closed"];

impl Engine {
    pub(super) fn emit_forecast(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
        let now = self.state.max_time;
        if w.is_final || !(w.start..w.end).contains(&now) {
            return;
        }
        let won = rolled.get(&ALL).map_or(0, |a| a.revenue_cents);
        // A merger's: the sources' open deals, with their summed history.
        let open = match self.merge.is_some() {
            true => self.merged_open_deals(),
            false => forecast::open_deals(&self.state),
        };
        let h = &self.state.forecast;
        let f =
            forecast::forecast_memo(&self.settings, h, open, now, w.end, &mut self.forecast_memo);
        let value = |def, cents: i64| Value {
            def,
            extra: None,
            value: Some(money(cents)),
            numerator: Some(money(cents)),
            denominator: None,
            sample_size: f.deals,
        };
        let [p10, p50, p90] = f.open_p;
        self.push(
            w,
            ALL,
            &[
                value(kpi::FORECAST_P10, won + p10),
                value(kpi::FORECAST_P50, won + p50),
                value(kpi::FORECAST_P90, won + p90),
            ],
        );
        // The period's target: targets.monthly_revenue (months), else
        // the reps' quotas for it.
        let quotas: i64 = self.quotas_for(&w.label).iter().map(|q| q.1).sum();
        let target = match self.settings.monthly_target_cents {
            Some(t) if w.kind == "month" => Some(t),
            _ => (quotas > 0).then_some(quotas),
        };
        if let Some(t) = target {
            let r = ratio(
                kpi::FORECAST_TARGET_RATIO,
                money(won + p50),
                money(t),
                f.deals,
            );
            self.push(w, ALL, &[r]);
        }
        let [pipeline, best, commit] = f.categories;
        for (name, cents) in CATEGORIES.iter().zip([pipeline, best, commit, won]) {
            let v = value(kpi::FORECAST_BY_CATEGORY, cents);
            self.push_with_extra(w, ALL, &[v], Some(("category", name)));
        }
    }
}
