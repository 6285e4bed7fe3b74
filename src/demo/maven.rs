//! Replays the Maven Analytics CRM export (`sales_pipeline.csv`,
//! `sales_teams.csv`, `products.csv`) as CloudEvents: each opportunity is a
//! `crm.deal.created` at its engage date (stage `Engaging`, amount = its
//! product's list price) and, once closed, a `crm.deal.won` /
//! `crm.deal.lost` at its close date with the close value. Reps carry
//! their manager as `team` and their regional office as `region`.
//!
//! Rows that cannot be placed in time (stage `Prospecting` has no engage
//! date) and products missing from the product table (the export says
//! `GTXPro` where the table says `GTX Pro`) are counted in the report,
//! never silently dropped or guessed.

use crate::event::*;
use anyhow::Context;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What the conversion did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub rows: u64,
    pub events: u64,
    /// Rows with no engage date (not yet engaged): not replayed.
    pub skipped_no_date: u64,
    /// Product names of the pipeline missing from the product table, with row counts.
    pub unknown_products: BTreeMap<String, u64>,
}

fn date_ms(s: &str) -> anyhow::Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("bad date {s:?}"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis())
}

fn c(s: &str) -> Cow<'static, str> {
    Cow::Owned(s.to_string())
}

/// Converts the export in `dir` into events sorted by time (creations before closes on the same day).
pub fn convert(dir: &Path) -> anyhow::Result<(Vec<Event<'static>>, Report)> {
    let mut teams = HashMap::new();
    let mut rd =
        csv::Reader::from_path(dir.join("sales_teams.csv")).context("reading sales_teams.csv")?;
    for row in rd.records() {
        let row = row?;
        teams.insert(row[0].to_string(), (row[1].to_string(), row[2].to_string()));
    }
    let mut prices = HashMap::new();
    let mut rd =
        csv::Reader::from_path(dir.join("products.csv")).context("reading products.csv")?;
    for row in rd.records() {
        let row = row?;
        prices.insert(
            row[0].to_string(),
            row[2]
                .parse::<f64>()
                .with_context(|| format!("price of {}", &row[0]))?,
        );
    }
    let mut report = Report::default();
    let mut keyed: Vec<((i64, u8, u64), Event<'static>)> = Vec::new();
    let mut rd = csv::Reader::from_path(dir.join("sales_pipeline.csv"))
        .context("reading sales_pipeline.csv")?;
    for (i, row) in rd.records().enumerate() {
        let row = row?;
        report.rows += 1;
        let (id, agent, product, stage, engage, close, value) = (
            &row[0], &row[1], &row[2], &row[4], &row[5], &row[6], &row[7],
        );
        if engage.is_empty() {
            report.skipped_no_date += 1;
            continue;
        }
        let list = prices.get(product).copied();
        if list.is_none() {
            let n = report
                .unknown_products
                .entry(product.to_string())
                .or_default();
            if *n == 0 {
                tracing::warn!(
                    product,
                    "product of sales_pipeline.csv is not in products.csv: its deals carry no list price, so no discount is computed for them (names must match exactly, e.g. \"GTXPro\" vs \"GTX Pro\")"
                );
            }
            *n += 1;
        }
        let (team, region) = teams.get(agent).cloned().unzip();
        let ev = |suffix: &str, time: i64, payload| Event {
            id: Cow::Owned(format!("{id}-{suffix}")),
            source: c("maven-crm"),
            time,
            subject: Some(c(id)),
            payload,
        };
        let created = date_ms(engage)?;
        keyed.push((
            (created, 0, i as u64),
            ev(
                "created",
                created,
                Payload::DealCreated(DealCreated {
                    deal_id: c(id),
                    rep: c(agent),
                    amount: list.unwrap_or(0.0),
                    stage: c("Engaging"),
                    channel: None,
                    product: Some(c(product)),
                    lead_id: None,
                    team: team.as_deref().map(c),
                    region: region.as_deref().map(c),
                    campaign: None,
                    variant: None,
                    segment: None,
                    expected_close: None,
                }),
            ),
        ));
        if stage == "Won" || stage == "Lost" {
            let closed = date_ms(close)?;
            let amount: f64 = value
                .parse()
                .with_context(|| format!("close_value of {id}"))?;
            let d = DealClosed {
                deal_id: c(id),
                amount,
                list_price: list,
                competitor: None,
                reason: None,
                rep: None,
                channel: None,
                product: None,
                team: None,
                region: None,
            };
            let (suffix, payload) = if stage == "Won" {
                ("won", Payload::DealWon(d))
            } else {
                ("lost", Payload::DealLost(d))
            };
            keyed.push(((closed, 1, i as u64), ev(suffix, closed, payload)));
        }
    }
    keyed.sort_by_key(|(k, _)| *k);
    report.events = keyed.len() as u64;
    Ok((keyed.into_iter().map(|(_, e)| e).collect(), report))
}
