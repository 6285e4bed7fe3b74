//! The protobuf envelope of `proto/salespulse/v1/events.proto`, to and
//! from the typed [`Event`]. Its payload `oneof` case is the event type.

use super::{check_time, Reject, RejectReason};
use crate::event::*;
use crate::pb;
use prost::Message;
use std::borrow::Cow;

fn s(v: &str) -> Cow<'_, str> {
    Cow::Borrowed(v)
}
fn os(v: &Option<String>) -> Option<Cow<'_, str>> {
    v.as_deref().map(Cow::Borrowed)
}
fn own(v: &str) -> String {
    v.to_string()
}
fn oown(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_ref().map(|c| c.to_string())
}

fn enum_value<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, Reject> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|e| Reject::new(RejectReason::InvalidValue, format!("{field}: {e}")))
}
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Decodes one protobuf `Event` message (without its length prefix).
pub fn decode_message(bytes: &[u8]) -> Result<pb::Event, Reject> {
    pb::Event::decode(bytes)
        .map_err(|e| Reject::new(RejectReason::MalformedProtobuf, e.to_string()))
}

/// Turns a decoded protobuf message into the typed model, borrowing its strings.
pub fn to_event(m: &pb::Event) -> Result<Event<'_>, Reject> {
    let time = attributes(m)?;
    let p = m.payload.as_ref().ok_or_else(|| {
        Reject::new(
            RejectReason::UnknownType,
            "no payload case set (unknown or missing event type)",
        )
    })?;
    Ok(Event {
        id: s(&m.id),
        source: s(&m.source),
        time,
        subject: os(&m.subject),
        payload: payload_of(p)?,
    })
}

/// Checks the CloudEvents attributes; the event time in milliseconds.
fn attributes(m: &pb::Event) -> Result<i64, Reject> {
    match m.specversion.as_str() {
        "1.0" => {}
        "" => {
            return Err(Reject::new(
                RejectReason::MissingAttribute,
                "attribute `specversion` is missing",
            ))
        }
        v => {
            return Err(Reject::new(
                RejectReason::UnsupportedSpecversion,
                format!("specversion {v:?}: only CloudEvents 1.0 is supported"),
            ))
        }
    }
    for (name, v) in [("id", &m.id), ("source", &m.source)] {
        if v.is_empty() {
            return Err(Reject::new(
                RejectReason::MissingAttribute,
                format!("attribute `{name}` is missing or empty"),
            ));
        }
    }
    let ts = m.time.as_ref().ok_or_else(|| {
        Reject::new(
            RejectReason::MissingAttribute,
            "attribute `time` is missing",
        )
    })?;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Reject::new(
            RejectReason::InvalidTime,
            format!("time nanos {} out of range", ts.nanos),
        ));
    }
    check_time(
        ts.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(ts.nanos / 1_000_000)),
    )
}

/// The typed payload of a message.
fn payload_of(p: &pb::event::Payload) -> Result<Payload<'_>, Reject> {
    use pb::event::Payload as P;
    Ok(match p {
        P::LeadCreated(d) => Payload::LeadCreated(LeadCreated {
            lead_id: s(&d.lead_id),
            channel: s(&d.channel),
            rep: os(&d.rep),
            campaign: os(&d.campaign),
            variant: os(&d.variant),
            team: os(&d.team),
            region: os(&d.region),
            segment: os(&d.segment),
        }),
        P::LeadQualified(d) => Payload::LeadQualified(LeadQualified {
            lead_id: s(&d.lead_id),
            level: enum_value("level", &d.level)?,
        }),
        P::LeadContacted(d) => Payload::LeadContacted(LeadContacted {
            lead_id: s(&d.lead_id),
            rep: s(&d.rep),
        }),
        P::LeadConverted(d) => Payload::LeadConverted(LeadConverted {
            lead_id: s(&d.lead_id),
            customer_id: os(&d.customer_id),
            deal_id: os(&d.deal_id),
        }),
        P::DealCreated(d) => Payload::DealCreated(DealCreated {
            deal_id: s(&d.deal_id),
            rep: s(&d.rep),
            amount: d.amount,
            stage: s(&d.stage),
            channel: os(&d.channel),
            product: os(&d.product),
            lead_id: os(&d.lead_id),
            team: os(&d.team),
            region: os(&d.region),
            campaign: os(&d.campaign),
            variant: os(&d.variant),
            segment: os(&d.segment),
            expected_close: os(&d.expected_close),
        }),
        P::DealStageChanged(d) => Payload::DealStageChanged(DealStageChanged {
            deal_id: s(&d.deal_id),
            from: s(&d.from),
            to: s(&d.to),
            amount: d.amount,
            expected_close: os(&d.expected_close),
        }),
        P::DealWon(d) => Payload::DealWon(closed_from(d)),
        P::DealLost(d) => Payload::DealLost(closed_from(d)),
        P::OrderPlaced(d) => Payload::OrderPlaced(OrderPlaced {
            order_id: s(&d.order_id),
            customer_id: s(&d.customer_id),
            amount: d.amount,
            kind: enum_value("kind", &d.kind)?,
        }),
        P::CustomerAcquired(d) => Payload::CustomerAcquired(CustomerAcquired {
            customer_id: s(&d.customer_id),
            channel: os(&d.channel),
            segment: os(&d.segment),
        }),
        P::CustomerCancelled(d) => Payload::CustomerCancelled(CustomerCancelled {
            customer_id: s(&d.customer_id),
            reason: os(&d.reason),
        }),
        P::ActivityLogged(d) => Payload::ActivityLogged(ActivityLogged {
            rep: s(&d.rep),
            kind: enum_value("kind", &d.kind)?,
            lead_id: os(&d.lead_id),
            deal_id: os(&d.deal_id),
        }),
        P::SurveyAnswered(d) => Payload::SurveyAnswered(SurveyAnswered {
            customer_id: s(&d.customer_id),
            nps: i64::from(d.nps),
            csat: d.csat,
        }),
        P::SpendRecorded(d) => Payload::SpendRecorded(SpendRecorded {
            channel: s(&d.channel),
            amount: d.amount,
            category: enum_value("category", &d.category)?,
        }),
        P::QuotaSet(d) => Payload::QuotaSet(QuotaSet {
            rep: s(&d.rep),
            period: s(&d.period),
            amount: d.amount,
        }),
        P::HeadcountSet(d) => Payload::HeadcountSet(HeadcountSet {
            count: i64::from(d.count),
            team: os(&d.team),
        }),
        P::CompetitorPriceObserved(d) => {
            Payload::CompetitorPriceObserved(CompetitorPriceObserved {
                product: s(&d.product),
                competitor: s(&d.competitor),
                price: d.price,
                our_price: d.our_price,
            })
        }
        P::MarketSizeSet(d) => Payload::MarketSizeSet(MarketSizeSet {
            amount: d.amount,
            product: os(&d.product),
        }),
        P::SubjectErased(d) => Payload::SubjectErased(crate::event::SubjectErased {
            lead_id: os(&d.lead_id),
            deal_id: os(&d.deal_id),
            customer_id: os(&d.customer_id),
        }),
    })
}

fn closed_from(d: &pb::DealClosed) -> DealClosed<'_> {
    DealClosed {
        deal_id: s(&d.deal_id),
        amount: d.amount,
        list_price: d.list_price,
        competitor: os(&d.competitor),
        reason: os(&d.reason),
        rep: os(&d.rep),
        channel: os(&d.channel),
        product: os(&d.product),
        team: os(&d.team),
        region: os(&d.region),
    }
}

fn closed_to(d: &DealClosed<'_>) -> pb::DealClosed {
    pb::DealClosed {
        deal_id: own(&d.deal_id),
        amount: d.amount,
        list_price: d.list_price,
        competitor: oown(&d.competitor),
        reason: oown(&d.reason),
        rep: oown(&d.rep),
        channel: oown(&d.channel),
        product: oown(&d.product),
        team: oown(&d.team),
        region: oown(&d.region),
    }
}

/// Builds the protobuf message of an event.
pub fn from_event(e: &Event<'_>) -> pb::Event {
    use pb::event::Payload as P;
    let payload = match &e.payload {
        Payload::LeadCreated(d) => P::LeadCreated(pb::LeadCreated {
            lead_id: own(&d.lead_id),
            channel: own(&d.channel),
            rep: oown(&d.rep),
            campaign: oown(&d.campaign),
            variant: oown(&d.variant),
            team: oown(&d.team),
            region: oown(&d.region),
            segment: oown(&d.segment),
        }),
        Payload::LeadQualified(d) => P::LeadQualified(pb::LeadQualified {
            lead_id: own(&d.lead_id),
            level: enum_name(&d.level),
        }),
        Payload::LeadContacted(d) => P::LeadContacted(pb::LeadContacted {
            lead_id: own(&d.lead_id),
            rep: own(&d.rep),
        }),
        Payload::LeadConverted(d) => P::LeadConverted(pb::LeadConverted {
            lead_id: own(&d.lead_id),
            customer_id: oown(&d.customer_id),
            deal_id: oown(&d.deal_id),
        }),
        Payload::DealCreated(d) => P::DealCreated(pb::DealCreated {
            deal_id: own(&d.deal_id),
            rep: own(&d.rep),
            amount: d.amount,
            stage: own(&d.stage),
            channel: oown(&d.channel),
            product: oown(&d.product),
            lead_id: oown(&d.lead_id),
            team: oown(&d.team),
            region: oown(&d.region),
            campaign: oown(&d.campaign),
            variant: oown(&d.variant),
            segment: oown(&d.segment),
            expected_close: oown(&d.expected_close),
        }),
        Payload::DealStageChanged(d) => P::DealStageChanged(pb::DealStageChanged {
            deal_id: own(&d.deal_id),
            from: own(&d.from),
            to: own(&d.to),
            amount: d.amount,
            expected_close: oown(&d.expected_close),
        }),
        Payload::DealWon(d) => P::DealWon(closed_to(d)),
        Payload::DealLost(d) => P::DealLost(closed_to(d)),
        Payload::OrderPlaced(d) => P::OrderPlaced(pb::OrderPlaced {
            order_id: own(&d.order_id),
            customer_id: own(&d.customer_id),
            amount: d.amount,
            kind: enum_name(&d.kind),
        }),
        Payload::CustomerAcquired(d) => P::CustomerAcquired(pb::CustomerAcquired {
            customer_id: own(&d.customer_id),
            channel: oown(&d.channel),
            segment: oown(&d.segment),
        }),
        Payload::CustomerCancelled(d) => P::CustomerCancelled(pb::CustomerCancelled {
            customer_id: own(&d.customer_id),
            reason: oown(&d.reason),
        }),
        Payload::ActivityLogged(d) => P::ActivityLogged(pb::ActivityLogged {
            rep: own(&d.rep),
            kind: enum_name(&d.kind),
            lead_id: oown(&d.lead_id),
            deal_id: oown(&d.deal_id),
        }),
        Payload::SurveyAnswered(d) => P::SurveyAnswered(pb::SurveyAnswered {
            customer_id: own(&d.customer_id),
            nps: u32::try_from(d.nps).unwrap_or(u32::MAX),
            csat: d.csat,
        }),
        Payload::SpendRecorded(d) => P::SpendRecorded(pb::SpendRecorded {
            channel: own(&d.channel),
            amount: d.amount,
            category: enum_name(&d.category),
        }),
        Payload::QuotaSet(d) => P::QuotaSet(pb::QuotaSet {
            rep: own(&d.rep),
            period: own(&d.period),
            amount: d.amount,
        }),
        Payload::HeadcountSet(d) => P::HeadcountSet(pb::HeadcountSet {
            count: u32::try_from(d.count).unwrap_or(u32::MAX),
            team: oown(&d.team),
        }),
        Payload::CompetitorPriceObserved(d) => {
            P::CompetitorPriceObserved(pb::CompetitorPriceObserved {
                product: own(&d.product),
                competitor: own(&d.competitor),
                price: d.price,
                our_price: d.our_price,
            })
        }
        Payload::MarketSizeSet(d) => P::MarketSizeSet(pb::MarketSizeSet {
            amount: d.amount,
            product: oown(&d.product),
        }),
        Payload::SubjectErased(d) => P::SubjectErased(pb::SubjectErased {
            lead_id: oown(&d.lead_id),
            deal_id: oown(&d.deal_id),
            customer_id: oown(&d.customer_id),
        }),
    };
    pb::Event {
        specversion: "1.0".into(),
        id: own(&e.id),
        source: own(&e.source),
        time: Some(prost_types::Timestamp {
            seconds: e.time.div_euclid(1000),
            nanos: (e.time.rem_euclid(1000) * 1_000_000) as i32,
        }),
        subject: oown(&e.subject),
        payload: Some(payload),
    }
}

/// Encodes an event as one length-delimited protobuf message.
pub fn encode_delimited(e: &Event<'_>) -> Vec<u8> {
    from_event(e).encode_length_delimited_to_vec()
}

/// Splits a buffer of length-delimited messages; the last item is an error
/// if the buffer ends inside a message.
pub fn split_delimited(mut buf: &[u8]) -> impl Iterator<Item = Result<&[u8], Reject>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let mut cursor = buf;
        let len = match prost::encoding::decode_varint(&mut cursor) {
            Ok(l) => l as usize,
            Err(e) => {
                buf = &[];
                return Some(Err(Reject::new(
                    RejectReason::MalformedProtobuf,
                    format!("length prefix: {e}"),
                )));
            }
        };
        if cursor.len() < len {
            let rest = cursor.len();
            buf = &[];
            return Some(Err(Reject::new(
                RejectReason::MalformedProtobuf,
                format!("truncated message: length prefix says {len} bytes, {rest} left"),
            )));
        }
        let (msg, rest) = cursor.split_at(len);
        buf = rest;
        Some(Ok(msg))
    })
}
