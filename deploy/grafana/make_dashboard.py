#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/salespulse.json, the Grafana dashboard
of salespulse's Prometheus exposition (docs/prometheus.md):

- a headline row of stat panels whose thresholds are those of the
  default alert rules in deploy/salespulse.toml;
- one panel per KPI family, by theme, broken down by the dimension chosen
  in $dimension (a KPI without that breakdown shows its total);
- leaderboards, salespulse's own alerts and a pipeline-health row.

Variables: $datasource (any Prometheus), $window (the calendar windows
exported by default), $dimension (all or one exported dimension).
Panels that exist for some windows only use that window and say so.

    ./make_dashboard.py                 write it (money in USD)
    ./make_dashboard.py --currency EUR  money panels in another currency
    ./make_dashboard.py --check         exit 1 if the committed file differs
                                        from a fresh generation (CI does this)
"""
import argparse, json, os, sys, tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards", "salespulse.json")
RULES = os.path.join(HERE, "..", "salespulse.toml")

# What salespulse exports by default ([prometheus] in docs/configuration.md).
WINDOWS = ["month", "day", "quarter"]
DIMENSIONS = ["all", "rep", "team", "region", "channel", "product", "segment", "variant"]

MONEY = "money"  # replaced by currency<CODE>

# Windows where a KPI needs more than a day of events to mean much
# (cancellations, an A/B sample): the panel says so.
LONG = ["month", "quarter"]

# (title, kpi, unit, window or None for $window, legend suffix
#  [, windows it is meant for (default: every choice), fixed breakdown])
ROWS = [
    ("Funnel and conversion", [
        ("Leads created", "leads_created", "short", None, ""),
        ("Lead conversion rate", "lead_conversion_rate", "percentunit", None, ""),
        ("MQL → SQL rate", "mql_to_sql_rate", "percentunit", None, ""),
        ("Lead response time (avg)", "lead_response_time_seconds_avg", "s", None, ""),
        ("Lead response time (p50)", "lead_response_time_seconds_p50", "s", None, ""),
        ("Lead response time (p90)", "lead_response_time_seconds_p90", "s", None, ""),
        ("First-contact SLA breaches", "first_contact_sla_breaches", "short", None, ""),
        ("First-contact SLA compliance", "first_contact_sla_compliance_ratio", "percentunit", None, ""),
        ("Lead cohort conversion (by creation window)", "lead_cohort_conversion_rate", "percentunit", None, ""),
        ("Stage conversion", "stage_conversion_rate", "percentunit", None, " {{stage}}"),
    ]),
    ("Deals", [
        ("Win rate", "win_rate", "percentunit", None, ""),
        ("Win / loss ratio", "win_loss_ratio", "short", None, ""),
        ("Deals won", "deals_won", "short", None, ""),
        ("Average deal size", "average_deal_size", MONEY, None, ""),
        ("Sales cycle (avg)", "sales_cycle_seconds_avg", "s", None, ""),
        ("Sales cycle (p50)", "sales_cycle_seconds_p50", "s", None, ""),
        ("Sales cycle (p90)", "sales_cycle_seconds_p90", "s", None, ""),
        ("Discount ratio", "discount_ratio", "percentunit", None, ""),
        ("Average discount", "average_discount", MONEY, None, ""),
    ]),
    ("Revenue, quota and monthly progress", [
        ("Revenue", "revenue", MONEY, None, ""),
        ("Revenue per employee", "revenue_per_employee", MONEY, None, ""),
        ("Market share", "market_share", "percentunit", None, ""),
        ("Quota attainment (month only)", "quota_attainment_ratio", "percentunit", "month", ""),
        ("Reps at ≥ 100 % of quota (month only)", "quota_reps_at_target_ratio", "percentunit", "month", ""),
        ("Progress vs monthly target (month only)", "sales_progress_ratio", "percentunit", "month", ""),
        ("Run-rate projection (month only)", "sales_run_rate_projection", MONEY, "month", ""),
        ("Revenue growth vs previous month (month only)", "revenue_growth_mom_ratio", "percentunit", "month", ""),
    ]),
    ("Forecast (current month and quarter)", [
        ("Forecast P50 (month)", "forecast_revenue_p50", MONEY, "month", ""),
        ("Forecast P10 (month)", "forecast_revenue_p10", MONEY, "month", ""),
        ("Forecast P90 (month)", "forecast_revenue_p90", MONEY, "month", ""),
        ("Forecast by category (month)", "forecast_by_category", MONEY, "month", " {{category}}"),
        ("Forecast ÷ monthly target", "forecast_target_ratio", "percentunit", "month", ""),
    ]),
    ("Pipeline (now)", [
        ("Open pipeline by stage (now)", "pipeline_value", MONEY, "gauge", " {{stage}}"),
        ("Weighted pipeline by stage (now)", "pipeline_value_weighted", MONEY, "gauge", " {{stage}}"),
        ("Deals expired (pipeline.max_open_age)", "deals_expired", "short", None, ""),
        ("Expired pipeline value", "expired_pipeline_value", MONEY, None, ""),
        ("Leads awaiting a first contact (now)", "leads_awaiting_first_contact", "short", "gauge", ""),
        ("Stalled deals by stage (now)", "stalled_deals", "short", "gauge", " {{stage}}"),
        ("Stalled pipeline value by stage (now)", "stalled_pipeline_value", MONEY, "gauge", " {{stage}}"),
        ("Share of the pipeline stalled (now)", "stalled_pipeline_ratio", "percentunit", "gauge", " {{stage}}"),
        ("Overdue deals by stage (now)", "overdue_deals", "short", "gauge", " {{stage}}"),
        ("Overdue pipeline value by stage (now)", "overdue_pipeline_value", MONEY, "gauge", " {{stage}}"),
        ("Deals pushed to a later month", "deals_pushed", "short", None, ""),
        ("Slipped pipeline value", "slipped_pipeline_value", MONEY, None, ""),
    ]),
    ("Customers", [
        ("Active customers (now)", "active_customers", "short", "gauge", ""),
        ("Customers by RFM segment (now)", "customers_by_rfm_segment", "short", "gauge", " {{rfm_segment}}"),
        ("Customer value by RFM segment (now)", "customer_value_by_rfm_segment", MONEY, "gauge", " {{rfm_segment}}"),
        ("Churn rate", "churn_rate", "percentunit", None, ""),
        ("Retention rate", "retention_rate", "percentunit", None, ""),
        ("Orders", "orders", "short", None, ""),
        ("Average order value", "average_order_value", MONEY, None, ""),
        ("Purchase frequency", "purchase_frequency", "short", None, ""),
        ("Upsell rate", "upsell_rate", "percentunit", None, ""),
        ("Cross-sell rate", "cross_sell_rate", "percentunit", None, ""),
        ("Customer lifetime (avg)", "customer_lifetime_seconds_avg", "s", None, "", LONG),
        ("Customer lifetime (window lengths)", "customer_lifetime_periods", "short", None, "", LONG),
        ("Customer lifetime value", "customer_lifetime_value", MONEY, None, "", LONG),
        ("Acquisition spend", "acquisition_spend", MONEY, None, ""),
        ("Customer acquisition cost", "customer_acquisition_cost", MONEY, None, ""),
        ("LTV : CAC", "ltv_to_cac_ratio", "short", None, "", LONG),
        ("NPS (−1…1)", "nps", "percentunit", None, ""),
        ("NPS score (−100…100)", "nps_score", "short", None, ""),
        ("CSAT (average)", "csat_avg", "short", None, ""),
    ]),
    ("Competition and experiments", [
        ("Win rate with a competitor", "win_rate_with_competitor", "percentunit", None, ""),
        ("Win rate without a competitor", "win_rate_without_competitor", "percentunit", None, ""),
        ("Price index vs competitors (by product)", "price_index", "short", None, " vs {{competitor}}", LONG, "product"),
        ("A/B conversion lift (by variant)", "ab_conversion_lift", "percentunit", None, " vs {{control}}", LONG, "variant"),
        ("A/B p-value (by variant)", "ab_test_p_value", "short", None, " vs {{control}}", LONG, "variant"),
    ]),
    ("Activity", [
        ("Activities by kind", "activities", "short", None, " {{activity_kind}}"),
    ]),
]

# Headline stats: (title, kpi, unit, window, alert rule giving the thresholds or None)
STATS = [
    ("Lead conversion (month)", "lead_conversion_rate", "percentunit", "month", None),
    ("Win rate (month)", "win_rate", "percentunit", "month", None),
    ("Revenue (month)", "revenue", MONEY, "month", None),
    ("Reps at quota (month)", "quota_reps_at_target_ratio", "percentunit", "month", "reps_at_quota_low"),
    ("Churn rate (month)", "churn_rate", "percentunit", "month", "churn_high"),
    ("Lead response p90 (day)", "lead_response_time_seconds_p90", "s", "day", "lead_response_slow"),
]

HEALTH = [
    ("Events in / s", "salespulse:events_in:rate5m", "ops", "events in"),
    ("Rejected / s by reason", "salespulse:events_rejected_by_reason:rate5m", "ops", "{{reason}}"),
    ("Kafka consumer lag (Kafka mode)", "salespulse:kafka_consumer_lag:sum", "short", "{{topic}}"),
    ("Processing time per event (p99)", "salespulse:event_processing_seconds:p99_5m", "s", "p99"),
    ("Late events / s", "sum(rate(salespulse_events_late_total[5m]))", "ops", "late"),
    ("Open entities", "salespulse_state_entities", "short", "{{entity}}"),
    ("KPI series on /metrics", "salespulse_prometheus_series", "short", "series"),
    ("Dimension values folded into \"other\" / s", "sum by (dimension) (rate(salespulse_series_folded_total[5m]))", "ops", "{{dimension}}"),
]

DS = {"type": "prometheus", "uid": "${datasource}"}


def breakdown(kpi, window, fixed=None):
    """The KPI by $dimension, or its total where it has no such breakdown,
    with a `series` label for the legend; by `fixed` only, if given (a KPI
    that exists only per value of one dimension)."""
    w = f'window="{window}"'
    if fixed:
        return (f'label_replace(salespulse_kpi_{kpi}{{{w},dimension="{fixed}"}}, '
                f'"series", "$1", "{fixed}", "(.+)")')
    a = f'salespulse_kpi_{kpi}{{{w},dimension="$dimension"}}'
    b = f'salespulse_kpi_{kpi}{{{w},dimension="all"}}'
    q = f"{a} or ({b} unless on() {a})"
    return ('label_replace(label_replace(' + q + ', "series", "all", "dimension", "all"), '
            '"series", "$1", "$dimension", "(.+)")')


def thresholds(rule):
    """Grafana threshold steps from an alert rule's above/below and clear."""
    green, yellow, red = "green", "yellow", "red"
    if rule is None:
        return {"mode": "absolute", "steps": [{"color": "blue", "value": None}]}
    if "below" in rule:
        t, c = rule["below"], rule.get("clear", rule["below"])
        return {"mode": "absolute", "steps": [
            {"color": red, "value": None}, {"color": yellow, "value": t}, {"color": green, "value": c}]}
    t, c = rule["above"], rule.get("clear", rule["above"])
    return {"mode": "absolute", "steps": [
        {"color": green, "value": None}, {"color": yellow, "value": c}, {"color": red, "value": t}]}


def build(currency):
    with open(RULES, "rb") as f:
        rules = {r["name"]: r for r in tomllib.load(f)["alerts"]["rules"]}
    money = f"currency{currency}"
    unit_of = lambda u: money if u == MONEY else u
    panels, pid, y = [], 1, 0

    def add(p):
        nonlocal pid
        p["id"] = pid
        pid += 1
        panels.append(p)

    def row(title):
        nonlocal y
        add({"type": "row", "title": title, "collapsed": False,
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1

    def ts(title, expr, unit, legend, x, w=8, description=""):
        return {
            "type": "timeseries", "title": title, "description": description,
            "datasource": DS,
            "gridPos": {"h": 7, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
        }

    row("Headline")
    for i, (title, kpi, unit, window, rule) in enumerate(STATS):
        r = rules.get(rule) if rule else None
        if rule and r is None:
            sys.exit(f"alert rule {rule} is not in {RULES}")
        desc = f"Thresholds: alert rule {rule} ({r['window']} window)." if r else ""
        add({
            "type": "stat", "title": title, "description": desc, "datasource": DS,
            "gridPos": {"h": 4, "w": 4, "x": i * 4, "y": y},
            "fieldConfig": {"defaults": {"unit": unit_of(unit), "thresholds": thresholds(r),
                                         "color": {"mode": "thresholds"}}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "value"},
            "targets": [{"refId": "A", "expr": f'salespulse_kpi_{kpi}{{window="{window}",dimension="all"}}',
                         "legendFormat": kpi}],
        })
    y += 4
    add({
        "type": "stat", "title": "Window shown", "datasource": DS,
        "description": "Start of the $window window every KPI panel shows (one window per scrape).",
        "gridPos": {"h": 3, "w": 24, "x": 0, "y": y},
        "fieldConfig": {"defaults": {"unit": "dateTimeAsIso"}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "none", "graphMode": "none", "textMode": "value"},
        "targets": [{"refId": "A", "expr": 'salespulse_window_start_seconds{window="$window"} * 1000',
                     "legendFormat": "$window"}],
    })
    y += 3
    for title, items in ROWS:
        row(title)
        for i, (ptitle, kpi, unit, window, extra, *more) in enumerate(items):
            meant, fixed = (more + [None, None])[:2]
            if i and i % 3 == 0:
                y += 7
            by = f"by {fixed}" if fixed else "by $dimension (its total where it has no such breakdown)"
            desc = {
                None: f"salespulse_kpi_{kpi} in the current $window window, {by}.",
                "month": f"salespulse_kpi_{kpi} exists for calendar months, quarters and years only: the current month, {by}.",
                "gauge": f"salespulse_kpi_{kpi} is a value of now (window=\"gauge\"), not of a window; {by}.",
            }[window]
            # The windows a panel is meant for, in a form tests/prometheus.rs reads.
            if window is None:
                desc += f" Windows: {', '.join(meant or WINDOWS)}."
                if meant:
                    desc += " (A day rarely holds enough of its events.)"
            add(ts(ptitle, breakdown(kpi, window or "$window", fixed), unit_of(unit),
                   "{{series}}" + extra, (i % 3) * 8, description=desc))
        y += 7
    row("Leaderboards ($window)")
    for i, (board, unit, meant) in enumerate([("revenue", MONEY, WINDOWS), ("win_rate", "percentunit", LONG),
                                              ("activities", "short", WINDOWS)]):
        add({
            "type": "bargauge", "title": f"Top reps by {board.replace('_', ' ')}", "datasource": DS,
            "description": f"Reps ranked in the current $window window (kpis.leaderboard_size). Windows: {', '.join(meant)}."
                           + (" (A rep needs kpis.leaderboard_min_sample closed deals in the window.)" if meant == LONG else ""),
            "gridPos": {"h": 8, "w": 8, "x": i * 8, "y": y},
            "fieldConfig": {"defaults": {"unit": unit_of(unit)}, "overrides": []},
            "options": {"orientation": "horizontal", "displayMode": "basic",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            "targets": [{"refId": "A", "instant": True, "legendFormat": "{{rep}}",
                         "expr": f'sort_desc(salespulse_leaderboard{{board="{board}",window="$window"}})'}],
        })
    y += 8
    row("Alerts")
    add({
        "type": "table", "title": "salespulse alert rules firing (Kafka/demo without rules: empty)",
        "datasource": DS, "gridPos": {"h": 6, "w": 24, "x": 0, "y": y},
        "targets": [{"refId": "A", "expr": "salespulse_alerts_firing > 0", "format": "table", "instant": True}],
    })
    y += 6
    row("Pipeline health")
    for i, (title, expr, unit, legend) in enumerate(HEALTH):
        if i and i % 3 == 0:
            y += 7
        add(ts(title, expr, unit, legend, (i % 3) * 8))
    y += 7

    def custom(name, label, options):
        return {"name": name, "label": label, "type": "custom", "hide": 0, "skipUrlSync": False,
                "query": ",".join(options),
                "current": {"text": options[0], "value": options[0]},
                "options": [{"text": o, "value": o, "selected": i == 0} for i, o in enumerate(options)]}

    return {
        "uid": "salespulse",
        "title": "salespulse",
        "tags": ["salespulse", "sales"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "hide": 0, "skipUrlSync": False, "current": {"text": "Prometheus", "value": "prometheus"}},
            custom("window", "Window", WINDOWS),
            custom("dimension", "Breakdown", DIMENSIONS),
        ]},
        "panels": panels,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--currency", default="USD", help="ISO 4217 code of money panels (default USD)")
    ap.add_argument("--check", action="store_true", help="fail if the committed dashboard is not up to date")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    text = json.dumps(build(a.currency), indent=1, ensure_ascii=False) + "\n"
    if a.check:
        with open(a.out) as f:
            if f.read() != text:
                sys.exit(f"{a.out} is not what make_dashboard.py writes: run deploy/grafana/make_dashboard.py")
        print(f"{a.out} is up to date")
        return
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out}: {len(build(a.currency)['panels'])} panels")


if __name__ == "__main__":
    main()
