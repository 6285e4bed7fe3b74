//! The decoders' fuzz campaign, on stable Rust: a seeded mutation fuzzer
//! (no coverage instrumentation — cargo-fuzz needs a nightly toolchain,
//! which this project does not require) over structured JSON, binary-mode
//! (`ce_*` headers + data) and protobuf input, checking the properties
//! of `fuzz/oracle.rs` on every case: no panic, no accepted JSON that
//! serde_json rejects, the lean JSON reader equal to serde_json, protobuf
//! round trips.
//!
//! ```text
//! cargo run --release --example fuzz                      # 60 s
//! FUZZ_SECONDS=600 FUZZ_SEED=7 cargo run --release --example fuzz
//! FUZZ_SAVE=1 cargo run --release --example fuzz          # keeps new outcomes in fuzz/corpus
//! cargo run --example fuzz                                # debug: overflow checks on
//! ```
//!
//! It starts from the committed corpus (`fuzz/corpus/{json,binary,protobuf}`,
//! seeded with one generated event of every type and hand-written edge
//! cases), mutates (bit flips, interesting bytes, numbers and strings,
//! splices, deletions, truncations), and keeps a mutant in the working
//! corpus when it gives an outcome (accepted type, or rejection reason)
//! not seen before in its input kind. A failing case is written to
//! `fuzz/failures/` and the run exits 1. `tests/fuzz_corpus.rs` replays the
//! corpus on every test run.

#[path = "../fuzz/oracle.rs"]
mod oracle;

use oracle::{Case, Outcome};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1e309",
    "-1e309",
    "1.7976931348623157e308",
    "5e-324",
    "18446744073709551616",
    "-9223372036854775809",
    "9007199254740993",
    "1E2",
    "0.1e-7",
    "00",
    "1.",
    ".5",
    "-",
    "NaN",
    "Infinity",
    "1e",
    "123456789012345678901234567890",
];
const STRINGS: &[&str] = &[
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"\\u00e9\"",
    "\"é\"",
    "\"\\\"\"",
    "\"\\\\\"",
    "\"\\x\"",
    "\"2026-02-30T00:00:00Z\"",
    "\"2026-11-01T10:00:00+14:00\"",
    "\"2026-11-01T10:00:00.123456789Z\"",
    "\"1969-12-31T23:59:59Z\"",
    "\"9999-12-31T23:59:59Z\"",
    "\"crm.deal.won\"",
    "\"crm.subject.erased\"",
    "\"1.0\"",
    "null",
    "true",
    "[]",
    "{}",
];
const BYTES: &[u8] = b"{}[]\":,\\ \n\t0-eE.nulltrfs9\x00\xff\xc3\xa9";

struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.0.usize(..n)
        }
    }
}

/// Replaces the token (number, literal or string) around `at` with `with`.
fn replace_token(b: &mut Vec<u8>, at: usize, with: &[u8]) {
    let at = at.min(b.len().saturating_sub(1));
    let (mut s, mut e) = (at, at);
    if b.get(at) == Some(&b'"') {
        e = at + 1;
        while e < b.len() && b[e] != b'"' {
            e += if b[e] == b'\\' { 2 } else { 1 };
        }
        e = (e + 1).min(b.len());
    } else {
        let tok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.');
        while s > 0 && tok(b[s - 1]) {
            s -= 1;
        }
        while e < b.len() && tok(b[e]) {
            e += 1;
        }
    }
    b.splice(s..e, with.iter().copied());
}

fn mutate_bytes(r: &mut Rng, b: &mut Vec<u8>, other: &[u8], text: bool) {
    for _ in 0..1 + r.below(4) {
        let n = b.len();
        let at = r.below(n + 1);
        match r.below(if text { 9 } else { 6 }) {
            0 if n > 0 => b[at.min(n - 1)] ^= 1 << r.below(8),
            1 if n > 0 => b[at.min(n - 1)] = BYTES[r.below(BYTES.len())],
            2 => b.insert(at, BYTES[r.below(BYTES.len())]),
            3 if n > 0 => {
                let end = (at + 1 + r.below(16)).min(n);
                b.drain(at.min(n)..end);
            }
            4 if !other.is_empty() => {
                let s = r.below(other.len());
                let e = (s + 1 + r.below(64)).min(other.len());
                b.splice(at..at, other[s..e].iter().copied());
            }
            5 => b.truncate(at),
            6 => replace_token(b, at, NUMBERS[r.below(NUMBERS.len())].as_bytes()),
            7 => replace_token(b, at, STRINGS[r.below(STRINGS.len())].as_bytes()),
            8 if n > 0 => {
                // Duplicate a range (repeated keys, nesting).
                let end = (at + 1 + r.below(48)).min(n);
                let piece: Vec<u8> = b[at.min(n)..end].to_vec();
                b.splice(end..end, piece);
            }
            _ => {}
        }
    }
}

fn mutate(r: &mut Rng, c: &Case, other: &Case) -> Case {
    let bytes_of = |c: &Case| match c {
        Case::Json(b) | Case::Protobuf(b) => b.clone(),
        Case::Binary(_, d) => d.clone(),
    };
    let donor = bytes_of(other);
    match c {
        Case::Json(b) => {
            let mut b = b.clone();
            mutate_bytes(r, &mut b, &donor, true);
            Case::Json(b)
        }
        Case::Protobuf(b) => {
            let mut b = b.clone();
            mutate_bytes(r, &mut b, &donor, false);
            Case::Protobuf(b)
        }
        Case::Binary(a, d) => {
            let mut a = a.clone();
            let mut d = d.clone();
            if r.below(3) == 0 {
                let i = r.below(6);
                let mut v = a[i].clone().unwrap_or_default().into_bytes();
                mutate_bytes(r, &mut v, &[], true);
                a[i] = match r.below(8) {
                    0 => None,
                    _ => Some(String::from_utf8_lossy(&v).into_owned()),
                };
            } else {
                mutate_bytes(r, &mut d, &donor, true);
            }
            Case::Binary(a, d)
        }
    }
}

fn kind(c: &Case) -> usize {
    match c {
        Case::Json(_) => 0,
        Case::Binary(..) => 1,
        Case::Protobuf(_) => 2,
    }
}

/// The seed corpus: one generated event of every type in each form, and
/// hand-written edge cases.
fn seeds() -> Vec<Case> {
    use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let erase = salespulse::admin::erasure_event(&salespulse::admin::Subject {
        lead_id: Some("lead-1".into()),
        deal_id: None,
        customer_id: Some("cust-1".into()),
    })
    .expect("erasure");
    let gen = Generator::new(GenConfig {
        seed: 3,
        start: DEFAULT_START,
        events_per_day: 400,
        reps: 4,
    });
    for e in gen.take(200_000).chain(std::iter::once(erase)) {
        if !seen.insert(e.payload.event_type()) {
            continue;
        }
        let line = salespulse::decode::json::encode(&e);
        out.push(Case::Json(line.clone().into_bytes()));
        out.push(Case::Protobuf(prost::Message::encode_to_vec(
            &salespulse::decode::proto::from_event(&e),
        )));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let s = |k: &str| v[k].as_str().map(str::to_string);
        out.push(Case::Binary(
            [
                s("specversion"),
                s("id"),
                s("source"),
                s("type"),
                s("time"),
                s("subject"),
            ],
            serde_json::to_vec(&v["data"]).expect("data"),
        ));
    }
    for edge in [
        r#"{"specversion":"1.0","id":"e\"1","source":"s","type":"crm.lead.created","time":"2026-01-01T00:00:00Z","data":{"lead_id":"l1","channel":"w\u00e9b"}}"#,
        r#"{"data":{"lead_id":"l1","channel":"web"},"specversion":"1.0","id":"e1","source":"s","type":"crm.lead.created","time":"2026-01-01T00:00:00Z"}"#,
        r#"{"specversion":"1.0","id":"e1","id":"e2","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":{"deal_id":"d","amount":1,"amount":2}}"#,
        r#"{"specversion":"1.0","id":"e1","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":{"deal_id":"d","amount":1e400}}"#,
        r#"{"specversion":"1.0","id":"e1","source":"s","type":"crm.survey.answered","time":"2026-01-01T00:00:00Z","data":{"customer_id":"c","nps":9.5,"email":"a@b.c"}}"#,
        r#"{"specversion":"1.0","id":"e1","source":"s","type":"crm.deal.created","time":"2026-01-01T00:00:00Z","data":{"deal_id":"d","amount":10,"stage":"prospecting","rep":"A","nested":{"a":[1,{"b":[[[]]]}]}}}"#,
        "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"s\",\"type\":\"crm.lead.created\",\"time\":\"2026-01-01T00:00:00Z\",\"data\":{\"lead_id\":\"l\\ud800\",\"channel\":\"web\"}}",
    ] {
        out.push(Case::Json(edge.as_bytes().to_vec()));
    }
    out
}

fn write_case(dir: &Path, c: &Case) {
    let (kind, bytes) = oracle::to_file(c);
    let name = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes));
    let d = dir.join(kind);
    std::fs::create_dir_all(&d).expect("corpus dir");
    std::fs::write(d.join(name), bytes).expect("corpus file");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let env = |k: &str| std::env::var(k).ok();
    if env("FUZZ_SEED_CORPUS").is_some() {
        for c in seeds() {
            write_case(&root.join("corpus"), &c);
        }
        println!("seed corpus written to {}", root.join("corpus").display());
        return;
    }
    let seconds: u64 = env("FUZZ_SECONDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let max_cases: u64 = env("FUZZ_CASES")
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let seed: u64 = env("FUZZ_SEED").and_then(|s| s.parse().ok()).unwrap_or(1);
    let save = env("FUZZ_SAVE").is_some();
    let mut corpus: Vec<Case> = oracle::read_corpus(&root.join("corpus"))
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    if corpus.is_empty() {
        corpus = seeds();
    }
    let start_len = corpus.len();
    // A panic is a failure like the others: caught, reported, saved.
    std::panic::set_hook(Box::new(|_| {}));
    let mut engine = oracle::engine();
    let mut seen: HashSet<(usize, Outcome)> = HashSet::new();
    let mut r = Rng(fastrand::Rng::with_seed(seed));
    let (mut cases, mut accepted) = (0u64, 0u64);
    let t0 = Instant::now();
    let budget = Duration::from_secs(seconds);
    while cases < max_cases && t0.elapsed() < budget {
        for _ in 0..256 {
            let c = &corpus[r.below(corpus.len())];
            let other = &corpus[r.below(corpus.len())];
            let m = mutate(&mut r, c, other);
            cases += 1;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                oracle::check(&m, &mut engine)
            }));
            let failure = match result {
                Ok(Ok(o)) => {
                    accepted += u64::from(o.accepted);
                    if seen.insert((kind(&m), o)) {
                        if save {
                            write_case(&root.join("corpus"), &m);
                        }
                        corpus.push(m.clone());
                    }
                    None
                }
                Ok(Err(why)) => Some(why),
                Err(p) => Some(format!(
                    "panic: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            };
            if let Some(why) = failure {
                write_case(&root.join("failures"), &m);
                eprintln!(
                    "FAILURE after {cases} cases: {why}\ncase: {m:?}\n(saved under fuzz/failures/)"
                );
                std::process::exit(1);
            }
            // A fresh engine now and then: state stays small, and each
            // engine sees a varied clock.
            if cases % 50_000 == 0 {
                engine = oracle::engine();
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "fuzz: {cases} cases in {secs:.1} s ({:.0}/s), seed {seed}: 0 failures; {accepted} accepted; corpus {start_len} → {} ({} outcomes)",
        cases as f64 / secs,
        corpus.len(),
        seen.len()
    );
}
