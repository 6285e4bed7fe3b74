//! `[sla]`: service levels the engine times (docs/kpis.md, "Health timers").

use super::{ConfigError, Dur};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// A lead not contacted within this long after its creation breaches
    /// the speed-to-lead SLA (`first_contact_sla_*`); `0s` = off.
    pub first_contact: Dur,
    /// Count only working time toward `first_contact`, e.g.
    /// `"09:00-18:00"` (in `time.zone`); empty = around the clock.
    pub working_hours: String,
    /// The working days of `working_hours` (`mon` … `sun`).
    pub working_days: Vec<String>,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            first_contact: Dur::from_str_static("1h"),
            working_hours: String::new(),
            working_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Working time of the SLA clock: minutes of the day `[start, end)` on the
/// weekdays set in `days` (bit 0 = Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHours {
    pub start_min: u32,
    pub end_min: u32,
    pub days: u8,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl SlaConfig {
    /// The parsed `working_hours` and `working_days`; `None` = around the clock.
    pub fn working(&self) -> Result<Option<WorkingHours>, String> {
        if self.working_hours.trim().is_empty() {
            return Ok(None);
        }
        let (a, b) = self
            .working_hours
            .split_once('-')
            .ok_or("not of the form HH:MM-HH:MM")?;
        let (start_min, end_min) = match (minutes(a), minutes(b)) {
            (Some(a), Some(b)) if a < b => (a, b),
            _ => return Err("not of the form HH:MM-HH:MM with the start before the end".into()),
        };
        let mut days = 0u8;
        for d in &self.working_days {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d.trim()))
                .ok_or_else(|| format!("{d:?} is not a day"))?;
            days |= 1 << i;
        }
        if days == 0 {
            return Err("no working day".into());
        }
        Ok(Some(WorkingHours {
            start_min,
            end_min,
            days,
        }))
    }

    pub fn validate(&self, errs: &mut Vec<ConfigError>) {
        if let Err(problem) = self.working() {
            let field = if problem.contains("day") {
                "sla.working_days"
            } else {
                "sla.working_hours"
            };
            errs.push(ConfigError {
                field: field.into(),
                problem,
                fix: "write e.g. working_hours = \"09:00-18:00\" and working_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]".into(),
            });
        }
    }
}
