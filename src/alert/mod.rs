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
    /// The last two final values (newest last), for change conditions.
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
    /// For change conditions: the previous window's final value and the relative change.
    pub baseline: Option<f64>,
    pub change: Option<f64>,
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

/// Compiled rules.
pub struct Rules {
    rules: Vec<Rule>,
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
        Rules {
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
        // The baseline of a change condition: the newest final value of an earlier window.
        let baseline = inst
            .finals
            .iter()
            .rev()
            .find(|f| f.window_start < start && f.sample_size >= rule.cfg.min_sample)
            .map(|f| f.value);
        if rec.is_final {
            if let Some(v) = rec.value {
                inst.finals.retain(|f| f.window_start != start);
                inst.finals.push(FinalValue {
                    window_start: start,
                    value: v,
                    sample_size: rec.sample_size,
                });
                inst.finals.sort_by_key(|f| f.window_start);
                if inst.finals.len() > 2 {
                    inst.finals.remove(0);
                }
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
