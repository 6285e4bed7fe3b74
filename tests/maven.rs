//! Replays the Maven Analytics CRM export (tests/data/maven-crm, a copy of
//! shared/data/maven-crm) through the engine and checks win rate, revenue,
//! average deal size and cycle length per quarter and per sales agent
//! against a plain computation over the CSV.

mod common;
use common::*;
use salespulse::config::Config;
use salespulse::decode::json as cej;
use salespulse::engine::Engine;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/maven-crm")
}

#[derive(Default, Debug)]
struct Expect {
    won: u64,
    lost: u64,
    revenue: f64,
    cycle_days: Vec<i64>,
}

/// The independent computation: straight from the CSV rows, no salespulse code.
fn expected() -> BTreeMap<(String, String), Expect> {
    let mut out: BTreeMap<(String, String), Expect> = BTreeMap::new();
    let mut rd = csv::Reader::from_path(dir().join("sales_pipeline.csv")).unwrap();
    for row in rd.records() {
        let row = row.unwrap();
        let (agent, stage, engage, close, value) = (&row[1], &row[4], &row[5], &row[6], &row[7]);
        if stage != "Won" && stage != "Lost" {
            continue;
        }
        let (y, m): (i32, u32) = (close[..4].parse().unwrap(), close[5..7].parse().unwrap());
        let quarter = format!("{y}-Q{}", (m - 1) / 3 + 1);
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let days = (d(close) - d(engage)).num_days();
        for key in [
            (quarter.clone(), String::new()),
            (quarter.clone(), agent.to_string()),
        ] {
            let e = out.entry(key).or_default();
            if stage == "Won" {
                e.won += 1;
                e.revenue += value.parse::<f64>().unwrap();
                e.cycle_days.push(days);
            } else {
                e.lost += 1;
            }
        }
    }
    out
}

#[test]
fn maven_crm_kpis_match_an_independent_computation() {
    check_against_the_csv(Config::default());
}

/// With an entity TTL far shorter than the deals' cycles (up to 138 days
/// here), open deals are still not forgotten: every win keeps its rep and
/// sales cycle, and the numbers are those of the default run.
#[test]
fn maven_crm_kpis_are_the_same_with_a_30_day_ttl() {
    let cfg = Config::from_toml("[state]\nentity_ttl = \"30d\"\n").unwrap();
    let evicted = check_against_the_csv(cfg);
    assert!(evicted > 0, "closed deals are forgotten after 30 days");
}

/// Checks the quarterly KPIs against the CSV; returns the deals the TTL forgot.
fn check_against_the_csv(cfg: Config) -> u64 {
    let (events, report) = salespulse::demo::maven::convert(&dir()).unwrap();
    assert_eq!(report.rows, 8800);
    assert_eq!(
        report.skipped_no_date, 500,
        "Prospecting rows have no engage date"
    );
    assert_eq!(
        report.unknown_products.keys().collect::<Vec<_>>(),
        ["GTXPro"],
        "the GTXPro / GTX Pro mismatch is reported"
    );
    let mut e = Engine::from_config(&cfg);
    for ev in &events {
        let line = cej::encode(ev);
        e.process_json(line.as_bytes()).unwrap();
    }
    e.finish();
    let recs = e.take_records();
    let want = expected();
    assert!(want.len() > 4 * 30, "quarters × agents: {}", want.len());
    let mut checked = 0;
    for ((quarter, agent), x) in &want {
        let dims: Vec<(&str, &str)> = if agent.is_empty() {
            vec![]
        } else {
            vec![("rep", agent.as_str())]
        };
        let v = |k: &str| value(&recs, k, "quarter", quarter, &dims);
        let ctx = format!("{quarter} {agent:?}");
        let closed = (x.won + x.lost) as f64;
        assert_eq!(v("win_rate"), Some(x.won as f64 / closed), "win rate {ctx}");
        assert_eq!(v("revenue"), Some(x.revenue), "revenue {ctx}");
        let avg = v("average_deal_size");
        if x.won == 0 {
            assert_eq!(avg, None, "{ctx}");
            continue;
        }
        assert!(
            (avg.unwrap() - x.revenue / x.won as f64).abs() < 1e-9,
            "avg deal {ctx}: {avg:?}"
        );
        let mean_days = x.cycle_days.iter().sum::<i64>() as f64 / x.won as f64;
        let got = v("sales_cycle_seconds_avg").unwrap() / 86400.0;
        assert!(
            (got - mean_days).abs() < 1e-9,
            "cycle {ctx}: {got} vs {mean_days}"
        );
        let mut sorted = x.cycle_days.clone();
        sorted.sort_unstable();
        let median = sorted[(0.5 * (sorted.len() - 1) as f64) as usize] as f64;
        let p50 = v("sales_cycle_seconds_p50").unwrap() / 86400.0;
        assert!(
            (p50 - median).abs() <= 0.01 * median + 1e-9,
            "cycle p50 {ctx}: {p50} vs {median}"
        );
        let rec = find(&recs, "win_rate", "quarter", quarter, &dims).unwrap();
        assert!(rec.is_final);
        assert_eq!(rec.sample_size, x.won + x.lost);
        checked += 1;
    }
    assert!(checked > 100, "{checked}");
    // team (manager) and region (office) come from sales_teams.csv
    assert!(find(
        &recs,
        "revenue",
        "quarter",
        "2017-Q2",
        &[("region", "Central")]
    )
    .is_some());
    assert_eq!(
        e.state.stats.unknown_entity[1], 0,
        "every close finds its deal"
    );
    e.state.stats.evicted[1]
}

/// Discount vs list price per product and quarter, straight from the CSV:
/// Σ (list price − close value) ÷ Σ list price over won deals, with the
/// list price from products.csv. Products missing from the price list
/// (GTXPro) have no list price, so no discount.
#[test]
fn maven_discount_vs_list_price_per_product_matches_the_csv() {
    let mut prices = std::collections::HashMap::new();
    let mut rd = csv::Reader::from_path(dir().join("products.csv")).unwrap();
    for row in rd.records() {
        let row = row.unwrap();
        prices.insert(row[0].to_string(), row[2].parse::<f64>().unwrap());
    }
    // (quarter, product) → (won deals, Σ list, Σ close value); plus deals of unpriced products
    let mut want: BTreeMap<(String, String), (u64, f64, f64)> = BTreeMap::new();
    let (mut unpriced_won, mut gtxpro_rows) = (0, 0);
    let mut rd = csv::Reader::from_path(dir().join("sales_pipeline.csv")).unwrap();
    for row in rd.records() {
        let row = row.unwrap();
        let (product, stage, close, value) = (&row[2], &row[4], &row[6], &row[7]);
        // rows with an engage date are replayed
        gtxpro_rows += u64::from(product == "GTXPro" && !row[5].is_empty());
        if stage != "Won" {
            continue;
        }
        let Some(list) = prices.get(product) else {
            unpriced_won += 1;
            continue;
        };
        let (y, m): (i32, u32) = (close[..4].parse().unwrap(), close[5..7].parse().unwrap());
        let quarter = format!("{y}-Q{}", (m - 1) / 3 + 1);
        let e = want.entry((quarter, product.to_string())).or_default();
        e.0 += 1;
        e.1 += list;
        e.2 += value.parse::<f64>().unwrap();
    }
    assert!(unpriced_won > 0, "the export has won GTXPro deals");

    let (events, report) = salespulse::demo::maven::convert(&dir()).unwrap();
    assert_eq!(report.unknown_products.get("GTXPro"), Some(&gtxpro_rows));
    let mut e = Engine::from_config(&Config::default());
    for ev in &events {
        e.process_json(cej::encode(ev).as_bytes()).unwrap();
    }
    e.finish();
    let recs = e.take_records();
    assert!(want.len() >= 6 * 4, "{}", want.len());
    for ((quarter, product), (n, list, value)) in &want {
        let dims = [("product", product.as_str())];
        let ctx = format!("{quarter} {product}");
        let r = find(&recs, "discount_ratio", "quarter", quarter, &dims)
            .unwrap_or_else(|| panic!("no discount for {ctx}"));
        assert_eq!(r.sample_size, *n, "{ctx}");
        let expect = (list - value) / list;
        assert!(
            (r.value.unwrap() - expect).abs() < 1e-9,
            "discount {ctx}: {:?} vs {expect}",
            r.value
        );
        let avg = value_of(&recs, "average_discount", quarter, &dims);
        assert!(((avg - (list - value) / *n as f64) / avg.max(1.0)).abs() < 1e-9);
    }
    // GTXPro deals count in revenue, but never in a discount computed
    // against a guessed price.
    assert!(find(&recs, "revenue", "year", "2017", &[("product", "GTXPro")]).is_some());
    assert!(find(
        &recs,
        "discount_ratio",
        "year",
        "2017",
        &[("product", "GTXPro")]
    )
    .is_none());
}

fn value_of(
    recs: &[salespulse::output::KpiRecord],
    kpi: &str,
    q: &str,
    dims: &[(&str, &str)],
) -> f64 {
    value(recs, kpi, "quarter", q, dims).unwrap()
}
