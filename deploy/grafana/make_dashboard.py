#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/salespulse.json: one panel per KPI
family, rows by theme, a firing-alerts table and a pipeline-health row,
with variables for window, rep, team and channel. Run it after changing
the KPI catalogue; tests/deploy.rs checks the result against a real
scrape."""
import json, os

DIMS = 'window="$window",rep="$rep",team="$team",channel="$channel",region="",product=""'
GAUGE_DIMS = 'rep="$rep",team="$team",channel="$channel",region="",product=""'

ROWS = [
    ("Funnel and conversion", [
        ("Leads created", "leads_created", "short", None),
        ("Lead conversion rate", "lead_conversion_rate", "percentunit", None),
        ("Lead response time (avg)", "lead_response_time_seconds_avg", "s", None),
        ("Lead response time (p50)", "lead_response_time_seconds_p50", "s", None),
        ("Lead response time (p90)", "lead_response_time_seconds_p90", "s", None),
    ]),
    ("Deals", [
        ("Win rate", "win_rate", "percentunit", None),
        ("Win / loss ratio", "win_loss_ratio", "short", None),
        ("Deals won", "deals_won", "short", None),
        ("Average deal size", "average_deal_size", "currencyUSD", None),
        ("Sales cycle (avg)", "sales_cycle_seconds_avg", "s", None),
        ("Sales cycle (p50)", "sales_cycle_seconds_p50", "s", None),
        ("Sales cycle (p90)", "sales_cycle_seconds_p90", "s", None),
    ]),
    ("Revenue, quota and monthly progress", [
        ("Revenue", "revenue", "currencyUSD", None),
        ("Quota attainment", "quota_attainment_ratio", "percentunit", None),
        ("Reps at ≥ 100 % of quota", "quota_reps_at_target_ratio", "percentunit", None),
        ("Monthly progress vs target", "sales_progress_ratio", "percentunit", None),
        ("Run-rate projection", "sales_run_rate_projection", "currencyUSD", None),
        ("Revenue growth vs previous month", "revenue_growth_mom_ratio", "percentunit", None),
    ]),
    ("Pipeline", [
        ("Open pipeline by stage", "pipeline_value", "currencyUSD", "gauge"),
        ("Weighted pipeline by stage", "pipeline_value_weighted", "currencyUSD", "gauge"),
        ("Deals expired (pipeline.max_open_age)", "deals_expired", "short", None),
        ("Expired pipeline value", "expired_pipeline_value", "currencyUSD", None),
    ]),
    ("Customers", [
        ("Churn rate", "churn_rate", "percentunit", None),
        ("Retention rate", "retention_rate", "percentunit", None),
        ("Active customers", "active_customers", "short", "gauge"),
    ]),
    ("Activity", [
        ("Activities by kind", "activities", "short", None),
    ]),
]

HEALTH = [
    ("Events in / s", "salespulse:events_in:rate5m", "ops"),
    ("Rejected / s by reason", "salespulse:events_rejected_by_reason:rate5m", "ops"),
    ("Kafka consumer lag", "salespulse:kafka_consumer_lag:sum", "short"),
    ("Processing time per event (p99)", "salespulse:event_processing_seconds:p99_5m", "s"),
    ("Late events / s", "sum(rate(salespulse_events_late_total[5m]))", "ops"),
    ("Open entities", "salespulse_state_entities", "short"),
]

panels, pid, y = [], 1, 0

def add(p):
    global pid
    p["id"] = pid
    pid += 1
    panels.append(p)

def ts(title, expr, unit, legend, x, w=8):
    return {
        "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 7, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
    }

for row, items in ROWS:
    add({"type": "row", "title": row, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    y += 1
    for i, (title, kpi, unit, kind) in enumerate(items):
        if kind == "gauge":
            expr = f'salespulse_kpi_{kpi}{{window="gauge",{GAUGE_DIMS}}}'
            legend = "{{stage}}" if kpi.startswith("pipeline") else "all"
        elif kpi == "activities":
            expr = f'salespulse_kpi_{kpi}{{{DIMS}}}'
            legend = "{{activity_kind}}"
        else:
            expr = f'salespulse_kpi_{kpi}{{{DIMS}}}'
            legend = "$window"
        if i and i % 3 == 0:
            y += 7
        add(ts(title, expr, unit, legend, (i % 3) * 8))
    y += 7

add({"type": "row", "title": "Alerts", "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
y += 1
add({
    "type": "table", "title": "Firing alerts",
    "datasource": {"type": "prometheus", "uid": "prometheus"},
    "gridPos": {"h": 6, "w": 24, "x": 0, "y": y},
    "targets": [{"refId": "A", "expr": 'ALERTS{alertstate="firing"}', "format": "table", "instant": True}],
})
y += 6
add({"type": "row", "title": "Pipeline health", "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
y += 1
for i, (title, expr, unit) in enumerate(HEALTH):
    if i and i % 3 == 0:
        y += 7
    add(ts(title, expr, unit, "{{reason}}{{topic}}{{entity}}", (i % 3) * 8))

def var(name, label, query=None, options=None, all_value=""):
    v = {"name": name, "label": label, "hide": 0, "skipUrlSync": False}
    if options is not None:
        v.update({"type": "custom", "query": ",".join(options),
                  "current": {"text": options[0], "value": options[0]},
                  "options": [{"text": o, "value": o, "selected": i == 0} for i, o in enumerate(options)]})
    else:
        v.update({"type": "query", "datasource": {"type": "prometheus", "uid": "prometheus"},
                  "query": {"query": query, "refId": "V"}, "definition": query, "refresh": 2,
                  "includeAll": True, "allValue": all_value,
                  "current": {"text": "All", "value": "$__all"}, "sort": 1, "regex": "/.+/"})
    return v

dashboard = {
    "uid": "salespulse",
    "title": "salespulse",
    "tags": ["salespulse", "sales"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": [
        var("window", "Window", options=["month", "day", "week", "quarter", "year", "rolling_24h", "rolling_7d", "rolling_30d"]),
        var("rep", "Rep", query="label_values(salespulse_kpi_revenue, rep)"),
        var("team", "Team", query="label_values(salespulse_kpi_revenue, team)"),
        var("channel", "Channel", query="label_values(salespulse_kpi_leads_created, channel)"),
    ]},
    "panels": panels,
}
out = os.path.join(os.path.dirname(__file__), "dashboards", "salespulse.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {out}: {len(panels)} panels")
