//! The KPI catalogue: names, units, help texts and formulas.
//!
//! Formulas are plain functions of a merged [`Acc`]: the engine rolls
//! buckets up per dimension and calls [`window_kpis`]. KPIs that need more
//! than one bucket (quota, sales progress, churn) are computed in
//! `engine::emit` from the same accumulators.

use crate::agg::Acc;
use crate::event::ActivityKind;

/// Unit of a KPI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ratio,
    Seconds,
    Currency,
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Seconds => "seconds",
            Unit::Currency => "currency",
            Unit::Count => "count",
        }
    }
}

/// One KPI family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KpiDef {
    pub name: &'static str,
    pub unit: Unit,
    pub help: &'static str,
    /// Label beyond window and the dimensions (`stage`, `activity_kind`).
    pub extra_label: Option<&'static str>,
}

macro_rules! kpis {
    ($( $id:ident = $name:literal, $unit:ident, $extra:expr, $help:literal; )*) => {
        $( pub const $id: KpiDef = KpiDef { name: $name, unit: Unit::$unit, help: $help, extra_label: $extra }; )*
        /// Every KPI family, in catalogue order.
        pub const CATALOGUE: &[KpiDef] = &[ $( $id ),* ];
    };
}

kpis! {
    LEADS_CREATED = "leads_created", Count, None, "Leads created in the window.";
    LEAD_CONVERSION_RATE = "lead_conversion_rate", Ratio, None, "Leads converted ÷ leads created, in the window.";
    LEAD_RESPONSE_AVG = "lead_response_time_seconds_avg", Seconds, None, "Mean of first contact − lead creation.";
    LEAD_RESPONSE_P50 = "lead_response_time_seconds_p50", Seconds, None, "Median of first contact − lead creation (±1 %).";
    LEAD_RESPONSE_P90 = "lead_response_time_seconds_p90", Seconds, None, "90th percentile of first contact − lead creation (±1 %).";
    WIN_RATE = "win_rate", Ratio, None, "Deals won ÷ (won + lost), by close time.";
    WIN_LOSS_RATIO = "win_loss_ratio", Ratio, None, "Deals won ÷ deals lost.";
    DEALS_WON = "deals_won", Count, None, "Deals won in the window.";
    REVENUE = "revenue", Currency, None, "Σ amount of deals won (bookings).";
    AVERAGE_DEAL_SIZE = "average_deal_size", Currency, None, "Revenue ÷ deals won.";
    CYCLE_AVG = "sales_cycle_seconds_avg", Seconds, None, "Mean of won time − deal creation.";
    CYCLE_P50 = "sales_cycle_seconds_p50", Seconds, None, "Median of won time − deal creation (±1 %).";
    CYCLE_P90 = "sales_cycle_seconds_p90", Seconds, None, "90th percentile of won time − deal creation (±1 %).";
    PIPELINE_VALUE = "pipeline_value", Currency, Some("stage"), "Σ amount of open deals (stage \"\" = all stages).";
    PIPELINE_WEIGHTED = "pipeline_value_weighted", Currency, Some("stage"), "Σ amount × stage win probability of open deals.";
    QUOTA_ATTAINMENT = "quota_attainment_ratio", Ratio, None, "Revenue of reps with a quota ÷ their quota for the period.";
    QUOTA_REPS_AT_TARGET = "quota_reps_at_target_ratio", Ratio, None, "Share of reps with a quota whose revenue reached it.";
    SALES_PROGRESS = "sales_progress_ratio", Ratio, None, "Month-to-date revenue ÷ monthly target.";
    RUN_RATE = "sales_run_rate_projection", Currency, None, "Month-to-date revenue × month length ÷ time elapsed.";
    REVENUE_GROWTH_MOM = "revenue_growth_mom_ratio", Ratio, None, "(revenue − previous month's) ÷ previous month's.";
    CHURN_RATE = "churn_rate", Ratio, None, "Customers cancelled in the window ÷ customers active at its start.";
    RETENTION_RATE = "retention_rate", Ratio, None, "(active at end − new) ÷ active at start.";
    ACTIVE_CUSTOMERS = "active_customers", Count, None, "Customers acquired − cancelled (gauge).";
    ACTIVITIES = "activities", Count, Some("activity_kind"), "Calls, e-mails, meetings and demos logged.";
}

/// One computed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub def: KpiDef,
    pub extra: Option<&'static str>,
    pub value: Option<f64>,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    pub sample_size: u64,
}

/// `num ÷ den`, or `None` when `den` is 0.
pub fn ratio(def: KpiDef, num: f64, den: f64, sample: u64) -> Value {
    Value {
        def,
        extra: None,
        value: (den != 0.0).then(|| num / den),
        numerator: Some(num),
        denominator: Some(den),
        sample_size: sample,
    }
}

fn total(def: KpiDef, v: f64, sample: u64) -> Value {
    Value {
        def,
        extra: None,
        value: Some(v),
        numerator: Some(v),
        denominator: None,
        sample_size: sample,
    }
}

fn quantile(def: KpiDef, v: Option<f64>, sample: u64) -> Value {
    Value {
        def,
        extra: None,
        value: v,
        numerator: None,
        denominator: None,
        sample_size: sample,
    }
}

/// Cents to the currency's major unit.
pub fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// The KPIs that are a function of one merged accumulator.
pub fn window_kpis(a: &Acc, out: &mut Vec<Value>) {
    out.push(total(
        LEADS_CREATED,
        a.leads_created as f64,
        a.leads_created,
    ));
    out.push(ratio(
        LEAD_CONVERSION_RATE,
        a.leads_converted as f64,
        a.leads_created as f64,
        a.leads_created,
    ));
    let r = &a.response;
    out.push(ratio(
        LEAD_RESPONSE_AVG,
        r.sum_ms as f64 / 1000.0,
        r.count as f64,
        r.count,
    ));
    out.push(quantile(
        LEAD_RESPONSE_P50,
        r.quantile_seconds(0.5),
        r.count,
    ));
    out.push(quantile(
        LEAD_RESPONSE_P90,
        r.quantile_seconds(0.9),
        r.count,
    ));
    let closed = a.deals_won + a.deals_lost;
    out.push(ratio(WIN_RATE, a.deals_won as f64, closed as f64, closed));
    out.push(ratio(
        WIN_LOSS_RATIO,
        a.deals_won as f64,
        a.deals_lost as f64,
        closed,
    ));
    out.push(total(DEALS_WON, a.deals_won as f64, a.deals_won));
    out.push(total(REVENUE, money(a.revenue_cents), a.deals_won));
    out.push(ratio(
        AVERAGE_DEAL_SIZE,
        money(a.revenue_cents),
        a.deals_won as f64,
        a.deals_won,
    ));
    let c = &a.cycle;
    out.push(ratio(
        CYCLE_AVG,
        c.sum_ms as f64 / 1000.0,
        c.count as f64,
        c.count,
    ));
    out.push(quantile(CYCLE_P50, c.quantile_seconds(0.5), c.count));
    out.push(quantile(CYCLE_P90, c.quantile_seconds(0.9), c.count));
    for k in ActivityKind::ALL {
        let n = a.activities[k as usize];
        let mut v = total(ACTIVITIES, n as f64, n);
        v.extra = Some(k.as_str());
        out.push(v);
    }
}

/// Churn and retention from customers active at the window start.
pub fn churn_kpis(active_start: i64, acquired: u64, cancelled: u64, out: &mut Vec<Value>) {
    let start = active_start.max(0) as f64;
    out.push(ratio(
        CHURN_RATE,
        cancelled as f64,
        start,
        active_start.max(0) as u64,
    ));
    let end = start + acquired as f64 - cancelled as f64;
    out.push(ratio(
        RETENTION_RATE,
        end - acquired as f64,
        start,
        active_start.max(0) as u64,
    ));
}
