//! CloudEvents 1.0 JSON, structured mode: `{"specversion":"1.0","id":…,
//! "source":…,"type":…,"time":…,"data":{…}}`.
//!
//! The envelope is read first with `data` kept as a raw slice (the
//! attributes may come in any order), then `data` is decoded into the
//! typed payload of its `type`. Strings borrow from the input.

use super::{parse_time, Reject, RejectReason};
use crate::event::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    specversion: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

fn attr<'a>(name: &str, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, Reject> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Reject::new(
            RejectReason::MissingAttribute,
            format!("attribute `{name}` is missing or empty"),
        )),
    }
}

/// Sorts a serde_json error on `data` into a rejection reason.
fn data_error(ty: &str, e: serde_json::Error) -> Reject {
    let msg = e.to_string();
    let reason = if msg.starts_with("missing field") {
        RejectReason::MissingField
    } else if msg.starts_with("unknown variant") {
        RejectReason::InvalidValue
    } else if e.is_syntax() || e.is_eof() {
        RejectReason::MalformedJson
    } else {
        RejectReason::InvalidField
    };
    Reject::new(reason, format!("{ty} data: {msg}"))
}

fn payload<'a, T: Deserialize<'a>>(ty: &str, data: &'a RawValue) -> Result<T, Reject> {
    serde_json::from_str(data.get()).map_err(|e| data_error(ty, e))
}

/// Decodes one structured-mode CloudEvent (not yet range-validated: see
/// [`super::validate`]).
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, Reject> {
    let env: Envelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Reject::new(RejectReason::MalformedJson, e.to_string()))?;
    match env.specversion.as_deref() {
        Some("1.0") => {}
        None => {
            return Err(Reject::new(
                RejectReason::MissingAttribute,
                "attribute `specversion` is missing",
            ))
        }
        Some(v) => {
            return Err(Reject::new(
                RejectReason::UnsupportedSpecversion,
                format!("specversion {v:?}: only CloudEvents 1.0 is supported"),
            ))
        }
    }
    let id = attr("id", env.id)?;
    let source = attr("source", env.source)?;
    let ty = attr("type", env.ty)?;
    let time = attr("time", env.time)?;
    let ety = EventType::parse(&ty).ok_or_else(|| {
        Reject::new(
            RejectReason::UnknownType,
            format!("type {ty:?} is not a salespulse event type"),
        )
    })?;
    let time = parse_time(&time)?;
    let data = env.data.ok_or_else(|| {
        Reject::new(
            RejectReason::MissingAttribute,
            "attribute `data` is missing",
        )
    })?;
    decode_raw(ety, data).map(|payload| Event {
        id,
        source,
        time,
        subject: env.subject,
        payload,
    })
}

/// Decodes the `data` of an event whose type is already known (binary
/// mode carries it in a header; structured mode in the envelope).
pub fn decode_data(ety: EventType, data: &[u8]) -> Result<Payload<'_>, Reject> {
    let raw: &RawValue = serde_json::from_slice(data)
        .map_err(|e| Reject::new(RejectReason::MalformedJson, format!("data: {e}")))?;
    decode_raw(ety, raw)
}

fn decode_raw(ety: EventType, raw: &RawValue) -> Result<Payload<'_>, Reject> {
    let t = ety.as_str();
    Ok(match ety {
        EventType::LeadCreated => Payload::LeadCreated(payload(t, raw)?),
        EventType::LeadQualified => Payload::LeadQualified(payload(t, raw)?),
        EventType::LeadContacted => Payload::LeadContacted(payload(t, raw)?),
        EventType::LeadConverted => Payload::LeadConverted(payload(t, raw)?),
        EventType::DealCreated => Payload::DealCreated(payload(t, raw)?),
        EventType::DealStageChanged => Payload::DealStageChanged(payload(t, raw)?),
        EventType::DealWon => Payload::DealWon(payload(t, raw)?),
        EventType::DealLost => Payload::DealLost(payload(t, raw)?),
        EventType::OrderPlaced => Payload::OrderPlaced(payload(t, raw)?),
        EventType::CustomerAcquired => Payload::CustomerAcquired(payload(t, raw)?),
        EventType::CustomerCancelled => Payload::CustomerCancelled(payload(t, raw)?),
        EventType::ActivityLogged => Payload::ActivityLogged(payload(t, raw)?),
        EventType::SurveyAnswered => Payload::SurveyAnswered(payload(t, raw)?),
        EventType::SpendRecorded => Payload::SpendRecorded(payload(t, raw)?),
        EventType::QuotaSet => Payload::QuotaSet(payload(t, raw)?),
        EventType::HeadcountSet => Payload::HeadcountSet(payload(t, raw)?),
        EventType::CompetitorPriceObserved => Payload::CompetitorPriceObserved(payload(t, raw)?),
    })
}

#[derive(Serialize)]
struct OutEnvelope<'e, 'a> {
    specversion: &'static str,
    id: &'e str,
    source: &'e str,
    #[serde(rename = "type")]
    ty: &'static str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'e str>,
    datacontenttype: &'static str,
    data: &'e Payload<'a>,
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

/// Encodes an event as a structured-mode CloudEvent (one line, no newline).
pub fn encode(e: &Event<'_>) -> String {
    serde_json::to_string(&OutEnvelope {
        specversion: "1.0",
        id: &e.id,
        source: &e.source,
        ty: e.payload.event_type().as_str(),
        time: format_time(e.time),
        subject: e.subject.as_deref(),
        datacontenttype: "application/json",
        data: &e.payload,
    })
    .expect("events serialize")
}
