//! The KPI engine: a single-writer, synchronous core. Events go in through
//! [`Engine::apply`]; KPI records come out of [`Engine::take_records`]
//! after [`Engine::emit_updates`] (provisional values), window closes
//! (final values, driven by the watermark) or [`Engine::finish`].
//!
//! Watermark = newest event time − `time.out_of_orderness`. A window
//! `[start, end)` is final once `end ≤ watermark − time.grace`; an event
//! older than `watermark − grace` is rejected as `late`, so no event ever
//! lands in a closed window.

mod absent;
mod apply;
pub use apply::sla_deadline;
mod emit;
pub mod facts;
pub mod forecast;
mod hold;
mod init;
pub mod merge;
pub use crate::window::rolling_name;
pub mod state;

use crate::config::Config;
use crate::decode::{json, proto, validate, Reject, RejectReason};
use crate::event::Event;
use crate::output::{KpiRecord, LeaderboardRecord};
use crate::window::format_time;
use crate::window::{Calendar, CalendarKind};
use state::*;
use std::collections::HashMap;

/// Resolved, validated settings the engine runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cal: Calendar,
    pub calendar: Vec<CalendarKind>,
    /// (span, sub-bucket width) in ms.
    pub rolling: Vec<(i64, i64)>,
    /// The rolling set whose sub-buckets stage events for the others (see
    /// [`state::State::rolling_staged`]): the narrowest, when its width
    /// divides every other set's, and there are other sets.
    pub rolling_fine: Option<usize>,
    pub out_of_orderness: i64,
    pub grace: i64,
    /// `time.max_future_skew` (ms, 0 = off).
    pub max_future_skew: i64,
    /// `time.max_jump` (ms, 0 = off) and `time.jump_confirmations`.
    pub max_jump: i64,
    pub jump_confirmations: u32,
    /// `state.max_waiting`.
    pub max_waiting: usize,
    /// A fixed wall clock (ms) instead of the system's: for tests and
    /// replays that must not depend on the day they run.
    pub now: Option<i64>,
    pub entity_ttl: i64,
    /// `pipeline.max_open_age` (ms).
    pub max_open_age: Option<i64>,
    /// `max_days` of each stage (ms): an open deal with no event for
    /// that long is stalled.
    pub stall_after: Vec<Option<i64>>,
    /// `sla.first_contact` (ms, `None` = off) and its working hours.
    pub first_contact: Option<(i64, Option<crate::config::sla::WorkingHours>)>,
    pub dedup_horizon: i64,
    pub dedup_max: usize,
    /// Lower-cased stage names and win probabilities, in pipeline order.
    pub stages: Vec<(String, f64)>,
    /// Each stage's forecast category, and the `[forecast]` settings.
    pub stage_category: Vec<crate::config::forecast::ForecastCategory>,
    pub forecast: crate::config::forecast::ForecastConfig,
    /// Team and region of reps from config.
    pub reps: HashMap<String, (Option<String>, Option<String>)>,
    pub monthly_target_cents: Option<i64>,
    /// Alert rules evaluated on every record the engine emits.
    pub alerts: std::sync::Arc<crate::alert::Rules>,
    /// `kpis.max_series_per_dimension`.
    pub max_series: u32,
    /// `kpis.dimensions` as a mask over a [`state::DimKey`]: all ones for
    /// a dimension that is on, zero for one that is off (aggregates never
    /// see its values; entities keep them).
    pub dims_mask: state::DimKey,
    pub leaderboard_size: usize,
    pub leaderboard_min_sample: u64,
    /// A/B control variant; empty = the alphabetically first.
    pub ab_control: String,
    /// Headcount from config: the company's, and by team.
    pub headcount: Option<i64>,
    pub team_headcount: Vec<(String, i64)>,
    /// Yearly market size in cents from config: the whole market's, and by product.
    pub market_size_cents: Option<i64>,
    pub product_market_cents: Vec<(String, i64)>,
    /// The keyed hash entity and event ids are kept under (`privacy.*`).
    pub ids: crate::privacy::Pseudonyms,
}

/// See [`Settings::rolling_fine`].
pub fn rolling_fine(rolling: &[(i64, i64)]) -> Option<usize> {
    let (fine, &(_, w)) = rolling.iter().enumerate().min_by_key(|(_, r)| r.1)?;
    (rolling.len() > 1 && w > 0 && rolling.iter().all(|r| r.1 % w == 0)).then_some(fine)
}

impl Settings {
    /// The settings a saved state only makes sense under: time zone, fiscal
    /// year, windows and pipeline stages. Anything else (TTLs, alert rules,
    /// outputs) may change between runs.
    pub fn layout(&self) -> Vec<(String, String)> {
        let s = self;
        vec![
            ("time.zone".into(), s.cal.tz.name().to_string()),
            (
                "time.fiscal_year_start_month".into(),
                s.cal.fiscal_start.to_string(),
            ),
            (
                "windows.calendar".into(),
                format!(
                    "{:?}",
                    s.calendar.iter().map(|k| k.as_str()).collect::<Vec<_>>()
                ),
            ),
            (
                "windows.rolling / rolling_buckets".into(),
                format!("{:?}", s.rolling),
            ),
            (
                "pipeline.stages".into(),
                format!(
                    "{:?}",
                    s.stages.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                ),
            ),
            (
                "kpis.dimensions".into(),
                format!(
                    "{:?}",
                    state::DIMS
                        .iter()
                        .zip(s.dims_mask.iter())
                        .filter(|(_, m)| **m != 0)
                        .map(|(d, _)| *d)
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "privacy.key (pseudonym key)".into(),
                s.ids.fingerprint().to_string(),
            ),
        ]
    }

    /// Resolves a validated [`Config`].
    pub fn from_config(c: &Config) -> Settings {
        let tz = c.time.zone.parse().expect("validated time zone");
        let rolling: Vec<(i64, i64)> = c
            .windows
            .rolling
            .iter()
            .map(|d| (d.ms(), d.ms() / i64::from(c.windows.rolling_buckets)))
            .collect();
        Settings {
            cal: Calendar::new(tz, c.time.fiscal_year_start_month),
            calendar: c.windows.calendar.clone(),
            rolling_fine: rolling_fine(&rolling),
            rolling,
            out_of_orderness: c.time.out_of_orderness.ms(),
            grace: c.time.grace.ms(),
            max_future_skew: c.time.max_future_skew.ms(),
            max_jump: c.time.max_jump.ms(),
            jump_confirmations: c.time.jump_confirmations,
            max_waiting: c.state.max_waiting,
            now: None,
            entity_ttl: c.state.entity_ttl.ms(),
            max_open_age: c.pipeline.max_open_age.map(|d| d.ms()),
            first_contact: (!c.sla.first_contact.0.is_zero()).then(|| {
                let w = c.sla.working().expect("validated: sla.working_hours");
                (c.sla.first_contact.ms(), w)
            }),
            stall_after: c
                .pipeline
                .stages
                .iter()
                .map(|s| s.max_days.map(|d| i64::from(d) * 86_400_000))
                .collect(),
            dedup_horizon: c.state.dedup_horizon.ms(),
            dedup_max: c.state.dedup_max_entries,
            stages: c
                .pipeline
                .stages
                .iter()
                .map(|s| (s.name.to_lowercase(), s.probability))
                .collect(),
            stage_category: c.pipeline.stages.iter().map(forecast::category).collect(),
            forecast: c.forecast.clone(),
            reps: c
                .reps
                .iter()
                .map(|r| (r.name.clone(), (r.team.clone(), r.region.clone())))
                .collect(),
            monthly_target_cents: c
                .targets
                .monthly_revenue
                .map(|t| (t * 100.0).round() as i64),
            alerts: std::sync::Arc::new(crate::alert::Rules::new(&c.alerts)),
            max_series: c.kpis.max_series_per_dimension,
            dims_mask: state::DimKey(
                state::DIMS.map(|d| u32::from(c.kpis.dimensions.iter().any(|x| x == d)) * u32::MAX),
            ),
            leaderboard_size: c.kpis.leaderboard_size as usize,
            leaderboard_min_sample: c.kpis.leaderboard_min_sample,
            ab_control: c.kpis.ab_control_variant.clone(),
            headcount: c.targets.headcount.map(i64::from),
            team_headcount: c
                .targets
                .team_headcount
                .iter()
                .map(|(t, n)| (t.clone(), i64::from(*n)))
                .collect(),
            market_size_cents: c.targets.market_size.map(|v| (v * 100.0).round() as i64),
            product_market_cents: c
                .targets
                .product_market_size
                .iter()
                .map(|(p, v)| (p.clone(), (v * 100.0).round() as i64))
                .collect(),
            ids: c.privacy.pseudonyms.clone(),
        }
    }
}

/// How an accepted input was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// Same `source` + `id` as an event already counted, or the same
    /// lifecycle transition of its entity as one already counted (a
    /// re-sent webhook): ignored.
    Duplicate,
}

/// Entity TTL sweeps (a pass over every entity) run once per this
/// fraction of the TTL of event time, so their cost per event stays small.
const SWEEPS_PER_TTL: i64 = 64;

pub struct Engine {
    pub settings: Settings,
    pub state: State,
    /// The days of the last events.
    day_cache: crate::window::DayCache,
    /// The rolling sub-bucket starts of the last event, by rolling set.
    sub_cache: Vec<i64>,
    /// The clock is driven by [`Engine::advance_clock`], not by events.
    external_clock: bool,
    last_time: i64,
    /// Smallest end of any open calendar bucket.
    next_close: i64,
    out: Vec<KpiRecord>,
    boards: Vec<LeaderboardRecord>,
    notes: Vec<crate::alert::Notification>,
    /// Records of `out` already evaluated by the alert rules.
    evaluated: usize,
    /// Source mode (scale-out): what changed since the last export.
    track: Option<Box<merge::Track>>,
    /// Merger mode (scale-out): the sources' contributions.
    merge: Option<Box<merge::MergeState>>,
    /// Wall clock + `time.max_future_skew` when last read: an event
    /// before it needs no new reading.
    wall_limit: i64,
    /// Applying a waiting event whose entity did not come: it counts
    /// with unknown dimensions instead of waiting again.
    unmatched: bool,
    /// Type and time of the event being applied (for `absent_for`
    /// rules; no time outside an event: expiries are not events).
    cur_type: u8,
    cur_time: Option<i64>,
    /// Interned ids of each `absent_for` rule: its name, its filter values
    /// (`None` until the value has been seen).
    absent_ids: Vec<(u32, Vec<Option<u32>>)>,
    /// No `absent_for` series is due before this instant (a lower bound).
    absent_deadline: i64,
    /// The forecast's last draws (see [`forecast::Memo`]).
    forecast_memo: forecast::Memo,
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        let state = State::new(&settings);
        Engine::from_state(settings, state)
    }

    /// An engine that continues from a saved state.
    pub fn from_state(settings: Settings, mut state: State) -> Engine {
        let n_rolling = settings.rolling.len();
        state.dedup.rebuild();
        state.waiting.rebuild();
        // The expiry index is not checkpointed: rebuilt from the open deals.
        state.expiry_index.clear();
        state.next_expiry = i64::MAX;
        apply::index_stalls(&settings, &mut state);
        apply::index_slas(&settings, &mut state);
        if let Some(age) = settings.max_open_age {
            for (k, d) in state.deals.iter().filter(|(_, d)| d.is_open()) {
                let day = d.seen.saturating_add(age).div_euclid(86_400_000) * 86_400_000;
                state.expiry_index.entry(day).or_default().push(*k);
                state.next_expiry = state.next_expiry.min(day);
            }
        }
        let absent_ids: Vec<(u32, Vec<Option<u32>>)> = settings
            .alerts
            .absent()
            .iter()
            .map(|w| {
                let rule = state.interner.intern(&w.name);
                let values = w.filter.iter().map(|(_, v)| state.interner.get(v));
                (rule, values.collect())
            })
            .collect();
        Engine {
            cur_type: 0,
            cur_time: None,
            absent_deadline: if absent_ids.is_empty() {
                i64::MAX
            } else {
                i64::MIN
            },
            absent_ids,
            settings,
            state,
            day_cache: Default::default(),
            sub_cache: vec![i64::MIN; n_rolling],
            external_clock: false,
            last_time: i64::MIN,
            next_close: i64::MIN,
            out: Vec::new(),
            boards: Vec::new(),
            notes: Vec::new(),
            evaluated: 0,
            track: None,
            merge: None,
            wall_limit: i64::MIN,
            unmatched: false,
            forecast_memo: Default::default(),
        }
    }

    pub fn from_config(c: &Config) -> Engine {
        Engine::new(Settings::from_config(c))
    }

    /// Watermark: event-time clock − allowed out-of-orderness. The clock
    /// is the newest event time, unless an external clock is set.
    pub fn watermark(&self) -> i64 {
        self.state
            .clock
            .saturating_sub(self.settings.out_of_orderness)
    }

    /// Lets the caller drive the event-time clock with [`Engine::advance_clock`]
    /// instead of every event moving it (per-partition watermarks: the
    /// clock is the slowest active partition, so a partition that is
    /// behind does not see its events rejected as late).
    pub fn set_external_clock(&mut self, on: bool) {
        self.external_clock = on;
    }

    /// Moves the event-time clock forward to `t` (never back), closing
    /// the windows the new watermark passes.
    pub fn advance_clock(&mut self, t: i64) {
        if t > self.state.clock {
            let before = self.cutoff();
            self.state.clock = t;
            self.on_time_advance(before);
        }
    }

    /// Events before this instant are late; windows ending at or before it are final.
    pub fn cutoff(&self) -> i64 {
        self.watermark().saturating_sub(self.settings.grace)
    }

    fn count_reject<T>(&mut self, r: Result<T, Reject>) -> Result<T, Reject> {
        if let Err(e) = &r {
            self.state.stats.rejected[e.reason as usize] += 1;
        }
        r
    }

    /// Decodes, validates and applies one CloudEvents JSON message.
    pub fn process_json(&mut self, bytes: &[u8]) -> Result<Outcome, Reject> {
        let r = json::decode(bytes).and_then(|e| {
            validate(&e)?;
            self.apply_inner(&e)
        });
        self.count_reject(r)
    }

    /// Decodes, validates and applies one protobuf `Event` message (no length prefix).
    pub fn process_protobuf(&mut self, bytes: &[u8]) -> Result<Outcome, Reject> {
        let r = proto::decode_message(bytes).and_then(|m| {
            let e = proto::to_event(&m)?;
            validate(&e)?;
            self.apply_inner(&e)
        });
        self.count_reject(r)
    }

    /// Decodes, validates and applies one binary-mode CloudEvent (Kafka
    /// `ce_*` headers + JSON `data`).
    pub fn process_binary(
        &mut self,
        attrs: &json::BinaryAttrs<'_>,
        data: &[u8],
    ) -> Result<Outcome, Reject> {
        let r = json::decode_binary(attrs, data).and_then(|e| {
            validate(&e)?;
            self.apply_inner(&e)
        });
        self.count_reject(r)
    }

    /// Event time of the last event that was counted or found a duplicate.
    pub fn last_event_time(&self) -> i64 {
        self.last_time
    }

    /// Applies an already validated event.
    pub fn apply(&mut self, e: &Event<'_>) -> Result<Outcome, Reject> {
        let r = self.apply_inner(e);
        self.count_reject(r)
    }

    /// Counts a rejection that happened outside the engine (e.g. a truncated frame).
    pub fn count_external_reject(&mut self, reason: RejectReason) {
        self.state.stats.rejected[reason as usize] += 1;
    }

    fn apply_inner(&mut self, e: &Event<'_>) -> Result<Outcome, Reject> {
        if let crate::event::Payload::SubjectErased(d) = &e.payload {
            // Never late, never a duplicate, moves no clock: an erasure
            // is done whenever it comes.
            self.state.stats.events_in[e.payload.event_type() as usize] += 1;
            self.erase(e.time, d);
            return Ok(Outcome::Counted);
        }
        let stage = self.check_stages(e)?;
        self.check_future(e.time)?;
        let h = self.settings.ids.event(&e.source, &e.id);
        self.last_time = e.time;
        if self.state.dedup.contains(h) {
            self.state.stats.duplicates[DUP_ID] += 1;
            return Ok(Outcome::Duplicate);
        }
        let cutoff = self.cutoff();
        if e.time < cutoff {
            return Err(Reject::new(
                RejectReason::Late,
                format!(
                    "event time {} is before the watermark minus grace ({}): its windows are closed",
                    format_time(e.time),
                    format_time(cutoff)
                ),
            ));
        }
        self.state.dedup.insert(h, e.time);
        self.state.stats.events_in[e.payload.event_type() as usize] += 1;
        if self.is_outlier(e.time) {
            self.hold_outlier(e);
            return Ok(Outcome::Counted);
        }
        Ok(self.admit(e, stage))
    }

    /// Counts an accepted event (entity state, aggregates), then moves
    /// the clock.
    fn admit(&mut self, e: &Event<'_>, stage: Option<u8>) -> Outcome {
        if e.time > self.state.clock {
            self.end_outlier_run();
        }
        self.absent_before(e.time);
        let counted = self.apply_counting(e, stage);
        if e.time > self.state.max_time {
            self.state.max_time = e.time;
        }
        if !self.external_clock {
            self.advance_clock(e.time);
        }
        if counted {
            Outcome::Counted
        } else {
            Outcome::Duplicate
        }
    }

    /// [`Engine::apply_payload`], counting a repeated transition.
    fn apply_counting(&mut self, e: &Event<'_>, stage: Option<u8>) -> bool {
        let counted = self.apply_payload(e, stage);
        if !counted {
            self.state.stats.duplicates[DUP_TRANSITION] += 1;
        }
        counted
    }

    /// `before`: the cutoff before the clock moved (windows ending after
    /// it are still open).
    fn on_time_advance(&mut self, before: i64) {
        // Events still waiting for their entity when they would be late
        // count now, with unknown dimensions, before their windows close.
        self.flush_waiting(self.cutoff());
        self.release_caught_up();
        // Deals that went stale expire before windows close, so that each
        // counts in the window of its deadline while that window is open.
        if let Some(age) = self.settings.max_open_age {
            // Passes are cheap (they visit the deals due) but not free:
            // at most twice per grace, and at least every 1/64 of the age.
            let step = (age / SWEEPS_PER_TTL)
                .min(self.settings.grace / 2)
                .max(60_000);
            let wm = self.watermark();
            if wm >= self.state.next_expiry && wm >= self.state.last_expiry.saturating_add(step) {
                self.state.last_expiry = wm;
                self.expire_deals(before);
            }
        }
        self.stall_deals();
        self.sla_pass(before);
        let cutoff = self.cutoff();
        // A source keeps closed windows until it has exported them.
        if cutoff >= self.next_close && self.track.is_none() {
            self.close_until(cutoff);
            self.evaluate_alerts();
        }
        // Relative to the clock, like lateness: an id is forgotten only
        // once an event that old would be late.
        let now = self.state.clock;
        // Dedup memory is a FIFO: expiring it is amortized O(1) per event.
        self.state.stats.dedup_evicted += self.state.dedup.expire(
            now.saturating_sub(self.settings.dedup_horizon),
            self.settings.dedup_max,
        );
        let every = (self.settings.entity_ttl / SWEEPS_PER_TTL).max(3_600_000);
        if now >= self.state.last_sweep.saturating_add(every) {
            self.state.last_sweep = now;
            self.sweep();
            if self.track.is_none() {
                self.retire_cohorts();
            } else {
                self.source_retire_cohorts();
            }
        }
    }

    /// Forgets entities past their TTL: leads, closed deals and cancelled
    /// customers with no event for `state.entity_ttl`. Open deals and
    /// active customers stay until they close (or expire by
    /// `pipeline.max_open_age`): the gauges are their sums.
    fn sweep(&mut self) {
        // The clock, not the newest event: with several partitions, one
        // that runs ahead must not expire entities a slower one still
        // has events for.
        let now = self.state.clock;
        let horizon = now.saturating_sub(self.settings.entity_ttl);
        let s = &mut self.state;
        let before = [s.leads.len(), s.deals.len(), s.customers.len()];
        let mut forgotten = Vec::new();
        s.leads.retain(|_, l| {
            let keep = l.seen >= horizon;
            if !keep && l.flags & (CONTACTED | CONVERTED) == 0 {
                forgotten.push(l.dims);
            }
            keep
        });
        s.deals.retain(|_, d| d.is_open() || d.seen >= horizon);
        s.customers
            .retain(|_, c| c.cancelled.is_none() || c.seen >= horizon);
        let customers = &s.customers;
        s.rfm.retain(|k, _| customers.contains_key(k));
        let after = [s.leads.len(), s.deals.len(), s.customers.len()];
        for i in 0..3 {
            s.stats.evicted[i] += (before[i] - after[i]) as u64;
        }
        s.stats.dedup_evicted += s.dedup.expire(
            now.saturating_sub(self.settings.dedup_horizon),
            self.settings.dedup_max,
        );
        for key in forgotten {
            self.sla_forget(0, key);
        }
    }

    /// Records produced since the last call. Alert rules have been
    /// evaluated on them; their notifications wait in [`Engine::take_notifications`].
    pub fn take_records(&mut self) -> Vec<KpiRecord> {
        self.evaluate_alerts();
        self.evaluated = 0;
        self.state.stats.records_out += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// Evaluates the alert rules on the records emitted since the last
    /// call, at the current event-time clock (so `for` and `renotify`
    /// count from when a window closed, not from when records were taken).
    pub(crate) fn evaluate_alerts(&mut self) {
        self.evaluate_absent(self.state.clock);
        if self.evaluated >= self.out.len() || self.settings.alerts.is_empty() {
            return;
        }
        let notes = self.settings.alerts.evaluate(
            &mut self.state.alerts,
            &self.out[self.evaluated..],
            self.state.clock,
        );
        self.evaluated = self.out.len();
        self.notes.extend(notes);
    }

    /// Leaderboards produced since the last call.
    pub fn take_leaderboards(&mut self) -> Vec<LeaderboardRecord> {
        std::mem::take(&mut self.boards)
    }

    /// Alert notifications made since the last call (by [`Engine::take_records`]).
    pub fn take_notifications(&mut self) -> Vec<crate::alert::Notification> {
        std::mem::take(&mut self.notes)
    }

    /// Number of remembered leads, deals and customers.
    pub fn entity_counts(&self) -> [usize; 3] {
        [
            self.state.leads.len(),
            self.state.deals.len(),
            self.state.customers.len(),
        ]
    }

    /// Number of open window buckets (calendar and rolling sub-buckets).
    pub fn bucket_count(&self) -> usize {
        self.state
            .calendar
            .iter()
            .map(|c| c.buckets.len())
            .sum::<usize>()
            + self
                .state
                .rolling
                .iter()
                .map(|r| r.buckets.len())
                .sum::<usize>()
    }
}
