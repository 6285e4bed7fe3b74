//! CloudEvents 1.0 JSON, structured mode: `{"specversion":"1.0","id":…,
//! "source":…,"type":…,"time":…,"data":{…}}`.
//!
//! The envelope is read first with `data` kept as a raw slice (the
//! attributes may come in any order), then `data` is decoded into the
//! typed payload of its `type`. Strings borrow from the input.

use super::fast;
use super::{parse_time, Reject, RejectReason};
use crate::event::*;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "opt_str")]
    specversion: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str", rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

/// `data` as it was read: typed when `type` came before it (one pass over
/// the input), else kept raw and decoded once the type is known. Not
/// boxed: the typed variant is the common one, and a box would cost an
/// allocation per event.
#[allow(clippy::large_enum_variant)]
enum Data<'a> {
    Typed(Payload<'a>),
    Raw(&'a RawValue),
}

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&RawValue>::deserialize(d).map(Data::Raw)
    }
}

/// The envelope through [`FastEnvelope`], from any deserializer.
struct EnvelopeSeed;

impl<'de> DeserializeSeed<'de> for EnvelopeSeed {
    type Value = Envelope<'de>;
    #[inline(always)]
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Envelope<'de>, D::Error> {
        d.deserialize_map(FastEnvelope)
    }
}

/// The fast path: the envelope's attributes in one pass, with `data`
/// decoded straight into its payload when `type` precedes it (as every
/// producer we know writes it). Any error makes [`decode`] start over on
/// the slow path, which names the precise reason.
struct FastEnvelope;

impl<'de> Visitor<'de> for FastEnvelope {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a CloudEvent object")
    }

    #[inline(always)]
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        #[derive(Deserialize)]
        struct S<'a>(#[serde(borrow, deserialize_with = "opt_str")] Option<Cow<'a, str>>);
        let mut env = Envelope {
            specversion: None,
            id: None,
            source: None,
            ty: None,
            time: None,
            subject: None,
            data: None,
        };
        let mut seen = 0u8;
        while let Some(key) = map.next_key::<&'de str>()? {
            let (bit, slot) = match key {
                "specversion" => (1, &mut env.specversion),
                "id" => (2, &mut env.id),
                "source" => (4, &mut env.source),
                "type" => (8, &mut env.ty),
                "time" => (16, &mut env.time),
                "subject" => (32, &mut env.subject),
                "data" => {
                    if seen & 64 != 0 {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    seen |= 64;
                    let ety = env.ty.as_deref().and_then(EventType::parse);
                    env.data = Some(match ety {
                        Some(ety) => Data::Typed(map.next_value_seed(PayloadSeed(ety))?),
                        None => Data::Raw(map.next_value()?),
                    });
                    continue;
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            if seen & bit != 0 {
                return Err(de::Error::custom("duplicate attribute"));
            }
            seen |= bit;
            *slot = map.next_value::<S<'de>>()?.0;
        }
        Ok(env)
    }
}

struct PayloadSeed(EventType);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Payload<'de>, D::Error> {
        payload_from(self.0, d)
    }
}

fn attr<'a>(prefix: &str, name: &str, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, Reject> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Reject::new(
            RejectReason::MissingAttribute,
            format!("attribute `{prefix}{name}` is missing or empty"),
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

/// Decodes one structured-mode CloudEvent (not yet range-validated: see
/// [`super::validate`]).
#[inline]
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, Reject> {
    // UTF-8 is checked once for the whole message, not string by string.
    // Early returns rather than nested `Result`s: an event is a few
    // hundred bytes, and every layer it is returned through copies it.
    //
    // Three tries, each only when the one before gave up: the lean reader
    // of [`fast`] (plain strings, the common shape), serde_json in one
    // pass (escapes, any number), serde_json with `data` kept raw until
    // the type is known (`data` before `type`), which also names the
    // precise reason of a rejection. JSON is UTF-8 (RFC 8259): checked
    // first, as serde_json would let invalid bytes through in members it
    // skips.
    let text = utf8(bytes)?;
    if let Ok(env) = fast::Reader::new(text).whole(EnvelopeSeed) {
        return event(env);
    }
    strict(text)?;
    let mut de = serde_json::Deserializer::from_str(text);
    if let Ok(env) = EnvelopeSeed.deserialize(&mut de) {
        if de.end().is_ok() {
            return event(env);
        }
    }
    decode_serde_json(bytes)
}

/// `bytes` as text, or a `malformed_json` rejection saying where it is
/// not UTF-8 (serde_json lets invalid bytes through in the members it
/// skips: found by the fuzz campaign).
fn utf8(bytes: &[u8]) -> Result<&str, Reject> {
    std::str::from_utf8(bytes).map_err(|e| {
        Reject::new(
            RejectReason::MalformedJson,
            format!("not UTF-8: {e} (JSON text is UTF-8)"),
        )
    })
}

/// Refuses text serde_json refuses as a whole document: it lets through,
/// in the members a typed read skips, half a surrogate pair (`"\ud800"`)
/// and numbers out of an f64's range (found by the fuzz campaign). The
/// lean reader refuses both (it gives up on escapes and non-finite
/// numbers), so only the serde_json paths need this.
fn strict(text: &str) -> Result<(), Reject> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| Reject::new(RejectReason::MalformedJson, e.to_string()))
}

/// [`decode`] without the lean reader: serde_json alone. Public for the
/// differential fuzz campaign (`examples/fuzz.rs`), which checks that
/// [`decode`] never accepts what this refuses.
pub fn decode_serde_json(bytes: &[u8]) -> Result<Event<'_>, Reject> {
    let text = utf8(bytes)?;
    strict(text)?;
    let env = serde_json::from_str(text)
        .map_err(|e| Reject::new(RejectReason::MalformedJson, e.to_string()))?;
    event(env)
}

/// The event of a decoded envelope, once its attributes are checked.
#[inline(always)]
fn event(env: Envelope<'_>) -> Result<Event<'_>, Reject> {
    let (id, source, ety, time) = required(
        "",
        env.specversion.as_deref(),
        env.id,
        env.source,
        env.ty,
        env.time,
    )?;
    let payload = match env.data {
        Some(Data::Typed(p)) => p,
        Some(Data::Raw(raw)) => decode_raw(ety, raw)?,
        None => {
            return Err(Reject::new(
                RejectReason::MissingAttribute,
                "attribute `data` is missing",
            ))
        }
    };
    Ok(Event {
        id,
        source,
        time,
        subject: env.subject,
        payload,
    })
}

/// CloudEvents attributes of a binary-mode message (Kafka `ce_*` headers).
#[derive(Debug, Clone, Copy, Default)]
pub struct BinaryAttrs<'a> {
    pub specversion: Option<&'a str>,
    pub id: Option<&'a str>,
    pub source: Option<&'a str>,
    pub ty: Option<&'a str>,
    pub time: Option<&'a str>,
    pub subject: Option<&'a str>,
}

/// Decodes a binary-mode CloudEvent: attributes from headers, `data` =
/// the message value (JSON). Same checks and reasons as [`decode`].
pub fn decode_binary<'a>(a: &BinaryAttrs<'a>, data: &'a [u8]) -> Result<Event<'a>, Reject> {
    let b = |v: Option<&'a str>| v.map(Cow::Borrowed);
    let (id, source, ety, time) = required(
        "ce_",
        a.specversion,
        b(a.id),
        b(a.source),
        b(a.ty),
        b(a.time),
    )?;
    Ok(Event {
        id,
        source,
        time,
        subject: b(a.subject),
        payload: decode_data(ety, data)?,
    })
}

/// The required attributes, checked alike in structured and binary mode
/// (`prefix` names them as the input does: `ce_` for Kafka headers):
/// specversion 1.0, non-empty id, source, type and time, a known type,
/// a plausible RFC 3339 time.
#[allow(clippy::type_complexity)]
fn required<'a>(
    prefix: &str,
    specversion: Option<&str>,
    id: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    ty: Option<Cow<'a, str>>,
    time: Option<Cow<'a, str>>,
) -> Result<(Cow<'a, str>, Cow<'a, str>, EventType, i64), Reject> {
    match specversion {
        Some("1.0") => {}
        None => {
            return Err(Reject::new(
                RejectReason::MissingAttribute,
                format!("attribute `{prefix}specversion` is missing"),
            ))
        }
        Some(v) => {
            return Err(Reject::new(
                RejectReason::UnsupportedSpecversion,
                format!("specversion {v:?}: only CloudEvents 1.0 is supported"),
            ))
        }
    }
    let id = attr(prefix, "id", id)?;
    let source = attr(prefix, "source", source)?;
    let ty = attr(prefix, "type", ty)?;
    let time = attr(prefix, "time", time)?;
    let ety = EventType::parse(&ty).ok_or_else(|| {
        Reject::new(
            RejectReason::UnknownType,
            format!("type {ty:?} is not a salespulse event type"),
        )
    })?;
    Ok((id, source, ety, parse_time(&time)?))
}

/// Decodes the `data` of an event whose type is already known (binary
/// mode carries it in a header; structured mode in the envelope).
pub fn decode_data(ety: EventType, data: &[u8]) -> Result<Payload<'_>, Reject> {
    let text = utf8(data).map_err(|r| Reject::new(r.reason, format!("data: {}", r.detail)))?;
    if let Ok(p) = fast::Reader::new(text).whole(PayloadSeed(ety)) {
        return Ok(p);
    }
    strict(text).map_err(|r| Reject::new(r.reason, format!("data: {}", r.detail)))?;
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| Reject::new(RejectReason::MalformedJson, format!("data: {e}")))?;
    decode_raw(ety, raw)
}

fn decode_raw(ety: EventType, raw: &RawValue) -> Result<Payload<'_>, Reject> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    payload_from(ety, &mut de).map_err(|e| data_error(ety.as_str(), e))
}

/// The typed payload of `ety` from any deserializer.
fn payload_from<'de, D: serde::Deserializer<'de>>(
    ety: EventType,
    de: D,
) -> Result<Payload<'de>, D::Error> {
    use EventType as T;
    Ok(match ety {
        T::LeadCreated => Payload::LeadCreated(Deserialize::deserialize(de)?),
        T::LeadQualified => Payload::LeadQualified(Deserialize::deserialize(de)?),
        T::LeadContacted => Payload::LeadContacted(Deserialize::deserialize(de)?),
        T::LeadConverted => Payload::LeadConverted(Deserialize::deserialize(de)?),
        T::DealCreated => Payload::DealCreated(Deserialize::deserialize(de)?),
        T::DealStageChanged => Payload::DealStageChanged(Deserialize::deserialize(de)?),
        T::DealWon => Payload::DealWon(Deserialize::deserialize(de)?),
        T::DealLost => Payload::DealLost(Deserialize::deserialize(de)?),
        T::OrderPlaced => Payload::OrderPlaced(Deserialize::deserialize(de)?),
        T::CustomerAcquired => Payload::CustomerAcquired(Deserialize::deserialize(de)?),
        T::CustomerCancelled => Payload::CustomerCancelled(Deserialize::deserialize(de)?),
        T::ActivityLogged => Payload::ActivityLogged(Deserialize::deserialize(de)?),
        T::SurveyAnswered => Payload::SurveyAnswered(Deserialize::deserialize(de)?),
        T::SpendRecorded => Payload::SpendRecorded(Deserialize::deserialize(de)?),
        T::QuotaSet => Payload::QuotaSet(Deserialize::deserialize(de)?),
        T::HeadcountSet => Payload::HeadcountSet(Deserialize::deserialize(de)?),
        T::CompetitorPriceObserved => {
            Payload::CompetitorPriceObserved(Deserialize::deserialize(de)?)
        }
        T::MarketSizeSet => Payload::MarketSizeSet(Deserialize::deserialize(de)?),
        T::SubjectErased => Payload::SubjectErased(Deserialize::deserialize(de)?),
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

pub use crate::window::format_time;

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

#[cfg(test)]
mod tests {
    //! The lean reader of [`fast`] must give exactly what serde_json gives:
    //! the same event where it succeeds, and where it gives up, serde_json
    //! decides (the same event or the same rejection).
    use super::*;
    use crate::demo::generator::{GenConfig, Generator, DEFAULT_START};
    use proptest::prelude::*;

    fn lines(n: usize) -> Vec<String> {
        Generator::new(GenConfig {
            seed: 7,
            start: DEFAULT_START,
            events_per_day: 2000,
            reps: 12,
        })
        .take(n)
        .map(|e| encode(&e))
        .collect()
    }

    /// Whether the lean reader alone decodes `line`.
    fn fast_takes(line: &str) -> bool {
        fast::Reader::new(line).whole(EnvelopeSeed).is_ok()
    }

    #[test]
    fn generated_events_of_every_type_take_the_fast_path_and_equal_serde_json() {
        let lines = lines(60_000);
        let mut types = std::collections::HashSet::new();
        for l in &lines {
            assert!(fast_takes(l), "fast path refused {l}");
            let e = decode(l.as_bytes()).unwrap();
            assert_eq!(Ok(&e), decode_serde_json(l.as_bytes()).as_ref(), "{l}");
            types.insert(e.payload.event_type());
        }
        // Every type but the market size (a yearly event of the
        // generator) and erasures (not a generator event: below).
        assert!(types.len() >= EventType::ALL.len() - 2, "{types:?}");
        let erase = r#"{"specversion":"1.0","id":"x","source":"s","type":"crm.subject.erased","time":"2026-01-01T00:00:00Z","data":{"customer_id":"c1","lead_id":"l1"}}"#;
        assert!(fast_takes(erase));
        assert_eq!(
            decode(erase.as_bytes()),
            decode_serde_json(erase.as_bytes())
        );
    }

    #[test]
    fn unusual_but_valid_json_falls_back_to_serde_json() {
        let cases = [
            // an escape in a value and in a key
            r#"{"specversion":"1.0","id":"e\"1","source":"s","type":"crm.lead.created","time":"2026-01-01T00:00:00Z","data":{"lead_id":"l1","channel":"w\u00e9b"}}"#,
            r#"{"specversion":"1.0","id":"e1","source":"s","type":"crm.lead.created","time":"2026-01-01T00:00:00Z","data":{"lead_\u0069d":"l1","channel":"web"}}"#,
            // data before type
            r#"{"data":{"lead_id":"l1","channel":"web"},"specversion":"1.0","id":"e1","source":"s","type":"crm.lead.created","time":"2026-01-01T00:00:00Z"}"#,
            // a negative and a huge number
            r#"{"specversion":"1.0","id":"e1","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":{"deal_id":"d","amount":-5}}"#,
            r#"{"specversion":"1.0","id":"e1","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":{"deal_id":"d","amount":123456789012345678901234567890}}"#,
        ];
        for c in cases {
            assert!(!fast_takes(c), "{c}");
            assert_eq!(decode(c.as_bytes()), decode_serde_json(c.as_bytes()), "{c}");
            assert!(decode(c.as_bytes()).is_ok(), "{c}");
        }
        // Numbers at the edges of f64: the same event or the same rejection.
        for n in [
            "1e400",
            "1e-400",
            "1.7976931348623157e308",
            "4.9e-324",
            "0.000",
            "0e0",
            "1E2",
        ] {
            let c = format!(
                r#"{{"specversion":"1.0","id":"e1","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":{{"deal_id":"d","amount":{n},"x":{n}}}}}"#
            );
            assert_eq!(decode(c.as_bytes()), decode_serde_json(c.as_bytes()), "{c}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any byte of a generated event replaced, deleted or doubled:
        /// the result (event or rejection) is serde_json's.
        #[test]
        fn mutated_events_decode_as_with_serde_json(
            which in 0usize..400,
            at in 0usize..400,
            byte in prop::sample::select(b"\"\\{}[],:0123456789.eE+- \tnultrfa\x01x".to_vec()),
            op in 0u8..3,
        ) {
            thread_local!(static LINES: Vec<String> = lines(400));
            let mut b = LINES.with(|l| l[which].clone().into_bytes());
            let at = at % b.len();
            match op {
                0 => b[at] = byte,
                1 => { b.remove(at); }
                _ => b.insert(at, byte),
            }
            prop_assert_eq!(decode(&b), decode_serde_json(&b));
        }

        /// Amounts written in any JSON number form decode to the same f64
        /// on both paths (serde_json runs with `float_roundtrip`).
        #[test]
        fn amounts_parse_like_serde_json(mantissa in 0u64..u64::MAX, frac in 0u32..1_000_000, exp in -30i32..30, form in 0u8..4) {
            let n = match form {
                0 => format!("{mantissa}"),
                1 => format!("{mantissa}.{frac}"),
                2 => format!("{mantissa}.{frac:06}e{exp}"),
                _ => format!("{}", f64::from_bits(mantissa) .abs()),
            };
            let line = format!(r#"{{"specversion":"1.0","id":"e","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":{{"deal_id":"d","amount":{n}}}}}"#);
            prop_assert_eq!(decode(line.as_bytes()), decode_serde_json(line.as_bytes()), "{}", line);
        }
    }
}
