//! Exact scale-out, without a broker: per-partition source engines
//! export partials, one merger merges them, and its final records equal
//! those of one engine over every event — through repeated and
//! reordered partials, sources restarted from older checkpoints (they
//! replay), zombie sources that publish stale partials, and a merger
//! restarted from its own checkpoint.

#[path = "common/kafka.rs"]
mod kafka_common;

use kafka_common::{assert_same_finals, finals};
use salespulse::config::Config;
use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
use salespulse::engine::merge::{MergeState, Partial, Progress};
use salespulse::engine::state::State;
use salespulse::engine::{Engine, Settings};
use salespulse::event::Event;
use salespulse::output::KpiRecord;
use std::collections::{BTreeMap, BTreeSet};

const PARTS: usize = 4;

fn events(n: usize) -> Vec<Event<'static>> {
    let d = Config::default();
    Generator::new(GenConfig {
        seed: 7,
        start: DEFAULT_START,
        events_per_day: d.generator.events_per_day,
        reps: d.generator.reps,
    })
    .take(n)
    .collect()
}

/// The generator's reps listed in config: a rep-only event (activity,
/// first contact) gets its team and region from there, whichever
/// partition it is in (see docs/operations.md, "Scale-out"). Fewer
/// forecast draws than the default: the merger forecasts at each update.
fn config() -> Config {
    let d = Config::default();
    let reps: String = salespulse::demo::generator::roster(d.generator.reps)
        .iter()
        .map(|(n, t, r)| format!("[[reps]]\nname = \"{n}\"\nteam = \"{t}\"\nregion = \"{r}\"\n"))
        .collect();
    Config::from_toml(&format!("[forecast]\ndraws = 200\n{reps}")).unwrap()
}

fn settings() -> Settings {
    Settings::from_config(&config())
}

fn file_mode(evs: &[Event<'static>]) -> Vec<KpiRecord> {
    let mut e = Engine::new(settings());
    for ev in evs {
        let _ = e.apply(ev);
    }
    e.emit_updates();
    e.finish();
    e.take_records()
}

fn partition(e: &Event<'_>) -> usize {
    (xxhash_rust::xxh3::xxh3_64(e.partition_key().as_bytes()) % PARTS as u64) as usize
}

fn roundtrip(s: &State) -> State {
    postcard::from_bytes(&postcard::to_stdvec(s).unwrap()).unwrap()
}

fn new_source(state: Option<State>) -> Engine {
    let mut e = match state {
        Some(s) => Engine::from_state(settings(), s),
        None => Engine::new(settings()),
    };
    e.set_source_mode();
    e
}

fn name(p: usize) -> String {
    format!("crm.events/{p}")
}

fn new_merger(saved: Option<(State, MergeState)>) -> Engine {
    let expected: BTreeSet<String> = (0..PARTS).map(name).collect();
    let (mut e, m) = match saved {
        Some((s, m)) => (Engine::from_state(settings(), s), m),
        None => (Engine::new(settings()), MergeState::default()),
    };
    e.set_merge_mode(m, expected);
    e
}

/// The merger's checkpoint, written and read back.
fn checkpoint(merger: &mut Engine) -> (State, MergeState) {
    let (_, st, m) = merger.merge_snapshot().unwrap();
    (
        roundtrip(st),
        postcard::from_bytes(&postcard::to_stdvec(m).unwrap()).unwrap(),
    )
}

struct Source {
    engine: Engine,
    /// Next event of the partition to apply.
    next: usize,
    /// Last checkpoint: state and offset.
    saved: (State, usize),
}

/// Runs the partitions through sources and a merger with faults at
/// random points (seeded); returns every record the merger emitted.
/// `local`: the merger also takes in the items of each export as it is
/// sent (`Engine::absorb_items`, a merger on the sources' instance).
fn scaled(evs: &[Event<'static>], seed: u64, faults: bool, local: bool) -> (Vec<KpiRecord>, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut parts: Vec<Vec<&Event<'static>>> = vec![Vec::new(); PARTS];
    for e in evs {
        parts[partition(e)].push(e);
    }
    let mut sources: Vec<Source> = (0..PARTS)
        .map(|_| Source {
            engine: new_source(None),
            next: 0,
            saved: (Engine::new(settings()).state, 0),
        })
        .collect();
    // The partials topic: a log the merger reads in order.
    let mut log: Vec<Partial> = Vec::new();
    let mut merger = new_merger(None);
    let mut merged_upto = 0usize;
    let mut merger_saved: ((State, MergeState), usize) =
        ((Engine::new(settings()).state, MergeState::default()), 0);
    let mut out = Vec::new();
    let mut zombies: Vec<Partial> = Vec::new();
    // Positions in the log of partials whose items the merger took in as
    // they were exported (`local`): read back, only their progress is new.
    let mut own: BTreeSet<usize> = BTreeSet::new();
    let export = |s: &mut Source, p: usize, at_end: bool| -> Vec<Partial> {
        let e = &mut s.engine;
        let progress = Progress {
            clock: e.state.clock,
            max_time: e.state.max_time,
            idle: false,
            at_end,
        };
        // Small messages, so that exports are split.
        e.export(&name(p), s.next as i64, progress, 64 * 1024)
    };
    while sources
        .iter()
        .enumerate()
        .any(|(p, s)| s.next < parts[p].len())
    {
        let p = rng.usize(..PARTS);
        let s = &mut sources[p];
        let n = rng.usize(1..400).min(parts[p].len() - s.next);
        for ev in &parts[p][s.next..s.next + n] {
            let _ = s.engine.apply(ev);
        }
        s.next += n;
        if faults && rng.u8(..6) == 0 {
            // A checkpoint of changes not exported yet (a stop signal
            // between two exports), then a crash: the restored source
            // exports everything again.
            s.saved = (roundtrip(&s.engine.state), s.next);
            s.engine = new_source(Some(roundtrip(&s.saved.0)));
        }
        let msgs = export(s, p, false);
        if faults && rng.u8(..10) == 0 {
            // Lost on the way: the instance dies before they are sent.
            s.engine = new_source(Some(roundtrip(&s.saved.0)));
            s.next = s.saved.1;
            continue;
        }
        if local {
            for m in &msgs {
                assert!(merger.absorb_items(m.clone()));
            }
            own.extend(log.len()..log.len() + msgs.len());
        }
        if faults && rng.u8(..8) == 0 {
            // A zombie: these come again much later.
            zombies.extend(msgs.iter().cloned());
        }
        log.extend(msgs);
        if rng.u8(..4) == 0 {
            // Checkpoint after the partials are out.
            s.saved = (roundtrip(&s.engine.state), s.next);
        }
        if faults && rng.u8(..10) == 0 {
            // Crash after sending: the restarted source replays.
            s.engine = new_source(Some(roundtrip(&s.saved.0)));
            s.next = s.saved.1;
        }
        if faults && rng.u8(..10) == 0 && !zombies.is_empty() {
            let k = rng.usize(..zombies.len());
            log.extend(zombies.drain(..=k));
        }
        // The merger reads what is there.
        while merged_upto < log.len() {
            let msg = &log[merged_upto];
            // Through the wire format.
            let msg = Partial::decode(&msg.encode()).unwrap();
            if own.remove(&merged_upto) {
                merger.absorb_progress(&msg.source, msg.version, msg.progress);
            } else {
                assert!(merger.absorb(msg.clone()));
            }
            if faults && rng.u8(..3) == 0 {
                assert!(merger.absorb(msg.clone()), "a repeated partial is harmless");
            }
            merged_upto += 1;
        }
        merger.merge_advance();
        if rng.u8(..3) == 0 {
            merger.emit_updates();
        }
        out.extend(merger.take_records());
        if rng.u8(..5) == 0 {
            merger_saved = (checkpoint(&mut merger), merged_upto);
        }
        if faults && rng.u8(..20) == 0 {
            // The merger restarts from its checkpoint and reads on from there.
            let ((st, m), at) = merger_saved.clone();
            merger = new_merger(Some((st, m)));
            merged_upto = at;
            own.clear();
        }
    }
    log.append(&mut zombies);
    for (p, s) in sources.iter_mut().enumerate() {
        s.engine.end_of_input();
        let msgs = export(s, p, true);
        log.extend(msgs);
    }
    for (i, msg) in log.iter().enumerate().skip(merged_upto) {
        if own.contains(&i) {
            merger.absorb_progress(&msg.source, msg.version, msg.progress);
        } else {
            assert!(merger.absorb(msg.clone()));
        }
    }
    merger.merge_advance();
    assert!(merger.merge_at_end(), "every source reported its end");
    merger.emit_updates();
    merger.finish();
    out.extend(merger.take_records());
    let late = merger.merge_state().unwrap().late_items;
    (out, late)
}

/// Every final record of a key has the same values (a repeat after a
/// restart is the same record).
fn assert_finals_consistent(recs: &[KpiRecord]) {
    let mut seen: BTreeMap<String, kafka_common::Vals> = BTreeMap::new();
    for r in recs.iter().filter(|r| r.is_final) {
        let k = salespulse::kafka::record_key(r);
        let v = (r.value, r.numerator, r.denominator, r.sample_size);
        if let Some(old) = seen.insert(k.clone(), v) {
            let same = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                (a, b) => a == b,
            };
            assert!(
                same(old.0, v.0) && same(old.1, v.1) && same(old.2, v.2) && old.3 == v.3,
                "{k}: final {old:?} then {v:?}"
            );
        }
    }
}

#[test]
fn merged_partials_equal_one_engine() {
    let evs = events(60_000);
    let want = finals(&file_mode(&evs));
    assert!(want.len() > 1000, "{} final series", want.len());
    let (recs, late) = scaled(&evs, 1, false, false);
    assert_eq!(late, 0);
    assert_finals_consistent(&recs);
    let got = finals(&recs);
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len(), "no extra final series");
}

/// The merger merges a rolling sub-bucket when something reads it, not
/// at each partial: one restored from a checkpoint taken right after
/// it absorbed partials, while sources that keep running export only
/// what changes, ends with the same final records as one that never
/// stopped. And an export split into several messages sends each with
/// the bytes of its whole encoding.
#[test]
fn a_restored_merger_keeps_what_it_absorbed_before_its_checkpoint() {
    let evs = events(12_000);
    let mut parts: Vec<Vec<&Event<'static>>> = vec![Vec::new(); PARTS];
    for e in &evs {
        parts[partition(e)].push(e);
    }
    let mut sources: Vec<Engine> = (0..PARTS).map(|_| new_source(None)).collect();
    let (mut kept, mut restored) = (new_merger(None), None::<Engine>);
    let rounds = 8;
    let mut split = false;
    for r in 0..rounds {
        for (p, s) in sources.iter_mut().enumerate() {
            let chunk = parts[p].len().div_ceil(rounds);
            let (lo, hi) = (
                (r * chunk).min(parts[p].len()),
                ((r + 1) * chunk).min(parts[p].len()),
            );
            for ev in &parts[p][lo..hi] {
                let _ = s.apply(ev);
            }
            let progress = Progress {
                clock: s.state.clock,
                max_time: s.state.max_time,
                idle: false,
                at_end: r == rounds - 1,
            };
            let msgs = s.export_encoded(&name(p), hi as i64, progress, 8 * 1024);
            split |= msgs.len() > 1;
            for (sent, bytes) in msgs {
                // Encoded once by the export, item by item: the same
                // bytes as the whole partial's encoding.
                assert_eq!(bytes, sent.encode());
                let msg = Partial::decode(&bytes).unwrap();
                assert_eq!(msg, sent);
                assert!(kept.absorb(msg.clone()));
                if let Some(m) = restored.as_mut() {
                    assert!(m.absorb(msg.clone()));
                }
            }
        }
        if r == 1 {
            restored = Some(new_merger(Some(checkpoint(&mut kept))));
            kept.take_records();
        }
        kept.merge_advance();
        if let Some(m) = restored.as_mut() {
            m.merge_advance();
        }
    }
    assert!(split, "an export of more than 8 KiB is split");
    let mut restored = restored.unwrap();
    let [want, got] = [&mut kept, &mut restored].map(|m| {
        m.finish();
        finals(&m.take_records())
    });
    assert!(
        want.keys().filter(|k| k.contains("rolling")).count() > 50,
        "rolling finals: {want:?}"
    );
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len());
}

#[test]
fn merged_partials_stay_exact_through_crashes_replays_and_zombies() {
    let evs = events(30_000);
    let want = finals(&file_mode(&evs));
    for seed in [2, 3] {
        let (recs, _) = scaled(&evs, seed, true, false);
        assert_finals_consistent(&recs);
        let got = finals(&recs);
        assert_same_finals(&got, &want);
        assert_eq!(got.len(), want.len(), "no extra final series");
    }
}

/// A merger on the sources' instance takes their exports' items in at
/// once (live, without the trip through the partials topic), and from
/// the topic's copies only their progress (a zombie's or a restarted
/// merger's copy whole): the finals are still those of one engine,
/// through crashes, replays and zombies, and its clock moves only with
/// the topic's copies.
#[test]
fn own_exports_absorbed_at_once_then_their_progress_from_the_topic_change_no_final() {
    let evs = events(30_000);
    let want = finals(&file_mode(&evs));
    let (recs, _) = scaled(&evs, 4, true, true);
    assert_finals_consistent(&recs);
    let got = finals(&recs);
    assert_same_finals(&got, &want);
    assert_eq!(got.len(), want.len(), "no extra final series");

    // Items only: no progress, so no clock and no closed window.
    let mut src = new_source(None);
    for e in &evs[..2000] {
        let _ = src.apply(e);
    }
    let progress = Progress {
        clock: src.state.clock,
        max_time: src.state.max_time,
        idle: false,
        at_end: false,
    };
    let mut merger = new_merger(None);
    for m in src.export(&name(0), 2000, progress, 1 << 20) {
        assert!(merger.absorb_items(m));
    }
    merger.merge_advance();
    assert_eq!(
        merger.state.clock,
        i64::MIN,
        "the clock waits for the topic's copy"
    );
    merger.emit_updates();
    let live = merger.take_records();
    assert!(
        live.iter()
            .any(|r| r.kpi == "leads_created" && r.value.unwrap_or(0.0) > 0.0),
        "live values from the items alone"
    );
    assert!(live.iter().all(|r| !r.is_final));
}

#[test]
fn a_partial_under_other_settings_is_refused() {
    let mut src = new_source(None);
    for ev in events(200) {
        src.apply(&ev).unwrap();
    }
    let progress = Progress {
        clock: src.state.clock,
        max_time: src.state.max_time,
        idle: false,
        at_end: false,
    };
    let msgs = src.export("crm.events/0", 200, progress, 1 << 20);
    let mut c = config();
    c.time.zone = "Asia/Tokyo".into();
    let mut m = Engine::from_config(&c);
    m.set_merge_mode(MergeState::default(), ["crm.events/0".to_string()].into());
    assert!(!m.absorb(msgs[0].clone()));
    assert_eq!(m.merge_state().unwrap().refused, 1);
    assert!(Partial::decode(b"not a partial").is_err());
}

#[test]
fn maven_replay_merged_equals_one_engine() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/maven-crm");
    let (evs, _) = salespulse::demo::maven::convert(&dir).unwrap();
    let want = finals(&file_mode(&evs));
    let (recs, late) = scaled(&evs, 5, false, false);
    assert_eq!(late, 0);
    assert_same_finals(&finals(&recs), &want);
}

#[path = "common/dirty.rs"]
mod dirty;

/// A dirty stream (events before their entity, shuffled within the
/// out-of-orderness bound) split by entity over the partitions and
/// interleaved at random, through sources and a merger: the records of
/// file mode on the sorted stream.
#[test]
fn dirty_streams_in_any_interleaving_equal_file_mode_on_the_sorted_stream() {
    let decode = |l: &str| -> Event<'static> {
        let l: &'static str = Box::leak(l.to_string().into_boxed_str());
        salespulse::decode::json::decode(l.as_bytes()).unwrap()
    };
    for seed in [5, 6, 7] {
        let start = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z").unwrap();
        let lines = dirty::stream(seed, 900, start.timestamp_millis());
        let sorted: Vec<Event<'static>> = lines.iter().map(|(_, l)| decode(l)).collect();
        let want = finals(&file_mode(&sorted));
        let shuffled: Vec<Event<'static>> = dirty::shuffle(&lines, seed * 31)
            .iter()
            .map(|l| decode(l))
            .collect();
        for faults in [false, true] {
            let (recs, late) = scaled(&shuffled, seed, faults, false);
            // (zombies' partials for closed windows are dropped)
            assert!(faults || late == 0, "{late}");
            assert_finals_consistent(&recs);
            let got = finals(&recs);
            assert_same_finals(&got, &want);
            assert_eq!(got.len(), want.len(), "no extra final series");
        }
    }
}

/// The newest forecast record of each series (the forecast is
/// provisional only: the current month and quarter).
fn last_forecasts(recs: &[KpiRecord]) -> BTreeMap<String, kafka_common::Vals> {
    recs.iter()
        .filter(|r| r.kpi.starts_with("forecast_"))
        .map(|r| {
            let k = salespulse::kafka::record_key(r);
            (k, (r.value, r.numerator, r.denominator, r.sample_size))
        })
        .collect()
}

/// The forecast and the RFM segments need the entities themselves, not
/// sums: the sources send the open deals and ordering customers they
/// touched (with the forecast's history), and the merger's forecast and
/// segments equal one engine's — through crashes, replays, zombies and
/// its own exports taken in at once and again from the topic.
#[test]
fn forecast_and_rfm_merged_equal_one_engine() {
    let evs = events(30_000);
    let file = file_mode(&evs);
    let want = last_forecasts(&file);
    assert!(want.len() >= 10, "{want:?}");
    assert!(
        want.values().any(|v| v.3 > 10),
        "open deals in the forecast: {want:?}"
    );
    let rfm = |recs: &[KpiRecord]| -> BTreeMap<String, kafka_common::Vals> {
        finals(recs)
            .into_iter()
            .filter(|(k, _)| k.contains("rfm_segment"))
            .collect()
    };
    let want_rfm = rfm(&file);
    assert!(
        want_rfm.values().filter(|v| v.3 > 0).count() >= 5,
        "{want_rfm:?}"
    );
    for (seed, local) in [(9, false), (10, true)] {
        let (recs, _) = scaled(&evs, seed, true, local);
        // (the merger emitted earlier months' forecasts too while they
        // were current; one engine fed at once only the last ones)
        let got = last_forecasts(&recs);
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "seed {seed}: {k}");
        }
        assert_same_finals(&rfm(&recs), &want_rfm);
    }
}

/// An instance whose merger is elsewhere sends only the bytes of its
/// partials, its accumulators encoded from its state (`export_bytes`):
/// the very messages `export_encoded` makes with a copy of each, export
/// after export (only what changed since the last), whole or split in
/// several messages, and they decode to those partials.
#[test]
fn partials_sent_from_the_state_are_the_partials_made_with_a_copy() {
    let evs = events(6_000);
    let part: Vec<&Event<'static>> = evs.iter().filter(|e| partition(e) == 1).collect();
    let (mut copied, mut borrowed) = (new_source(None), new_source(None));
    let rounds = 6;
    let chunk = part.len().div_ceil(rounds);
    let (mut messages, mut split) = (0, false);
    for (r, evs) in part.chunks(chunk).enumerate() {
        for ev in evs {
            let (a, b) = (copied.apply(ev), borrowed.apply(ev));
            assert_eq!(a.is_ok(), b.is_ok());
        }
        let progress = Progress {
            clock: copied.state.clock,
            max_time: copied.state.max_time,
            idle: false,
            at_end: r == rounds - 1,
        };
        // Every other round in messages small enough to split.
        let max = if r % 2 == 0 { 4 * 1024 } else { 1 << 20 };
        let with_copy = copied.export_encoded(&name(1), r as i64, progress, max);
        let from_state = borrowed.export_bytes(&name(1), r as i64, progress, max);
        assert_eq!(with_copy.len(), from_state.len(), "round {r}");
        split |= with_copy.len() > 1;
        for ((p, bytes), sent) in with_copy.iter().zip(&from_state) {
            assert_eq!(bytes, sent, "round {r}: the same message");
            assert_eq!(&Partial::decode(sent).unwrap(), p);
            messages += 1;
        }
    }
    assert!(split, "some export was split in several messages");
    assert!(messages > rounds, "{messages} messages");
}
