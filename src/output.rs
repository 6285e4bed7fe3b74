//! What salespulse emits: KPI records and dead letters.

use crate::decode::Reject;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The window a KPI record is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// `day`, `week`, `month`, `quarter`, `year`, `rolling_24h`… or `gauge`
    /// (a value with no window: start = end = the newest event time).
    pub kind: String,
    /// RFC 3339, in the configured time zone's offset.
    pub start: String,
    /// RFC 3339, exclusive.
    pub end: String,
    /// `2026-11`, `2026-W48`, `2026-Q4`, `FY2027`, `rolling`, `current`.
    pub label: String,
    /// Start in milliseconds since the epoch (not serialized).
    #[serde(skip)]
    pub start_ms: i64,
}

/// One KPI value for one window and one set of dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiRecord {
    /// Catalogue name (static for records the engine makes).
    pub kpi: Cow<'static, str>,
    /// `ratio`, `seconds`, `currency` or `count`.
    pub unit: Cow<'static, str>,
    /// Shared by every record of one window emission.
    pub window: Arc<WindowInfo>,
    /// Dimension name → value; empty for the "all" series. Shared by the
    /// records of one series in one emission (serialized as a plain map).
    pub dimensions: Arc<BTreeMap<String, String>>,
    /// `null` when the denominator is zero.
    pub value: Option<f64>,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    /// Number of events or entities behind the value.
    pub sample_size: u64,
    /// No later record will change this window's value.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Grows by one each time this window is emitted; the final record has the highest.
    pub revision: u32,
}

impl KpiRecord {
    /// Identity of the series (KPI, window kind and dimensions, not window start).
    pub fn series_key(&self) -> String {
        let mut k = format!("{}|{}", self.kpi, self.window.kind);
        for (n, v) in self.dimensions.iter() {
            k.push('|');
            k.push_str(n);
            k.push('=');
            k.push_str(v);
        }
        k
    }
}

/// Writes KPI records as JSON, byte for byte what `serde_json` writes for
/// them, at a fraction of its cost: the window and the dimensions, shared
/// (`Arc`) by the records of one emission, are encoded once and copied
/// after that, and the record goes into a caller's buffer that is reused
/// from record to record (no allocation per record). It writes
/// [`KpiRecord`]'s fields in their declared order: a field added there
/// must be added here (the property test below compares the two).
#[derive(Debug, Default)]
pub struct JsonRecords {
    window: Encoded<WindowInfo>,
    dimensions: Encoded<BTreeMap<String, String>>,
}

/// A shared value and its JSON.
type Encoded<T> = Option<(Arc<T>, Vec<u8>)>;

impl JsonRecords {
    /// Appends `r` (no newline) to `out`.
    pub fn write(&mut self, r: &KpiRecord, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"kpi\":");
        json(out, &*r.kpi);
        out.extend_from_slice(b",\"unit\":");
        json(out, &*r.unit);
        out.extend_from_slice(b",\"window\":");
        out.extend_from_slice(shared(&mut self.window, &r.window));
        out.extend_from_slice(b",\"dimensions\":");
        out.extend_from_slice(shared(&mut self.dimensions, &r.dimensions));
        out.extend_from_slice(b",\"value\":");
        json(out, &r.value);
        out.extend_from_slice(b",\"numerator\":");
        json(out, &r.numerator);
        out.extend_from_slice(b",\"denominator\":");
        json(out, &r.denominator);
        out.extend_from_slice(b",\"sample_size\":");
        json(out, &r.sample_size);
        out.extend_from_slice(if r.is_final {
            b",\"final\":true,\"revision\":"
        } else {
            b",\"final\":false,\"revision\":"
        });
        json(out, &r.revision);
        out.push(b'}');
    }
}

/// One value as `serde_json` writes it (escaping, number formats, `null`).
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("values serialize");
}

/// The JSON of a value shared by consecutive records, encoded again only
/// when the record holds another one (the cache keeps the `Arc`, so its
/// address cannot be reused meanwhile).
fn shared<'a, T: Serialize>(cache: &'a mut Encoded<T>, v: &Arc<T>) -> &'a [u8] {
    if !cache.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, v)) {
        let mut buf = cache.take().map(|(_, b)| b).unwrap_or_default();
        buf.clear();
        json(&mut buf, &**v);
        *cache = Some((v.clone(), buf));
    }
    &cache.as_ref().expect("just filled").1
}

/// A ranking of reps for one window: its own record kind on every output
/// (`"record": "leaderboard"` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRecord {
    /// Always `leaderboard`, so that consumers of a mixed stream can tell it apart.
    pub record: Cow<'static, str>,
    /// `revenue`, `win_rate` or `activities`.
    pub board: Cow<'static, str>,
    /// Unit of the entries' values.
    pub unit: Cow<'static, str>,
    pub window: Arc<WindowInfo>,
    /// Best first; ties broken by rep name.
    pub entries: Vec<LeaderboardEntry>,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub revision: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    /// 1 for the best.
    pub rank: u32,
    pub rep: String,
    pub value: f64,
    /// Won deals (revenue), closed deals (win rate) or activities.
    pub sample_size: u64,
}

impl LeaderboardRecord {
    /// Key on the KPI topic: one per board and window instance.
    pub fn key(&self) -> String {
        format!(
            "leaderboard|{}|{}|{}",
            self.board, self.window.kind, self.window.label
        )
    }
}

/// A protobuf timestamp of a window bound (RFC 3339).
fn ts(s: &str) -> Option<prost_types::Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        })
}

/// The protobuf form of a record (`salespulse.v1.KpiRecord`).
pub fn to_proto(r: &KpiRecord) -> crate::pb::KpiRecord {
    crate::pb::KpiRecord {
        kpi: r.kpi.to_string(),
        window_kind: r.window.kind.clone(),
        window_start: ts(&r.window.start),
        window_end: ts(&r.window.end),
        window_label: r.window.label.clone(),
        dimensions: r
            .dimensions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        value: r.value,
        numerator: r.numerator,
        denominator: r.denominator,
        sample_size: r.sample_size,
        r#final: r.is_final,
        revision: r.revision,
        unit: r.unit.to_string(),
    }
}

/// The protobuf form of a leaderboard (`salespulse.v1.Leaderboard`).
pub fn leaderboard_to_proto(b: &LeaderboardRecord) -> crate::pb::Leaderboard {
    crate::pb::Leaderboard {
        board: b.board.to_string(),
        unit: b.unit.to_string(),
        window_kind: b.window.kind.clone(),
        window_start: ts(&b.window.start),
        window_end: ts(&b.window.end),
        window_label: b.window.label.clone(),
        entries: b
            .entries
            .iter()
            .map(|e| crate::pb::LeaderboardEntry {
                rank: e.rank,
                rep: e.rep.clone(),
                value: e.value,
                sample_size: e.sample_size,
            })
            .collect(),
        r#final: b.is_final,
        revision: b.revision,
    }
}

/// A rejected input, as written to the dead-letter sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    pub detail: String,
    /// The original bytes, when they are UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The original bytes in hex, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_hex: Option<String>,
    /// Where the input came from (`file:line`, `stdin:line`, `generator`).
    pub origin: String,
    /// When the message was longer than `output.dead_letter_max_bytes`
    /// (`raw` keeps its first bytes): its whole length and hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_xxh3: Option<String>,
    /// How many personal values `raw` had replaced by `"[redacted]"`
    /// (`output.dead_letter_redact`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redacted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A rejected message cut to at most `max` bytes (at a UTF-8 character
/// boundary when it is text), and, when cut, its whole length and XXH3-64
/// hash (16 hex digits), so that a huge line cannot make the dead-letter
/// sink fail and can still be matched with its source.
pub fn clip_raw(raw: &[u8], max: usize) -> (&[u8], Option<(usize, String)>) {
    if raw.len() <= max {
        return (raw, None);
    }
    let mut n = max;
    if let Err(e) = std::str::from_utf8(&raw[..n]) {
        // Cut inside a character of a text: cut before it.
        if e.error_len().is_none() {
            n = e.valid_up_to();
        }
    }
    let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(raw));
    (&raw[..n], Some((raw.len(), hash)))
}

impl DeadLetter {
    /// `max`: `output.dead_letter_max_bytes`; `redact`:
    /// `output.dead_letter_redact` (applied first).
    pub fn new(reject: &Reject, raw: &[u8], origin: String, max: usize, redact: &[String]) -> Self {
        let (raw, redacted) = crate::privacy::redact(raw, redact);
        let (raw, cut) = clip_raw(&raw, max);
        let (raw, raw_hex) = match std::str::from_utf8(raw) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(raw.iter().map(|b| format!("{b:02x}")).collect())),
        };
        DeadLetter {
            reason: reject.reason.as_str().to_string(),
            detail: reject.detail.clone(),
            raw,
            raw_hex,
            origin,
            raw_length: cut.as_ref().map(|c| c.0),
            raw_xxh3: cut.map(|c| c.1),
            redacted,
        }
    }
}

/// Drops provisional records that would repeat the last record sent for
/// their series and window (same value, numerator, denominator and
/// sample size; for a rolling window also the same start): a live update
/// then carries only what changed. Final records always pass, and end
/// their series' entry.
#[derive(Default)]
pub struct Unchanged {
    last: rustc_hash::FxHashMap<u64, u64>,
}

impl Unchanged {
    /// True when `r` is to be sent.
    pub fn keep(&mut self, r: &KpiRecord) -> bool {
        use std::hash::{Hash, Hasher};
        let mut k = xxhash_rust::xxh3::Xxh3::new();
        (&r.kpi, &r.window.kind, &r.window.label, &*r.dimensions).hash(&mut k);
        let key = k.finish();
        if r.is_final {
            self.last.remove(&key);
            return true;
        }
        let mut v = xxhash_rust::xxh3::Xxh3::new();
        (
            r.value.map(f64::to_bits),
            r.numerator.map(f64::to_bits),
            r.denominator.map(f64::to_bits),
            r.sample_size,
        )
            .hash(&mut v);
        if r.window.kind != "gauge" {
            r.window.start_ms.hash(&mut v);
        }
        let v = v.finish();
        self.last.insert(key, v) != Some(v)
    }

    /// Series remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, start_ms: i64, value: f64, is_final: bool) -> KpiRecord {
        KpiRecord {
            kpi: Cow::Borrowed("leads_created"),
            unit: Cow::Borrowed("count"),
            window: Arc::new(WindowInfo {
                kind: kind.into(),
                start: String::new(),
                end: String::new(),
                label: "2026-12-03".into(),
                start_ms,
            }),
            dimensions: Default::default(),
            value: Some(value),
            numerator: None,
            denominator: None,
            sample_size: value as u64,
            is_final,
            revision: 0,
        }
    }

    #[test]
    fn a_live_update_repeats_no_unchanged_series_and_finals_always_pass() {
        let mut u = Unchanged::default();
        assert!(u.keep(&rec("day", 0, 1.0, false)), "first value");
        assert!(!u.keep(&rec("day", 0, 1.0, false)), "the same again");
        assert!(u.keep(&rec("day", 0, 2.0, false)), "changed");
        assert!(u.keep(&rec("week", 0, 2.0, false)), "another series");
        assert!(u.keep(&rec("day", 0, 2.0, true)), "final, even unchanged");
        assert!(u.keep(&rec("day", 0, 2.0, false)), "a final ends the entry");
        assert!(u.keep(&rec("rolling_24h", 0, 3.0, false)));
        assert!(
            u.keep(&rec("rolling_24h", 3_600_000, 3.0, false)),
            "a rolling window moved"
        );
        assert!(u.keep(&rec("gauge", 0, 4.0, false)));
        assert!(
            !u.keep(&rec("gauge", 5, 4.0, false)),
            "a gauge's time alone is no change"
        );
        assert_eq!(u.len(), 4);
    }

    fn opt_f64() -> impl proptest::strategy::Strategy<Value = Option<f64>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(Some),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(-0.0)),
            (0u32..1000).prop_map(|n| Some(f64::from(n) / 8.0)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// The fast JSON writer is byte for byte `serde_json`, across
        /// records that share their window and dimensions and records
        /// that do not, with strings that need escaping.
        #[test]
        fn json_records_write_exactly_what_serde_json_writes(
            strings in proptest::collection::vec("[a-z\\\\\"\\n\\t\\u{1}é€😀 =|]{0,12}", 8),
            nums in proptest::collection::vec(opt_f64(), 9),
            counts in proptest::collection::vec(proptest::prelude::any::<u64>(), 3),
            flags in proptest::collection::vec(proptest::prelude::any::<bool>(), 3),
        ) {
            let window = |i: usize| Arc::new(WindowInfo {
                kind: strings[i].clone(),
                start: strings[i + 1].clone(),
                end: "2026-12-06T00:00:00+01:00".into(),
                label: strings[i + 2].clone(),
                start_ms: 7,
            });
            let dims = |i: usize| Arc::new(BTreeMap::from([
                (strings[i].clone(), strings[i + 1].clone()),
                ("rep".to_string(), strings[i + 2].clone()),
            ]));
            let (w1, w2, d1, d2) = (window(0), window(3), dims(4), dims(5));
            let records: Vec<KpiRecord> = (0..3).map(|i| KpiRecord {
                kpi: Cow::Owned(strings[6 + i % 2].clone()),
                unit: Cow::Borrowed("ratio"),
                window: if i == 2 { w2.clone() } else { w1.clone() },
                dimensions: [d1.clone(), d1.clone(), Default::default()][i].clone(),
                value: nums[3 * i],
                numerator: nums[3 * i + 1],
                denominator: nums[3 * i + 2],
                sample_size: counts[i],
                is_final: flags[i],
                revision: counts[i] as u32,
            }).chain(std::iter::once(KpiRecord { dimensions: d2, ..rec("day", 0, 1.5, true) }))
            .collect();
            let mut w = JsonRecords::default();
            let mut out = Vec::new();
            for r in records.iter().chain(&records) {
                out.clear();
                w.write(r, &mut out);
                proptest::prop_assert_eq!(
                    String::from_utf8(out.clone()).unwrap(),
                    serde_json::to_string(r).unwrap()
                );
            }
        }
    }
}
