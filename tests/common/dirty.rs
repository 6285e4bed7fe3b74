//! A dirty CRM stream: leads, deals and customers whose events may be
//! dated before their entity and arrive before it, and its shuffles
//! within the out-of-orderness bound (docs/time.md).
#![allow(dead_code)]

use serde_json::{json, Value};

const HOUR: i64 = 3_600_000;
pub const OUT_OF_ORDERNESS: i64 = HOUR;

/// The generator's first reps, listed with their team and region.
pub fn config_toml() -> String {
    salespulse::demo::generator::roster(4)
        .iter()
        .map(|(n, t, r)| format!("[[reps]]\nname = \"{n}\"\nteam = \"{t}\"\nregion = \"{r}\"\n"))
        .collect()
}

fn line(id: usize, ty: &str, t: i64, data: Value) -> String {
    json!({
        "specversion": "1.0", "id": format!("e{id}"), "source": "dirty", "type": ty,
        "time": salespulse::decode::json::format_time(t), "data": data,
    })
    .to_string()
}

/// About `entities` leads, deals and customers from `start`, each with a
/// few later events; about one in five of those is dated up to 30 h
/// before its entity (grace is 1 d: some are attributed, some not).
/// Sorted by time: the clean, ordered run.
pub fn stream(seed: u64, entities: usize, start: i64) -> Vec<(i64, String)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let reps: Vec<String> = salespulse::demo::generator::roster(4)
        .into_iter()
        .map(|r| r.0)
        .collect();
    let channels = ["web", "ads", "events"];
    let products = ["Starter", "Pro"];
    let mut out: Vec<(i64, String)> = Vec::new();
    let mut id = 0;
    let mut ev = |out: &mut Vec<(i64, String)>, ty: &str, t: i64, data: Value| {
        id += 1;
        out.push((t, line(id, ty, t, data)));
    };
    for n in 0..entities {
        let t0 = start + rng.i64(0..4 * 24 * HOUR);
        let after = |rng: &mut fastrand::Rng| {
            if rng.u8(..5) == 0 {
                t0 - rng.i64(1..30 * HOUR)
            } else {
                t0 + rng.i64(0..40 * HOUR)
            }
        };
        let rep = &reps[rng.usize(..reps.len())];
        let channel = channels[rng.usize(..channels.len())];
        match n % 3 {
            0 => {
                let lead = format!("L{n}");
                ev(
                    &mut out,
                    "crm.lead.created",
                    t0,
                    json!({"lead_id": lead, "channel": channel, "rep": rep, "campaign": format!("c{}", rng.u8(..2))}),
                );
                if rng.bool() {
                    let t = after(&mut rng);
                    ev(
                        &mut out,
                        "crm.lead.contacted",
                        t,
                        json!({"lead_id": lead, "rep": rep}),
                    );
                }
                if rng.bool() {
                    let level = if rng.bool() { "mql" } else { "sql" };
                    let t = after(&mut rng);
                    ev(
                        &mut out,
                        "crm.lead.qualified",
                        t,
                        json!({"lead_id": lead, "level": level}),
                    );
                }
                if rng.u8(..3) == 0 {
                    let t = after(&mut rng);
                    ev(&mut out, "crm.lead.converted", t, json!({"lead_id": lead}));
                }
            }
            1 => {
                let deal = format!("D{n}");
                let amount = f64::from(rng.u32(1..50)) * 100.0;
                ev(
                    &mut out,
                    "crm.deal.created",
                    t0,
                    json!({"deal_id": deal, "rep": rep, "stage": "prospecting", "amount": amount, "channel": channel, "product": products[rng.usize(..2)]}),
                );
                if rng.bool() {
                    let t = after(&mut rng);
                    ev(
                        &mut out,
                        "crm.activity.logged",
                        t,
                        json!({"rep": rep, "kind": "call", "deal_id": deal}),
                    );
                }
                if rng.u8(..4) != 0 {
                    let ty = if rng.bool() {
                        "crm.deal.won"
                    } else {
                        "crm.deal.lost"
                    };
                    let t = after(&mut rng);
                    ev(&mut out, ty, t, json!({"deal_id": deal, "amount": amount}));
                }
            }
            _ => {
                let cust = format!("C{n}");
                ev(
                    &mut out,
                    "crm.customer.acquired",
                    t0,
                    json!({"customer_id": cust, "channel": channel, "segment": if rng.bool() { "smb" } else { "mid" }}),
                );
                for k in 0..rng.usize(..3) {
                    let t = after(&mut rng);
                    ev(
                        &mut out,
                        "crm.order.placed",
                        t,
                        json!({"order_id": format!("O{n}-{k}"), "customer_id": cust, "amount": f64::from(rng.u32(1..90)) * 10.0, "kind": "new"}),
                    );
                }
                if rng.bool() {
                    let t = after(&mut rng);
                    ev(
                        &mut out,
                        "crm.survey.answered",
                        t,
                        json!({"customer_id": cust, "nps": rng.u8(..11)}),
                    );
                }
                if rng.u8(..3) == 0 {
                    let t = after(&mut rng);
                    ev(
                        &mut out,
                        "crm.customer.cancelled",
                        t,
                        json!({"customer_id": cust}),
                    );
                }
            }
        }
    }
    // The ordered run: by time, then as made.
    out.sort_by_key(|(t, _)| *t);
    out
}

/// `lines` in a random arrival order in which no event comes after the
/// clock (newest time read) has passed its own time + out-of-orderness.
pub fn shuffle(lines: &[(i64, String)], seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut keyed: Vec<(i64, &String)> = lines
        .iter()
        .map(|(t, l)| (t + rng.i64(0..OUT_OF_ORDERNESS), l))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, l)| l.clone()).collect()
}
