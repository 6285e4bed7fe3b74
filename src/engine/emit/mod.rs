//! Turning buckets into KPI records: rollup per dimension, the formulas of
//! [`crate::kpi`], and the KPIs that look beyond one bucket (quota, sales
//! progress, churn, gauges).

mod cohort;
mod family;
mod forecast;
mod rfm;

use super::state::*;
use super::Engine;
use crate::agg::{Acc, Pipeline};
use crate::kpi::{self, money, ratio, Unit, Value};
use crate::output::{KpiRecord, LeaderboardEntry, LeaderboardRecord, WindowInfo};
use crate::window::CalendarKind;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A rep's place on a leaderboard: (value, sample size, rep name).
type Ranked<'a> = (f64, u64, &'a str);

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

    /// The window info shared by the records of one emission.
    fn info(&self, w: &Win) -> Arc<WindowInfo> {
        w.info
            .get_or_init(|| {
                Arc::new(WindowInfo {
                    kind: w.kind.clone(),
                    start: self.rfc3339(w.start),
                    end: self.rfc3339(w.end),
                    label: w.label.clone(),
                    start_ms: w.start,
                })
            })
            .clone()
    }

    /// Pushes records for `values` of `scope`; for scopes other than
    /// "all", values with an empty sample are left out.
    fn push(&mut self, w: &Win, scope: Scope, values: &[Value]) {
        self.push_with_extra(w, scope, values, None)
    }

    /// [`Engine::push`] with one more label on every record (`stage`,
    /// `competitor`, `control`). The records of one series share one
    /// dimension map.
    fn push_with_extra(
        &mut self,
        w: &Win,
        scope: Scope,
        values: &[Value],
        extra: Option<(&'static str, &str)>,
    ) {
        let info = self.info(w);
        let mut shared: Option<Arc<BTreeMap<String, String>>> = None;
        for v in values {
            if scope != ALL && v.sample_size == 0 {
                continue;
            }
            let dims = |own| {
                let mut m = self.dims_of(scope, own);
                if let Some((k, x)) = extra {
                    m.insert(k.to_string(), x.to_string());
                }
                Arc::new(m)
            };
            let dimensions = match v.def.extra_label.zip(v.extra) {
                // A label of the value's own (`activity_kind`).
                Some(own) => dims(Some(own)),
                None => shared.get_or_insert_with(|| dims(None)).clone(),
            };
            self.out.push(KpiRecord {
                kpi: Cow::Borrowed(v.def.name),
                unit: Cow::Borrowed(v.def.unit.as_str()),
                window: info.clone(),
                dimensions,
                value: v.value.filter(|x| x.is_finite()),
                numerator: v.numerator,
                denominator: v.denominator,
                sample_size: v.sample_size,
                is_final: w.is_final,
                revision: w.revision,
            });
        }
    }

    /// Records of one window from its accumulators, rolled up.
    fn emit_window(&mut self, w: &Win, kind: Option<CalendarKind>, all: &Rolled) {
        let rolled = &all.scopes;
        let active = self.state.ledger.active_at(w.start);
        let mut scopes: Vec<&Scope> = rolled.keys().collect();
        scopes.sort_unstable();
        let len = w.end - w.start;
        let headcount = self.headcounts();
        let market = self.market_sizes(w.start, len);
        let mut values = Vec::with_capacity(64);
        for &scope in &scopes {
            let acc = &rolled[scope];
            values.clear();
            kpi::window_kpis(acc, &mut values);
            let dim = scope.0 as usize;
            if dim == 0 || dim - 1 == CHANNEL || dim - 1 == SEGMENT {
                let start = active.get(scope).copied().unwrap_or(0);
                kpi::customer_kpis(start, acc, len, &mut values);
                if dim == 0 || dim - 1 == CHANNEL {
                    let clv = values
                        .iter()
                        .find(|v| v.def == kpi::CLV)
                        .and_then(|v| v.value);
                    kpi::acquisition_kpis(acc, clv, &mut values);
                }
            }
            if let Some(h) = headcount.get(scope) {
                values.push(ratio(
                    kpi::REVENUE_PER_EMPLOYEE,
                    money(acc.revenue_cents),
                    *h as f64,
                    acc.deals_won,
                ));
            }
            if let Some(m) = market.get(scope) {
                values.push(ratio(
                    kpi::MARKET_SHARE,
                    money(acc.revenue_cents),
                    *m,
                    acc.deals_won,
                ));
            }
            self.push(w, *scope, &values);
            for (i, moves) in acc.stage_moves.iter().enumerate() {
                if moves[0] == 0 && *scope != ALL {
                    continue;
                }
                let v = ratio(
                    kpi::STAGE_CONVERSION,
                    moves[1] as f64,
                    moves[0] as f64,
                    moves[0],
                );
                let name = self.settings.stages[i].0.clone();
                self.push_with_extra(w, *scope, &[v], Some(("stage", &name)));
            }
        }
        self.emit_price_pairs(w, &all.pairs);
        self.emit_ab(w, rolled);
        self.emit_leaderboards(w, rolled);
        if let Some(kind) = kind {
            if kind != CalendarKind::Day && kind != CalendarKind::Week {
                self.emit_quota(w, rolled);
            }
            if kind == CalendarKind::Month {
                self.emit_progress(w, rolled);
            }
            if matches!(kind, CalendarKind::Month | CalendarKind::Quarter) {
                self.emit_forecast(w, rolled);
            }
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
                    c.add(p);
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
            let stalled = |def, v: f64| Value {
                sample_size: p.stalled.max(0) as u64,
                ..value(def, v)
            };
            let overdue = |def, v: f64| Value {
                sample_size: p.overdue.max(0) as u64,
                ..value(def, v)
            };
            let values = [
                value(kpi::PIPELINE_VALUE, money(p.amount_cents)),
                value(kpi::PIPELINE_WEIGHTED, w_value),
                stalled(kpi::STALLED_DEALS, p.stalled as f64),
                stalled(kpi::STALLED_VALUE, money(p.stalled_cents)),
                Value {
                    value: (p.amount_cents != 0)
                        .then(|| p.stalled_cents as f64 / p.amount_cents as f64),
                    numerator: Some(money(p.stalled_cents)),
                    denominator: Some(money(p.amount_cents)),
                    ..value(kpi::STALLED_RATIO, 0.0)
                },
                overdue(kpi::OVERDUE_DEALS, p.overdue as f64),
                overdue(kpi::OVERDUE_VALUE, money(p.overdue_cents)),
            ];
            let extra = name.as_deref().map(|n| ("stage", n));
            self.push_with_extra(&w, scope, &values, extra);
        }
        let awaiting = std::mem::take(&mut self.state.awaiting);
        self.push_count_gauge(&w, kpi::LEADS_AWAITING, &awaiting);
        self.state.awaiting = awaiting;
        let active = std::mem::take(&mut self.state.ledger.active);
        self.push_count_gauge(&w, kpi::ACTIVE_CUSTOMERS, &active);
        self.state.ledger.active = active;
        self.emit_rfm(&w);
    }

    /// A count gauge by dimensions, summed into "all" and every series.
    fn push_count_gauge<'a>(
        &mut self,
        w: &Win,
        def: kpi::KpiDef,
        counts: impl IntoIterator<Item = (&'a DimKey, &'a i64)>,
    ) {
        let mut by_scope: BTreeMap<Scope, i64> = BTreeMap::new();
        by_scope.insert(ALL, 0);
        for (k, n) in counts {
            for s in scopes(k) {
                *by_scope.entry(s).or_default() += n;
            }
        }
        for (scope, n) in by_scope {
            let v = Value {
                def,
                extra: None,
                value: Some(n as f64),
                numerator: Some(n as f64),
                denominator: None,
                sample_size: n.max(0) as u64,
            };
            self.push(w, scope, &[v]);
        }
    }

    /// Everything calendar bucket `start` of set `set` holds, rolled up:
    /// for a day its own accumulators, for a longer window its folded
    /// closed days plus its open days.
    pub(super) fn window_rolled(&self, set: usize, start: i64) -> Option<Rolled> {
        let b = self.state.calendar[set].buckets.get(&start)?;
        let mut r = b.folded.clone();
        r.merge(&b.aggs);
        if set != 0 {
            for (_, day) in self.state.calendar[0].buckets.range(start..b.end) {
                r.merge(&day.aggs);
            }
        }
        r.scopes.entry(ALL).or_default();
        Some(r)
    }

    fn emit_calendar_bucket(&mut self, set: usize, start: i64, is_final: bool) {
        if let Some(r) = self.window_rolled(set, start) {
            self.emit_rolled_bucket(set, start, is_final, &r);
        }
    }

    /// Emits calendar bucket `start` of set `set`, whose accumulators
    /// rolled up are `rolled`.
    fn emit_rolled_bucket(&mut self, set: usize, start: i64, is_final: bool, rolled: &Rolled) {
        let kind = self.state.calendar[set].kind;
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
        self.emit_window(&w, Some(kind), rolled);
    }

    fn emit_rolling(&mut self, set: usize, is_final: bool) {
        self.flush_rolling();
        let r = &mut self.state.rolling[set];
        if r.buckets.is_empty() || self.state.max_time == i64::MIN {
            return;
        }
        r.revision += 1;
        r.dirty = false;
        let end = crate::window::sub_bucket(self.state.max_time, r.width) + r.width;
        let start = end - r.span;
        let mut rolled = Rolled::default();
        // "all" even when no sub-bucket is in the span: zeros, not silence.
        rolled.scopes.entry(ALL).or_default();
        for (_, a) in r.buckets.range(start..end) {
            rolled.merge(a);
        }
        let w = Win {
            kind: crate::window::rolling_name(r.span),
            start,
            end,
            label: "rolling".into(),
            revision: r.revision,
            is_final,
            info: Default::default(),
        };
        self.emit_window(&w, None, &rolled);
    }

    /// Emits provisional records for every window changed since its last emission.
    pub fn emit_updates(&mut self) {
        self.flush_rolling();
        self.emit_cohorts(false);
        // A window changed if one of its days did.
        let mut dirty_days: Vec<i64> = self.state.calendar[0]
            .buckets
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(s, _)| *s)
            .collect();
        // The open pipeline changed: the forecast of the windows holding
        // the newest event did too.
        if self.state.gauges_dirty && self.state.max_time != i64::MIN {
            dirty_days.push(self.state.max_time);
        }
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
        self.flush_rolling();
        // Days first: each closed day is folded into the longer windows
        // containing it, which are complete once their own end passes.
        while let Some(mut first) = self.state.calendar[0].buckets.first_entry() {
            if first.get().end > cutoff {
                break;
            }
            let start = *first.key();
            // For its own records and for its longer windows.
            let mut rolled = std::mem::take(&mut first.get_mut().aggs);
            rolled.scopes.entry(ALL).or_default();
            if self.state.calendar[0].emit {
                self.emit_rolled_bucket(0, start, true, &rolled);
            }
            self.state.calendar[0].buckets.remove(&start);
            for set in &mut self.state.calendar[1..] {
                if let Some((_, w)) = set.buckets.range_mut(..=start).next_back() {
                    if start < w.end {
                        w.folded.merge(&rolled);
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
                    self.state.last_closed_month = Some((start, b.folded.revenue_by_scope()));
                }
            }
        }
        // Rolling sub-buckets that can neither change nor be in the span any more.
        let now = self.state.max_time;
        // No event yet (an empty input): no rolling bucket, no clock to trim by.
        let rolling = if now == i64::MIN {
            &mut [][..]
        } else {
            &mut self.state.rolling[..]
        };
        for r in rolling.iter_mut() {
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
                    .filter(|_| now != i64::MIN)
                    .map(|r| crate::window::sub_bucket(now, r.width) + r.width - r.span),
            )
            .min()
            .unwrap_or(cutoff)
            .min(cutoff);
        self.state.ledger.fold_before(oldest_open);
        if let Some(m) = self.merge.as_mut() {
            let f = crate::window::sub_bucket(oldest_open, LEDGER_SLOT_MS);
            m.ledger_folded = m.ledger_folded.max(f);
        }
    }

    /// End of input: every window is emitted as final, rolling windows and
    /// gauges as of the newest event.
    pub fn finish(&mut self) {
        self.end_of_input();
        self.close_until(i64::MAX);
        for set in 0..self.state.rolling.len() {
            self.emit_rolling(set, true);
        }
        self.emit_gauges(true);
        self.emit_cohorts(true);
        self.evaluate_alerts();
    }
}
