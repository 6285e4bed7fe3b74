//! Validation of a whole configuration: every error at once, each with
//! the field it is about and how to fix it.

use super::*;

impl Config {
    /// Every error of the configuration at once, each naming its field
    /// and the fix (`salespulse check-config` prints them).
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        self.validate_time_and_state(&mut errs);
        self.validate_windows_and_pipeline(&mut errs);
        self.validate_kpis_and_io(&mut errs);
        self.validate_kafka(&mut errs);
        let windows = self.window_kinds();
        self.validate_prometheus(&windows, &mut errs);
        self.alerts.validate(&windows, &mut errs);
        self.postgres.validate(&windows, &mut errs);
        self.privacy.validate(&mut errs);
        self.sla.validate(&mut errs);
        self.forecast.validate(&mut errs);
        self.http.validate(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

impl Config {
    /// `time.*`, `state.*`, dead-letter size.
    fn validate_time_and_state(&self, errs: &mut Vec<ConfigError>) {
        let mut err = error_sink(errs);
        if self.time.zone.parse::<chrono_tz::Tz>().is_err() {
            err(
                "time.zone",
                format!("{:?} is not an IANA time zone", self.time.zone),
                "use a name from the tz database, e.g. \"UTC\", \"Europe/Paris\", \"America/New_York\"",
            );
        }
        if !(1..=12).contains(&self.time.fiscal_year_start_month) {
            err(
                "time.fiscal_year_start_month",
                format!("{} is not a month", self.time.fiscal_year_start_month),
                "use 1 (January) to 12 (December)",
            );
        }
        let lateness = self.time.out_of_orderness.ms() + self.time.grace.ms();
        if self.state.dedup_horizon.ms() < lateness {
            err(
                "state.dedup_horizon",
                format!(
                    "{} is shorter than time.out_of_orderness + time.grace ({} + {}), so a redelivered event could be counted twice",
                    self.state.dedup_horizon, self.time.out_of_orderness, self.time.grace
                ),
                "raise state.dedup_horizon to at least out_of_orderness + grace",
            );
        }
        if self.state.entity_ttl.ms() < lateness {
            err(
                "state.entity_ttl",
                format!(
                    "{} is shorter than out_of_orderness + grace",
                    self.state.entity_ttl
                ),
                "raise state.entity_ttl above your longest sales cycle (default 400d)",
            );
        }
        let jump = self.time.max_jump.ms();
        if jump != 0 && jump < self.time.out_of_orderness.ms() {
            err(
                "time.max_jump",
                format!(
                    "{} is shorter than time.out_of_orderness ({}): ordinary disorder would be held as outliers",
                    self.time.max_jump, self.time.out_of_orderness
                ),
                "use a span longer than the stream's quiet periods, e.g. \"7d\", or \"0s\" to turn the outlier hold off",
            );
        }
        if self.time.jump_confirmations == 0 {
            err(
                "time.jump_confirmations",
                "0 events cannot confirm a jump".into(),
                "use a positive number, e.g. 32",
            );
        }
        if self.output.dead_letter_max_bytes < 1024 {
            err(
                "output.dead_letter_max_bytes",
                format!(
                    "{} bytes is too little to show what was rejected",
                    self.output.dead_letter_max_bytes
                ),
                "use at least 1024, e.g. 1048576 (1 MiB)",
            );
        }
        if self.state.dedup_max_entries == 0 {
            err(
                "state.dedup_max_entries",
                "0 disables duplicate detection".into(),
                "use a positive number, e.g. 5000000",
            );
        }
    }

    /// `windows.*`, `pipeline.*`, `targets.*`.
    fn validate_windows_and_pipeline(&self, errs: &mut Vec<ConfigError>) {
        let mut err = error_sink(errs);
        if self.windows.calendar.is_empty() && self.windows.rolling.is_empty() {
            err(
                "windows",
                "no calendar and no rolling window is configured".into(),
                "list at least one, e.g. calendar = [\"month\"]",
            );
        }
        if self.windows.rolling_buckets == 0 {
            err(
                "windows.rolling_buckets",
                "0 sub-buckets".into(),
                "use a positive number, e.g. 24",
            );
        }
        for (i, r) in self.windows.rolling.iter().enumerate() {
            let b = i64::from(self.windows.rolling_buckets.max(1));
            if r.ms() <= 0 || r.ms() % b != 0 || (r.ms() / b) % 1000 != 0 {
                err(
                    &format!("windows.rolling[{i}]"),
                    format!("{r} does not split into {b} whole-second sub-buckets"),
                    "use a span that is a multiple of windows.rolling_buckets seconds, e.g. \"24h\"",
                );
            }
        }
        if self.pipeline.stages.is_empty() {
            err(
                "pipeline.stages",
                "no stage is configured".into(),
                "list the open stages of your pipeline in order",
            );
        }
        if let Some(age) = self.pipeline.max_open_age {
            let lateness = self.time.out_of_orderness.ms() + self.time.grace.ms();
            if age.ms() <= lateness {
                err(
                    "pipeline.max_open_age",
                    format!(
                        "{age} is not longer than time.out_of_orderness + time.grace ({} + {}): a deal could expire before its own late events arrive",
                        self.time.out_of_orderness, self.time.grace
                    ),
                    "use a span longer than your stalest healthy deal, e.g. \"180d\", or leave it unset",
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.pipeline.stages.iter().enumerate() {
            if !(0.0..=1.0).contains(&s.probability) {
                err(
                    &format!("pipeline.stages[{i}].probability"),
                    format!("{} is not a probability", s.probability),
                    "use a number from 0 to 1",
                );
            }
            if s.name.trim().is_empty() || !seen.insert(s.name.to_lowercase()) {
                err(
                    &format!("pipeline.stages[{i}].name"),
                    format!("{:?} is empty or listed twice", s.name),
                    "give every stage a distinct name",
                );
            }
        }
        if let Some(t) = self.targets.monthly_revenue {
            if !(t > 0.0 && t.is_finite()) {
                err(
                    "targets.monthly_revenue",
                    format!("{t} is not a positive amount"),
                    "use a positive number or remove the key",
                );
            }
        }
        for (field, v) in [("targets.market_size", self.targets.market_size)]
            .into_iter()
            .chain(
                self.targets
                    .product_market_size
                    .values()
                    .map(|v| ("targets.product_market_size", Some(*v))),
            )
        {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    err(
                        field,
                        format!("{v} is not a positive amount"),
                        "use the yearly market revenue, a positive number, or remove the key",
                    );
                }
            }
        }
    }

    /// `kpis.*`, `input.*`, `http.*`, `generator.*`, `checkpoint.*`.
    fn validate_kpis_and_io(&self, errs: &mut Vec<ConfigError>) {
        let mut err = error_sink(errs);
        if !self.kpis.dimensions.iter().any(|d| d == "rep") {
            err(
                "kpis.dimensions",
                "rep is missing: quota attainment, sales progress and the leaderboards are computed per rep".into(),
                "keep \"rep\" in the list",
            );
        }
        for (i, d) in self.kpis.dimensions.iter().enumerate() {
            if !crate::event::DIMS.contains(&d.as_str()) {
                err(
                    &format!("kpis.dimensions[{i}]"),
                    format!("{d:?} is not a dimension"),
                    "use any of rep, team, region, channel, product, campaign, variant, competitor, segment",
                );
            } else if self.kpis.dimensions[..i].contains(d) {
                err(
                    &format!("kpis.dimensions[{i}]"),
                    format!("{d:?} is listed twice"),
                    "list each dimension once",
                );
            }
        }
        if self.kpis.max_series_per_dimension == 0 {
            err(
                "kpis.max_series_per_dimension",
                "0 would fold every value into \"other\"".into(),
                "use a positive number, e.g. 1000",
            );
        }
        if self.kpis.leaderboard_size == 0 {
            err(
                "kpis.leaderboard_size",
                "0 entries".into(),
                "use a positive number, e.g. 10",
            );
        }
        if self.input.batch_size == 0 {
            err(
                "input.batch_size",
                "0".into(),
                "use a positive number, e.g. 1024",
            );
        }
        if !(self.generator.rate > 0.0 && self.generator.rate.is_finite()) {
            err(
                "generator.rate",
                format!("{} events/s", self.generator.rate),
                "use a positive number",
            );
        }
        if self.generator.events_per_day == 0 {
            err(
                "generator.events_per_day",
                "0".into(),
                "use a positive number, e.g. 1000",
            );
        }
        if self.generator.reps == 0 {
            err("generator.reps", "0".into(), "use at least 1");
        }
        if let Some(s) = &self.generator.start {
            if chrono::DateTime::parse_from_rfc3339(s).is_err() {
                err(
                    "generator.start",
                    format!("{s:?} is not RFC 3339"),
                    "write e.g. \"2026-01-01T00:00:00Z\"",
                );
            }
        }
        if !self.checkpoint.path.as_os_str().is_empty() && self.checkpoint.interval.0.is_zero() {
            err(
                "checkpoint.interval",
                "0s".into(),
                "use a positive duration, e.g. \"10s\"",
            );
        }
    }

    /// `kafka.*` (checked when `kafka.brokers` is set).
    fn validate_kafka(&self, errs: &mut Vec<ConfigError>) {
        let mut err = error_sink(errs);
        let k = &self.kafka;
        if !k.brokers.trim().is_empty() {
            if k.brokers.split(',').any(|b| {
                let b = b.trim();
                b.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            }) {
                err(
                    "kafka.brokers",
                    format!("{:?} is not a list of host:port", k.brokers),
                    "write e.g. \"localhost:9092\" or \"b1:9092,b2:9092\"",
                );
            }
            if k.input_topics.is_empty() || k.input_topics.iter().any(|t| t.trim().is_empty()) {
                err(
                    "kafka.input_topics",
                    "no topic, or an empty topic name".into(),
                    "list the topics of CRM events, e.g. [\"crm.events\"]",
                );
            }
            if k.group_id.trim().is_empty() {
                err(
                    "kafka.group_id",
                    "empty".into(),
                    "name the consumer group, e.g. \"salespulse\"",
                );
            }
            if k.checkpoint_interval.0.is_zero() {
                err(
                    "kafka.checkpoint_interval",
                    "0s".into(),
                    "use a positive duration, e.g. \"5s\"",
                );
            }
            let (partials, changelog) = (k.partials(), k.changelog());
            for (field, v) in [
                ("kafka.partials_topic", &partials),
                ("kafka.changelog_topic", &changelog),
            ] {
                if k.input_topics.contains(v)
                    || [
                        &k.kpi_topic,
                        &k.dlq_topic,
                        &k.alert_topic,
                        &k.leaderboard_topic,
                    ]
                    .contains(&v)
                {
                    err(
                        field,
                        format!("{v:?} is also another topic of the run"),
                        "give each internal topic a name of its own",
                    );
                }
            }
            if partials == changelog {
                err(
                    "kafka.changelog_topic",
                    "the same as kafka.partials_topic".into(),
                    "give each internal topic a name of its own",
                );
            }
            if k.internal_replication == 0 || k.internal_replication < -1 {
                err(
                    "kafka.internal_replication",
                    k.internal_replication.to_string(),
                    "use -1 (the broker's default) or a positive replication factor",
                );
            }
            if k.idle_partition_timeout.0.is_zero() {
                err(
                    "kafka.idle_partition_timeout",
                    "0s would ignore every partition".into(),
                    "use a positive duration, e.g. \"30s\"",
                );
            }
            if k.export_interval.0 > std::time::Duration::from_secs(10) {
                err(
                    "kafka.export_interval",
                    format!(
                        "{:?} would hold every KPI back that long",
                        k.export_interval.0
                    ),
                    "use at most \"10s\" (default \"10ms\"; \"0s\" = at every caught-up read)",
                );
            }
            for key in k.properties.keys() {
                let norm = key.to_ascii_lowercase().replace('_', ".");
                if matches!(
                    norm.as_str(),
                    "bootstrap.servers"
                        | "group.id"
                        | "enable.auto.commit"
                        | "enable.auto.offset.store"
                ) {
                    err(
                        &format!("kafka.properties.{key}"),
                        "is set by salespulse itself".into(),
                        "use kafka.brokers / kafka.group_id; offsets are always committed by salespulse after processing",
                    );
                }
                if norm == "group.instance.id" {
                    err(
                        &format!("kafka.properties.{key}"),
                        "is set by salespulse itself".into(),
                        "use kafka.instance_id (static membership of both of salespulse's consumer groups)",
                    );
                }
            }
            // What librdkafka itself refuses (unknown name, bad value), as
            // `run` would when it creates its clients.
            for (key, value) in k.librdkafka_properties() {
                let mut c = rdkafka::ClientConfig::new();
                c.set(&key, &value);
                if let Err(e) = c.create_native_config() {
                    err(
                        &format!("kafka.properties.{key}"),
                        format!("librdkafka refuses it: {e}"),
                        "use a property of https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md with a valid value",
                    );
                }
            }
            if k.instance_id.trim() != k.instance_id
                || k.instance_id.len() > 249
                || k.instance_id.chars().any(|c| c.is_control())
            {
                err(
                    "kafka.instance_id",
                    format!("{:?} is not a usable group.instance.id", k.instance_id),
                    "use a short stable name without spaces at the ends, e.g. the pod name \"salespulse-0\"",
                );
            }
        }
    }
}

impl Config {
    fn validate_prometheus(&self, windows: &[String], errs: &mut Vec<ConfigError>) {
        let p = &self.prometheus;
        let mut err = |field: String, problem: String, fix: String| {
            errs.push(ConfigError {
                field,
                problem,
                fix,
            })
        };
        for (i, k) in p.kpis.iter().enumerate() {
            if !crate::kpi::CATALOGUE.iter().any(|d| d.name == k) {
                err(
                    format!("prometheus.kpis[{i}]"),
                    format!("{k:?} is not a KPI"),
                    "use names from docs/kpis.md (e.g. \"win_rate\"), or leave the list empty for every KPI".into(),
                );
            }
        }
        for (i, w) in p.windows.iter().flatten().enumerate() {
            if !windows.contains(w) {
                err(
                    format!("prometheus.windows[{i}]"),
                    format!("{w:?} is not a window this configuration computes"),
                    format!("use any of {}", windows.join(", ")),
                );
            }
        }
        for (i, d) in p.dimensions.iter().flatten().enumerate() {
            if !self.kpis.dimensions.contains(d) {
                err(
                    format!("prometheus.dimensions[{i}]"),
                    format!("{d:?} is not a dimension computed (kpis.dimensions)"),
                    format!("use any of {}", self.kpis.dimensions.join(", ")),
                );
            }
        }
        if p.max_series == 0 {
            err(
                "prometheus.max_series".into(),
                "0 would export no KPI".into(),
                "use a positive number, e.g. 20000 (docs/prometheus.md has the formula)".into(),
            );
        }
    }
}

/// `err(field, problem, fix)` pushing a [`ConfigError`] onto `errs`.
fn error_sink(errs: &mut Vec<ConfigError>) -> impl FnMut(&str, String, &str) + '_ {
    |field, problem, fix| {
        errs.push(ConfigError {
            field: field.into(),
            problem,
            fix: fix.into(),
        })
    }
}
