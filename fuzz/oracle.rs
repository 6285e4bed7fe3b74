//! What the fuzz campaign (`examples/fuzz.rs`) and its corpus test
//! (`tests/fuzz_corpus.rs`) check on every input: included by both.
//!
//! A case is one of three inputs: a structured-mode JSON CloudEvent, a
//! binary-mode one (the `ce_*` attributes and the `data` bytes), or a
//! protobuf `Event`. For each:
//! - nothing panics: decoding, validation, and the engine applying it;
//! - an accepted JSON event is JSON serde_json accepts, and the lean
//!   reader agrees with serde_json alone (`decode` = `decode_serde_json`);
//! - an accepted binary-mode `data` is JSON serde_json accepts;
//! - an accepted protobuf event survives encode → decode unchanged.

#![allow(dead_code)]

use salespulse::decode::json::{self, BinaryAttrs};
use salespulse::decode::{proto, validate};
use salespulse::engine::Engine;

/// One fuzz input.
#[derive(Debug, Clone)]
pub enum Case {
    Json(Vec<u8>),
    /// `ce_*` attributes (specversion, id, source, type, time, subject) and `data`.
    Binary([Option<String>; 6], Vec<u8>),
    Protobuf(Vec<u8>),
}

/// What a case did, for the campaign's counts and its novelty signal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub accepted: bool,
    /// The rejection reason, or the event type when accepted.
    pub what: String,
}

/// Checks one case; `Err` says which property failed.
pub fn check(case: &Case, engine: &mut Engine) -> Result<Outcome, String> {
    match case {
        Case::Json(b) => check_json(b, engine),
        Case::Binary(a, data) => check_binary(a, data, engine),
        Case::Protobuf(b) => check_protobuf(b, engine),
    }
}

fn outcome(r: &Result<salespulse::event::Event<'_>, salespulse::decode::Reject>) -> Outcome {
    match r {
        Ok(e) => Outcome {
            accepted: true,
            what: e.payload.event_type().as_str().to_string(),
        },
        Err(rej) => Outcome {
            accepted: false,
            what: rej.reason.as_str().to_string(),
        },
    }
}

fn check_json(b: &[u8], engine: &mut Engine) -> Result<Outcome, String> {
    let r = json::decode(b).and_then(|e| validate(&e).map(|_| e));
    if let Ok(e) = &r {
        if let Err(err) = serde_json::from_slice::<serde_json::Value>(b) {
            return Err(format!(
                "accepted JSON that serde_json rejects ({err}): {e:?}"
            ));
        }
        match json::decode_serde_json(b) {
            Ok(strict) if &strict == e => {}
            Ok(strict) => return Err(format!("lean reader {e:?} != serde_json {strict:?}")),
            Err(rej) => {
                return Err(format!(
                    "lean reader accepted what serde_json refuses: {rej}"
                ))
            }
        }
    }
    let o = outcome(&r);
    let _ = engine.process_json(b);
    Ok(o)
}

fn check_binary(
    a: &[Option<String>; 6],
    data: &[u8],
    engine: &mut Engine,
) -> Result<Outcome, String> {
    let attrs = BinaryAttrs {
        specversion: a[0].as_deref(),
        id: a[1].as_deref(),
        source: a[2].as_deref(),
        ty: a[3].as_deref(),
        time: a[4].as_deref(),
        subject: a[5].as_deref(),
    };
    let r = json::decode_binary(&attrs, data).and_then(|e| validate(&e).map(|_| e));
    if r.is_ok() {
        if let Err(err) = serde_json::from_slice::<serde_json::Value>(data) {
            return Err(format!(
                "accepted binary-mode data that serde_json rejects: {err}"
            ));
        }
    }
    let o = outcome(&r);
    let _ = engine.process_binary(&attrs, data);
    Ok(o)
}

fn check_protobuf(b: &[u8], engine: &mut Engine) -> Result<Outcome, String> {
    let m = proto::decode_message(b);
    let r = m
        .as_ref()
        .map_err(|r| r.clone())
        .and_then(proto::to_event)
        .and_then(|e| validate(&e).map(|_| e));
    if let Ok(e) = &r {
        let again = prost::Message::encode_to_vec(&proto::from_event(e));
        let m2 = proto::decode_message(&again)
            .map_err(|r| format!("re-encoded event does not decode: {r}"))?;
        let e2 = proto::to_event(&m2).map_err(|r| format!("re-encoded event refused: {r}"))?;
        if &e2 != e {
            return Err(format!("protobuf round trip changed {e:?} into {e2:?}"));
        }
    }
    let o = outcome(&r);
    let _ = engine.process_protobuf(b);
    Ok(o)
}

/// A case as a corpus file: `json/…`, `protobuf/…`, or `binary/…` (a
/// first line with the attributes as a JSON array, then the data).
pub fn to_file(c: &Case) -> (&'static str, Vec<u8>) {
    match c {
        Case::Json(b) => ("json", b.clone()),
        Case::Protobuf(b) => ("protobuf", b.clone()),
        Case::Binary(a, d) => {
            let mut out = serde_json::to_vec(a).expect("attrs");
            out.push(b'\n');
            out.extend_from_slice(d);
            ("binary", out)
        }
    }
}

pub fn from_file(kind: &str, bytes: &[u8]) -> Option<Case> {
    match kind {
        "json" => Some(Case::Json(bytes.to_vec())),
        "protobuf" => Some(Case::Protobuf(bytes.to_vec())),
        "binary" => {
            let nl = bytes.iter().position(|b| *b == b'\n')?;
            let a: [Option<String>; 6] = serde_json::from_slice(&bytes[..nl]).ok()?;
            Some(Case::Binary(a, bytes[nl + 1..].to_vec()))
        }
        _ => None,
    }
}

/// Every case of the corpus directory `dir` (`json/`, `binary/`, `protobuf/`), by file name.
pub fn read_corpus(dir: &std::path::Path) -> Vec<(String, Case)> {
    let mut out = Vec::new();
    for kind in ["json", "binary", "protobuf"] {
        let Ok(rd) = std::fs::read_dir(dir.join(kind)) else {
            continue;
        };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).expect("corpus file");
            if let Some(c) = from_file(kind, &bytes) {
                out.push((f.display().to_string(), c));
            }
        }
    }
    out
}

/// An engine to feed cases to (fixed wall clock: the `future` check does
/// not depend on the day).
pub fn engine() -> Engine {
    let mut s = salespulse::engine::Settings::from_config(&salespulse::config::Config::default());
    s.now = Some(4_102_444_800_000); // 2100-01-01
    Engine::new(s)
}
