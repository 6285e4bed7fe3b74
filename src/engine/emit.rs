//! Turning buckets into KPI records: rollup per dimension, the formulas of
//! [`crate::kpi`], and the KPIs that look beyond one bucket (quota, sales
//! progress, churn, gauges).

use super::state::*;
use super::Engine;
use crate::agg::{Acc, Pipeline};
use crate::kpi::{self, money, ratio, Value};
use crate::output::{KpiRecord, WindowInfo};
use crate::window::CalendarKind;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which window a batch of values belongs to.
struct Win {
    kind: String,
    start: i64,
    end: i64,
    label: String,
    revision: u32,
    is_final: bool,
    /// The records' shared window info, formatted once per emission.
    info: std::cell::OnceCell<Arc<WindowInfo>>,
}

/// Window kind of a rolling window: `rolling_24h`, `rolling_7d`…
pub fn rolling_name(span: i64) -> String {
    const H: i64 = 3_600_000;
    if span % (24 * H) == 0 && span > 24 * H {
        format!("rolling_{}d", span / (24 * H))
    } else if span % H == 0 {
        format!("rolling_{}h", span / H)
    } else if span % 60_000 == 0 {
        format!("rolling_{}m", span / 60_000)
    } else {
        format!("rolling_{}s", span / 1000)
    }
}

impl Engine {
    fn rfc3339(&self, ms: i64) -> String {
        use chrono::TimeZone;
        self.settings
            .cal
            .tz
            .timestamp_millis_opt(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn dims_of(
        &self,
        scope: Scope,
        extra: Option<(&'static str, &str)>,
    ) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if scope.0 > 0 {
            m.insert(
                DIMS[scope.0 as usize - 1].to_string(),
                self.state.interner.name(scope.1).to_string(),
            );
        }
        if let Some((k, v)) = extra {
            if !v.is_empty() {
                m.insert(k.to_string(), v.to_string());
            }
        }
        m
    }

    /// Pushes records for `values` of `scope`; for scopes other than
    /// "all", values with an empty sample are left out.
    fn push(&mut self, w: &Win, scope: Scope, values: &[Value]) {
        let info = w
            .info
            .get_or_init(|| {
                Arc::new(WindowInfo {
                    kind: w.kind.clone(),
                    start: self.rfc3339(w.start),
                    end: self.rfc3339(w.end),
                    label: w.label.clone(),
                    start_ms: w.start,
                })
            })
            .clone();
        for v in values {
            if scope != ALL && v.sample_size == 0 {
                continue;
            }
            let extra = v.def.extra_label.zip(v.extra);
            self.out.push(KpiRecord {
                kpi: Cow::Borrowed(v.def.name),
                unit: Cow::Borrowed(v.def.unit.as_str()),
                window: info.clone(),
                dimensions: self.dims_of(scope, extra),
                value: v.value.filter(|x| x.is_finite()),
                numerator: v.numerator,
                denominator: v.denominator,
                sample_size: v.sample_size,
                is_final: w.is_final,
                revision: w.revision,
            });
        }
    }

    /// Records of one window from its accumulators.
    fn emit_window(&mut self, w: &Win, kind: Option<CalendarKind>, aggs: &Aggs) {
        let rolled = aggs.rollup();
        let active = self.state.ledger.active_at(w.start);
        let mut scopes: Vec<&Scope> = rolled.keys().collect();
        scopes.sort_unstable();
        let mut values = Vec::with_capacity(32);
        for scope in scopes {
            let acc = &rolled[scope];
            values.clear();
            kpi::window_kpis(acc, &mut values);
            if scope.0 == 0 || scope.0 as usize - 1 == CHANNEL {
                let start = active.get(scope).copied().unwrap_or(0);
                kpi::churn_kpis(
                    start,
                    acc.customers_acquired,
                    acc.customers_cancelled,
                    &mut values,
                );
            }
            self.push(w, *scope, &values);
        }
        if let Some(kind) = kind {
            if kind != CalendarKind::Day && kind != CalendarKind::Week {
                self.emit_quota(w, &rolled);
            }
            if kind == CalendarKind::Month {
                self.emit_progress(w, &rolled);
            }
        }
    }

    /// Team and region of a rep (config first, then what events said).
    fn rep_scopes(&self, rep: u32) -> [Scope; 3] {
        let info = self.state.rep_info.get(&rep).copied().unwrap_or([0, 0]);
        [ALL, (TEAM as u8 + 1, info[0]), (REGION as u8 + 1, info[1])]
    }

    fn quotas_for(&self, label: &str) -> Vec<(u32, i64)> {
        let Some(period) = self.state.interner.get(label) else {
            return Vec::new();
        };
        let mut q: Vec<(u32, i64)> = self
            .state
            .quotas
            .iter()
            .filter(|((_, p), _)| *p == period)
            .map(|((r, _), c)| (*r, *c))
            .collect();
        q.sort_unstable();
        q
    }

    fn emit_quota(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
        let quotas = self.quotas_for(&w.label);
        if quotas.is_empty() {
            return;
        }
        // scope → (revenue of reps with quota, Σ quota, reps at target, reps)
        let mut agg: BTreeMap<Scope, (i64, i64, u64, u64)> = BTreeMap::new();
        for &(rep, quota) in &quotas {
            let rev = rolled
                .get(&(REP as u8 + 1, rep))
                .map_or(0, |a| a.revenue_cents);
            let scopes = self.rep_scopes(rep);
            for s in std::iter::once((REP as u8 + 1, rep))
                .chain(scopes.into_iter().filter(|s| s.0 == 0 || s.1 != 0))
            {
                let e = agg.entry(s).or_default();
                e.0 += rev;
                e.1 += quota;
                e.2 += u64::from(rev >= quota);
                e.3 += 1;
            }
        }
        for (scope, (rev, quota, at, n)) in agg {
            let values = [
                ratio(kpi::QUOTA_ATTAINMENT, money(rev), money(quota), n),
                ratio(kpi::QUOTA_REPS_AT_TARGET, at as f64, n as f64, n),
            ];
            self.push(w, scope, &values);
        }
    }

    /// Revenue by scope of the month before the one starting at `start`.
    fn previous_month_revenue(&self, start: i64) -> Option<FxHashMap<Scope, i64>> {
        let prev = self.settings.cal.previous(CalendarKind::Month, start);
        let months = self
            .state
            .calendar
            .iter()
            .find(|c| c.kind == CalendarKind::Month)?;
        if months.buckets.contains_key(&prev.start) {
            let set = self
                .state
                .calendar
                .iter()
                .position(|c| c.kind == CalendarKind::Month)?;
            return self
                .window_aggs(set, prev.start)
                .map(|a| a.revenue_by_scope());
        }
        match &self.state.last_closed_month {
            Some((s, rev)) if *s == prev.start => Some(rev.iter().copied().collect()),
            _ => None,
        }
    }

    fn emit_progress(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
        let quotas = self.quotas_for(&w.label);
        let mut targets: FxHashMap<Scope, i64> = FxHashMap::default();
        for &(rep, quota) in &quotas {
            *targets.entry((REP as u8 + 1, rep)).or_default() += quota;
            for s in self.rep_scopes(rep) {
                if s.0 == 0 || s.1 != 0 {
                    *targets.entry(s).or_default() += quota;
                }
            }
        }
        if let Some(t) = self.settings.monthly_target_cents {
            targets.insert(ALL, t);
        }
        let len = (w.end - w.start) as f64;
        let elapsed = if w.is_final {
            len
        } else {
            ((self.state.max_time + 1 - w.start) as f64).clamp(1.0, len)
        };
        let prev = self.previous_month_revenue(w.start);
        let mut scopes: Vec<&Scope> = rolled.keys().collect();
        scopes.sort_unstable();
        for scope in scopes {
            let acc = &rolled[scope];
            let rev = money(acc.revenue_cents);
            let mut values = Vec::new();
            if let Some(t) = targets.get(scope) {
                values.push(ratio(kpi::SALES_PROGRESS, rev, money(*t), acc.deals_won));
            }
            let mut run = ratio(kpi::RUN_RATE, rev * len, elapsed, acc.deals_won);
            run.numerator = Some(rev);
            run.denominator = Some(elapsed / len);
            values.push(run);
            if let Some(p) = prev.as_ref().and_then(|p| p.get(scope)) {
                let p = money(*p);
                let mut g = ratio(kpi::REVENUE_GROWTH_MOM, rev - p, p, acc.deals_won);
                g.sample_size = acc.deals_won;
                values.push(g);
            }
            self.push(w, *scope, &values);
        }
    }

    fn emit_gauges(&mut self, is_final: bool) {
        if self.state.max_time == i64::MIN {
            return;
        }
        self.state.gauges_revision += 1;
        self.state.gauges_dirty = false;
        let w = Win {
            kind: "gauge".into(),
            start: self.state.max_time,
            end: self.state.max_time,
            label: "current".into(),
            revision: self.state.gauges_revision,
            is_final,
            info: Default::default(),
        };
        // (scope, stage or none) → open deals
        let mut cells: BTreeMap<(Scope, Option<u8>), Pipeline> = BTreeMap::new();
        cells.entry((ALL, None)).or_default();
        for ((stage, key), p) in &self.state.pipeline {
            for s in scopes(key) {
                for st in [None, Some(*stage)] {
                    let c = cells.entry((s, st)).or_default();
                    c.deals += p.deals;
                    c.amount_cents += p.amount_cents;
                }
            }
        }
        let mut weighted: BTreeMap<Scope, f64> = BTreeMap::new();
        for ((scope, stage), p) in &cells {
            if let Some(st) = stage {
                *weighted.entry(*scope).or_default() +=
                    money(p.amount_cents) * self.settings.stages[*st as usize].1;
            }
        }
        for ((scope, stage), p) in cells {
            let name = stage.map(|s| self.settings.stages[s as usize].0.clone());
            let sample = p.deals.max(0) as u64;
            let value = |def, v: f64| Value {
                def,
                extra: None,
                value: Some(v),
                numerator: Some(v),
                denominator: None,
                sample_size: sample,
            };
            let w_value = match stage {
                Some(st) => money(p.amount_cents) * self.settings.stages[st as usize].1,
                None => weighted.get(&scope).copied().unwrap_or(0.0),
            };
            let values = [
                value(kpi::PIPELINE_VALUE, money(p.amount_cents)),
                value(kpi::PIPELINE_WEIGHTED, w_value),
            ];
            let extra = name.as_deref().map(|n| ("stage", n));
            self.push_with_extra(&w, scope, &values, extra);
        }
        let mut active: BTreeMap<Scope, i64> = BTreeMap::new();
        active.insert(ALL, 0);
        for (k, n) in &self.state.ledger.active {
            for s in scopes(k) {
                *active.entry(s).or_default() += n;
            }
        }
        for (scope, n) in active {
            let v = Value {
                def: kpi::ACTIVE_CUSTOMERS,
                extra: None,
                value: Some(n as f64),
                numerator: Some(n as f64),
                denominator: None,
                sample_size: n.max(0) as u64,
            };
            self.push(&w, scope, &[v]);
        }
    }

    fn push_with_extra(
        &mut self,
        w: &Win,
        scope: Scope,
        values: &[Value],
        extra: Option<(&'static str, &str)>,
    ) {
        let start = self.out.len();
        self.push(w, scope, values);
        if let Some((k, v)) = extra {
            for r in &mut self.out[start..] {
                r.dimensions.insert(k.to_string(), v.to_string());
            }
        }
    }

    /// Everything calendar bucket `start` of set `set` holds: for a day its
    /// own accumulators, for a longer window its folded closed days plus
    /// its open days.
    pub(super) fn window_aggs(&self, set: usize, start: i64) -> Option<Aggs> {
        let b = self.state.calendar[set].buckets.get(&start)?;
        let mut aggs = b.aggs.clone();
        if set != 0 {
            for (_, day) in self.state.calendar[0].buckets.range(start..b.end) {
                aggs.merge(&day.aggs);
            }
        }
        Some(aggs)
    }

    fn emit_calendar_bucket(&mut self, set: usize, start: i64, is_final: bool) {
        let kind = self.state.calendar[set].kind;
        let aggs = if set == 0 {
            // A day is emitted from its own accumulators: no copy.
            let Some(b) = self.state.calendar[0].buckets.get_mut(&start) else {
                return;
            };
            std::mem::take(&mut b.aggs)
        } else {
            let Some(aggs) = self.window_aggs(set, start) else {
                return;
            };
            aggs
        };
        let b = self.state.calendar[set]
            .buckets
            .get_mut(&start)
            .expect("bucket present");
        b.revision += 1;
        b.dirty = false;
        let w = Win {
            kind: kind.as_str().into(),
            start,
            end: b.end,
            label: b.label.clone(),
            revision: b.revision,
            is_final,
            info: Default::default(),
        };
        self.emit_window(&w, Some(kind), &aggs);
        if set == 0 {
            if let Some(b) = self.state.calendar[0].buckets.get_mut(&start) {
                b.aggs = aggs;
            }
        }
    }

    fn emit_rolling(&mut self, set: usize, is_final: bool) {
        let r = &mut self.state.rolling[set];
        if r.buckets.is_empty() || self.state.max_time == i64::MIN {
            return;
        }
        r.revision += 1;
        r.dirty = false;
        let end = crate::window::sub_bucket(self.state.max_time, r.width) + r.width;
        let start = end - r.span;
        let mut aggs = Aggs::default();
        for (_, a) in r.buckets.range(start..end) {
            aggs.merge(a);
        }
        let w = Win {
            kind: rolling_name(r.span),
            start,
            end,
            label: "rolling".into(),
            revision: r.revision,
            is_final,
            info: Default::default(),
        };
        self.emit_window(&w, None, &aggs);
    }

    /// Emits provisional records for every window changed since its last emission.
    pub fn emit_updates(&mut self) {
        // A window changed if one of its days did.
        let dirty_days: Vec<i64> = self.state.calendar[0]
            .buckets
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(s, _)| *s)
            .collect();
        for set in 0..self.state.calendar.len() {
            let c = &self.state.calendar[set];
            if !c.emit {
                continue;
            }
            let dirty: Vec<i64> = c
                .buckets
                .iter()
                .filter(|(s, b)| dirty_days.iter().any(|d| **s <= *d && *d < b.end))
                .map(|(s, _)| *s)
                .collect();
            for start in dirty {
                self.emit_calendar_bucket(set, start, false);
            }
        }
        for d in dirty_days {
            if let Some(b) = self.state.calendar[0].buckets.get_mut(&d) {
                b.dirty = false;
            }
        }
        for set in 0..self.state.rolling.len() {
            if self.state.rolling[set].dirty {
                self.emit_rolling(set, false);
            }
        }
        if self.state.gauges_dirty {
            self.emit_gauges(false);
        }
    }

    /// Emits and drops every calendar window that ends at or before `cutoff`.
    pub(super) fn close_until(&mut self, cutoff: i64) {
        // Days first: each closed day is folded into the longer windows
        // containing it, which are complete once their own end passes.
        while let Some((&start, b)) = self.state.calendar[0].buckets.first_key_value() {
            if b.end > cutoff {
                break;
            }
            if self.state.calendar[0].emit {
                self.emit_calendar_bucket(0, start, true);
            }
            let day = self.state.calendar[0]
                .buckets
                .remove(&start)
                .expect("bucket present");
            for set in &mut self.state.calendar[1..] {
                if let Some((_, w)) = set.buckets.range_mut(..=start).next_back() {
                    if start < w.end {
                        w.aggs.merge(&day.aggs);
                    }
                }
            }
        }
        for set in 1..self.state.calendar.len() {
            while let Some((&start, b)) = self.state.calendar[set].buckets.first_key_value() {
                if b.end > cutoff {
                    break;
                }
                if self.state.calendar[set].emit {
                    self.emit_calendar_bucket(set, start, true);
                }
                let b = self.state.calendar[set]
                    .buckets
                    .remove(&start)
                    .expect("bucket present");
                if self.state.calendar[set].kind == CalendarKind::Month {
                    self.state.last_closed_month = Some((start, b.aggs.revenue_by_scope()));
                }
            }
        }
        // Rolling sub-buckets that can neither change nor be in the span any more.
        let now = self.state.max_time;
        for r in &mut self.state.rolling {
            let span_start = crate::window::sub_bucket(now, r.width) + r.width - r.span;
            let keep_from = span_start.min(cutoff - r.width + 1);
            r.buckets = r
                .buckets
                .split_off(&crate::window::sub_bucket(keep_from, r.width));
        }
        self.next_close = self
            .state
            .calendar
            .iter()
            .filter_map(|c| c.buckets.first_key_value().map(|(_, b)| b.end))
            .min()
            .unwrap_or(i64::MAX);
        // Customer changes before every open window start can be folded.
        let oldest_open = self
            .state
            .calendar
            .iter()
            .filter_map(|c| c.buckets.first_key_value().map(|(s, _)| *s))
            .chain(
                self.state
                    .rolling
                    .iter()
                    .map(|r| crate::window::sub_bucket(now, r.width) + r.width - r.span),
            )
            .min()
            .unwrap_or(cutoff)
            .min(cutoff);
        self.state.ledger.fold_before(oldest_open);
    }

    /// End of input: every window is emitted as final, rolling windows and
    /// gauges as of the newest event.
    pub fn finish(&mut self) {
        self.close_until(i64::MAX);
        for set in 0..self.state.rolling.len() {
            self.emit_rolling(set, true);
        }
        self.emit_gauges(true);
        self.evaluate_alerts();
    }
}
