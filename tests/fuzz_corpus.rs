//! The fuzz campaign's corpus (`fuzz/corpus`, seeds and the cases that
//! gave a new outcome), replayed on every test run through the checks of
//! `fuzz/oracle.rs` (no panic, no accepted JSON that serde_json rejects,
//! the lean reader equal to serde_json, protobuf round trips), in a debug
//! build: arithmetic overflow panics here. Plus the cases the campaign
//! found, each with the reason it must be refused for.

#[path = "../fuzz/oracle.rs"]
mod oracle;

use std::path::Path;

#[test]
fn every_corpus_case_passes_the_fuzz_checks() {
    let corpus = oracle::read_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    assert!(corpus.len() >= 60, "{} cases", corpus.len());
    let kinds = |k: &str| {
        corpus
            .iter()
            .filter(|(n, _)| n.contains(&format!("/{k}/")))
            .count()
    };
    assert!(kinds("json") > 0 && kinds("binary") > 0 && kinds("protobuf") > 0);
    let mut engine = oracle::engine();
    let mut accepted = 0;
    for (name, case) in &corpus {
        let o = oracle::check(case, &mut engine).unwrap_or_else(|e| panic!("{name}: {e}"));
        accepted += usize::from(o.accepted);
    }
    // The seeds (an event of every type, three forms) are accepted.
    assert!(
        accepted >= 3 * salespulse::event::EventType::ALL.len(),
        "{accepted}"
    );
}

#[test]
fn what_the_campaign_found_is_refused() {
    use salespulse::decode::json::{decode, decode_binary, BinaryAttrs};
    let head = r#"{"specversion":"1.0","id":"e","source":"s","type":"crm.deal.won","time":"2026-01-01T00:00:00Z","data":"#;
    let bad_json: [(&[u8], &str); 3] = [
        // Not UTF-8 in a member the typed read skips.
        (b"{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\",\"type\":\"crm.deal.won\",\"time\":\"2026-01-01T00:00:00Z\",\"x\":\"ap\xf0lication\",\"data\":{\"deal_id\":\"d\",\"amount\":1}}", "not UTF-8"),
        // Half a surrogate pair, and a number out of range, skipped.
        (format!(r#"{head}{{"deal_id":"d","amount":1,"x":"\ud800"}}}}"#).leak().as_bytes(), "hex escape"),
        (format!(r#"{head}{{"deal_id":"d","amount":1,"x":-1e309}}}}"#).leak().as_bytes(), "out of range"),
    ];
    for (b, why) in bad_json {
        let r = decode(b).unwrap_err();
        assert_eq!(r.reason.as_str(), "malformed_json");
        assert!(r.detail.contains(why), "{}", r.detail);
    }
    let attrs = BinaryAttrs {
        specversion: Some("1.0"),
        id: Some("e"),
        source: Some("s"),
        ty: Some("crm.deal.won"),
        time: Some("2026-01-01T00:00:00Z"),
        subject: None,
    };
    // A NUL byte after the data (the lean reader took it for the end).
    let r = decode_binary(&attrs, b"{\"deal_id\":\"d\",\"amount\":1}\0").unwrap_err();
    assert!(r.detail.contains("trailing"), "{}", r.detail);
    assert!(decode_binary(&attrs, br#"{"deal_id":"d","amount":1,"x":"\ud800"}"#).is_err());
    assert!(decode_binary(&attrs, br#"{"deal_id":"d","amount":1}"#).is_ok());
}
