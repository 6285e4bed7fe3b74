//! Turning buckets into KPI records: rollup per dimension, the formulas of
//! [`crate::kpi`], and the KPIs that look beyond one bucket (quota, sales
//! progress, churn, gauges).

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
        }
    }

    /// Headcount by scope: the company's (event, else config, else Σ
    /// teams) for "all", and each team's.
    fn headcounts(&self) -> FxHashMap<Scope, i64> {
        let mut teams: FxHashMap<u32, i64> = FxHashMap::default();
        for (t, n) in &self.settings.team_headcount {
            if let Some(id) = self.state.interner.get(t) {
                teams.insert(id, *n);
            }
        }
        let mut company = self.settings.headcount;
        for (t, n) in &self.state.headcount {
            match t {
                0 => company = Some(*n),
                t => {
                    teams.insert(*t, *n);
                }
            }
        }
        let mut out: FxHashMap<Scope, i64> = teams
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (scope(TEAM, *t), *n))
            .collect();
        let company = company.unwrap_or_else(|| teams.values().sum());
        if company > 0 {
            out.insert(ALL, company);
        }
        out
    }

    /// Market size for the window `[start, start + len)` by scope ("all"
    /// and products): the yearly size × window length ÷ length of the year
    /// the window starts in.
    fn market_sizes(&self, start: i64, len: i64) -> FxHashMap<Scope, f64> {
        let year = self.settings.cal.bounds(CalendarKind::Year, start);
        let frac = len as f64 / (year.end - year.start) as f64;
        let mut sizes: FxHashMap<u32, i64> = FxHashMap::default();
        if let Some(m) = self.settings.market_size_cents {
            sizes.insert(0, m);
        }
        for (p, m) in &self.settings.product_market_cents {
            if let Some(id) = self.state.interner.get(p) {
                sizes.insert(id, *m);
            }
        }
        sizes.extend(self.state.market_size.iter().map(|(p, m)| (*p, *m)));
        sizes
            .into_iter()
            .filter(|(_, m)| *m > 0)
            .map(|(p, m)| {
                let s = if p == 0 { ALL } else { scope(PRODUCT, p) };
                (s, money(m) * frac)
            })
            .collect()
    }

    /// Price index per (product, competitor) pair.
    fn emit_price_pairs(&mut self, w: &Win, pairs: &FxHashMap<(u32, u32), Acc>) {
        let pairs: BTreeMap<(u32, u32), &Acc> = pairs.iter().map(|(k, a)| (*k, a)).collect();
        for ((p, c), a) in pairs {
            let name = self.state.interner.name(c).to_string();
            let v = kpi::price_index(a);
            self.push_with_extra(w, scope(PRODUCT, p), &[v], Some(("competitor", &name)));
        }
    }

    /// A/B test of each variant's lead conversion against the control's.
    fn emit_ab(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
        let mut variants: Vec<(&str, u32, u64, u64)> = rolled
            .iter()
            .filter(|(s, a)| s.0 as usize == VARIANT + 1 && s.1 != UNKNOWN && a.leads_created > 0)
            .map(|(s, a)| {
                (
                    self.state.interner.name(s.1),
                    s.1,
                    a.leads_converted,
                    a.leads_created,
                )
            })
            .collect();
        if variants.len() < 2 {
            return;
        }
        variants.sort_unstable();
        let control = variants
            .iter()
            .position(|v| v.0 == self.settings.ab_control)
            .unwrap_or(0);
        let (cname, _, x0, n0) = variants[control];
        let cname = cname.to_string();
        let rows: Vec<(u32, u64, u64)> = variants
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != control)
            .map(|(_, v)| (v.1, v.2, v.3))
            .collect();
        for (id, x1, n1) in rows {
            let (p1, p0) = (x1 as f64 / n1 as f64, x0 as f64 / n0 as f64);
            let lift = ratio(kpi::AB_LIFT, p1 - p0, p0, n1 + n0);
            let test = kpi::two_proportion_z_test(x1, n1, x0, n0);
            let p = Value {
                def: kpi::AB_P_VALUE,
                extra: None,
                value: test.map(|t| t.0),
                numerator: test.map(|t| t.1),
                denominator: None,
                sample_size: n1 + n0,
            };
            self.push_with_extra(w, scope(VARIANT, id), &[lift, p], Some(("control", &cname)));
        }
    }

    /// Top reps by revenue, win rate and activities.
    fn emit_leaderboards(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
        let reps: Vec<(&str, &Acc)> = rolled
            .iter()
            .filter(|(s, _)| s.0 as usize == REP + 1 && s.1 != UNKNOWN)
            .map(|(s, a)| (self.state.interner.name(s.1), a))
            .collect();
        let min = self.settings.leaderboard_min_sample;
        let boards: [(&'static str, Unit, Vec<Ranked>); 3] = [
            (
                "revenue",
                Unit::Currency,
                reps.iter()
                    .filter(|(_, a)| a.deals_won > 0)
                    .map(|(r, a)| (money(a.revenue_cents), a.deals_won, *r))
                    .collect(),
            ),
            (
                "win_rate",
                Unit::Ratio,
                reps.iter()
                    .map(|(r, a)| (a.deals_won, a.deals_won + a.deals_lost, *r))
                    .filter(|(_, n, _)| *n >= min.max(1))
                    .map(|(won, n, r)| (won as f64 / n as f64, n, r))
                    .collect(),
            ),
            (
                "activities",
                Unit::Count,
                reps.iter()
                    .map(|(r, a)| (a.activities.iter().sum::<u64>(), *r))
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, r)| (n as f64, n, r))
                    .collect(),
            ),
        ];
        let mut made = Vec::new();
        for (board, unit, mut rows) in boards {
            if rows.is_empty() {
                continue;
            }
            rows.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.cmp(b.2)));
            rows.truncate(self.settings.leaderboard_size);
            made.push(LeaderboardRecord {
                record: Cow::Borrowed("leaderboard"),
                board: Cow::Borrowed(board),
                unit: Cow::Borrowed(unit.as_str()),
                window: self.info(w),
                entries: rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, (value, sample_size, rep))| LeaderboardEntry {
                        rank: i as u32 + 1,
                        rep: rep.to_string(),
                        value,
                        sample_size,
                    })
                    .collect(),
                is_final: w.is_final,
                revision: w.revision,
            });
        }
        self.boards.extend(made);
    }

    /// Team and region of a rep (config first, then what events said).
    fn rep_scopes(&self, rep: u32) -> [Scope; 3] {
        let info = self.state.rep_info.get(&rep).copied().unwrap_or([0, 0]);
        let m = &self.settings.dims_mask;
        [
            ALL,
            (TEAM as u8 + 1, info[0] & m[TEAM]),
            (REGION as u8 + 1, info[1] & m[REGION]),
        ]
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
                .window_rolled(set, prev.start)
                .map(|r| r.revenue_by_scope());
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
            // (a merger can emit before any source has reported a time)
            (self
                .state
                .max_time
                .saturating_add(1)
                .saturating_sub(w.start) as f64)
                .clamp(1.0, len)
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
            kind: rolling_name(r.span),
            start,
            end,
            label: "rolling".into(),
            revision: r.revision,
            is_final,
            info: Default::default(),
        };
        self.emit_window(&w, None, &rolled);
    }

    /// Cohort conversion of the calendar windows containing a cohort day
    /// that changed; at `finish`, of every window with cohort data, as final.
    fn emit_cohorts(&mut self, finish: bool) {
        let days: Vec<i64> = self
            .state
            .cohorts
            .iter()
            .filter(|(_, c)| c.dirty || finish)
            .map(|(d, _)| *d)
            .collect();
        let mut windows: std::collections::BTreeSet<(u8, i64)> = Default::default();
        let cal = self.settings.cal;
        for d in &days {
            if let Some(c) = self.state.cohorts.get_mut(d) {
                c.dirty = false;
            }
            for (set, c) in self.state.calendar.iter().enumerate() {
                if c.emit {
                    windows.insert((set as u8, cal.bounds(c.kind, *d).start));
                }
            }
        }
        for (set, start) in windows {
            self.emit_cohort_window(set, start, finish);
        }
        if finish {
            self.state.cohort_revisions.clear();
        }
    }

    fn emit_cohort_window(&mut self, set: u8, start: i64, is_final: bool) {
        let kind = self.state.calendar[set as usize].kind;
        let cal = self.settings.cal;
        let b = cal.bounds(kind, start);
        // (created, converted) by scope: plain counts, no accumulators.
        let mut rolled: FxHashMap<Scope, (u64, u64)> = FxHashMap::default();
        rolled.entry(ALL).or_default();
        for (_, c) in self.state.cohorts.range(b.start..b.end) {
            for (k, (created, converted)) in &c.cells {
                for s in scopes(k) {
                    let e = rolled.entry(s).or_default();
                    e.0 += created;
                    e.1 += converted;
                }
            }
        }
        let rev = self.state.cohort_revisions.entry((set, start)).or_default();
        *rev += 1;
        let w = Win {
            kind: kind.as_str().into(),
            start: b.start,
            end: b.end,
            label: cal.label(kind, b.start),
            revision: *rev,
            is_final,
            info: Default::default(),
        };
        let mut cells: Vec<(Scope, (u64, u64))> = rolled.into_iter().collect();
        cells.sort_unstable();
        for (s, (created, converted)) in cells {
            let v = ratio(
                kpi::COHORT_CONVERSION,
                converted as f64,
                created as f64,
                created,
            );
            self.push(&w, s, &[v]);
        }
    }

    /// Cohort windows whose leads are all past the entity TTL can no
    /// longer change: emitted as final, and their days dropped.
    pub(super) fn retire_cohorts(&mut self) {
        let horizon = self.state.clock.saturating_sub(self.settings.entity_ttl);
        let cal = self.settings.cal;
        let done: Vec<(u8, i64)> = self
            .state
            .cohort_revisions
            .keys()
            .filter(|(set, start)| {
                let kind = self.state.calendar[*set as usize].kind;
                cal.bounds(kind, *start).end <= horizon
            })
            .copied()
            .collect();
        for (set, start) in done {
            self.emit_cohort_window(set, start, true);
            self.state.cohort_revisions.remove(&(set, start));
        }
        let keep_from = self
            .state
            .cohort_revisions
            .keys()
            .map(|(_, s)| *s)
            .min()
            .unwrap_or(i64::MAX)
            .min(horizon);
        self.state.cohorts = self.state.cohorts.split_off(&keep_from);
    }

    /// Emits provisional records for every window changed since its last emission.
    pub fn emit_updates(&mut self) {
        self.flush_rolling();
        self.emit_cohorts(false);
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
