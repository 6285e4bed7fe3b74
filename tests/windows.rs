//! Window boundaries: month ends, DST changes, ISO week 53, fiscal years.

mod common;
use common::ms;
use salespulse::window::{is_period_label, Calendar, CalendarKind::*};

fn cal(tz: &str, fiscal: u32) -> Calendar {
    Calendar::new(tz.parse().unwrap(), fiscal)
}

#[test]
fn month_ends_and_leap_february() {
    let c = cal("UTC", 1);
    let b = c.bounds(Month, ms("2028-02-29T23:59:59.999Z"));
    assert_eq!(
        (b.start, b.end),
        (ms("2028-02-01T00:00:00Z"), ms("2028-03-01T00:00:00Z"))
    );
    assert_eq!(c.label(Month, b.start), "2028-02");
    let b = c.bounds(Month, ms("2026-12-31T23:59:59.999Z"));
    assert_eq!(b.end, ms("2027-01-01T00:00:00Z"));
    // the first instant of a month belongs to it, not to the month before
    assert_eq!(
        c.bounds(Month, ms("2026-03-01T00:00:00Z")).start,
        ms("2026-03-01T00:00:00Z")
    );
}

#[test]
fn months_and_days_follow_the_time_zone() {
    let c = cal("Europe/Paris", 1);
    // 23:30 UTC on Oct 31 is already November in Paris (UTC+1)
    let b = c.bounds(Month, ms("2026-10-31T23:30:00Z"));
    assert_eq!(c.label(Month, b.start), "2026-11");
    assert_eq!(b.start, ms("2026-10-31T23:00:00Z"));
    assert_eq!(b.end, ms("2026-11-30T23:00:00Z"));
}

#[test]
fn dst_days_are_23_and_25_hours_long() {
    let c = cal("Europe/Paris", 1);
    let spring = c.bounds(Day, ms("2026-03-29T12:00:00Z"));
    assert_eq!(spring.end - spring.start, 23 * 3_600_000);
    assert_eq!(spring.start, ms("2026-03-28T23:00:00Z"));
    let autumn = c.bounds(Day, ms("2026-10-25T12:00:00Z"));
    assert_eq!(autumn.end - autumn.start, 25 * 3_600_000);
    let ny = cal("America/New_York", 1);
    let b = ny.bounds(Day, ms("2026-03-08T12:00:00Z"));
    assert_eq!(b.end - b.start, 23 * 3_600_000);
    // the March month in Paris spans the DST change: 31 days minus one hour
    let m = c.bounds(Month, ms("2026-03-15T00:00:00Z"));
    assert_eq!(m.end - m.start, 31 * 86_400_000 - 3_600_000);
}

#[test]
fn midnight_in_a_dst_gap_starts_the_day_after_the_gap() {
    // Chile moves clocks forward at 24:00 local in September: 00:00 does not exist.
    let c = cal("America/Santiago", 1);
    let b = c.bounds(Day, ms("2026-09-06T15:00:00Z"));
    assert_eq!(c.label(Day, b.start), "2026-09-06");
    assert_eq!(
        b.start,
        ms("2026-09-06T04:00:00Z"),
        "01:00 -03 is the first instant of the day"
    );
}

#[test]
fn iso_week_53_and_week_years() {
    let c = cal("UTC", 1);
    // 2026 has 53 ISO weeks: Dec 28 2026 – Jan 3 2027 is 2026-W53
    let b = c.bounds(Week, ms("2027-01-01T12:00:00Z"));
    assert_eq!(b.start, ms("2026-12-28T00:00:00Z"));
    assert_eq!(b.end, ms("2027-01-04T00:00:00Z"));
    assert_eq!(c.label(Week, b.start), "2026-W53");
    // Dec 29 2025 is in 2026-W01
    let b = c.bounds(Week, ms("2025-12-30T00:00:00Z"));
    assert_eq!(c.label(Week, b.start), "2026-W01");
}

#[test]
fn calendar_and_fiscal_quarters_and_years() {
    let c = cal("UTC", 1);
    let q = c.bounds(Quarter, ms("2026-11-23T00:00:00Z"));
    assert_eq!(
        (q.start, q.end),
        (ms("2026-10-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
    );
    assert_eq!(c.label(Quarter, q.start), "2026-Q4");
    assert_eq!(c.label(Year, c.bounds(Year, q.start).start), "2026");

    // fiscal year starting in April, named after the year it ends in
    let f = cal("UTC", 4);
    let q = f.bounds(Quarter, ms("2026-11-23T00:00:00Z"));
    assert_eq!(
        (q.start, q.end),
        (ms("2026-10-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
    );
    assert_eq!(f.label(Quarter, q.start), "FY2027-Q3");
    let q = f.bounds(Quarter, ms("2027-02-10T00:00:00Z"));
    assert_eq!(f.label(Quarter, q.start), "FY2027-Q4");
    let y = f.bounds(Year, ms("2027-02-10T00:00:00Z"));
    assert_eq!(
        (y.start, y.end),
        (ms("2026-04-01T00:00:00Z"), ms("2027-04-01T00:00:00Z"))
    );
    assert_eq!(f.label(Year, y.start), "FY2027");
    let q1 = f.bounds(Quarter, ms("2026-04-01T00:00:00Z"));
    assert_eq!(f.label(Quarter, q1.start), "FY2027-Q1");
    // fiscal year starting in February: January belongs to the previous fiscal year's Q4
    let g = cal("UTC", 2);
    let q = g.bounds(Quarter, ms("2027-01-15T00:00:00Z"));
    assert_eq!(
        (q.start, q.end),
        (ms("2026-11-01T00:00:00Z"), ms("2027-02-01T00:00:00Z"))
    );
    assert_eq!(g.label(Quarter, q.start), "FY2027-Q4");
}

#[test]
fn period_labels() {
    for ok in ["2026-11", "2026-Q4", "2026", "FY2027-Q1", "FY2027"] {
        assert!(is_period_label(ok), "{ok}");
    }
    for bad in ["2026-13", "2026-Q5", "26-11", "FY2027-03", "november", ""] {
        assert!(!is_period_label(bad), "{bad}");
    }
}

/// The records of `e` after every `every` lines and at the end, as
/// comparable strings, by window kind.
fn rolling_records(
    mut e: salespulse::engine::Engine,
    lines: &[String],
    every: usize,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut keep = |recs: Vec<salespulse::output::KpiRecord>| {
        for r in recs {
            out.entry(r.window.kind.clone()).or_default().push(format!(
                "{} {:?} {} {} {:?} {:?} {:?} {} {} {}",
                r.kpi,
                r.dimensions,
                r.window.start,
                r.window.end,
                r.value,
                r.numerator,
                r.denominator,
                r.sample_size,
                r.is_final,
                r.revision
            ));
        }
    };
    for (i, l) in lines.iter().enumerate() {
        let _ = e.process_json(l.as_bytes());
        if i % every == every - 1 {
            e.emit_updates();
            keep(e.take_records());
        }
    }
    e.finish();
    keep(e.take_records());
    out
}

/// Rolling windows of several spans stage their events in the narrowest
/// one's newest sub-bucket and merge it into the others later; every
/// value must be what each window computes on its own (no staging), and
/// calendar windows what they are with no rolling window at all, with
/// events out of order, late ones, reads at arbitrary points, and a zone
/// whose days do not start on the hour (Asia/Kolkata, UTC+5:30).
#[test]
fn staged_rolling_windows_equal_each_window_computed_alone() {
    use salespulse::decode::json;
    use salespulse::demo::generator::{GenConfig, Generator, DEFAULT_START};
    let mut lines: Vec<String> = Generator::new(GenConfig {
        seed: 7,
        start: DEFAULT_START,
        events_per_day: 3000,
        reps: 6,
    })
    .take(20_000)
    .map(|e| json::encode(&e))
    .collect();
    // Disorder: neighbours swapped, and one event in 50 arriving 200
    // events (a couple of hours) late, across sub-bucket boundaries.
    let mut rng = 12345u64;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    for i in 1..lines.len() {
        if next() % 3 == 0 {
            lines.swap(i - 1, i);
        }
    }
    for i in (0..lines.len() - 200).step_by(50) {
        let l = lines.remove(i);
        lines.insert(i + 200, l);
    }
    for zone in ["UTC", "Asia/Kolkata"] {
        let conf = |rolling: &str| {
            common::engine(&format!(
                "[time]\nzone = \"{zone}\"\nout_of_orderness = \"1h\"\ngrace = \"1d\"\n[windows]\ncalendar = [\"day\", \"month\"]\nrolling = [{rolling}]\n"
            ))
        };
        for every in [97, 4000] {
            let together = rolling_records(conf("\"24h\", \"7d\", \"30d\""), &lines, every);
            assert_eq!(together.len(), 6, "{:?}", together.keys());
            for (span, kind) in [
                ("24h", "rolling_24h"),
                ("7d", "rolling_7d"),
                ("30d", "rolling_30d"),
            ] {
                let alone = rolling_records(conf(&format!("\"{span}\"")), &lines, every);
                assert!(alone[kind].len() > 500, "{kind}: {}", alone[kind].len());
                assert_eq!(
                    together[kind], alone[kind],
                    "{zone} {kind} staged differs from alone"
                );
            }
            // No rolling window: every event goes to its day directly.
            let direct = rolling_records(conf(""), &lines, every);
            for kind in ["day", "month", "gauge"] {
                assert!(direct[kind].len() > 10, "{kind}: {}", direct[kind].len());
                assert_eq!(
                    together[kind], direct[kind],
                    "{zone} {kind} staged differs from direct"
                );
            }
        }
    }
}
