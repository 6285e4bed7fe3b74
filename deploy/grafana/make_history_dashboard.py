#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/salespulse-history.json, the Grafana
dashboard of the KPI history in PostgreSQL (docs/history.md): trends by
event-time window, which Prometheus (the value of the current window,
sampled in wall-clock time) cannot draw.

Every panel reads salespulse.kpi_history / salespulse.leaderboard_history
through the provisioned PostgreSQL data source (uid salespulse-history).
A replayed year lands in its own months, not in the minutes the replay
took: set the dashboard's time range to the period of the data.

    ./make_history_dashboard.py          write it
    ./make_history_dashboard.py --check  exit 1 if the committed file differs
                                         from a fresh generation (CI does this)

tests/history.rs runs every query against a real PostgreSQL loaded by a
Maven replay and checks the values against the JSON output.
"""
import argparse, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards", "salespulse-history.json")
DS = {"type": "grafana-postgresql-datasource", "uid": "salespulse-history"}
T = "salespulse.kpi_history"


def series(kpi, window, breakdown, legend, value="value", extra=""):
    """One series per value of `breakdown` ('' = the total) of `kpi`'s
    `window` rows in the dashboard's time range."""
    metric = f"'{legend}'" if not breakdown else f"'{legend}' || (dimensions->>'{breakdown}')"
    return (f"SELECT window_start AS \"time\", {metric} AS metric, {value} AS value\n"
            f"FROM {T}\n"
            f"WHERE kpi = '{kpi}' AND window_kind = '{window}' AND breakdown = '{breakdown}'{extra}\n"
            f"  AND $__timeFilter(window_start)\n"
            f"ORDER BY 1, 2")


def last_year(kpi, window, legend):
    """The same series a year earlier, drawn on this year's time axis."""
    return (f"SELECT window_start + interval '1 year' AS \"time\", '{legend}' AS metric, value\n"
            f"FROM {T}\n"
            f"WHERE kpi = '{kpi}' AND window_kind = '{window}' AND breakdown = ''\n"
            f"  AND window_start + interval '1 year' BETWEEN $__timeFrom() AND $__timeTo()\n"
            f"ORDER BY 1")


# (title, description, unit, draw style, [(refId, sql)])
PANELS = [
    ("Conversion by channel, monthly",
     "Final monthly values by channel: leads → customers (lead_conversion_rate) and deals → won (win_rate).",
     "percentunit", "line",
     [("A", series("lead_conversion_rate", "month", "channel", "leads→customers ")),
      ("B", series("win_rate", "month", "channel", "deals won "))]),
    ("Win rate by rep, quarterly",
     "win_rate per fiscal quarter, one series per rep.",
     "percentunit", "bars",
     [("A", series("win_rate", "quarter", "rep", ""))]),
    ("Revenue by month, against last year",
     "revenue per calendar month, and the same month a year earlier.",
     "currencyUSD", "bars",
     [("A", series("revenue", "month", "", "revenue")),
      ("B", last_year("revenue", "month", "revenue a year earlier"))]),
    ("Deals won and average deal size, monthly",
     "deals_won (left axis) and average_deal_size (right axis) per month.",
     "short", "line",
     [("A", series("deals_won", "month", "", "deals won")),
      ("B", series("average_deal_size", "month", "", "average deal size"))]),
    ("Sales cycle p50 by channel, monthly",
     "Median days from deal creation to win, per month and channel.",
     "d", "line",
     [("A", series("sales_cycle_seconds_p50", "month", "channel", "", value="value / 86400"))]),
    ("Weighted pipeline, end of each day",
     "pipeline_value_weighted and pipeline_value as they stood at each day's last emission (gauge rows keep one value per local day).",
     "currencyUSD", "line",
     [("A", series("pipeline_value_weighted", "gauge", "", "weighted pipeline")),
      ("B", series("pipeline_value", "gauge", "", "open pipeline"))]),
]

LEADERBOARD = (
    "SELECT b.window_label AS month, (e->>'rank')::int AS rank, e->>'rep' AS rep,\n"
    "       (e->>'value')::float8 AS revenue, (e->>'sample_size')::bigint AS deals_won\n"
    "FROM salespulse.leaderboard_history b, jsonb_array_elements(b.entries) e\n"
    "WHERE b.board = 'revenue' AND b.window_kind = 'month' AND $__timeFilter(b.window_start)\n"
    "ORDER BY b.window_start DESC, rank"
)


def build():
    panels = []
    for i, (title, desc, unit, style, targets) in enumerate(PANELS):
        defaults = {"unit": unit, "custom": {"drawStyle": style, "spanNulls": False,
                                              "showPoints": "always", "fillOpacity": 60 if style == "bars" else 10}}
        overrides = []
        if title.startswith("Deals won"):
            overrides = [{"matcher": {"id": "byRegexp", "options": ".*average deal size.*"},
                          "properties": [{"id": "unit", "value": "currencyUSD"},
                                         {"id": "custom.axisPlacement", "value": "right"}]}]
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "gridPos": {"h": 9, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 9},
            "fieldConfig": {"defaults": defaults, "overrides": overrides},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"refId": r, "datasource": DS, "rawQuery": True, "editorMode": "code",
                         "format": "time_series", "rawSql": sql} for r, sql in targets],
        })
    y = (len(PANELS) + 1) // 2 * 9
    panels.append({
        "id": len(PANELS) + 1, "type": "table", "title": "Top reps by revenue, by month",
        "description": "The revenue leaderboard of every month in the time range (kpis.leaderboard_size reps).",
        "datasource": DS, "gridPos": {"h": 10, "w": 24, "x": 0, "y": y},
        "fieldConfig": {"defaults": {}, "overrides": [
            {"matcher": {"id": "byName", "options": "revenue"},
             "properties": [{"id": "unit", "value": "currencyUSD"}]}]},
        "options": {"showHeader": True},
        "targets": [{"refId": "A", "datasource": DS, "rawQuery": True, "editorMode": "code",
                     "format": "table", "rawSql": LEADERBOARD}],
    })
    return {
        "uid": "salespulse-history",
        "title": "salespulse history",
        "description": "KPI history by event-time window, from PostgreSQL (docs/history.md).",
        "tags": ["salespulse", "sales", "history"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-2y", "to": "now"},
        "templating": {"list": []},
        "panels": panels,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the committed dashboard is not up to date")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if a.check:
        with open(a.out) as f:
            if f.read() != text:
                sys.exit(f"{a.out} is not what make_history_dashboard.py writes: run deploy/grafana/make_history_dashboard.py")
        print(f"{a.out} is up to date")
        return
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out}: {len(build()['panels'])} panels")


if __name__ == "__main__":
    main()
