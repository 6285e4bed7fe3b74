//! Threshold-breach alerts.
//!
//! Rules ([`crate::config::alerts::RuleConfig`]) look at the KPI records the engine emits.
//! A series that matches a rule is one alert *instance*, with the
//! lifecycle inactive → pending → firing → resolved (→ inactive). The
//! instance map ([`AlertState`]) is part of the engine's serializable
//! state, so a restored engine neither fires again nor forgets a firing
//! alert. Time in rules (`for`, `renotify`) is event time: a replay of
//! the same events gives the same notifications.
//!
//! [`Notification`]s leave the engine through
//! [`crate::engine::Engine::take_notifications`];
//! [`crate::sinks::alert`] sends them along routes, and [`text`] writes
//! their English or French texts.

pub mod text;

use crate::config::alerts::{self as config, AlertsConfig, Condition, Evaluate, RuleConfig};
use crate::output::KpiRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Phase of an alert instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Inactive,
    Pending,
    Firing,
}

/// A final value of a series, kept as the baseline of change conditions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinalValue {
    pub window_start: i64,
    pub value: f64,
    pub sample_size: u64,
}

/// One alert instance: a rule applied to one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub rule: String,
    pub dimensions: BTreeMap<String, String>,
    pub phase: Phase,
    /// Event time the condition started to hold (pending since).
    pub active_since: i64,
    /// Consecutive evaluations the condition held.
    pub evaluations: u32,
    /// Event time it fired.
    pub fired_at: i64,
    /// Event time of the last firing notification (first or repeated).
    pub last_notified: i64,
    /// Start of the newest window evaluated: records of older windows are not evaluated.
    pub window_start: i64,
    /// The newest final values (newest last), the baselines of change conditions.
    pub finals: Vec<FinalValue>,
}

/// Every alert instance, by fingerprint. Serializable with the engine state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub instances: BTreeMap<String, Instance>,
}

impl AlertState {
    /// Number of firing instances per rule.
    pub fn firing_by_rule(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for i in self.instances.values() {
            let n = m.entry(i.rule.as_str()).or_insert(0);
            if i.phase == Phase::Firing {
                *n += 1;
            }
        }
        m
    }
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoteState {
    Firing,
    Resolved,
}

impl NoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteState::Firing => "firing",
            NoteState::Resolved => "resolved",
        }
    }
}

/// The window of the record that made a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoteWindow {
    pub kind: String,
    pub label: String,
    pub start: String,
    pub end: String,
}

/// One alert notification, as published on the Kafka alert topic and
/// posted to generic webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable identity of the alert instance: a hash of rule and dimensions.
    pub fingerprint: String,
    pub rule: String,
    pub state: NoteState,
    /// A firing notification sent again after `renotify`.
    pub repeat: bool,
    pub severity: String,
    pub kpi: String,
    /// `ratio`, `seconds`, `currency` or `count`.
    pub unit: String,
    /// The instance's series dimensions (e.g. `rep`), then the rule's labels.
    pub labels: BTreeMap<String, String>,
    pub dimensions: BTreeMap<String, String>,
    /// `above`, `below`, `change_above` or `change_below`.
    pub condition: String,
    pub threshold: f64,
    pub clear: f64,
    /// The KPI value that was evaluated.
    pub value: f64,
    /// For change conditions: the baseline (the previous window's final
    /// value, or the mean of `baseline_windows` of them) and the relative change.
    pub baseline: Option<f64>,
    pub change: Option<f64>,
    /// For change conditions: how many final values the baseline is the mean of…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_windows: Option<u32>,
    /// …and the span between them, when the rule sets `baseline_season` (e.g. `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_season: Option<String>,
    pub sample_size: u64,
    pub window: NoteWindow,
    /// Event time (RFC 3339) the alert fired.
    pub started_at: String,
    /// Event time it resolved (resolved notifications only).
    pub ended_at: Option<String>,
    /// Event time of this notification.
    pub at: String,
    /// Route names; empty = every route.
    #[serde(skip)]
    pub routes: Vec<String>,
    /// English or French one-line summary (in `alerts.language`).
    pub summary: String,
    /// Dashboard link, when `alerts.dashboard_url` is set.
    pub dashboard_url: Option<String>,
}

struct Rule {
    cfg: RuleConfig,
    cond: Condition,
    clear: f64,
    /// Dimension names a matching series has, sorted.
    dims: Vec<String>,
}

impl Rule {
    /// The baseline of a change condition for a window starting at
    /// `start`: the mean of the newest `baseline_windows` final values of
    /// earlier windows with `min_sample` (only those a whole number of
    /// `baseline_season` before, when it is set); `None` until there are
    /// that many.
    fn baseline(&self, finals: &[FinalValue], start: i64) -> Option<f64> {
        let n = self.cfg.baseline_windows as usize;
        let season = self.cfg.baseline_season.map(|d| d.ms());
        let mut sum = 0.0;
        let mut count = 0;
        for f in finals.iter().rev() {
            if count == n {
                break;
            }
            if f.window_start >= start || f.sample_size < self.cfg.min_sample {
                continue;
            }
            if let Some(p) = season {
                if !same_season(start - f.window_start, p) {
                    continue;
                }
            }
            sum += f.value;
            count += 1;
        }
        (count == n).then(|| sum / n as f64)
    }

    /// Final values to keep after one of the window starting at `start`:
    /// (none older than, at most this many).
    fn keep_finals(&self, start: i64) -> (i64, usize) {
        let n = self.cfg.baseline_windows as i64;
        match self.cfg.baseline_season.map(|d| d.ms()) {
            // A baseline at most n seasons back, for this window and the next ones.
            Some(p) => (start - (n + 1) * p - season_slack(p), 2_000),
            None => (i64::MIN, n as usize + 1),
        }
    }
}

/// How far from a whole number of seasons a window start may be and still
/// count as the same season: calendar windows are not all of one length
/// (a DST day is 23 or 25 hours, a leap year 366 days).
fn season_slack(season: i64) -> i64 {
    (season / 14).min(26 * 3_600_000)
}

/// Whether a window `gap` ms earlier is a whole number of seasons before.
fn same_season(gap: i64, season: i64) -> bool {
    let k = (gap + season / 2) / season;
    k >= 1 && (gap - k * season).abs() <= season_slack(season)
}

/// What the engine watches for an `absent_for` rule: the newest event
/// time of each of its series.
#[derive(Debug)]
pub struct AbsentWatch {
    /// Index of the rule in [`Rules`].
    rule: usize,
    pub name: String,
    /// (dimension index, value) the events must have.
    pub filter: Vec<(usize, String)>,
    /// Dimension indexes that make one series per value.
    pub group: Vec<usize>,
    /// One bit per [`crate::event::EventType`]; 0 = every type.
    pub events: u64,
    /// `absent_for`, in ms.
    pub span: i64,
    /// The rule re-notifies while firing.
    pub renotify: bool,
}

impl AbsentWatch {
    /// Whether events of this type count.
    #[inline]
    pub fn counts(&self, event_type: u8) -> bool {
        self.events == 0 || self.events & (1 << event_type) != 0
    }
}

/// Compiled rules.
pub struct Rules {
    rules: Vec<Rule>,
    absent: Vec<AbsentWatch>,
    language: config::Language,
    dashboard_url: String,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.cfg.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Stable fingerprint of a rule and a series' dimensions.
pub fn fingerprint(rule: &str, dims: &BTreeMap<String, String>) -> String {
    let mut s = String::from(rule);
    for (k, v) in dims {
        s.push('\0');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}

fn rfc3339(ms: i64) -> String {
    crate::window::format_time(ms)
}

impl Rules {
    /// Compiles validated rules.
    pub fn new(c: &AlertsConfig) -> Rules {
        let dim = |d: &String| {
            crate::event::DIMS
                .iter()
                .position(|x| x == d)
                .expect("validated: a dimension")
        };
        let absent = c
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.absent_for.is_some())
            .map(|(i, r)| AbsentWatch {
                rule: i,
                name: r.name.clone(),
                filter: r.filter.iter().map(|(k, v)| (dim(k), v.clone())).collect(),
                group: r.group_by.iter().map(dim).collect(),
                events: r
                    .events
                    .iter()
                    .filter_map(|t| crate::event::EventType::parse(t))
                    .fold(0, |m, t| m | 1 << t as u8),
                span: r.absent_for.map_or(0, |d| d.ms()),
                renotify: r.renotify.ms() > 0,
            })
            .collect();
        Rules {
            absent,
            rules: c
                .rules
                .iter()
                .map(|r| {
                    let cond = Condition::of(r).expect("validated: one condition");
                    let mut dims: Vec<String> =
                        r.filter.keys().chain(r.group_by.iter()).cloned().collect();
                    dims.sort();
                    Rule {
                        clear: r.clear.unwrap_or(cond.threshold()),
                        cond,
                        dims,
                        cfg: r.clone(),
                    }
                })
                .collect(),
            language: c.language,
            dashboard_url: c.dashboard_url.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The `absent_for` rules, for the engine to watch their series.
    pub fn absent(&self) -> &[AbsentWatch] {
        &self.absent
    }

    /// Evaluates the `absent_for` rules at event time `now`: `series` is
    /// (index in [`Rules::absent`], dimensions, newest event time) of
    /// every watched series. A series silent for the rule's span fires
    /// (`started_at` = its last event + the span); one whose events came
    /// back resolves (`ended_at` = the event that came).
    pub fn evaluate_absent(
        &self,
        state: &mut AlertState,
        series: &[(usize, BTreeMap<String, String>, i64)],
        now: i64,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for (w, dims, last) in series {
            let rule = &self.rules[self.absent[*w].rule];
            let span = rule.cond.threshold();
            let silent = (now - last) as f64 / 1000.0;
            let fp = fingerprint(&rule.cfg.name, dims);
            let inst = state
                .instances
                .entry(fp.clone())
                .or_insert_with(|| Instance {
                    rule: rule.cfg.name.clone(),
                    dimensions: dims.clone(),
                    phase: Phase::Inactive,
                    active_since: 0,
                    evaluations: 0,
                    fired_at: 0,
                    last_notified: 0,
                    window_start: i64::MIN,
                    finals: Vec::new(),
                });
            let state = match inst.phase {
                Phase::Inactive | Phase::Pending if rule.cond.breached(silent) => {
                    inst.phase = Phase::Firing;
                    inst.fired_at = last + (span * 1000.0) as i64;
                    inst.last_notified = now;
                    Some((NoteState::Firing, false))
                }
                Phase::Firing if rule.cond.cleared(silent, span) => {
                    inst.phase = Phase::Inactive;
                    Some((NoteState::Resolved, false))
                }
                Phase::Firing
                    if rule.cfg.renotify.ms() > 0
                        && now - inst.last_notified >= rule.cfg.renotify.ms() =>
                {
                    inst.last_notified = now;
                    Some((NoteState::Firing, true))
                }
                _ => None,
            };
            if let Some((st, repeat)) = state {
                out.push(self.absent_note(rule, fp, inst, dims, *last, now, st, repeat));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn absent_note(
        &self,
        rule: &Rule,
        fingerprint: String,
        inst: &Instance,
        dims: &BTreeMap<String, String>,
        last: i64,
        now: i64,
        st: NoteState,
        repeat: bool,
    ) -> Notification {
        let mut labels = dims.clone();
        for (k, v) in &rule.cfg.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        // Silent since the previous event: for a resolution, until the
        // event that came back.
        let (since, until) = match st {
            NoteState::Resolved => (
                inst.fired_at - (rule.cond.threshold() * 1000.0) as i64,
                last,
            ),
            NoteState::Firing => (last, now),
        };
        let mut n = Notification {
            fingerprint,
            rule: rule.cfg.name.clone(),
            state: st,
            repeat,
            severity: rule.cfg.severity.clone(),
            kpi: String::new(),
            unit: "seconds".into(),
            labels,
            dimensions: dims.clone(),
            condition: rule.cond.name().into(),
            threshold: rule.cond.threshold(),
            clear: rule.cond.threshold(),
            value: (until - since) as f64 / 1000.0,
            baseline: None,
            change: None,
            baseline_windows: None,
            baseline_season: None,
            sample_size: 0,
            window: NoteWindow {
                kind: "absent".into(),
                label: rule.cfg.events.join(", "),
                start: rfc3339(since),
                end: rfc3339(until),
            },
            started_at: rfc3339(inst.fired_at),
            ended_at: (st == NoteState::Resolved).then(|| rfc3339(last)),
            at: rfc3339(now),
            routes: rule.cfg.routes.clone(),
            summary: String::new(),
            dashboard_url: None,
        };
        n.summary = text::summary(&n, self.language);
        n.dashboard_url = text::dashboard_link(&self.dashboard_url, &n);
        n
    }

    /// Evaluates `records` (in emission order) at event time `now`, updating
    /// `state`; returns the notifications.
    pub fn evaluate(
        &self,
        state: &mut AlertState,
        records: &[KpiRecord],
        now: i64,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for rec in records {
            for rule in &self.rules {
                if rule.cfg.kpi != rec.kpi
                    || rule.cfg.window != rec.window.kind
                    || rec.dimensions.len() != rule.dims.len()
                    || !rule.dims.iter().all(|d| rec.dimensions.contains_key(d))
                    || !rule
                        .cfg
                        .filter
                        .iter()
                        .all(|(k, v)| rec.dimensions.get(k) == Some(v))
                {
                    continue;
                }
                self.evaluate_one(rule, state, rec, now, &mut out);
            }
        }
        out
    }

    fn evaluate_one(
        &self,
        rule: &Rule,
        state: &mut AlertState,
        rec: &KpiRecord,
        now: i64,
        out: &mut Vec<Notification>,
    ) {
        let fp = fingerprint(&rule.cfg.name, &rec.dimensions);
        let inst = state
            .instances
            .entry(fp.clone())
            .or_insert_with(|| Instance {
                rule: rule.cfg.name.clone(),
                dimensions: (*rec.dimensions).clone(),
                phase: Phase::Inactive,
                active_since: 0,
                evaluations: 0,
                fired_at: 0,
                last_notified: 0,
                window_start: i64::MIN,
                finals: Vec::new(),
            });
        let start = rec.window.start_ms;
        let baseline = rule.baseline(&inst.finals, start);
        if rec.is_final {
            if let Some(v) = rec.value {
                inst.finals.retain(|f| f.window_start != start);
                inst.finals.push(FinalValue {
                    window_start: start,
                    value: v,
                    sample_size: rec.sample_size,
                });
                inst.finals.sort_by_key(|f| f.window_start);
                let keep = rule.keep_finals(start);
                let drop = inst
                    .finals
                    .iter()
                    .take_while(|f| f.window_start < keep.0)
                    .count()
                    .max(inst.finals.len().saturating_sub(keep.1));
                inst.finals.drain(..drop);
            }
        }
        if start < inst.window_start || (rule.cfg.evaluate == Evaluate::Final && !rec.is_final) {
            return;
        }
        inst.window_start = start;
        let Some(value) = rec.value else { return };
        if rec.sample_size < rule.cfg.min_sample {
            return;
        }
        let (x, change) = if rule.cond.is_change() {
            match baseline {
                Some(b) if b != 0.0 => {
                    let c = (value - b) / b.abs();
                    (c, Some(c))
                }
                _ => return,
            }
        } else {
            (value, None)
        };
        let note = |st: NoteState, repeat: bool, inst: &Instance| {
            let mut labels = (*rec.dimensions).clone();
            for (k, v) in &rule.cfg.labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let mut n = Notification {
                fingerprint: fp.clone(),
                rule: rule.cfg.name.clone(),
                state: st,
                repeat,
                severity: rule.cfg.severity.clone(),
                kpi: rec.kpi.to_string(),
                unit: rec.unit.to_string(),
                labels,
                dimensions: (*rec.dimensions).clone(),
                condition: rule.cond.name().into(),
                threshold: rule.cond.threshold(),
                clear: rule.clear,
                value,
                baseline: change.and(baseline),
                change,
                baseline_windows: change.map(|_| rule.cfg.baseline_windows),
                baseline_season: change
                    .and(rule.cfg.baseline_season)
                    .map(|d| humantime::format_duration(d.0).to_string()),
                sample_size: rec.sample_size,
                window: NoteWindow {
                    kind: rec.window.kind.clone(),
                    label: rec.window.label.clone(),
                    start: rec.window.start.clone(),
                    end: rec.window.end.clone(),
                },
                started_at: rfc3339(inst.fired_at),
                ended_at: (st == NoteState::Resolved).then(|| rfc3339(now)),
                at: rfc3339(now),
                routes: rule.cfg.routes.clone(),
                summary: String::new(),
                dashboard_url: None,
            };
            n.summary = text::summary(&n, self.language);
            n.dashboard_url = text::dashboard_link(&self.dashboard_url, &n);
            n
        };
        match inst.phase {
            Phase::Inactive | Phase::Pending => {
                if !rule.cond.breached(x) {
                    inst.phase = Phase::Inactive;
                    inst.evaluations = 0;
                    return;
                }
                if inst.phase == Phase::Inactive {
                    inst.phase = Phase::Pending;
                    inst.active_since = now;
                    inst.evaluations = 0;
                }
                inst.evaluations += 1;
                if inst.evaluations >= rule.cfg.for_evaluations
                    && now - inst.active_since >= rule.cfg.for_.ms()
                {
                    inst.phase = Phase::Firing;
                    inst.fired_at = now;
                    inst.last_notified = now;
                    out.push(note(NoteState::Firing, false, inst));
                }
            }
            Phase::Firing => {
                if rule.cond.cleared(x, rule.clear) {
                    let n = note(NoteState::Resolved, false, inst);
                    inst.phase = Phase::Inactive;
                    inst.evaluations = 0;
                    out.push(n);
                } else if rule.cfg.renotify.ms() > 0
                    && now - inst.last_notified >= rule.cfg.renotify.ms()
                {
                    inst.last_notified = now;
                    out.push(note(NoteState::Firing, true, inst));
                }
            }
        }
    }
}
