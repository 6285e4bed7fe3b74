//! Decoding, validation, every rejection reason, late and duplicate events,
//! and the JSON ⇄ protobuf round trip of every event type.

mod common;
use common::*;
use salespulse::decode::{json as cej, proto, validate, RejectReason};
use salespulse::demo::generator::{GenConfig, Generator};
use salespulse::engine::Outcome;
use salespulse::event::EventType;
use serde_json::json;

fn reason(line: &[u8]) -> RejectReason {
    let mut e = engine("");
    e.process_json(line).expect_err("should be rejected").reason
}

#[test]
fn every_rejection_reason_has_a_case() {
    use RejectReason::*;
    let lead = |d: serde_json::Value| ce("x", "crm.lead.created", "2026-11-01T00:00:00Z", d);
    let cases: Vec<(RejectReason, Vec<u8>)> = vec![
        (MalformedJson, b"{not json".to_vec()),
        (MalformedJson, b"[1,2]".to_vec()),
        (UnsupportedSpecversion, br#"{"specversion":"0.3","id":"1","source":"s","type":"crm.lead.created","time":"2026-11-01T00:00:00Z","data":{}}"#.to_vec()),
        (MissingAttribute, br#"{"specversion":"1.0","source":"s","type":"crm.lead.created","time":"2026-11-01T00:00:00Z","data":{}}"#.to_vec()),
        (MissingAttribute, br#"{"specversion":"1.0","id":"1","source":"s","type":"crm.lead.created","data":{}}"#.to_vec()),
        (MissingAttribute, br#"{"specversion":"1.0","id":"1","source":"s","type":"crm.lead.created","time":"2026-11-01T00:00:00Z"}"#.to_vec()),
        (UnknownType, ce("x", "crm.lead.teleported", "2026-11-01T00:00:00Z", json!({}))),
        (MissingField, lead(json!({"channel": "web"}))),
        (MissingField, lead(json!({"lead_id": "", "channel": "web"}))),
        (InvalidField, lead(json!({"lead_id": 7, "channel": "web"}))),
        (InvalidValue, ce("x", "crm.activity.logged", "2026-11-01T00:00:00Z", json!({"rep": "a", "kind": "fax"}))),
        (InvalidValue, ce("x", "crm.quota.set", "2026-11-01T00:00:00Z", json!({"rep": "a", "period": "November", "amount": 5}))),
        (InvalidTime, ce("x", "crm.lead.created", "yesterday", json!({"lead_id": "l", "channel": "web"}))),
        (AbsurdTime, ce("x", "crm.lead.created", "1970-01-01T00:00:00Z", json!({"lead_id": "l", "channel": "web"}))),
        (AbsurdTime, ce("x", "crm.lead.created", "2150-01-01T00:00:00Z", json!({"lead_id": "l", "channel": "web"}))),
        (NegativeAmount, ce("x", "crm.deal.won", "2026-11-01T00:00:00Z", json!({"deal_id": "d", "amount": -5}))),
        (AbsurdAmount, ce("x", "crm.deal.won", "2026-11-01T00:00:00Z", json!({"deal_id": "d", "amount": 1e20}))),
        (NpsOutOfRange, ce("x", "crm.survey.answered", "2026-11-01T00:00:00Z", json!({"customer_id": "c", "nps": 11}))),
        (NpsOutOfRange, ce("x", "crm.survey.answered", "2026-11-01T00:00:00Z", json!({"customer_id": "c", "nps": -1}))),
        (CsatOutOfRange, ce("x", "crm.survey.answered", "2026-11-01T00:00:00Z", json!({"customer_id": "c", "nps": 9, "csat": 7}))),
        (UnknownStage, ce("x", "crm.deal.created", "2026-11-01T00:00:00Z", json!({"deal_id": "d", "rep": "r", "amount": 5, "stage": "Closed Won"}))),
        (UnknownStage, ce("x", "crm.deal.stage_changed", "2026-11-01T00:00:00Z", json!({"deal_id": "d", "from": "prospecting", "to": "limbo"}))),
    ];
    for (want, line) in &cases {
        assert_eq!(reason(line), *want, "{}", String::from_utf8_lossy(line));
    }
    // protobuf: undecodable bytes
    let mut e = engine("");
    assert_eq!(
        e.process_protobuf(&[0xff, 0xff, 0xff]).unwrap_err().reason,
        MalformedProtobuf
    );
    // Kafka: a content-type that is neither CloudEvents JSON nor protobuf
    use salespulse::decode::{wire_of, Format, Wire};
    assert_eq!(
        wire_of(Some("text/csv"), false, Format::Json)
            .unwrap_err()
            .reason,
        UnsupportedContentType
    );
    assert_eq!(
        wire_of(Some("application/protobuf"), true, Format::Json)
            .unwrap_err()
            .reason,
        UnsupportedContentType
    );
    assert_eq!(
        wire_of(
            Some("application/cloudevents+json; charset=utf-8"),
            false,
            Format::Protobuf
        ),
        Ok(Wire::Structured(Format::Json))
    );
    assert_eq!(
        wire_of(Some("Application/X-Protobuf"), false, Format::Json),
        Ok(Wire::Structured(Format::Protobuf))
    );
    assert_eq!(
        wire_of(None, false, Format::Protobuf),
        Ok(Wire::Structured(Format::Protobuf))
    );
    assert_eq!(wire_of(None, true, Format::Protobuf), Ok(Wire::BinaryJson));
    // late: below; future: here, against a wall clock of 2026-11-01
    let mut s = salespulse::engine::Settings::from_config(&Default::default());
    s.now = Some(ms("2026-11-01T00:00:00Z"));
    let mut e = salespulse::engine::Engine::new(s);
    let soon = ce(
        "f1",
        "crm.lead.created",
        "2026-11-01T00:59:00Z",
        json!({"lead_id": "l1", "channel": "web"}),
    );
    assert_eq!(
        e.process_json(&soon),
        Ok(Outcome::Counted),
        "within time.max_future_skew"
    );
    let ahead = ce(
        "f2",
        "crm.lead.created",
        "2026-11-01T01:01:00Z",
        json!({"lead_id": "l2", "channel": "web"}),
    );
    let r = e.process_json(&ahead).unwrap_err();
    assert_eq!(r.reason, Future);
    assert!(r.detail.contains("time.max_future_skew"), "{}", r.detail);
    let covered: std::collections::HashSet<_> = cases
        .iter()
        .map(|(r, _)| *r)
        .chain([MalformedProtobuf, Late, UnsupportedContentType, Future])
        .collect();
    for (i, r) in RejectReason::ALL.iter().enumerate() {
        assert!(covered.contains(r), "no test case for {r:?}");
        // counters are indexed by the reason
        assert_eq!(*r as usize, i, "RejectReason::ALL is in declaration order");
    }
}

#[test]
fn rejections_are_counted_by_reason_and_do_not_stop_the_engine() {
    let mut e = engine("");
    assert!(e.process_json(b"garbage").is_err());
    assert!(e
        .process_json(&ce(
            "a",
            "crm.lead.created",
            "2026-11-01T00:00:00Z",
            json!({"lead_id": "l", "channel": "web"})
        ))
        .is_ok());
    assert!(e.process_json(b"garbage").is_err());
    assert_eq!(
        e.state.stats.rejected[RejectReason::MalformedJson as usize],
        2
    );
    assert_eq!(e.state.stats.events_in[EventType::LeadCreated as usize], 1);
}

#[test]
fn late_events_are_rejected_and_windows_close_on_the_watermark() {
    // watermark = max − 1h; grace 1d
    let mut e = engine("[time]\nout_of_orderness = \"1h\"\ngrace = \"1d\"\n[windows]\ncalendar = [\"day\"]\nrolling = []\n");
    let lead = |id: &str, t: &str| {
        ce(
            id,
            "crm.lead.created",
            t,
            json!({"lead_id": id, "channel": "web"}),
        )
    };
    e.process_json(&lead("a", "2026-11-01T10:00:00Z")).unwrap();
    e.process_json(&lead("b", "2026-11-03T00:59:59Z")).unwrap();
    // cutoff = Nov 3 00:59:59 − 1h − 1d = Nov 1 23:59:59: Nov 1 is still open
    assert!(e.take_records().is_empty());
    e.process_json(&lead("c", "2026-11-01T23:59:59Z"))
        .expect("within grace");
    e.process_json(&lead("d", "2026-11-03T01:00:00Z")).unwrap();
    // cutoff = Nov 2 00:00: the Nov 1 window is final now
    let recs = e.take_records();
    let r = find(&recs, "leads_created", "day", "2026-11-01", &[]).unwrap();
    assert!(r.is_final);
    assert_eq!(r.value, Some(2.0));
    let err = e
        .process_json(&lead("e", "2026-11-01T23:00:00Z"))
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::Late);
    assert!(
        err.detail.contains("2026-11-02T00:00:00Z"),
        "{}",
        err.detail
    );
    assert_eq!(e.state.stats.rejected[RejectReason::Late as usize], 1);
}

#[test]
fn duplicates_count_once_and_dedup_memory_is_bounded() {
    let mut e = engine("[state]\ndedup_max_entries = 3\n");
    let line = |id: &str| {
        ce(
            id,
            "crm.lead.created",
            "2026-11-01T00:00:00Z",
            json!({"lead_id": id, "channel": "web"}),
        )
    };
    assert_eq!(e.process_json(&line("1")).unwrap(), Outcome::Counted);
    assert_eq!(e.process_json(&line("1")).unwrap(), Outcome::Duplicate);
    // same id from another source is another event (here of another lead)
    let other = String::from_utf8(line("1"))
        .unwrap()
        .replace("\"test\"", "\"other\"");
    let other_lead = other.replace("\"lead_id\":\"1\"", "\"lead_id\":\"1b\"");
    assert_ne!(other, other_lead);
    assert_eq!(
        e.process_json(other_lead.as_bytes()).unwrap(),
        Outcome::Counted
    );
    // the same lead created again under another id: a repeated transition
    let again = ce(
        "1-again",
        "crm.lead.created",
        "2026-11-01T00:00:00Z",
        json!({"lead_id": "1", "channel": "web"}),
    );
    assert_eq!(e.process_json(&again).unwrap(), Outcome::Duplicate);
    assert_eq!(e.state.stats.duplicates, [1, 1]);
    for i in 2..10 {
        e.process_json(&line(&i.to_string())).unwrap();
    }
    // ids expire when event time advances
    e.process_json(&ce(
        "late-enough",
        "crm.lead.created",
        "2026-11-01T02:00:00Z",
        json!({"lead_id": "z", "channel": "web"}),
    ))
    .unwrap();
    assert!(
        e.state.dedup.order.len() <= 3,
        "{}",
        e.state.dedup.order.len()
    );
    assert!(e.state.stats.dedup_evicted > 0);
}

#[test]
fn json_protobuf_round_trip_for_every_type() {
    let events: Vec<_> = Generator::new(GenConfig {
        seed: 7,
        start: ms("2026-01-01T00:00:00Z"),
        events_per_day: 150,
        reps: 5,
    })
    .take(40_000)
    .chain(std::iter::once(
        // Erasures are not a generator event.
        salespulse::admin::erasure_event(&salespulse::admin::Subject {
            lead_id: Some("l-1".into()),
            customer_id: Some("c-1".into()),
            deal_id: None,
        })
        .unwrap(),
    ))
    .collect();
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        seen.insert(e.payload.event_type());
        let line = cej::encode(e);
        let from_json = cej::decode(line.as_bytes()).unwrap();
        validate(&from_json).unwrap();
        assert_eq!(&from_json, e);
        let bytes = prost::Message::encode_to_vec(&proto::from_event(&from_json));
        let msg = proto::decode_message(&bytes).unwrap();
        let from_pb = proto::to_event(&msg).unwrap();
        assert_eq!(from_pb, *e);
        assert_eq!(cej::encode(&from_pb), line);
    }
    for t in EventType::ALL {
        assert!(
            seen.contains(t),
            "the generator never produced {}",
            t.as_str()
        );
    }
}

#[test]
fn delimited_protobuf_stream_splits_and_reports_truncation() {
    let events: Vec<_> = Generator::new(GenConfig {
        seed: 1,
        start: ms("2026-01-01T00:00:00Z"),
        events_per_day: 500,
        reps: 3,
    })
    .take(50)
    .collect();
    let mut buf = Vec::new();
    for e in &events {
        buf.extend(proto::encode_delimited(e));
    }
    let frames: Vec<_> = proto::split_delimited(&buf)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(frames.len(), 50);
    let cut = &buf[..buf.len() - 3];
    let last = proto::split_delimited(cut).last().unwrap();
    assert_eq!(last.unwrap_err().reason, RejectReason::MalformedProtobuf);
}

#[test]
fn binary_mode_data_decodes_with_the_type_from_outside() {
    let data = br#"{"lead_id":"L1","channel":"web"}"#;
    let p = cej::decode_data(EventType::LeadCreated, data).unwrap();
    assert_eq!(p.event_type(), EventType::LeadCreated);
}

#[test]
fn entities_expire_after_their_ttl_and_a_returning_one_is_counted() {
    let mut e = engine("[state]\nentity_ttl = \"30d\"\n");
    e.process_json(&ce(
        "1",
        "crm.lead.created",
        "2026-01-01T00:00:00Z",
        json!({"lead_id": "L1", "channel": "web"}),
    ))
    .unwrap();
    e.process_json(&ce(
        "2",
        "crm.lead.created",
        "2026-01-25T00:00:00Z",
        json!({"lead_id": "L2", "channel": "web"}),
    ))
    .unwrap();
    assert_eq!(e.entity_counts()[0], 2);
    e.process_json(&ce(
        "3",
        "crm.activity.logged",
        "2026-02-05T00:00:00Z",
        json!({"rep": "Ana", "kind": "call"}),
    ))
    .unwrap();
    assert_eq!(e.entity_counts()[0], 1, "L1 is 35 days old");
    assert_eq!(e.state.stats.evicted[0], 1);
    // L1 comes back: it waits for its lead, which does not come; at the
    // end it counts as unknown: in "all" and in channel "unknown" only
    e.process_json(&ce(
        "4",
        "crm.lead.converted",
        "2026-02-05T00:00:00Z",
        json!({"lead_id": "L1"}),
    ))
    .unwrap();
    assert_eq!(e.waiting_counts(), [1, 0]);
    assert_eq!(e.state.stats.unknown_entity[0], 0);
    e.finish();
    assert_eq!(e.state.stats.unknown_entity[0], 1);
    assert_eq!(e.state.stats.waited, [1, 0, 1]);
    let recs = e.take_records();
    assert_eq!(
        value(&recs, "lead_conversion_rate", "month", "2026-02", &[]),
        None,
        "no lead created in February"
    );
    assert_eq!(
        find(&recs, "lead_conversion_rate", "month", "2026-02", &[])
            .unwrap()
            .numerator,
        Some(1.0)
    );
    assert!(find(
        &recs,
        "lead_conversion_rate",
        "month",
        "2026-02",
        &[("channel", "web")]
    )
    .is_none());
}

#[test]
fn attribute_order_does_not_matter_and_plain_strings_are_borrowed() {
    use std::borrow::Cow;
    let typed_first = br#"{"specversion":"1.0","id":"e1","source":"crm","type":"crm.deal.won","time":"2026-11-02T10:00:00Z","data":{"deal_id":"d1","amount":120.5,"rep":"Ana","product":"GTX"}}"#;
    let data_first = br#"{"data":{"deal_id":"d1","amount":120.5,"rep":"Ana","product":"GTX"},"time":"2026-11-02T10:00:00Z","type":"crm.deal.won","source":"crm","id":"e1","specversion":"1.0","extension":{"a":[1]}}"#;
    let a = cej::decode(typed_first).unwrap();
    let b = cej::decode(data_first).unwrap();
    assert_eq!(a, b);
    assert!(matches!(a.id, Cow::Borrowed("e1")));
    let salespulse::event::Payload::DealWon(d) = &a.payload else {
        panic!("wrong payload {:?}", a.payload)
    };
    assert!(matches!(d.rep, Some(Cow::Borrowed("Ana"))), "{:?}", d.rep);
    assert!(matches!(d.deal_id, Cow::Borrowed("d1")), "{:?}", d.deal_id);
    // The same through serde_json (data before type takes that path).
    let salespulse::event::Payload::DealWon(d) = &b.payload else {
        panic!("wrong payload {:?}", b.payload)
    };
    assert!(matches!(d.deal_id, Cow::Borrowed("d1")), "{:?}", d.deal_id);
    // An escaped string cannot be borrowed but decodes the same.
    let escaped = br#"{"specversion":"1.0","id":"e\u0031","source":"crm","type":"crm.deal.won","time":"2026-11-02T10:00:00Z","data":{"deal_id":"d1","amount":120.5,"rep":"An\u0061","product":"GTX"}}"#;
    assert_eq!(cej::decode(escaped).unwrap(), a);
    // A data error found on the one-pass path still gets its precise reason.
    let bad = br#"{"specversion":"1.0","id":"e1","source":"crm","type":"crm.deal.won","time":"2026-11-02T10:00:00Z","data":{"amount":1}}"#;
    assert_eq!(reason(bad), RejectReason::MissingField);
    let dup = br#"{"specversion":"1.0","id":"e1","id":"e2","source":"crm","type":"crm.deal.won","time":"2026-11-02T10:00:00Z","data":{"deal_id":"d1","amount":1}}"#;
    assert_eq!(reason(dup), RejectReason::MalformedJson);
}
