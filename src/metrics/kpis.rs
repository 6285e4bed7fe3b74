//! The KPI part of `/metrics` and `/kpis`: for each window kind, the
//! window that is current (the newest one with a record), replaced whole.
//!
//! An emission of a window holds every series of each KPI it carries (a
//! series without events in the window is absent), so the series of one
//! KPI are replaced together, and all series of a kind are dropped when a
//! newer window of that kind arrives. Records and leaderboards of one
//! engine step are taken under one lock, and a scrape renders under the
//! same lock: no scrape mixes two windows of a kind, and "all" equals the
//! sum over any dimension for additive KPIs.
//!
//! Series carry only the labels they have: `window`, `dimension` (`all`
//! or the name of the dimension they break down by), that dimension's
//! value, and the KPI's own extra label (`stage`, `activity_kind`,
//! `control`, `competitor`). What is exported is set by `[prometheus]`.

use crate::config::{Config, SampleSizes};
use crate::event::DIMS;
use crate::kpi::{KpiDef, CATALOGUE};
use crate::output::{KpiRecord, LeaderboardRecord, WindowInfo};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `/metrics` exports (from `[prometheus]`).
#[derive(Debug, Clone)]
pub struct Filter {
    /// `None`: every KPI.
    kpis: Option<HashSet<String>>,
    windows: HashSet<String>,
    dims: HashSet<String>,
    sample: SampleSizes,
    max_series: usize,
}

impl Filter {
    pub fn from_config(cfg: &Config) -> Filter {
        let p = &cfg.prometheus;
        Filter {
            kpis: (!p.kpis.is_empty()).then(|| p.kpis.iter().cloned().collect()),
            windows: cfg.prometheus_windows().into_iter().collect(),
            dims: cfg.prometheus_dimensions().into_iter().collect(),
            sample: p.sample_sizes,
            max_series: p.max_series,
        }
    }

    fn window(&self, kind: &str) -> bool {
        self.windows.contains(kind)
    }

    fn kpi(&self, name: &str) -> bool {
        self.kpis.as_ref().is_none_or(|k| k.contains(name))
    }

    /// The record's breakdown dimension is exported (a price index by
    /// product keeps its `competitor` label either way).
    fn dims(&self, r: &KpiRecord) -> bool {
        dimension(r).is_none_or(|d| self.dims.contains(d))
    }

    /// Whether a shown series also has a sample-size series.
    fn sample(&self, r: &KpiRecord) -> bool {
        match self.sample {
            SampleSizes::Every => true,
            SampleSizes::All => dimension(r).is_none(),
            SampleSizes::None => false,
        }
    }
}

/// The dimension a record breaks down by: the first of [`DIMS`] among
/// its labels (a price index is by product, per competitor).
fn dimension(r: &KpiRecord) -> Option<&str> {
    // Its labels (none or one or two) looked up in DIMS, rather than
    // each of DIMS in its labels: this runs for every record.
    r.dimensions
        .keys()
        .filter_map(|k| DIMS.iter().position(|d| d == k))
        .min()
        .map(|i| DIMS[i])
}

/// The series of one KPI in the current window of a kind.
#[derive(Default)]
struct Group {
    /// Each record, and whether `/metrics` shows it.
    records: Vec<(KpiRecord, bool)>,
    /// Series it puts on `/metrics` (values and sample sizes).
    cost: usize,
}

/// The current window of one kind.
struct Kind {
    window: Arc<WindowInfo>,
    end_ms: i64,
    /// Exported to `/metrics` at all.
    shown: bool,
    kpis: BTreeMap<Cow<'static, str>, Group>,
    /// Leaderboards by board, with the series they put on `/metrics`.
    boards: BTreeMap<Cow<'static, str>, (LeaderboardRecord, usize)>,
}

impl Kind {
    fn cost(&self) -> usize {
        self.kpis.values().map(|g| g.cost).sum::<usize>()
            + self.boards.values().map(|b| b.1).sum::<usize>()
    }
}

#[derive(Default)]
struct Board {
    kinds: BTreeMap<String, Kind>,
    /// Series on `/metrics` now (KPI values, sample sizes, leaderboard entries).
    series: usize,
    /// Series left out by `max_series`, counted at each update.
    refused: u64,
    /// When the last warning was logged, and `refused` then.
    last_warning: Option<(Instant, u64)>,
}

/// The KPI values `/metrics`, `/kpis` and the terminal summary show.
pub struct KpiView {
    filter: Filter,
    board: Mutex<Board>,
    /// Whether `/metrics` shows the KPI series (Kafka mode: only while
    /// this instance is assigned the merger's partition).
    shown: AtomicBool,
}

fn end_ms(w: &WindowInfo) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&w.end)
        .map(|t| t.timestamp_millis())
        .unwrap_or(w.start_ms)
}

impl KpiView {
    pub fn new(filter: Filter) -> KpiView {
        KpiView {
            filter,
            board: Mutex::default(),
            shown: AtomicBool::new(true),
        }
    }

    /// Takes the records and leaderboards of one engine step.
    pub fn observe(&self, records: &[KpiRecord], boards: &[LeaderboardRecord]) {
        if records.is_empty() && boards.is_empty() {
            return;
        }
        let mut b = self.board.lock().expect("kpi view lock");
        let b = &mut *b;
        // The newest window of each kind in this step.
        let mut newest: BTreeMap<&str, &Arc<WindowInfo>> = BTreeMap::new();
        for w in records
            .iter()
            .map(|r| &r.window)
            .chain(boards.iter().map(|l| &l.window))
        {
            let e = newest.entry(w.kind.as_str()).or_insert(w);
            if w.start_ms > e.start_ms {
                *e = w;
            }
        }
        for (kind, w) in newest {
            let current = b.kinds.get(kind).map(|k| k.window.start_ms);
            if current.is_some_and(|s| s >= w.start_ms) {
                continue;
            }
            if let Some(old) = b.kinds.remove(kind) {
                b.series -= old.cost();
            }
            b.kinds.insert(
                kind.to_string(),
                Kind {
                    window: w.clone(),
                    end_ms: end_ms(w),
                    shown: self.filter.window(kind),
                    kpis: BTreeMap::new(),
                    boards: BTreeMap::new(),
                },
            );
        }
        // Records of the current windows, grouped by emission (the
        // records of one share their window info) and KPI, in order: a
        // later emission of a window replaces an earlier one.
        let mut groups: Vec<Vec<&KpiRecord>> = Vec::new();
        let mut index: rustc_hash::FxHashMap<(usize, &str), usize> = Default::default();
        for r in records {
            let key = (Arc::as_ptr(&r.window) as usize, &*r.kpi);
            let i = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(r);
        }
        for g in &groups {
            self.replace_group(b, g);
        }
        for l in boards {
            self.replace_board(b, l);
        }
        // Logged when series are refused, at most once a minute.
        let (at, seen) = b.last_warning.unwrap_or((Instant::now(), 0));
        if b.refused > seen && (b.last_warning.is_none() || at.elapsed() > Duration::from_secs(60))
        {
            b.last_warning = Some((Instant::now(), b.refused));
            tracing::warn!(
                max_series = self.filter.max_series,
                refused = b.refused,
                "prometheus.max_series reached: series left out of /metrics (see docs/prometheus.md to export fewer windows, dimensions or KPIs)"
            );
        }
    }

    /// Replaces the series of one KPI (`group`: records of one window
    /// emission) if that window is current.
    fn replace_group(&self, b: &mut Board, group: &[&KpiRecord]) {
        let first = group[0];
        let Some(kind) = b.kinds.get_mut(&first.window.kind) else {
            return;
        };
        if kind.window.start_ms != first.window.start_ms {
            return;
        }
        if let Some(old) = kind.kpis.remove(&first.kpi) {
            b.series -= old.cost;
        }
        let exported = kind.shown && self.filter.kpi(&first.kpi);
        let mut g = Group {
            records: Vec::with_capacity(group.len()),
            cost: 0,
        };
        for r in group {
            let mut show = exported && r.value.is_some() && self.filter.dims(r);
            if show {
                let cost = 1 + self.filter.sample(r) as usize;
                if b.series + g.cost + cost > self.filter.max_series {
                    show = false;
                    b.refused += 1;
                } else {
                    g.cost += cost;
                }
            }
            g.records.push(((*r).clone(), show));
        }
        b.series += g.cost;
        kind.kpis.insert(first.kpi.clone(), g);
    }

    fn replace_board(&self, b: &mut Board, l: &LeaderboardRecord) {
        let Some(kind) = b.kinds.get_mut(&l.window.kind) else {
            return;
        };
        if kind.window.start_ms != l.window.start_ms {
            return;
        }
        if let Some(old) = kind.boards.remove(&l.board) {
            b.series -= old.1;
        }
        let mut cost = 0;
        if kind.shown {
            let want = 2 * l.entries.len();
            if b.series + want > self.filter.max_series {
                b.refused += want as u64;
            } else {
                cost = want;
            }
        }
        b.series += cost;
        kind.boards.insert(l.board.clone(), (l.clone(), cost));
    }

    /// Shows or hides the KPI series on `/metrics` (values are still
    /// taken): hidden the moment an instance's merger partition is
    /// revoked, before the merger itself is dropped.
    pub fn show(&self, on: bool) {
        self.shown.store(on, Ordering::Relaxed);
    }

    /// Whether `/metrics` shows the KPI series now (see `show`).
    pub fn shown(&self) -> bool {
        self.shown.load(Ordering::Relaxed)
    }

    /// Forgets every value (an instance that no longer runs the merger).
    pub fn clear(&self) {
        *self.board.lock().expect("kpi view lock") = Board::default();
    }

    /// Series on `/metrics` now, and series refused so far.
    pub fn series(&self) -> (usize, u64) {
        let b = self.board.lock().expect("kpi view lock");
        (b.series, b.refused)
    }

    /// Every record of the current windows (also those not on `/metrics`).
    pub fn records(&self) -> Vec<KpiRecord> {
        let b = self.board.lock().expect("kpi view lock");
        b.kinds
            .values()
            .flat_map(|k| k.kpis.values())
            .flat_map(|g| g.records.iter().map(|(r, _)| r.clone()))
            .collect()
    }

    /// The current "all" record of a KPI in a window kind.
    pub fn current(&self, kpi: &str, window: &str) -> Option<KpiRecord> {
        self.current_with(kpi, window, |r| r.dimensions.is_empty())
    }

    /// The current record of a KPI in a window kind that matches `f`.
    pub fn current_with(
        &self,
        kpi: &str,
        window: &str,
        f: impl Fn(&KpiRecord) -> bool,
    ) -> Option<KpiRecord> {
        let b = self.board.lock().expect("kpi view lock");
        b.kinds
            .get(window)?
            .kpis
            .get(kpi)?
            .records
            .iter()
            .map(|(r, _)| r)
            .find(|r| f(r))
            .cloned()
    }

    /// Appends the text exposition of the KPI families, the window
    /// bounds, the leaderboards and the exporter's own series.
    pub fn render(&self, out: &mut String) {
        let b = self.board.lock().expect("kpi view lock");
        let shown = self.shown.load(Ordering::Relaxed);
        let kinds: Vec<(&String, &Kind)> =
            b.kinds.iter().filter(|(_, k)| k.shown && shown).collect();
        for def in CATALOGUE {
            let mut header = false;
            for (_, k) in &kinds {
                let Some(g) = k.kpis.get(def.name) else {
                    continue;
                };
                for (r, _) in g.records.iter().filter(|(_, s)| *s) {
                    if !header {
                        family(out, &format!("salespulse_kpi_{}", def.name), &help(def));
                        header = true;
                    }
                    let _ = write!(out, "salespulse_kpi_{}", def.name);
                    labels(out, None, r);
                    value(out, r.value.unwrap_or(f64::NAN));
                }
            }
        }
        let mut header = false;
        for (_, k) in &kinds {
            for g in k.kpis.values() {
                for (r, _) in g
                    .records
                    .iter()
                    .filter(|(r, s)| *s && self.filter.sample(r))
                {
                    if !header {
                        family(
                            out,
                            "salespulse_kpi_sample_size",
                            "Sample size (denominator events or entities) behind each KPI value; by prometheus.sample_sizes only for the series without a dimension.",
                        );
                        header = true;
                    }
                    out.push_str("salespulse_kpi_sample_size");
                    labels(out, Some(&r.kpi), r);
                    value(out, r.sample_size as f64);
                }
            }
        }
        for (name, help, end) in [
            (
                "salespulse_window_start_seconds",
                "Start of the window each exported KPI series of a window kind belongs to (Unix seconds; gauge: the newest event time).",
                false,
            ),
            (
                "salespulse_window_end_seconds",
                "End (exclusive) of the window each exported KPI series of a window kind belongs to (Unix seconds).",
                true,
            ),
        ] {
            if kinds.is_empty() {
                break;
            }
            family(out, name, help);
            for (kind, k) in &kinds {
                let ms = if end { k.end_ms } else { k.window.start_ms };
                let _ = write!(out, "{name}{{window=\"");
                escape(out, kind);
                out.push_str("\"}");
                value(out, ms as f64 / 1000.0);
            }
        }
        for (name, help, rank) in [
            (
                "salespulse_leaderboard",
                "Value of each rep on a leaderboard (board: revenue, win_rate, activities) of the current window.",
                false,
            ),
            (
                "salespulse_leaderboard_rank",
                "Rank (1 = best) of each rep on a leaderboard of the current window.",
                true,
            ),
        ] {
            let mut header = false;
            for (kind, k) in &kinds {
                for (board, (l, cost)) in &k.boards {
                    if *cost == 0 {
                        continue;
                    }
                    if !header {
                        family(out, name, help);
                        header = true;
                    }
                    for e in &l.entries {
                        let _ = write!(out, "{name}{{board=\"{board}\",window=\"");
                        escape(out, kind);
                        out.push_str("\",rep=\"");
                        escape(out, &e.rep);
                        out.push_str("\"}");
                        value(out, if rank { e.rank as f64 } else { e.value });
                    }
                }
            }
        }
        family(
            out,
            "salespulse_prometheus_series",
            "KPI, sample-size and leaderboard series on /metrics now (bounded by prometheus.max_series).",
        );
        let _ = writeln!(
            out,
            "salespulse_prometheus_series {}",
            if shown { b.series } else { 0 }
        );
        out.push_str("# HELP salespulse_prometheus_series_refused_total Series left out of /metrics because prometheus.max_series was reached, counted at each update.\n# TYPE salespulse_prometheus_series_refused_total counter\n");
        let _ = writeln!(
            out,
            "salespulse_prometheus_series_refused_total {}",
            b.refused
        );
    }
}

fn help(def: &KpiDef) -> String {
    format!("{} Unit: {}.", def.help, def.unit.as_str())
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = write!(out, "# HELP {name} ");
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = write!(out, "\n# TYPE {name} gauge\n");
}

/// `{kpi="…",window="…",dimension="…",<dim>="…",<extra>="…"}`.
fn labels(out: &mut String, kpi: Option<&str>, r: &KpiRecord) {
    out.push('{');
    if let Some(k) = kpi {
        let _ = write!(out, "kpi=\"{k}\",");
    }
    out.push_str("window=\"");
    escape(out, &r.window.kind);
    let dim = dimension(r);
    out.push_str("\",dimension=\"");
    out.push_str(dim.unwrap_or("all"));
    out.push('"');
    if let Some(d) = dim {
        let _ = write!(out, ",{d}=\"");
        escape(out, &r.dimensions[d]);
        out.push('"');
    }
    for (n, v) in r.dimensions.iter() {
        if Some(n.as_str()) != dim {
            let _ = write!(out, ",{n}=\"");
            escape(out, v);
            out.push('"');
        }
    }
    out.push('}');
}

fn escape(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str(" NaN\n");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { " +Inf\n" } else { " -Inf\n" });
    } else {
        let _ = writeln!(out, " {v}");
    }
}
