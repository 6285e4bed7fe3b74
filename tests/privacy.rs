//! Personal data (docs/privacy.md): entities kept under keyed pseudonyms
//! (a key generated next to the checkpoint, a restore under another key
//! refused), the right to erasure (as an event, and offline in a
//! checkpoint with `salespulse erase`), and dead letters with their
//! personal fields redacted.

mod common;
use common::{ce, engine, find, ms, run_all, value};
use serde_json::json;
use siphasher::sip128::SipHasher24;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_salespulse");

fn sp(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(dir).env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run salespulse")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

/// The pseudonym of `id` under `key` as the checkpoint holds it (a u128
/// in postcard), computed here with SipHash-2-4 directly.
fn pseudonym(key: &[u8; 16], id: &str) -> Vec<u8> {
    postcard::to_stdvec(&u128::from(
        SipHasher24::new_with_key(key).hash(id.as_bytes()),
    ))
    .unwrap()
}

/// The old, unkeyed form (xxh3-128 of the id).
fn unkeyed(id: &str) -> Vec<u8> {
    postcard::to_stdvec(&xxhash_rust::xxh3::xxh3_128(id.as_bytes())).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex_key(text: &str) -> [u8; 16] {
    let t = text.trim();
    std::array::from_fn(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap())
}

/// Leads, an open deal, customers, and an activity about a lead never
/// created (it waits for it, held with its raw id).
fn crm_lines() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for i in 1..=3 {
        v.push(ce(
            &format!("l{i}"),
            "crm.lead.created",
            "2026-11-02T09:00:00Z",
            json!({"lead_id": format!("lead-private-{i}"), "channel": "web"}),
        ));
    }
    for (id, amount) in [("deal-private-1", 1000.0), ("deal-private-2", 500.0)] {
        v.push(ce(
            &format!("{id}-c"),
            "crm.deal.created",
            "2026-11-02T10:00:00Z",
            json!({"deal_id": id, "rep": "Ana", "amount": amount, "stage": "prospecting", "channel": "web"}),
        ));
    }
    for c in ["cust-private-1", "cust-private-2"] {
        v.push(ce(
            &format!("{c}-a"),
            "crm.customer.acquired",
            "2026-11-02T11:00:00Z",
            json!({"customer_id": c, "channel": "web"}),
        ));
    }
    v.push(ce(
        "act-9",
        "crm.activity.logged",
        "2026-11-02T11:30:00Z",
        json!({"rep": "Ana", "kind": "call", "lead_id": "lead-waiting-9"}),
    ));
    v
}

fn erasure(id: &str, t: &str, data: serde_json::Value) -> Vec<u8> {
    ce(id, "crm.subject.erased", t, data)
}

#[test]
fn erasure_forgets_entities_and_held_events_and_keeps_the_counted_aggregates() {
    let toml = "[time]\nzone = \"UTC\"\n";
    let mut lines = crm_lines();
    // Dated before everything (never late), naming a deal, a customer
    // and the lead the held activity waits for.
    lines.push(erasure(
        "erase-1",
        "2026-11-01T00:00:00Z",
        json!({"deal_id": "deal-private-1", "customer_id": "cust-private-1", "lead_id": "lead-waiting-9"}),
    ));
    // A later event of the erased deal finds no deal: it does not bring
    // it back into the pipeline.
    lines.push(ce(
        "deal-private-1-s",
        "crm.deal.stage_changed",
        "2026-11-02T12:00:00Z",
        json!({"deal_id": "deal-private-1", "from": "prospecting", "to": "qualification"}),
    ));
    let mut e = engine(toml);
    let recs = run_all(&mut e, &lines);
    let s = &e.state.stats;
    assert_eq!(
        s.erased,
        [[1, 0], [0, 1], [0, 1]],
        "lead not known, deal and customer erased"
    );
    assert_eq!(s.erased_held, 1, "the activity waiting for lead-waiting-9");
    assert_eq!(e.waiting_counts(), [0, 0]);
    let m = salespulse::metrics::Metrics::for_config(&salespulse::config::Config::default());
    m.sync(&e);
    let text = m.render();
    for line in [
        "salespulse_entities_erased_total{entity=\"customer\"} 1",
        "salespulse_entities_erased_total{entity=\"deal\"} 1",
        "salespulse_erased_held_events_total 1",
        "salespulse_events_in_total{type=\"crm.subject.erased\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in the metrics");
    }
    let ids = salespulse::privacy::Pseudonyms::default();
    assert!(!e
        .state
        .customers
        .contains_key(&ids.entity("cust-private-1")));
    assert!(e
        .state
        .customers
        .contains_key(&ids.entity("cust-private-2")));
    // The open pipeline and the active customers lose the erased ones...
    let g = |k: &str| value(&recs, k, "gauge", "current", &[]);
    assert_eq!(g("pipeline_value"), Some(500.0));
    assert_eq!(g("active_customers"), Some(1.0));
    // ...what was counted stays.
    let day = |k: &str| find(&recs, k, "day", "2026-11-02", &[]).and_then(|r| r.value);
    assert_eq!(day("leads_created"), Some(3.0));
    // The held activity named the erased lead: dropped before it counted.
    assert_eq!(day("activities"), None);
    // An erasure naming nothing is a dead letter with its reason.
    let mut e2 = engine(toml);
    let r = e2
        .process_json(&erasure("erase-2", "2026-11-01T00:00:00Z", json!({})))
        .unwrap_err();
    assert!(r.detail.contains("at least one of lead_id"), "{}", r.detail);
    let _ = ms;
}

#[test]
fn a_checkpoint_keeps_keyed_pseudonyms_refuses_another_key_and_erase_removes_a_customer() {
    let d = tempfile::tempdir().unwrap();
    let lines: Vec<String> = crm_lines()
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    std::fs::write(d.path().join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    let run = [
        "run",
        "--input",
        "in.jsonl",
        "--output",
        "out.jsonl",
        "--checkpoint",
        "state.ckpt",
    ];
    ok(&sp(d.path(), &run, &[]));

    // A key was generated next to the checkpoint, readable by its owner only.
    let key_path = d.path().join("state.ckpt.key");
    let text = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(text.trim().len(), 32, "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = hex_key(&text);

    // The checkpoint holds pseudonyms under that key, never the raw ids
    // nor their unkeyed hashes (the held activity's raw lead id aside: it
    // waits for its lead, and is erased below).
    let ckpt = std::fs::read(d.path().join("state.ckpt")).unwrap();
    for id in [
        "lead-private-1",
        "deal-private-1",
        "cust-private-1",
        "cust-private-2",
    ] {
        assert!(!contains(&ckpt, id.as_bytes()), "{id} in clear");
        assert!(!contains(&ckpt, &unkeyed(id)), "{id} unkeyed");
        assert!(
            contains(&ckpt, &pseudonym(&key, id)),
            "{id} not under the key"
        );
    }
    assert!(!ckpt.windows(key.len()).any(|w| w == key), "the key itself");
    assert!(!contains(&ckpt, text.trim().as_bytes()));
    assert!(contains(&ckpt, b"lead-waiting-9"));

    // Another key: refused, naming the setting and the way out; nothing changed.
    let other = "00112233445566778899aabbccddeeff";
    let o = sp(d.path(), &run, &[("SALESPULSE_PRIVACY__KEY", other)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("privacy.key (pseudonym key)"), "{err}");
    assert!(err.contains("--fresh"), "{err}");
    assert!(
        !err.contains(other) && !err.contains(text.trim()),
        "a key in the message: {err}"
    );
    assert_eq!(std::fs::read(d.path().join("state.ckpt")).unwrap(), ckpt);
    // A malformed key fails at start-up, naming the field and the fix.
    let o = sp(d.path(), &run, &[("SALESPULSE_PRIVACY__KEY", "secret")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("privacy.key") && err.contains("openssl rand -hex 16"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    // The same key, given explicitly: restores.
    let kf = key_path.to_str().unwrap().to_string();
    ok(&sp(
        d.path(),
        &run,
        &[("SALESPULSE_PRIVACY__KEY_FILE", &kf)],
    ));

    // Offline erasure in the checkpoint (salespulse stopped).
    let o = sp(
        d.path(),
        &[
            "erase",
            "--customer-id",
            "cust-private-1",
            "--lead-id",
            "lead-waiting-9",
            "--checkpoint",
            "state.ckpt",
        ],
        &[("RUST_LOG", "info")],
    );
    let log = ok(&o);
    assert!(
        log.contains("customers=1") && log.contains("held_events=1"),
        "{log}"
    );
    let after = std::fs::read(d.path().join("state.ckpt")).unwrap();
    assert!(!contains(&after, &pseudonym(&key, "cust-private-1")));
    assert!(!contains(&after, b"lead-waiting-9"));
    assert!(contains(&after, &pseudonym(&key, "cust-private-2")));
    assert!(contains(&after, &pseudonym(&key, "deal-private-1")));
    // The run resumes from it.
    ok(&sp(d.path(), &run, &[]));
    // Without the key next to it, an offline erasure refuses (it would
    // otherwise hash under a new key and find nothing).
    std::fs::rename(&key_path, d.path().join("elsewhere.key")).unwrap();
    let o = sp(
        d.path(),
        &["erase", "--customer-id", "x", "--checkpoint", "state.ckpt"],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("privacy.key_file"),
        "{err}"
    );
    assert!(!key_path.exists(), "no key generated by erase");

    // Without a checkpoint, `erase` prints the event for a file or stdin.
    let o = sp(d.path(), &["erase", "--deal-id", "deal-private-2"], &[]);
    ok(&o);
    let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ev["type"], "crm.subject.erased");
    assert_eq!(ev["data"], json!({"deal_id": "deal-private-2"}));
}

#[test]
fn dead_letters_have_personal_fields_redacted_unless_configured_off() {
    let d = tempfile::tempdir().unwrap();
    // Invalid (nps out of range) and broken JSON, both with personal data.
    let bad = r#"{"specversion":"1.0","id":"2","source":"s","type":"crm.survey.answered","time":"2026-11-01T10:00:00Z","data":{"customer_id":"C1","nps":11,"email":"ann@example.com","contact":{"Phone":"+33 6 12 34 56 78","name":{"first":"Ann"}}}}"#;
    let broken = r#"{"id":"3","data":{"email":"bob@example.com","amount":"#;
    std::fs::write(d.path().join("in.jsonl"), format!("{bad}\n{broken}\n")).unwrap();
    let dlq = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("dlq.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let args = [
        "run",
        "--input",
        "in.jsonl",
        "--output",
        "out.jsonl",
        "--dead-letter",
        "dlq.jsonl",
    ];
    ok(&sp(d.path(), &args, &[]));
    let got = dlq(d.path());
    assert_eq!(got.len(), 2);
    let raw = got[0]["raw"].as_str().unwrap();
    for secret in ["ann@example.com", "+33 6 12", "Ann"] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
    assert_eq!(got[0]["redacted"], 3);
    assert_eq!(got[0]["reason"], "nps_out_of_range");
    // Everything else is kept as it was (the dead letter still says what came).
    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
    assert_eq!(v["data"]["email"], "[redacted]");
    assert_eq!(v["data"]["contact"]["name"], "[redacted]");
    assert_eq!(v["data"]["nps"], 11);
    assert_eq!(v["data"]["customer_id"], "C1");
    assert_eq!(
        got[1]["raw"],
        r#"{"id":"3","data":{"email":"[redacted]","amount":"#
    );
    assert_eq!(got[1]["reason"], "malformed_json");

    // Off: whole messages.
    std::fs::write(
        d.path().join("c.toml"),
        "[output]\ndead_letter_redact = []\n",
    )
    .unwrap();
    std::fs::remove_file(d.path().join("dlq.jsonl")).unwrap();
    let mut with_cfg = args.to_vec();
    with_cfg.extend(["--config", "c.toml"]);
    ok(&sp(d.path(), &with_cfg, &[]));
    let got = dlq(d.path());
    assert_eq!(got[0]["raw"], bad);
    assert!(got[0].get("redacted").is_none());
}
