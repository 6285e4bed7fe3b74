//! Window maths: calendar windows in an IANA time zone (DST-correct, ISO
//! weeks, fiscal quarters and years) and rolling windows made of fixed
//! sub-buckets. Pure functions, no state.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A calendar window kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalendarKind {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl CalendarKind {
    pub const ALL: [CalendarKind; 5] = [
        CalendarKind::Day,
        CalendarKind::Week,
        CalendarKind::Month,
        CalendarKind::Quarter,
        CalendarKind::Year,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarKind::Day => "day",
            CalendarKind::Week => "week",
            CalendarKind::Month => "month",
            CalendarKind::Quarter => "quarter",
            CalendarKind::Year => "year",
        }
    }
}

/// Calendar of the business: its time zone and the month its fiscal year starts in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calendar {
    pub tz: Tz,
    /// 1 = January (fiscal year = calendar year).
    pub fiscal_start: u32,
}

/// Bounds of one window, in milliseconds since the epoch, half-open `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bounds {
    pub start: i64,
    pub end: i64,
}

impl Bounds {
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// The two day windows looked up last, most recent first: most events
/// fall in the current day, and held events that count later (docs/time.md)
/// in an earlier one, so a single entry would miss at every switch.
#[derive(Debug, Clone, Copy, Default)]
pub struct DayCache([Option<Bounds>; 2]);

impl DayCache {
    /// The day window containing `t`, cached.
    pub fn day(&mut self, cal: &Calendar, t: i64) -> Bounds {
        match self.0 {
            [Some(b), _] if b.contains(t) => b,
            [a, Some(b)] if b.contains(t) => {
                self.0 = [Some(b), a];
                b
            }
            [a, _] => {
                let b = cal.bounds(CalendarKind::Day, t);
                self.0 = [Some(b), a];
                b
            }
        }
    }

    /// The day window containing `t` if it is cached, else computed
    /// without caching it (for lookups of past days that should not evict
    /// the current ones).
    pub fn peek(&self, cal: &Calendar, t: i64) -> Bounds {
        match self.0 {
            [Some(b), _] | [_, Some(b)] if b.contains(t) => b,
            _ => cal.bounds(CalendarKind::Day, t),
        }
    }
}

fn add_months(y: i32, m: u32, n: u32) -> (i32, u32) {
    let idx = y * 12 + (m as i32 - 1) + n as i32;
    (idx.div_euclid(12), (idx.rem_euclid(12) + 1) as u32)
}

impl Calendar {
    pub fn new(tz: Tz, fiscal_start: u32) -> Self {
        Calendar { tz, fiscal_start }
    }

    /// Local date of an instant.
    pub fn local_date(&self, t: i64) -> NaiveDate {
        self.tz.timestamp_millis_opt(t).unwrap().date_naive()
    }

    /// First instant of a local date: local midnight, or the first instant
    /// after a DST gap where midnight does not exist.
    pub fn day_start(&self, d: NaiveDate) -> i64 {
        let mut local = d.and_hms_opt(0, 0, 0).unwrap();
        for _ in 0..16 {
            match self.tz.from_local_datetime(&local) {
                LocalResult::Single(x) => return x.timestamp_millis(),
                LocalResult::Ambiguous(a, _) => return a.timestamp_millis(),
                LocalResult::None => local += Duration::minutes(15),
            }
        }
        // No zone has a gap longer than 4 hours at midnight.
        self.tz
            .from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .timestamp_millis()
    }

    fn first_day(&self, kind: CalendarKind, d: NaiveDate) -> NaiveDate {
        let (y, m) = (d.year(), d.month());
        match kind {
            CalendarKind::Day => d,
            CalendarKind::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
            CalendarKind::Month => NaiveDate::from_ymd_opt(y, m, 1).unwrap(),
            CalendarKind::Quarter => {
                let into_fy = (m + 12 - self.fiscal_start) % 12;
                let back = into_fy % 3;
                let (y, m) = add_months(y, m, 12 - back);
                NaiveDate::from_ymd_opt(y - 1, m, 1).unwrap()
            }
            CalendarKind::Year => {
                let y = if m >= self.fiscal_start { y } else { y - 1 };
                NaiveDate::from_ymd_opt(y, self.fiscal_start, 1).unwrap()
            }
        }
    }

    fn next_first_day(&self, kind: CalendarKind, first: NaiveDate) -> NaiveDate {
        let months = match kind {
            CalendarKind::Day => return first + Duration::days(1),
            CalendarKind::Week => return first + Duration::days(7),
            CalendarKind::Month => 1,
            CalendarKind::Quarter => 3,
            CalendarKind::Year => 12,
        };
        let (y, m) = add_months(first.year(), first.month(), months);
        NaiveDate::from_ymd_opt(y, m, 1).unwrap()
    }

    /// The window of `kind` that contains instant `t`.
    pub fn bounds(&self, kind: CalendarKind, t: i64) -> Bounds {
        let first = self.first_day(kind, self.local_date(t));
        Bounds {
            start: self.day_start(first),
            end: self.day_start(self.next_first_day(kind, first)),
        }
    }

    /// The window of `kind` just before the one starting at `start`.
    pub fn previous(&self, kind: CalendarKind, start: i64) -> Bounds {
        self.bounds(kind, start - 1)
    }

    /// Human label of the window starting at `start`: `2026-11-23`,
    /// `2026-W48`, `2026-11`, `2026-Q4` / `FY2027-Q1`, `2026` / `FY2027`.
    /// A fiscal year is named after the calendar year it ends in.
    pub fn label(&self, kind: CalendarKind, start: i64) -> String {
        let d = self.local_date(start);
        let fiscal = self.fiscal_start != 1;
        let fy = if fiscal { d.year() + 1 } else { d.year() };
        match kind {
            CalendarKind::Day => d.format("%Y-%m-%d").to_string(),
            CalendarKind::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            CalendarKind::Month => d.format("%Y-%m").to_string(),
            CalendarKind::Quarter => {
                let q = (d.month() + 12 - self.fiscal_start) % 12 / 3 + 1;
                // A fiscal quarter belongs to the fiscal year that started at or before it.
                let fy_start = self.first_day(CalendarKind::Year, d);
                if fiscal {
                    format!("FY{}-Q{q}", fy_start.year() + 1)
                } else {
                    format!("{}-Q{q}", d.year())
                }
            }
            CalendarKind::Year if fiscal => format!("FY{fy}"),
            CalendarKind::Year => format!("{}", d.year()),
        }
    }
}

/// Start of the rolling sub-bucket of width `width` that contains `t`.
pub fn sub_bucket(t: i64, width: i64) -> i64 {
    t - t.rem_euclid(width)
}

/// Whether `s` is a period label a quota can be set for (month, quarter or year).
pub fn is_period_label(s: &str) -> bool {
    let s = s
        .strip_prefix("FY")
        .map(|r| (r, true))
        .unwrap_or((s, false));
    let (body, fiscal) = s;
    let b = body.as_bytes();
    let year = |b: &[u8]| b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit);
    if !year(b) {
        return false;
    }
    match &b[4..] {
        [] => true,
        [b'-', b'Q', q] => (b'1'..=b'4').contains(q),
        [b'-', m1, m2] if !fiscal && m1.is_ascii_digit() && m2.is_ascii_digit() => {
            matches!((m1 - b'0') * 10 + (m2 - b'0'), 1..=12)
        }
        _ => false,
    }
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

/// Formats milliseconds since the epoch as RFC 3339 UTC (`2026-11-23T10:00:00Z`,
/// with milliseconds only when they are not zero).
pub fn format_time(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    if ms % 1000 == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}
