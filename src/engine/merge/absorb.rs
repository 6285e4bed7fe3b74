//! The merger's side of scale-out: a partial from a source replaces
//! that source's earlier contribution to each item it names, and the
//! merged items replace the merger's buckets; the merger's clock follows
//! the slowest source that is not idle.

use super::*;

/// A dimension key of a partial in this engine's interned ids (`ids`:
/// the partial's name table, interned).
fn remap(ids: &[u32], k: &DimKey) -> DimKey {
    DimKey(k.map(|v| ids.get(v as usize).copied().unwrap_or(0)))
}

/// A partial's cells in this engine's interned ids.
fn remap_cells(ids: &[u32], c: Cells) -> Rolled {
    let id = |v: u32| ids.get(v as usize).copied().unwrap_or(0);
    Rolled {
        scopes: c
            .scopes
            .into_iter()
            .map(|((d, v), a)| ((d, id(v)), a))
            .collect(),
        pairs: c
            .pairs
            .into_iter()
            .map(|((p, q), a)| ((id(p), id(q)), a))
            .collect(),
    }
}

/// A source's progress (its clock), unless the merger knows a newer one.
fn source_progress(m: &mut MergeState, src: &str, v: i64, progress: Option<Progress>) {
    let Some(pr) = progress else {
        return;
    };
    match m.sources.get_mut(src) {
        Some(s) if s.version > v => {}
        Some(s) => {
            s.version = v;
            s.progress = pr;
        }
        None => {
            m.sources.insert(
                src.to_string(),
                SourceState {
                    version: v,
                    progress: pr,
                },
            );
        }
    }
    rows::prune_rows(m, src);
}

impl Engine {
    /// Takes in one partial (merger only). Returns false when it is refused.
    pub fn absorb(&mut self, p: Partial) -> bool {
        let Some(mut m) = self.merge.take() else {
            return false;
        };
        let ok = self.absorb_into(&mut m, p, false);
        self.merge = Some(m);
        ok
    }

    /// The items of a partial that a source of this same instance has
    /// just exported (merger only): the KPIs see them without the trip
    /// through the partials topic. The copy read back from the topic is
    /// not decoded and brings only the source's progress (the clock):
    /// [`Engine::absorb_progress`]. (Absorbed whole again, the same
    /// version gives the same result.)
    pub fn absorb_items(&mut self, p: Partial) -> bool {
        let Some(mut m) = self.merge.take() else {
            return false;
        };
        let ok = self.absorb_into(&mut m, p, true);
        self.merge = Some(m);
        ok
    }

    /// The progress of a partial whose items [`Engine::absorb_items`]
    /// took in, from its copy read back from the partials topic.
    pub fn absorb_progress(&mut self, source: &str, version: i64, progress: Option<Progress>) {
        if let Some(m) = self.merge.as_mut() {
            source_progress(m, source, version, progress);
        }
    }

    /// `local`: the items only (see [`Engine::absorb_items`]).
    pub(super) fn absorb_into(&mut self, m: &mut MergeState, p: Partial, local: bool) -> bool {
        if p.layout != layout_hash(&self.settings) {
            m.refused += 1;
            tracing::error!(source = %p.source, "a partial made under other time / window / stage settings or by another partials format was refused: every instance must run with the same time.zone, time.fiscal_year_start_month, windows.* and pipeline.stages, and a salespulse of the same partials format (docs/operations.md, Scale-out)");
            return false;
        }
        if !m.expected.is_empty() && !m.expected.contains(&p.source) {
            m.refused += 1;
            tracing::error!(source = %p.source, "a partial from a partition of another topic was refused: give each pipeline its own kafka.partials_topic");
            return false;
        }
        let ids: Vec<u32> = p
            .names
            .iter()
            .map(|s| self.state.interner.intern(s))
            .collect();
        let (src, v) = (p.source.as_str(), p.version);
        tracing::debug!(source = src, version = v, items = p.items.len(), progress = ?p.progress, "partial absorbed");
        let late_before = m.late_items;
        for it in p.items {
            match it {
                Item::Day { start, cells } => {
                    self.absorb_day(m, src, v, start, remap_cells(&ids, cells))
                }
                Item::Rolling { set, start, cells } => {
                    self.absorb_rolling(m, src, v, (set, start), remap_cells(&ids, cells))
                }
                Item::Ledger { day, slots } => {
                    let slots = slots.iter().map(|(t, k, d)| (*t, remap(&ids, k), *d));
                    self.absorb_ledger(m, src, v, day, slots.collect())
                }
                Item::Cohort { day, cells } => {
                    let cells = cells.iter().map(|(k, c)| (remap(&ids, k), *c));
                    self.absorb_cohort(m, src, v, day, cells.collect())
                }
                Item::Pipeline { cells } => {
                    let cells = cells.iter().map(|((st, k), p)| ((*st, remap(&ids, k)), *p));
                    self.absorb_pipeline(m, src, v, cells.collect())
                }
                Item::Misc(x) => {
                    let x = x.map_ids(|i| ids.get(i as usize).copied().unwrap_or(0));
                    self.absorb_misc(m, src, v, x)
                }
                Item::Awaiting(x) => {
                    let x = x.iter().map(|(k, v)| (remap(&ids, k), *v));
                    self.absorb_awaiting(m, src, v, x.collect())
                }
                Item::Seen(x) => {
                    let x = x.iter().map(|((r, k), t)| {
                        (
                            (ids.get(*r as usize).copied().unwrap_or(0), remap(&ids, k)),
                            *t,
                        )
                    });
                    self.absorb_seen(m, src, v, x.collect())
                }
                Item::Deals { rows, sweep } => {
                    let x = rows.iter().copied();
                    if rows::absorb_rows(&mut m.deals, &m.sources, (src, v), x, sweep) {
                        self.state.gauges_dirty = true;
                    }
                }
                Item::Customers { rows, sweep } => {
                    let x = rows
                        .iter()
                        .map(|(id, c)| (*id, c.map(|(k, r)| (remap(&ids, &k), r))));
                    if rows::absorb_rows(&mut m.customers, &m.sources, (src, v), x, sweep) {
                        self.state.gauges_dirty = true;
                    }
                }
                Item::History(h) => self.absorb_history(m, src, v, h),
            }
        }
        if m.late_items > late_before {
            tracing::warn!(source = %p.source, items = m.late_items - late_before, "partials for windows the merger had already closed were dropped: a partition that was idle (kafka.idle_partition_timeout) sent events older than the other partitions' watermark");
        }
        if !local {
            source_progress(m, src, v, p.progress);
        }
        true
    }

    /// A day bucket's cells from one source; the merged day replaces the
    /// bucket (opened if needed, unless its window is closed: late).
    pub(super) fn absorb_day(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        start: i64,
        cells: Rolled,
    ) {
        let open = self.state.calendar[0].buckets.contains_key(&start);
        if !open {
            let b = self.settings.cal.bounds(CalendarKind::Day, start);
            if b.end <= self.cutoff() || b.start != start {
                m.late_items += 1;
                return;
            }
            self.open_day(b);
        }
        let e = m.days.entry(start).or_default();
        if put(e, src, v, cells) {
            // Merged when read, like rolling sub-buckets (`settle`).
            m.stale_days.insert(start);
            let b = self.state.calendar[0]
                .buckets
                .get_mut(&start)
                .expect("day bucket open");
            b.dirty = true;
        }
    }

    /// A rolling sub-bucket's cells from one source.
    pub(super) fn absorb_rolling(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        (set, start): (u8, i64),
        cells: Rolled,
    ) {
        let Some(r) = self.state.rolling.get_mut(set as usize) else {
            return;
        };
        let e = m.rolling.entry((set, start)).or_default();
        if put(e, src, v, cells) {
            // Merged when read (see `MergeState::stale_rolling`); the
            // bucket exists from now on, as the merger's memory of it does.
            r.buckets.entry(start).or_default();
            m.stale_rolling.insert((set, start));
            r.dirty = true;
        }
    }

    /// The merger's days and rolling sub-buckets changed by partials
    /// since they were last read, merged from their sources' values.
    /// Called before anything reads or drops them (emission, window
    /// close: both through `flush_rolling`), and before a checkpoint.
    /// Nothing to do on a source.
    pub fn settle(&mut self) {
        let Some(m) = self.merge.as_mut() else {
            return;
        };
        for start in std::mem::take(&mut m.stale_days) {
            let (Some(b), Some(e)) = (
                self.state.calendar[0].buckets.get_mut(&start),
                m.days.get(&start),
            ) else {
                continue;
            };
            merge_into(&mut b.aggs, e);
        }
        for (set, start) in std::mem::take(&mut m.stale_rolling) {
            let (Some(r), Some(e)) = (
                self.state.rolling.get_mut(set as usize),
                m.rolling.get(&(set, start)),
            ) else {
                continue;
            };
            if let Some(b) = r.buckets.get_mut(&start) {
                merge_into(b, e);
            }
        }
    }

    /// One day of the open-entity ledger from one source: the day's
    /// slots are rebuilt from every source's.
    pub(super) fn absorb_ledger(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        day: i64,
        slots: LedgerDay,
    ) {
        if day + DAY_MS <= m.ledger_folded {
            m.late_items += 1;
            return;
        }
        let e = m.ledger.entry(day).or_default();
        if put(e, src, v, slots) {
            let l = &mut self.state.ledger;
            let old: Vec<i64> = l.slots.range(day..day + DAY_MS).map(|(t, _)| *t).collect();
            for t in old {
                for (k, d) in l.slots.remove(&t).unwrap_or_default() {
                    *l.active.entry(k).or_default() -= d;
                }
            }
            for (_, (_, slots)) in e.iter() {
                for (t, k, d) in slots {
                    if *t >= m.ledger_folded {
                        l.add(*t, *k, *d);
                    }
                }
            }
            l.active.retain(|_, n| *n != 0);
            self.state.gauges_dirty = true;
        }
    }

    /// One cohort day from one source: the day's cohort is the sum of
    /// every source's.
    pub(super) fn absorb_cohort(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        day: i64,
        cells: CohortCells,
    ) {
        if !self.state.cohorts.contains_key(&day)
            && day + DAY_MS <= self.state.clock.saturating_sub(self.settings.entity_ttl)
        {
            m.late_items += 1;
            return;
        }
        let e = m.cohorts.entry(day).or_default();
        if put(e, src, v, cells) {
            let mut c = Cohort {
                dirty: true,
                ..Default::default()
            };
            for (_, (_, cells)) in e.iter() {
                for (k, (a, b)) in cells {
                    let x = c.cells.entry(*k).or_default();
                    x.0 += a;
                    x.1 += b;
                }
            }
            self.state.cohorts.insert(day, c);
        }
    }

    /// The open pipeline of one source: the pipeline is the sum of every
    /// source's.
    pub(super) fn absorb_pipeline(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        cells: Vec<((u8, DimKey), Pipeline)>,
    ) {
        if put(&mut m.pipeline, src, v, cells) {
            let mut out: FxHashMap<(u8, DimKey), Pipeline> = FxHashMap::default();
            for (_, (_, cells)) in m.pipeline.iter() {
                for (k, p) in cells {
                    let x = out.entry(*k).or_default();
                    x.add(p);
                }
            }
            self.state.pipeline = out;
            self.state.gauges_dirty = true;
        }
    }

    /// Settings learned from events (quotas, rep teams, headcount, market
    /// sizes) of one source.
    pub(super) fn absorb_misc(&mut self, m: &mut MergeState, src: &str, v: i64, x: Misc) {
        if put(&mut m.misc, src, v, x) {
            let s = &mut self.state;
            s.quotas.clear();
            s.rep_info.clear();
            s.headcount.clear();
            s.market_size.clear();
            // Sources in name order: where two disagree (a rep
            // seen with two teams), the same one wins everywhere.
            for (_, (_, x)) in m.misc.iter() {
                s.quotas.extend(x.quotas.iter().copied());
                s.rep_info.extend(x.rep_info.iter().copied());
                s.headcount.extend(x.headcount.iter().copied());
                s.market_size.extend(x.market.iter().copied());
            }
        }
    }

    /// Leads awaiting their first contact in one source; the merged gauge
    /// is the sum over sources.
    pub(super) fn absorb_awaiting(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        x: Vec<(DimKey, i64)>,
    ) {
        if put(&mut m.awaiting, src, v, x) {
            let mut out: FxHashMap<DimKey, i64> = FxHashMap::default();
            for (_, (_, x)) in m.awaiting.iter() {
                for (k, n) in x {
                    *out.entry(*k).or_default() += n;
                }
            }
            self.state.awaiting = out;
            self.state.gauges_dirty = true;
        }
    }

    /// The `absent_for` series' times of one source; the merged time of a
    /// series is the newest over sources.
    pub(super) fn absorb_seen(
        &mut self,
        m: &mut MergeState,
        src: &str,
        v: i64,
        x: Vec<((u32, DimKey), i64)>,
    ) {
        if put(&mut m.seen, src, v, x) {
            let seen = &mut self.state.absent_seen;
            for (_, (_, x)) in m.seen.iter() {
                for (k, t) in x {
                    let e = seen.entry(*k).or_insert((*t, false));
                    e.0 = e.0.max(*t);
                }
            }
        }
    }

    /// Moves the merger's clock to the slowest source that is not idle
    /// (every expected source must have reported), closing the windows
    /// it passes, and forgets the contributions of closed items.
    pub fn merge_advance(&mut self) {
        let Some(m) = self.merge.take() else {
            return;
        };
        let known: Vec<&SourceState> = m
            .expected
            .iter()
            .filter_map(|s| m.sources.get(s))
            .chain(
                m.sources
                    .iter()
                    .filter(|(k, _)| !m.expected.contains(*k))
                    .map(|(_, s)| s),
            )
            .collect();
        let complete = m.expected.iter().all(|s| m.sources.contains_key(s));
        let max_time = known.iter().map(|s| s.progress.max_time).max();
        let active: Vec<i64> = known
            .iter()
            .filter(|s| !s.progress.idle)
            .map(|s| s.progress.clock)
            .collect();
        let clock = if !complete {
            None
        } else if active.is_empty() {
            known.iter().map(|s| s.progress.clock).max()
        } else {
            active.into_iter().min()
        };
        if let Some(t) = max_time.filter(|t| *t > self.state.max_time) {
            // The forecast's "now" moved.
            self.state.max_time = t;
            self.state.gauges_dirty = true;
        }
        self.merge = Some(m);
        if let Some(t) = clock.filter(|t| *t != i64::MIN) {
            self.advance_clock(t);
        }
        self.merge_forget();
    }

    /// Every expected source has read its partition to the end.
    pub fn merge_at_end(&self) -> bool {
        self.merge.as_ref().is_some_and(|m| {
            !m.expected.is_empty()
                && m.expected
                    .iter()
                    .all(|s| m.sources.get(s).is_some_and(|s| s.progress.at_end))
        })
    }

    /// Every expected source has reported and is idle
    /// (`kafka.idle_partition_timeout` without a message, nothing left to read).
    pub fn merge_all_idle(&self) -> bool {
        self.merge.as_ref().is_some_and(|m| {
            m.expected
                .iter()
                .all(|s| m.sources.get(s).is_some_and(|s| s.progress.idle))
        })
    }

    pub(super) fn merge_forget(&mut self) {
        let Some(m) = self.merge.as_mut() else {
            return;
        };
        let s = &self.state;
        m.days.retain(|d, _| s.calendar[0].buckets.contains_key(d));
        m.rolling.retain(|(set, start), _| {
            s.rolling
                .get(*set as usize)
                .is_some_and(|r| r.buckets.contains_key(start))
        });
        let folded = m.ledger_folded;
        m.ledger.retain(|d, _| d + DAY_MS > folded);
        m.cohorts.retain(|d, _| s.cohorts.contains_key(d));
    }
}
