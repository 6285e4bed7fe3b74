//! The KPIs that look beyond one dimension's rollup: headcount and
//! market-size denominators, price pairs, A/B variants, leaderboards,
//! quota attainment and sales progress.

use super::*;

impl Engine {
    /// Headcount by scope: the company's (event, else config, else Σ
    /// teams) for "all", and each team's.
    pub(super) fn headcounts(&self) -> FxHashMap<Scope, i64> {
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
    pub(super) fn market_sizes(&self, start: i64, len: i64) -> FxHashMap<Scope, f64> {
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
    pub(super) fn emit_price_pairs(&mut self, w: &Win, pairs: &FxHashMap<(u32, u32), Acc>) {
        let pairs: BTreeMap<(u32, u32), &Acc> = pairs.iter().map(|(k, a)| (*k, a)).collect();
        for ((p, c), a) in pairs {
            let name = self.state.interner.name(c).to_string();
            let v = kpi::price_index(a);
            self.push_with_extra(w, scope(PRODUCT, p), &[v], Some(("competitor", &name)));
        }
    }

    /// A/B test of each variant's lead conversion against the control's.
    pub(super) fn emit_ab(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
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
    pub(super) fn emit_leaderboards(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
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
    pub(super) fn rep_scopes(&self, rep: u32) -> [Scope; 3] {
        let info = self.state.rep_info.get(&rep).copied().unwrap_or([0, 0]);
        let m = &self.settings.dims_mask;
        [
            ALL,
            (TEAM as u8 + 1, info[0] & m[TEAM]),
            (REGION as u8 + 1, info[1] & m[REGION]),
        ]
    }

    pub(super) fn quotas_for(&self, label: &str) -> Vec<(u32, i64)> {
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

    pub(super) fn emit_quota(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
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
    pub(super) fn previous_month_revenue(&self, start: i64) -> Option<FxHashMap<Scope, i64>> {
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

    pub(super) fn emit_progress(&mut self, w: &Win, rolled: &FxHashMap<Scope, Acc>) {
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
}
