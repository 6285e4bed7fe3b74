//! `[alerts]`: threshold rules over KPI series and the routes their
//! notifications go to.

use super::{ConfigError, Dur};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Message language of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Fr,
}

/// Which records of a series a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evaluate {
    /// Every record: provisional updates (live mode) and final ones.
    #[default]
    Update,
    /// Only the final record of each window (month-to-date values that
    /// only mean something once the month is over, such as quota attainment).
    Final,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Language of notification texts: `en` or `fr` (a route may override it).
    pub language: Language,
    /// Link put in notifications. `{rule}`, `{kpi}`, `{window}`, `{window_label}`
    /// and `{<dimension>}` (e.g. `{rep}`) are replaced; empty = no link.
    pub dashboard_url: String,
    /// Notifications waiting per route; beyond it they are dropped, counted and logged.
    pub queue_capacity: usize,
    /// First delay before a failed delivery is tried again; it doubles up to `retry_max_delay`.
    pub retry_initial_delay: Dur,
    pub retry_max_delay: Dur,
    /// A notification still failing after this long is given up: counted
    /// (`outcome="failed"`) and logged with its whole content.
    pub retry_for: Dur,
    /// At shutdown, how long queued notifications may still take to deliver.
    pub drain_timeout: Dur,
    /// Alertmanager forgets an alert not posted again within its
    /// `resolve_timeout`: firing alerts are re-posted this often (wall time).
    pub alertmanager_resend: Dur,
    pub rules: Vec<RuleConfig>,
    pub routes: Vec<RouteConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            language: Language::En,
            dashboard_url: String::new(),
            queue_capacity: 10_000,
            retry_initial_delay: Dur(std::time::Duration::from_millis(500)),
            retry_max_delay: Dur(std::time::Duration::from_secs(60)),
            retry_for: Dur(std::time::Duration::from_secs(3600)),
            drain_timeout: Dur(std::time::Duration::from_secs(10)),
            alertmanager_resend: Dur(std::time::Duration::from_secs(60)),
            rules: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// One alert rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; Alertmanager's `alertname`.
    pub name: String,
    /// KPI name from the catalogue, e.g. `lead_conversion_rate` (not for `absent_for`).
    #[serde(default)]
    pub kpi: String,
    /// Window kind: `day`, `week`, `month`, `quarter`, `year`, `rolling_24h`… or `gauge`
    /// (not for `absent_for`).
    #[serde(default)]
    pub window: String,
    /// Dimensions the series must have, with these values, e.g. `{ channel = "web" }`.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Dimensions that make one alert instance per value, e.g. `["rep"]`.
    /// A series matches when its dimensions are exactly `filter` + `group_by`
    /// (neither = the "all" series).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Fires when the value is above this.
    pub above: Option<f64>,
    /// Fires when the value is below this.
    pub below: Option<f64>,
    /// Fires when (value − previous window's final value) ÷ |previous| is
    /// above this, e.g. `0.25` = up more than 25 %.
    pub change_above: Option<f64>,
    /// Fires when that relative change is below this, e.g. `-0.2` = down more than 20 %.
    pub change_below: Option<f64>,
    /// Change conditions: the baseline is the mean of this many earlier
    /// final values (default 1: the previous window).
    #[serde(default = "one")]
    pub baseline_windows: u32,
    /// Change conditions: only earlier windows a whole number of this
    /// span before the evaluated one count in the baseline, e.g. `"7d"`
    /// with `window = "day"`: this Monday against the last Mondays.
    pub baseline_season: Option<Dur>,
    /// Fires when the series (events with the `filter` dimensions, one
    /// instance per `group_by` value; neither = the whole input) had no
    /// event for this long; resolves when one comes.
    pub absent_for: Option<Dur>,
    /// `absent_for`: only these event types count, e.g. `["crm.lead.created"]`
    /// (default: every type).
    #[serde(default)]
    pub events: Vec<String>,
    /// Hysteresis: a firing alert resolves only once the value (or change)
    /// is back past this, e.g. `below = 0.15`, `clear = 0.18`. Default: the threshold.
    pub clear: Option<f64>,
    /// Records with a smaller sample size are not evaluated (no alert on 1 deal out of 2).
    #[serde(default)]
    pub min_sample: u64,
    /// The condition must hold for this long in event time before firing.
    #[serde(default = "zero", rename = "for")]
    pub for_: Dur,
    /// …and for this many consecutive evaluations.
    #[serde(default = "one")]
    pub for_evaluations: u32,
    /// `update` (every record) or `final` (only final records of each window).
    #[serde(default)]
    pub evaluate: Evaluate,
    /// `critical`, `warning` or `info` (free text; Alertmanager label `severity`).
    #[serde(default = "warning")]
    pub severity: String,
    /// Extra labels on every notification (Alertmanager routes on them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Route names; empty = every route.
    #[serde(default)]
    pub routes: Vec<String>,
    /// While firing, notify again after this much event time; `0s` (default) = never.
    #[serde(default = "zero")]
    pub renotify: Dur,
}

fn zero() -> Dur {
    Dur(std::time::Duration::ZERO)
}
fn one() -> u32 {
    1
}
fn warning() -> String {
    "warning".into()
}

/// Where a route delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// The Kafka alert topic (Kafka mode only).
    Kafka,
    /// A Slack incoming webhook.
    Slack,
    /// E-mail over SMTP.
    Email,
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
    /// The notification JSON posted to any URL.
    Webhook,
    /// The notification JSON appended to a file, one per line.
    File,
}

/// TLS of an SMTP route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (local relays and tests only).
    None,
    /// Upgrade with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// One delivery route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in rules' `routes`.
    pub name: String,
    pub kind: RouteKind,
    /// Message language of this route; default `alerts.language`.
    pub language: Option<Language>,
    /// slack / webhook: the URL to post to; alertmanager: its base URL
    /// (`http://alertmanager:9093`).
    #[serde(default)]
    pub url: String,
    /// Name of an environment variable holding the URL (Slack webhook URLs are secrets).
    #[serde(default)]
    pub url_env: String,
    /// kafka: topic; default `kafka.alert_topic`.
    #[serde(default)]
    pub topic: String,
    /// file: path of the JSON-lines file.
    #[serde(default)]
    pub path: String,
    /// email: SMTP server host.
    #[serde(default)]
    pub smtp_host: String,
    /// email: SMTP port; default 25 (none), 587 (starttls) or 465 (tls).
    pub smtp_port: Option<u16>,
    /// email: `none`, `starttls` or `tls`.
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    /// email: environment variables holding the SMTP user name and password (optional).
    #[serde(default)]
    pub username_env: String,
    #[serde(default)]
    pub password_env: String,
    /// email: sender, e.g. `salespulse <alerts@example.com>`.
    #[serde(default)]
    pub from: String,
    /// email: recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

impl RouteConfig {
    /// The URL, from `url` or the environment variable `url_env`.
    pub fn resolved_url(&self) -> Option<String> {
        if !self.url_env.is_empty() {
            return std::env::var(&self.url_env).ok().filter(|u| !u.is_empty());
        }
        Some(self.url.clone()).filter(|u| !u.is_empty())
    }
}

impl AlertsConfig {
    /// Checks rules and routes; `windows` are the configured window kinds.
    pub fn validate(&self, windows: &[String], errs: &mut Vec<ConfigError>) {
        self.validate_delivery(errs);
        self.validate_routes(errs);
        self.validate_rules(windows, errs);
    }

    /// Retry delays and the queue.
    fn validate_delivery(&self, errs: &mut Vec<ConfigError>) {
        let mut err = |field: String, problem: String, fix: &str| {
            errs.push(ConfigError {
                field,
                problem,
                fix: fix.into(),
            })
        };
        for (f, d) in [
            ("retry_initial_delay", self.retry_initial_delay),
            ("retry_max_delay", self.retry_max_delay),
            ("alertmanager_resend", self.alertmanager_resend),
        ] {
            if d.0.is_zero() {
                err(
                    format!("alerts.{f}"),
                    "0s".into(),
                    "use a positive duration, e.g. \"1s\"",
                );
            }
        }
        if self.queue_capacity == 0 {
            err(
                "alerts.queue_capacity".into(),
                "0".into(),
                "use a positive number, e.g. 10000",
            );
        }
    }

    /// Each route: a unique name, a target its kind can reach, its options.
    fn validate_routes(&self, errs: &mut Vec<ConfigError>) {
        let mut err = |field: String, problem: String, fix: &str| {
            errs.push(ConfigError {
                field,
                problem,
                fix: fix.into(),
            })
        };
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let f = |k: &str| format!("alerts.routes[{i}].{k}");
            if r.name.trim().is_empty() || !names.insert(r.name.as_str()) {
                err(
                    f("name"),
                    format!("{:?} is empty or used twice", r.name),
                    "give every route a distinct name",
                );
            }
            match r.kind {
                RouteKind::Slack | RouteKind::Webhook | RouteKind::Alertmanager => {
                    if !r.url_env.is_empty() && r.resolved_url().is_none() {
                        err(
                            f("url_env"),
                            format!("the environment variable {} is not set", r.url_env),
                            "export it, or write the URL in `url`",
                        );
                    } else if r.url_env.is_empty() && r.url.is_empty() {
                        err(
                            f("url"),
                            "missing".into(),
                            "give the URL to post to (or `url_env`, the variable holding it)",
                        );
                    } else if let Some(u) = r.resolved_url() {
                        if reqwest::Url::parse(&u)
                            .map(|u| !matches!(u.scheme(), "http" | "https"))
                            .unwrap_or(true)
                        {
                            err(
                                f(if r.url_env.is_empty() { "url" } else { "url_env" }),
                                "is not an http(s) URL".into(),
                                "write e.g. \"https://hooks.slack.com/services/…\" or \"http://alertmanager:9093\"",
                            );
                        }
                    }
                }
                RouteKind::File => {
                    if r.path.is_empty() {
                        err(f("path"), "missing".into(), "give the file to append to");
                    }
                }
                RouteKind::Kafka => {}
                RouteKind::Email => {
                    if r.smtp_host.is_empty() {
                        err(
                            f("smtp_host"),
                            "missing".into(),
                            "give the SMTP server, e.g. \"smtp.example.com\"",
                        );
                    }
                    if r.from.parse::<lettre::message::Mailbox>().is_err() {
                        err(
                            f("from"),
                            format!("{:?} is not an e-mail address", r.from),
                            "write e.g. \"salespulse <alerts@example.com>\"",
                        );
                    }
                    if r.to.is_empty() {
                        err(f("to"), "no recipient".into(), "list at least one address");
                    }
                    for (j, t) in r.to.iter().enumerate() {
                        if t.parse::<lettre::message::Mailbox>().is_err() {
                            err(
                                format!("alerts.routes[{i}].to[{j}]"),
                                format!("{t:?} is not an e-mail address"),
                                "write e.g. \"sales-ops@example.com\"",
                            );
                        }
                    }
                    for (k, v) in [
                        ("username_env", &r.username_env),
                        ("password_env", &r.password_env),
                    ] {
                        if !v.is_empty() && std::env::var(v).is_err() {
                            err(
                                f(k),
                                format!("the environment variable {v} is not set"),
                                "export it before starting, or remove the key for an SMTP server without login",
                            );
                        }
                    }
                    if r.username_env.is_empty() != r.password_env.is_empty() {
                        err(
                            f("password_env"),
                            "username_env and password_env must be given together".into(),
                            "set both, or neither",
                        );
                    }
                }
            }
            let email_only = [
                ("smtp_host", !r.smtp_host.is_empty()),
                ("from", !r.from.is_empty()),
                ("to", !r.to.is_empty()),
            ];
            if r.kind != RouteKind::Email {
                for (k, set) in email_only {
                    if set {
                        err(
                            f(k),
                            format!("is only for kind = \"email\", this route is {:?}", r.kind),
                            "remove it, or set kind = \"email\"",
                        );
                    }
                }
            }
        }
    }

    /// Each rule: a unique name, a known KPI and window, a condition, routes that exist, labels.
    fn validate_rules(&self, windows: &[String], errs: &mut Vec<ConfigError>) {
        let mut err = |field: String, problem: String, fix: &str| {
            errs.push(ConfigError {
                field,
                problem,
                fix: fix.into(),
            })
        };
        let known_kpis: Vec<&str> = crate::kpi::CATALOGUE.iter().map(|k| k.name).collect();
        let mut rule_names = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let f = |k: &str| format!("alerts.rules[{i}].{k}");
            if r.name.trim().is_empty() || !rule_names.insert(r.name.as_str()) {
                err(
                    f("name"),
                    format!("{:?} is empty or used twice", r.name),
                    "give every rule a distinct name",
                );
            }
            let conds = [r.above, r.below, r.change_above, r.change_below];
            let set =
                conds.iter().filter(|c| c.is_some()).count() + r.absent_for.is_some() as usize;
            if set != 1 {
                err(
                    f("above"),
                    format!("{set} conditions are given"),
                    "give exactly one of above, below, change_above, change_below, absent_for",
                );
            }
            if r.absent_for.is_some() {
                validate_absent(r, &f, &mut err);
            } else {
                if !known_kpis.contains(&r.kpi.as_str()) {
                    err(
                        f("kpi"),
                        format!("{:?} is not a KPI of the catalogue", r.kpi),
                        "use a name from docs/kpis.md, e.g. \"lead_conversion_rate\"",
                    );
                }
                if !windows.contains(&r.window) {
                    err(
                        f("window"),
                        format!("{:?} is not a configured window", r.window),
                        &format!("use one of: {}", windows.join(", ")),
                    );
                }
                if !r.events.is_empty() {
                    err(
                        f("events"),
                        "is only for absent_for rules".into(),
                        "remove it (a KPI rule watches its KPI's records)",
                    );
                }
            }
            if conds.iter().flatten().any(|v| !v.is_finite()) {
                err(
                    f("above"),
                    "the threshold is not a finite number".into(),
                    "use a number",
                );
            }
            if let (Some(c), Some(cond)) = (r.clear, Condition::of(r)) {
                let ok = match cond {
                    Condition::Below(t) | Condition::ChangeBelow(t) => c >= t,
                    Condition::Above(t) | Condition::ChangeAbove(t) => c <= t,
                    Condition::Absent(_) => true,
                };
                if !ok {
                    err(
                        f("clear"),
                        format!("{c} is on the firing side of the threshold"),
                        "for below/change_below, clear must be ≥ the threshold; for above/change_above, ≤ it",
                    );
                }
            }
            if r.baseline_windows == 0 || r.baseline_windows > 52 {
                err(
                    f("baseline_windows"),
                    format!("{}", r.baseline_windows),
                    "use 1 (the previous window) to 52",
                );
            }
            let is_change = Condition::of(r).is_some_and(|c| c.is_change());
            if !is_change && (r.baseline_windows != 1 || r.baseline_season.is_some()) {
                err(
                    f("baseline_windows"),
                    "baseline_windows / baseline_season are set on a rule without a change condition".into(),
                    "use change_above or change_below, or remove them",
                );
            }
            if r.baseline_season
                .is_some_and(|d| d.0 < std::time::Duration::from_secs(3600))
            {
                err(
                    f("baseline_season"),
                    "shorter than an hour".into(),
                    "use the span between comparable windows, e.g. \"7d\" for days of the same weekday",
                );
            }
            if r.for_evaluations == 0 {
                err(
                    f("for_evaluations"),
                    "0".into(),
                    "use 1 (fire on the first evaluation) or more",
                );
            }
            for k in r.filter.keys() {
                if r.group_by.contains(k) {
                    err(
                        f("group_by"),
                        format!("{k:?} is also in filter"),
                        "a dimension is either fixed by filter or grouped by, not both",
                    );
                }
            }
            for rt in &r.routes {
                if !self.routes.iter().any(|x| &x.name == rt) {
                    err(
                        f("routes"),
                        format!("{rt:?} is not a route"),
                        "name a route of [[alerts.routes]]",
                    );
                }
            }
            for k in r.labels.keys() {
                let ok = k
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    err(
                        f("labels"),
                        format!("{k:?} is not a label name"),
                        "use letters, digits and _ (Alertmanager's label syntax)",
                    );
                }
            }
        }
    }
}

/// The checks of an `absent_for` rule: a positive span, event types and
/// dimensions that exist, no KPI keys.
fn validate_absent(
    r: &RuleConfig,
    f: &dyn Fn(&str) -> String,
    err: &mut dyn FnMut(String, String, &str),
) {
    if r.absent_for
        .is_some_and(|d| d.0 < std::time::Duration::from_secs(1))
    {
        err(
            f("absent_for"),
            "shorter than a second".into(),
            "use the longest quiet spell that is normal, e.g. \"2h\"",
        );
    }
    for (k, set) in [
        ("kpi", !r.kpi.is_empty()),
        ("window", !r.window.is_empty()),
        ("min_sample", r.min_sample != 0),
        ("clear", r.clear.is_some()),
        ("for", !r.for_.0.is_zero()),
        ("for_evaluations", r.for_evaluations != 1),
        ("evaluate", r.evaluate != Evaluate::Update),
    ] {
        if set {
            err(
                f(k),
                "is not used by absent_for rules".into(),
                "remove it: an absent_for rule watches events, not a KPI's values",
            );
        }
    }
    for (j, t) in r.events.iter().enumerate() {
        if crate::event::EventType::parse(t).is_none() {
            err(
                format!("{}[{j}]", f("events")),
                format!("{t:?} is not an event type"),
                "use a type of docs/events.md, e.g. \"crm.lead.created\"",
            );
        }
    }
    for d in r.filter.keys().chain(&r.group_by) {
        if !crate::event::DIMS.contains(&d.as_str()) {
            err(
                f(if r.group_by.contains(d) {
                    "group_by"
                } else {
                    "filter"
                }),
                format!("{d:?} is not a dimension"),
                &format!("use one of: {}", crate::event::DIMS.join(", ")),
            );
        }
    }
}

/// A rule's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
    ChangeAbove(f64),
    ChangeBelow(f64),
    /// No event for this many seconds.
    Absent(f64),
}

impl Condition {
    pub fn of(r: &RuleConfig) -> Option<Condition> {
        r.above
            .map(Condition::Above)
            .or(r.below.map(Condition::Below))
            .or(r.change_above.map(Condition::ChangeAbove))
            .or(r.change_below.map(Condition::ChangeBelow))
            .or(r.absent_for.map(|d| Condition::Absent(d.0.as_secs_f64())))
    }

    pub fn threshold(self) -> f64 {
        match self {
            Condition::Above(t)
            | Condition::Below(t)
            | Condition::ChangeAbove(t)
            | Condition::ChangeBelow(t)
            | Condition::Absent(t) => t,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Condition::Above(_) => "above",
            Condition::Below(_) => "below",
            Condition::ChangeAbove(_) => "change_above",
            Condition::ChangeBelow(_) => "change_below",
            Condition::Absent(_) => "absent",
        }
    }

    pub fn is_change(self) -> bool {
        matches!(self, Condition::ChangeAbove(_) | Condition::ChangeBelow(_))
    }

    /// Whether `x` (value or change) is on the firing side.
    pub fn breached(self, x: f64) -> bool {
        match self {
            Condition::Above(t) | Condition::ChangeAbove(t) => x > t,
            Condition::Below(t) | Condition::ChangeBelow(t) => x < t,
            // Silent for the whole span: at the deadline itself.
            Condition::Absent(t) => x >= t,
        }
    }

    /// Whether `x` is back past the clear threshold `c`.
    pub fn cleared(self, x: f64, c: f64) -> bool {
        match self {
            Condition::Above(_) | Condition::ChangeAbove(_) => x <= c,
            Condition::Below(_) | Condition::ChangeBelow(_) => x >= c,
            Condition::Absent(t) => x < t,
        }
    }
}
