//! Helpers shared by the integration tests: build events, run an engine,
//! find records.
#![allow(dead_code)]

use salespulse::config::Config;
use salespulse::decode::json::format_time;
use salespulse::engine::{Engine, Settings};
use salespulse::output::KpiRecord;
use serde_json::{json, Value};

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

/// A CloudEvent JSON line.
pub fn ce(id: &str, ty: &str, time: &str, data: Value) -> Vec<u8> {
    json!({"specversion": "1.0", "id": id, "source": "test", "type": ty, "time": time, "data": data})
        .to_string()
        .into_bytes()
}

/// Same, with the time given in ms.
pub fn ce_at(id: &str, ty: &str, t: i64, data: Value) -> Vec<u8> {
    ce(id, ty, &format_time(t), data)
}

/// The wall clock of test engines: fixed, after every test date, so that
/// no result depends on the day the tests run.
pub const TEST_NOW: &str = "2100-01-01T00:00:00Z";

pub fn engine(toml: &str) -> Engine {
    let mut s = Settings::from_config(&Config::from_toml(toml).expect("valid test config"));
    s.now = Some(ms(TEST_NOW));
    Engine::new(s)
}

/// Feeds every line, panics on a rejection, finishes, returns all records.
pub fn run_all(e: &mut Engine, lines: &[Vec<u8>]) -> Vec<KpiRecord> {
    for l in lines {
        e.process_json(l)
            .unwrap_or_else(|r| panic!("rejected {}: {r}", String::from_utf8_lossy(l)));
    }
    e.finish();
    e.take_records()
}

/// The final record of `kpi` in window `kind` labelled `label` with exactly `dims`.
pub fn find<'a>(
    recs: &'a [KpiRecord],
    kpi: &str,
    kind: &str,
    label: &str,
    dims: &[(&str, &str)],
) -> Option<&'a KpiRecord> {
    recs.iter().rev().find(|r| {
        r.kpi == kpi
            && r.window.kind == kind
            && (label.is_empty() || r.window.label == label)
            && r.dimensions.len() == dims.len()
            && dims
                .iter()
                .all(|(k, v)| r.dimensions.get(*k).map(String::as_str) == Some(*v))
    })
}

/// The records of the newest gauge emission, emitted now.
pub fn latest_gauges(e: &mut Engine) -> Vec<KpiRecord> {
    e.state.gauges_dirty = true;
    e.emit_updates();
    let recs = e.take_records();
    let rev = recs
        .iter()
        .filter(|r| r.window.kind == "gauge")
        .map(|r| r.revision)
        .max()
        .expect("a gauge emission");
    recs.into_iter()
        .filter(|r| r.window.kind == "gauge" && r.revision == rev)
        .collect()
}

/// The current value of gauge `kpi` with exactly `dims` (0 when absent).
pub fn gauge(e: &mut Engine, kpi: &str, dims: &[(&str, &str)]) -> f64 {
    find(&latest_gauges(e), kpi, "gauge", "current", dims)
        .and_then(|r| r.value)
        .unwrap_or(0.0)
}

pub fn value(
    recs: &[KpiRecord],
    kpi: &str,
    kind: &str,
    label: &str,
    dims: &[(&str, &str)],
) -> Option<f64> {
    find(recs, kpi, kind, label, dims)
        .unwrap_or_else(|| panic!("no record {kpi} {kind} {label} {dims:?}"))
        .value
}

/// Body of a `GET path` on `addr` when the answer is 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A day-by-day lead stream: on day `i` (from `first_day`, UTC midnight)
/// `leads` leads are created at 09:00 and `converted` of them convert at
/// 15:00. Ids are unique across calls with different `tag`s.
pub fn conversion_days(tag: &str, first_day: &str, days: &[(u32, u32)]) -> Vec<Vec<u8>> {
    let t0 = ms(first_day);
    let mut out = Vec::new();
    for (d, &(leads, converted)) in days.iter().enumerate() {
        let day = t0 + d as i64 * 86_400_000;
        for l in 0..leads {
            let id = format!("{tag}-d{d}-l{l}");
            out.push(ce_at(
                &format!("{id}-c"),
                "crm.lead.created",
                day + 9 * 3_600_000 + i64::from(l) * 1000,
                json!({"lead_id": id, "channel": if l % 2 == 0 { "web" } else { "event" }}),
            ));
        }
        for l in 0..converted {
            let id = format!("{tag}-d{d}-l{l}");
            out.push(ce_at(
                &format!("{id}-v"),
                "crm.lead.converted",
                day + 15 * 3_600_000 + i64::from(l) * 1000,
                json!({"lead_id": id}),
            ));
        }
    }
    out
}

/// Day windows only, each closed by the first event of the next day.
pub const DAY_WINDOWS: &str = r#"
[time]
out_of_orderness = "1m"
grace = "0s"
[windows]
calendar = ["day"]
rolling = []
"#;

/// The alert tests' rule: daily lead conversion below 15 %, resolved at
/// 18 %, on at least 10 leads (keys may be appended to it).
pub const CONVERSION_LOW: &str = r#"
[[alerts.rules]]
name = "conversion_low"
kpi = "lead_conversion_rate"
window = "day"
below = 0.15
clear = 0.18
min_sample = 10
"#;

/// One sample of a text exposition: name, labels, value.
pub type Sample = (String, std::collections::BTreeMap<String, String>, f64);

/// Parses a text exposition (as Prometheus does, for what salespulse writes).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("}")),
            None => (series, ""),
        };
        let mut l = std::collections::BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label");
            let mut v = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => v.push('\n'),
                        c => v.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => v.push(c),
                }
            };
            assert!(
                l.insert(k.to_string(), v).is_none(),
                "label {k} twice: {line}"
            );
            rest = after[end + 1..].trim_start_matches(',');
        }
        out.push((name.to_string(), l, value));
    }
    out
}

/// A KPI, sample-size or leaderboard series (what `prometheus.max_series` bounds).
pub fn is_kpi_series(name: &str) -> bool {
    (name.starts_with("salespulse_kpi_") && name != "salespulse_kpi_records_total")
        || name.starts_with("salespulse_leaderboard")
}
