//! Bytes in, typed [`Event`]s or a precise rejection out.
//!
//! Both wire formats — CloudEvents JSON (structured mode) and the protobuf
//! envelope of `proto/` — decode into the same [`Event`], and then pass the
//! same [`validate`] checks. A rejection carries a [`RejectReason`] (a
//! bounded label for metrics) and a human-readable detail.

pub mod fast;
pub mod json;
pub mod proto;

use crate::event::{Event, Payload, MAX_AMOUNT, MAX_TIME_MS, MIN_TIME_MS};
use serde::Serialize;
use std::fmt;

/// Why an input was rejected. The string form is the `reason` label of
/// `salespulse_events_rejected_total` and the `reason` of dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not JSON at all, or not a JSON object.
    MalformedJson,
    /// Not a decodable protobuf `Event`.
    MalformedProtobuf,
    /// `specversion` other than `1.0`.
    UnsupportedSpecversion,
    /// A required CloudEvents attribute (`id`, `source`, `type`, `time`, `data`) is missing or empty.
    MissingAttribute,
    /// A `type` salespulse does not know.
    UnknownType,
    /// A required `data` field is missing.
    MissingField,
    /// A `data` field has the wrong JSON type.
    InvalidField,
    /// An enumerated field (`level`, `kind`, `category`, `period`…) has a value outside its set.
    InvalidValue,
    /// `time` is not RFC 3339.
    InvalidTime,
    /// `time` is before 1990 or after 2099.
    AbsurdTime,
    /// A money amount below zero.
    NegativeAmount,
    /// A money amount that is not finite or above 10¹³.
    AbsurdAmount,
    /// NPS outside 0–10.
    NpsOutOfRange,
    /// CSAT outside 1–5.
    CsatOutOfRange,
    /// A deal stage that is not in `pipeline.stages`.
    UnknownStage,
    /// Older than the watermark minus the grace period: its windows are closed.
    Late,
    /// A Kafka message whose `content-type` is neither CloudEvents JSON nor protobuf.
    UnsupportedContentType,
    /// Dated more than `time.max_future_skew` after the wall clock.
    Future,
}

impl RejectReason {
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::MalformedJson,
        RejectReason::MalformedProtobuf,
        RejectReason::UnsupportedSpecversion,
        RejectReason::MissingAttribute,
        RejectReason::UnknownType,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::InvalidValue,
        RejectReason::InvalidTime,
        RejectReason::AbsurdTime,
        RejectReason::NegativeAmount,
        RejectReason::AbsurdAmount,
        RejectReason::NpsOutOfRange,
        RejectReason::CsatOutOfRange,
        RejectReason::UnknownStage,
        RejectReason::Late,
        RejectReason::UnsupportedContentType,
        RejectReason::Future,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::MalformedProtobuf => "malformed_protobuf",
            RejectReason::UnsupportedSpecversion => "unsupported_specversion",
            RejectReason::MissingAttribute => "missing_attribute",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::UnsupportedContentType => "unsupported_content_type",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::InvalidTime => "invalid_time",
            RejectReason::AbsurdTime => "absurd_time",
            RejectReason::NegativeAmount => "negative_amount",
            RejectReason::AbsurdAmount => "absurd_amount",
            RejectReason::NpsOutOfRange => "nps_out_of_range",
            RejectReason::CsatOutOfRange => "csat_out_of_range",
            RejectReason::UnknownStage => "unknown_stage",
            RejectReason::Late => "late",
            RejectReason::Future => "future",
        }
    }
}

/// A rejected input: the reason label and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

impl Reject {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

/// Wire format of an input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One CloudEvents JSON object per line.
    Json,
    /// Length-delimited protobuf `salespulse.v1.Event` messages.
    Protobuf,
}

/// How a Kafka message carries its event (CloudEvents Kafka protocol binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The whole event in the value: CloudEvents JSON or the protobuf envelope.
    Structured(Format),
    /// Binary mode: attributes in `ce_*` headers, the value is the JSON `data`.
    BinaryJson,
}

/// Picks the wire format of a Kafka message from its `content-type`
/// header and whether it has a `ce_specversion` header (binary mode);
/// `default` applies to structured messages without a content type.
pub fn wire_of(content_type: Option<&str>, binary: bool, default: Format) -> Result<Wire, Reject> {
    let ct = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let unsupported = |c: &str| {
        Reject::new(
            RejectReason::UnsupportedContentType,
            format!(
                "content-type {c:?}{}: expected application/cloudevents+json, application/json or application/protobuf",
                if binary { " in binary mode (ce_* headers)" } else { "" }
            ),
        )
    };
    match (binary, ct.as_deref()) {
        (true, None | Some("application/json")) => Ok(Wire::BinaryJson),
        (true, Some(c)) if c.ends_with("+json") => Ok(Wire::BinaryJson),
        (true, Some(c)) => Err(unsupported(c)),
        (false, None | Some("")) => Ok(Wire::Structured(default)),
        (false, Some("application/cloudevents+json" | "application/json")) => {
            Ok(Wire::Structured(Format::Json))
        }
        (
            false,
            Some(
                "application/cloudevents+protobuf"
                | "application/protobuf"
                | "application/x-protobuf",
            ),
        ) => Ok(Wire::Structured(Format::Protobuf)),
        (false, Some(c)) => Err(unsupported(c)),
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch and checks it is plausible.
pub fn parse_time(s: &str) -> Result<i64, Reject> {
    if let Some(ms) = fast_time(s.as_bytes()) {
        return check_time(ms);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| Reject::new(RejectReason::InvalidTime, format!("time {s:?}: {e}")))?;
    check_time(t.timestamp_millis())
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)` with a year in
/// 1990–2099, parsed in a few dozen instructions (chrono's general
/// RFC 3339 parser costs several hundred, a twentieth of an event's
/// decoding). `None` for anything else (leap seconds, lower-case `t`,
/// other years, any doubt): chrono then parses it, or names the error.
fn fast_time(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_len = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1990..=2099).contains(&y) || d < 1 || d > month_len || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    // Fraction: milliseconds are its first three digits (truncated, as chrono does).
    let mut i = 19;
    let mut frac_ms = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        for k in 0..3 {
            frac_ms = frac_ms * 10
                + if k < digits {
                    i64::from(b[i + 1 + k] - b'0')
                } else {
                    0
                };
        }
        i += 1 + digits;
    }
    let offset_min = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (num(&[*oh1, *oh2])?, num(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    // Days from the civil date (H. Hinnant's days_from_civil).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy / 400;
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + frac_ms)
}

/// Checks that a timestamp lies between 1990 and 2099.
pub fn check_time(ms: i64) -> Result<i64, Reject> {
    if !(MIN_TIME_MS..MAX_TIME_MS).contains(&ms) {
        return Err(Reject::new(
            RejectReason::AbsurdTime,
            format!("time {ms} ms since epoch is outside 1990..2100"),
        ));
    }
    Ok(ms)
}

fn amount(field: &str, v: f64) -> Result<(), Reject> {
    if !v.is_finite() || v > MAX_AMOUNT {
        return Err(Reject::new(
            RejectReason::AbsurdAmount,
            format!("{field} = {v} is not a plausible amount"),
        ));
    }
    if v < 0.0 {
        return Err(Reject::new(
            RejectReason::NegativeAmount,
            format!("{field} = {v} is negative"),
        ));
    }
    Ok(())
}

/// An `expected_close` date: `YYYY-MM-DD` within the years events may carry.
pub fn close_date(v: Option<&str>) -> Result<Option<chrono::NaiveDate>, Reject> {
    let Some(v) = v else { return Ok(None) };
    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        Reject::new(
            RejectReason::InvalidValue,
            format!("expected_close {v:?} is not a date YYYY-MM-DD"),
        )
    })?;
    if !(1990..2100).contains(&chrono::Datelike::year(&d)) {
        return Err(Reject::new(
            RejectReason::AbsurdTime,
            format!("expected_close {v:?} is outside 1990..2100"),
        ));
    }
    Ok(Some(d))
}

fn non_empty(field: &str, v: &str) -> Result<(), Reject> {
    if v.is_empty() {
        return Err(Reject::new(
            RejectReason::MissingField,
            format!("{field} is empty"),
        ));
    }
    Ok(())
}

/// Range and consistency checks shared by every decoder. Stage names are
/// checked by the engine, which knows the configured pipeline.
pub fn validate(e: &Event<'_>) -> Result<(), Reject> {
    check_time(e.time)?;
    match &e.payload {
        Payload::LeadCreated(d) => {
            non_empty("lead_id", &d.lead_id)?;
            non_empty("channel", &d.channel)
        }
        Payload::LeadQualified(d) => non_empty("lead_id", &d.lead_id),
        Payload::LeadContacted(d) => {
            non_empty("lead_id", &d.lead_id)?;
            non_empty("rep", &d.rep)
        }
        Payload::LeadConverted(d) => non_empty("lead_id", &d.lead_id),
        Payload::DealCreated(d) => {
            non_empty("deal_id", &d.deal_id)?;
            non_empty("rep", &d.rep)?;
            amount("amount", d.amount)?;
            close_date(d.expected_close.as_deref()).map(drop)
        }
        Payload::DealStageChanged(d) => {
            non_empty("deal_id", &d.deal_id)?;
            if let Some(a) = d.amount {
                amount("amount", a)?;
            }
            close_date(d.expected_close.as_deref()).map(drop)
        }
        Payload::DealWon(d) | Payload::DealLost(d) => {
            non_empty("deal_id", &d.deal_id)?;
            amount("amount", d.amount)?;
            if let Some(a) = d.list_price {
                amount("list_price", a)?;
            }
            Ok(())
        }
        Payload::OrderPlaced(d) => {
            non_empty("order_id", &d.order_id)?;
            non_empty("customer_id", &d.customer_id)?;
            amount("amount", d.amount)
        }
        Payload::CustomerAcquired(d) => non_empty("customer_id", &d.customer_id),
        Payload::CustomerCancelled(d) => non_empty("customer_id", &d.customer_id),
        Payload::ActivityLogged(d) => non_empty("rep", &d.rep),
        Payload::SurveyAnswered(d) => {
            non_empty("customer_id", &d.customer_id)?;
            if !(0..=10).contains(&d.nps) {
                return Err(Reject::new(
                    RejectReason::NpsOutOfRange,
                    format!("nps = {} is outside 0..=10", d.nps),
                ));
            }
            if let Some(c) = d.csat {
                if !(1.0..=5.0).contains(&c) {
                    return Err(Reject::new(
                        RejectReason::CsatOutOfRange,
                        format!("csat = {c} is outside 1..=5"),
                    ));
                }
            }
            Ok(())
        }
        Payload::SpendRecorded(d) => {
            non_empty("channel", &d.channel)?;
            amount("amount", d.amount)
        }
        Payload::QuotaSet(d) => {
            non_empty("rep", &d.rep)?;
            amount("amount", d.amount)?;
            if !crate::window::is_period_label(&d.period) {
                return Err(Reject::new(
                    RejectReason::InvalidValue,
                    format!(
                        "period {:?} is not YYYY-MM, YYYY-Qn, YYYY, FYYYYY-Qn or FYYYYY",
                        d.period
                    ),
                ));
            }
            Ok(())
        }
        Payload::HeadcountSet(d) => {
            if d.count < 0 {
                return Err(Reject::new(
                    RejectReason::InvalidValue,
                    format!("count = {} is negative", d.count),
                ));
            }
            Ok(())
        }
        Payload::MarketSizeSet(d) => amount("amount", d.amount),
        Payload::SubjectErased(d) => {
            let ids = [&d.lead_id, &d.deal_id, &d.customer_id];
            if ids.iter().all(|v| v.as_deref().is_none_or(str::is_empty)) {
                return Err(Reject::new(
                    RejectReason::MissingField,
                    "an erasure names at least one of lead_id, deal_id, customer_id".to_string(),
                ));
            }
            Ok(())
        }
        Payload::CompetitorPriceObserved(d) => {
            non_empty("product", &d.product)?;
            non_empty("competitor", &d.competitor)?;
            amount("price", d.price)?;
            amount("our_price", d.our_price)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fast_time;
    use proptest::prelude::*;

    fn chrono_ms(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    #[test]
    fn fast_time_agrees_with_chrono_on_edge_cases() {
        for s in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.5Z",
            "2026-11-23T10:00:00.123456789Z",
            "2026-11-23T10:00:00.999+01:00",
            "2026-03-29T01:59:59-09:30",
            "2024-02-29T23:59:59Z",
            "2000-02-29T00:00:00Z",
            "1990-01-01T00:00:00+14:00",
            "2099-12-31T23:59:59.999-12:00",
        ] {
            assert_eq!(fast_time(s.as_bytes()), chrono_ms(s), "{s}");
        }
        // Not taken by the fast path (chrono decides): bad dates, leap
        // seconds, other shapes and years.
        for s in [
            "2025-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "2026-11-23t10:00:00Z",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00.1234567891Z",
            "2026-11-23T10:00:00+0100",
            "2026-11-23T10:00:00+24:00",
            "1989-12-31T23:59:59Z",
            "2026-11-23T10:00:00Zjunk",
            "+026-11-23T10:00:00Z",
        ] {
            assert_eq!(fast_time(s.as_bytes()), None, "{s}");
        }
    }

    proptest! {
        #[test]
        fn fast_time_equals_chrono(
            secs in 631_152_000i64..4_102_444_800,
            nanos in 0u32..1_000_000_000,
            digits in 0usize..10,
            offset in -(23 * 60 + 59)..(23 * 60 + 59i32),
        ) {
            let tz = chrono::FixedOffset::east_opt(offset * 60).unwrap();
            let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap().with_timezone(&tz);
            let frac = format!("{:09}", nanos);
            let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            if digits > 0 {
                s.push('.');
                s.push_str(&frac[..digits]);
            }
            if offset == 0 && nanos % 2 == 0 {
                s.push('Z');
            } else {
                s.push_str(&t.format("%:z").to_string());
            }
            prop_assert_eq!(fast_time(s.as_bytes()).or(chrono_ms(&s)), chrono_ms(&s), "{}", s);
            let year: i64 = s[..4].parse().unwrap();
            if (1990..=2099).contains(&year) {
                prop_assert!(fast_time(s.as_bytes()).is_some(), "{}", s);
            }
        }
    }
}
