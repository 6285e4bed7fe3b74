//! The KPI catalogue: names, units, help texts and formulas.
//!
//! Formulas are plain functions of a merged [`Acc`]: the engine rolls
//! buckets up per dimension and calls [`window_kpis`]. KPIs that need more
//! than one bucket (quota, sales progress, churn) are computed in
//! `engine::emit` from the same accumulators.

use crate::agg::Acc;
use crate::event::{ActivityKind, OrderKind};

/// Unit of a KPI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ratio,
    Seconds,
    Currency,
    Count,
    /// A score on its own scale (NPS −100…100, CSAT 1–5).
    Score,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Seconds => "seconds",
            Unit::Currency => "currency",
            Unit::Count => "count",
            Unit::Score => "score",
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
    SLA_BREACHES = "first_contact_sla_breaches", Count, None, "Leads not contacted within sla.first_contact, counted at their deadline.";
    SLA_COMPLIANCE = "first_contact_sla_compliance_ratio", Ratio, None, "Leads contacted by their deadline ÷ (those + breaches), by contact or deadline time.";
    LEADS_AWAITING = "leads_awaiting_first_contact", Count, None, "Leads not contacted (nor converted) yet (gauge).";
    WIN_RATE = "win_rate", Ratio, None, "Deals won ÷ (won + lost), by close time.";
    WIN_LOSS_RATIO = "win_loss_ratio", Ratio, None, "Deals won ÷ deals lost.";
    DEALS_WON = "deals_won", Count, None, "Deals won in the window.";
    REVENUE = "revenue", Currency, None, "Σ amount of deals won (bookings).";
    AVERAGE_DEAL_SIZE = "average_deal_size", Currency, None, "Revenue ÷ deals won.";
    CYCLE_AVG = "sales_cycle_seconds_avg", Seconds, None, "Mean of won time − deal creation.";
    CYCLE_P50 = "sales_cycle_seconds_p50", Seconds, None, "Median of won time − deal creation (±1 %).";
    CYCLE_P90 = "sales_cycle_seconds_p90", Seconds, None, "90th percentile of won time − deal creation (±1 %).";
    DEALS_EXPIRED = "deals_expired", Count, None, "Open deals closed by pipeline.max_open_age (no event for that long), at their expiry time.";
    EXPIRED_VALUE = "expired_pipeline_value", Currency, None, "Σ amount of the deals expired by pipeline.max_open_age.";
    PIPELINE_VALUE = "pipeline_value", Currency, Some("stage"), "Σ amount of open deals (stage \"\" = all stages).";
    PIPELINE_WEIGHTED = "pipeline_value_weighted", Currency, Some("stage"), "Σ amount × stage win probability of open deals.";
    STALLED_DEALS = "stalled_deals", Count, Some("stage"), "Open deals with no event (stage change, update, activity) for longer than their stage's max_days (gauge).";
    STALLED_VALUE = "stalled_pipeline_value", Currency, Some("stage"), "Σ amount of the stalled deals (gauge).";
    STALLED_RATIO = "stalled_pipeline_ratio", Ratio, Some("stage"), "Stalled pipeline value ÷ pipeline value (gauge).";
    OVERDUE_DEALS = "overdue_deals", Count, Some("stage"), "Open deals past the end of their expected_close day (gauge).";
    OVERDUE_VALUE = "overdue_pipeline_value", Currency, Some("stage"), "Σ amount of the overdue deals (gauge).";
    DEALS_PUSHED = "deals_pushed", Count, None, "Open deals whose expected_close moved to a later month, at the event that moved it.";
    SLIPPED_VALUE = "slipped_pipeline_value", Currency, None, "Σ amount of the pushed deals, at each push.";
    FORECAST_P10 = "forecast_revenue_p10", Currency, None, "Revenue won in the current month / quarter plus the 10th percentile of a Monte Carlo over its open deals (provisional records only).";
    FORECAST_P50 = "forecast_revenue_p50", Currency, None, "Same, median: the forecast.";
    FORECAST_P90 = "forecast_revenue_p90", Currency, None, "Same, 90th percentile.";
    FORECAST_TARGET_RATIO = "forecast_target_ratio", Ratio, None, "forecast_revenue_p50 ÷ the period's target: targets.monthly_revenue (month), else the Σ of the reps' quotas for it (provisional records only).";
    FORECAST_BY_CATEGORY = "forecast_by_category", Currency, Some("category"), "Open amount expected by the end of the current month / quarter by its stage's forecast category (pipeline, best_case, commit); closed = revenue won.";
    RFM_CUSTOMERS = "customers_by_rfm_segment", Count, Some("rfm_segment"), "Active customers that ordered, by RFM segment (recency, frequency, monetary quintiles among them) (gauge).";
    RFM_CLV = "customer_value_by_rfm_segment", Currency, Some("rfm_segment"), "Σ order amount ÷ customers of each RFM segment: their value to date (gauge).";
    QUOTA_ATTAINMENT = "quota_attainment_ratio", Ratio, None, "Revenue of reps with a quota ÷ their quota for the period.";
    QUOTA_REPS_AT_TARGET = "quota_reps_at_target_ratio", Ratio, None, "Share of reps with a quota whose revenue reached it.";
    SALES_PROGRESS = "sales_progress_ratio", Ratio, None, "Month-to-date revenue ÷ monthly target.";
    RUN_RATE = "sales_run_rate_projection", Currency, None, "Month-to-date revenue × month length ÷ time elapsed.";
    REVENUE_GROWTH_MOM = "revenue_growth_mom_ratio", Ratio, None, "(revenue − previous month's) ÷ previous month's.";
    CHURN_RATE = "churn_rate", Ratio, None, "Customers cancelled in the window ÷ customers active at its start.";
    RETENTION_RATE = "retention_rate", Ratio, None, "(active at end − new) ÷ active at start.";
    ACTIVE_CUSTOMERS = "active_customers", Count, None, "Customers acquired − cancelled (gauge).";
    ACTIVITIES = "activities", Count, Some("activity_kind"), "Calls, e-mails, meetings and demos logged.";
    MQL_TO_SQL = "mql_to_sql_rate", Ratio, None, "Leads reaching SQL ÷ leads reaching MQL, by qualification time.";
    STAGE_CONVERSION = "stage_conversion_rate", Ratio, Some("stage"), "Deals leaving the stage for the next one (the last stage: won) ÷ deals leaving it.";
    ORDERS = "orders", Count, None, "Orders placed.";
    AVERAGE_ORDER_VALUE = "average_order_value", Currency, None, "Order revenue ÷ orders (basket size).";
    PURCHASE_FREQUENCY = "purchase_frequency", Ratio, None, "Orders ÷ distinct customers who ordered.";
    UPSELL_RATE = "upsell_rate", Ratio, None, "Upsell orders ÷ orders from existing customers (upsell, cross-sell, renewal).";
    CROSS_SELL_RATE = "cross_sell_rate", Ratio, None, "Cross-sell orders ÷ orders from existing customers.";
    CUSTOMER_LIFETIME = "customer_lifetime_seconds_avg", Seconds, None, "Mean of cancellation − acquisition, over customers cancelled in the window.";
    CUSTOMER_LIFETIME_PERIODS = "customer_lifetime_periods", Ratio, None, "Average customer lifetime in window lengths: observed lifetime ÷ window length, else 1 ÷ churn rate.";
    CLV = "customer_lifetime_value", Currency, None, "APV × PF × CL = order revenue ÷ distinct buyers × lifetime in window lengths.";
    ACQUISITION_SPEND = "acquisition_spend", Currency, None, "Marketing + sales spend.";
    CAC = "customer_acquisition_cost", Currency, None, "(Marketing + sales spend) ÷ new customers.";
    LTV_TO_CAC = "ltv_to_cac_ratio", Ratio, None, "Customer lifetime value ÷ customer acquisition cost.";
    NPS = "nps", Ratio, None, "(Promoters 9–10 − detractors 0–6) ÷ answers, from −1 to 1.";
    NPS_SCORE = "nps_score", Score, None, "NPS on the usual −100…100 scale.";
    CSAT = "csat_avg", Score, None, "Mean CSAT answer (1–5).";
    REVENUE_PER_EMPLOYEE = "revenue_per_employee", Currency, None, "Revenue ÷ headcount (company, or the team's).";
    MARKET_SHARE = "market_share", Ratio, None, "Revenue ÷ market size for the window (yearly size × window length ÷ year length).";
    WIN_RATE_WITH_COMPETITOR = "win_rate_with_competitor", Ratio, None, "Won ÷ closed, over deals that named a competitor.";
    WIN_RATE_WITHOUT_COMPETITOR = "win_rate_without_competitor", Ratio, None, "Won ÷ closed, over deals that named no competitor.";
    PRICE_INDEX = "price_index", Ratio, None, "Σ our price ÷ Σ competitor price, over price observations.";
    DISCOUNT_RATIO = "discount_ratio", Ratio, None, "Σ (list price − amount) ÷ Σ list price, over won deals with a list price.";
    AVERAGE_DISCOUNT = "average_discount", Currency, None, "Σ (list price − amount) ÷ won deals with a list price.";
    AB_LIFT = "ab_conversion_lift", Ratio, Some("control"), "(variant conversion − control conversion) ÷ control conversion.";
    AB_P_VALUE = "ab_test_p_value", Ratio, Some("control"), "Two-sided p-value of the pooled two-proportion z-test of variant vs control conversion (numerator: z).";
    COHORT_CONVERSION = "lead_cohort_conversion_rate", Ratio, None, "Of the leads created in the window, the share converted so far.";
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

/// Deals pushed to a later month, and expired.
fn slippage_kpis(a: &Acc, out: &mut Vec<Value>) {
    out.push(total(DEALS_PUSHED, a.deals_pushed as f64, a.deals_pushed));
    out.push(total(SLIPPED_VALUE, money(a.slipped_cents), a.deals_pushed));
    out.push(total(
        DEALS_EXPIRED,
        a.deals_expired as f64,
        a.deals_expired,
    ));
    out.push(total(
        EXPIRED_VALUE,
        money(a.expired_cents),
        a.deals_expired,
    ));
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
    let [p50, p90] = r.quantiles_seconds([0.5, 0.9]);
    out.push(quantile(LEAD_RESPONSE_P50, p50, r.count));
    out.push(quantile(LEAD_RESPONSE_P90, p90, r.count));
    out.push(total(SLA_BREACHES, a.sla_breached as f64, a.sla_breached));
    let settled = a.sla_met + a.sla_breached;
    out.push(ratio(
        SLA_COMPLIANCE,
        a.sla_met as f64,
        settled as f64,
        settled,
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
    // A correction of a win whose window is final moves revenue without a
    // deal: its window's series still shows it.
    let revenue_sample = a.deals_won.max(u64::from(a.revenue_cents != 0));
    out.push(total(REVENUE, money(a.revenue_cents), revenue_sample));
    out.push(ratio(
        AVERAGE_DEAL_SIZE,
        money(a.revenue_cents),
        a.deals_won as f64,
        a.deals_won,
    ));
    slippage_kpis(a, out);
    let c = &a.cycle;
    out.push(ratio(
        CYCLE_AVG,
        c.sum_ms as f64 / 1000.0,
        c.count as f64,
        c.count,
    ));
    let [p50, p90] = c.quantiles_seconds([0.5, 0.9]);
    out.push(quantile(CYCLE_P50, p50, c.count));
    out.push(quantile(CYCLE_P90, p90, c.count));
    for k in ActivityKind::ALL {
        let n = a.activities[k as usize];
        let mut v = total(ACTIVITIES, n as f64, n);
        v.extra = Some(k.as_str());
        out.push(v);
    }
    out.push(ratio(
        MQL_TO_SQL,
        a.leads_sql as f64,
        a.leads_mql as f64,
        a.leads_mql,
    ));
    let orders: u64 = a.orders.iter().sum();
    let existing = orders - a.orders[OrderKind::New as usize];
    out.push(total(ORDERS, orders as f64, orders));
    out.push(ratio(
        AVERAGE_ORDER_VALUE,
        money(a.order_revenue_cents),
        orders as f64,
        orders,
    ));
    let buyers = a.buyers.len() as u64;
    out.push(ratio(
        PURCHASE_FREQUENCY,
        orders as f64,
        buyers as f64,
        buyers,
    ));
    out.push(ratio(
        UPSELL_RATE,
        a.orders[OrderKind::Upsell as usize] as f64,
        existing as f64,
        existing,
    ));
    out.push(ratio(
        CROSS_SELL_RATE,
        a.orders[OrderKind::CrossSell as usize] as f64,
        existing as f64,
        existing,
    ));
    let answers: u64 = a.nps.iter().sum();
    let net = a.nps[2] as f64 - a.nps[0] as f64;
    out.push(ratio(NPS, net, answers as f64, answers));
    out.push(ratio(NPS_SCORE, 100.0 * net, answers as f64, answers));
    out.push(ratio(
        CSAT,
        a.csat_milli as f64 / 1000.0,
        a.csat_count as f64,
        a.csat_count,
    ));
    let with = a.won_vs_competitor + a.lost_vs_competitor;
    out.push(ratio(
        WIN_RATE_WITH_COMPETITOR,
        a.won_vs_competitor as f64,
        with as f64,
        with,
    ));
    let without = closed - with;
    out.push(ratio(
        WIN_RATE_WITHOUT_COMPETITOR,
        (a.deals_won - a.won_vs_competitor) as f64,
        without as f64,
        without,
    ));
    out.push(price_index(a));
    let discount = money(a.list_cents - a.priced_amount_cents);
    out.push(ratio(
        DISCOUNT_RATIO,
        discount,
        money(a.list_cents),
        a.priced_won,
    ));
    out.push(ratio(
        AVERAGE_DISCOUNT,
        discount,
        a.priced_won as f64,
        a.priced_won,
    ));
}

/// Σ our price ÷ Σ competitor price.
pub fn price_index(a: &Acc) -> Value {
    ratio(
        PRICE_INDEX,
        money(a.our_price_cents),
        money(a.their_price_cents),
        a.price_obs,
    )
}

/// Churn, retention, customer lifetime and CLV, for scopes that have
/// customers (all, channel, segment). `window_ms` is the window length.
pub fn customer_kpis(active_start: i64, a: &Acc, window_ms: i64, out: &mut Vec<Value>) {
    let start = active_start.max(0) as f64;
    let n_start = active_start.max(0) as u64;
    let (acquired, cancelled) = (a.customers_acquired, a.customers_cancelled);
    out.push(ratio(CHURN_RATE, cancelled as f64, start, n_start));
    let end = start + acquired as f64 - cancelled as f64;
    out.push(ratio(RETENTION_RATE, end - acquired as f64, start, n_start));
    let life_s = a.lifetime_ms as f64 / 1000.0;
    out.push(ratio(
        CUSTOMER_LIFETIME,
        life_s,
        a.lifetimes as f64,
        a.lifetimes,
    ));
    // Lifetime in window lengths: observed, else 1 ÷ churn rate.
    let periods = if a.lifetimes > 0 {
        ratio(
            CUSTOMER_LIFETIME_PERIODS,
            life_s / a.lifetimes as f64,
            window_ms as f64 / 1000.0,
            a.lifetimes,
        )
    } else {
        let mut v = ratio(CUSTOMER_LIFETIME_PERIODS, start, cancelled as f64, n_start);
        v.numerator = None;
        v.denominator = None;
        v
    };
    let buyers = a.buyers.len() as u64;
    let per_buyer = (buyers > 0).then(|| money(a.order_revenue_cents) / buyers as f64);
    out.push(Value {
        def: CLV,
        extra: None,
        value: per_buyer.zip(periods.value).map(|(r, p)| r * p),
        numerator: per_buyer,
        denominator: None,
        sample_size: buyers,
    });
    out.push(periods);
}

/// Acquisition spend, CAC and LTV ÷ CAC (scopes all and channel); `clv`
/// is the scope's customer lifetime value.
pub fn acquisition_kpis(a: &Acc, clv: Option<f64>, out: &mut Vec<Value>) {
    let spend = money(a.spend_cents[0] + a.spend_cents[1]);
    let new = a.customers_acquired;
    out.push(total(ACQUISITION_SPEND, spend, new));
    let cac = ratio(CAC, spend, new as f64, new);
    let ltv = match (clv, cac.value) {
        (Some(l), Some(c)) => ratio(LTV_TO_CAC, l, c, new),
        _ => Value {
            def: LTV_TO_CAC,
            extra: None,
            value: None,
            numerator: clv,
            denominator: cac.value,
            sample_size: new,
        },
    };
    out.push(cac);
    out.push(ltv);
}

/// Two-sided p-value and z of the pooled two-proportion z-test of
/// `x1 / n1` against `x0 / n0`; `None` when undefined (an empty group, or
/// every lead in both groups converted or none did).
pub fn two_proportion_z_test(x1: u64, n1: u64, x0: u64, n0: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let (p1, p0) = (x1 as f64 / n1 as f64, x0 as f64 / n0 as f64);
    let p = (x1 + x0) as f64 / (n1 + n0) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n0 as f64)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (p1 - p0) / se;
    Some((libm::erfc(z.abs() / std::f64::consts::SQRT_2), z))
}
