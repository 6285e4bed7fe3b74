#!/usr/bin/env bash
# The KPI history sink's figures (docs/history.md, docs/performance.md):
# rows written per second into PostgreSQL, and the size of the tables
# for a year of the demo. Starts its own PostgreSQL (initdb in a
# temporary directory, as the tests do), replays DAYS days of the demo
# generator (EVENTS_PER_DAY a day) once without and once with the sink.
#
#   ./scripts/bench-history.sh [DAYS] [EVENTS_PER_DAY]     (default 365 1000)
#
# Prints: `rows R written in S s: W rows/s (replay alone T s)` and
# `tables: B MB for D days of event time (N rows a day, …)` (the demo's
# deals close after their creation: DAYS days of events span more).
set -euo pipefail
cd "$(dirname "$0")/.."
days="${1:-365}"
per_day="${2:-1000}"
./scripts/install-deps.sh
cargo build --release --quiet
bin="$PWD/target/release/salespulse"
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
tmp="$(mktemp -d)"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$tmp"
  as_pg=(runuser -u postgres --)
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$tmp/data" -A trust -U postgres --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/log" -w \
  -o "-p $port -k $tmp -c listen_addresses=127.0.0.1" start >/dev/null
events=$((days * per_day))
# From 2025-01-01, so that a year of events is not dated in the future.
"$bin" generate --events "$events" --events-per-day "$per_day" \
  --start 2025-01-01T00:00:00Z --output "$tmp/events.jsonl"
t0=$(date +%s.%N)
"$bin" run --input "$tmp/events.jsonl" --output /dev/null --dead-letter "$tmp/dlq.jsonl" 2>/dev/null
t1=$(date +%s.%N)
"$bin" run --input "$tmp/events.jsonl" --output /dev/null --dead-letter "$tmp/dlq.jsonl" \
  --postgres-url "host=127.0.0.1 port=$port user=postgres dbname=postgres" 2>/dev/null
t2=$(date +%s.%N)
q() { psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -X -A -t -c "$1"; }
rows="$(q 'SELECT (SELECT count(*) FROM salespulse.kpi_history) + (SELECT count(*) FROM salespulse.leaderboard_history)')"
span="$(q "SELECT count(DISTINCT window_start) FROM salespulse.kpi_history WHERE window_kind = 'day'")"
bytes="$(q "SELECT pg_total_relation_size('salespulse.kpi_history') + pg_total_relation_size('salespulse.leaderboard_history')")"
python3 - "$rows" "$bytes" "$t0" "$t1" "$t2" "$span" <<'PY'
import sys
rows, size, t0, t1, t2, days = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:6]), int(sys.argv[6])
alone, sink = t1 - t0, t2 - t1
print(f"rows {rows:,} written in {sink:.1f} s: {rows / sink:,.0f} rows/s (replay alone {alone:.1f} s)")
print(f"tables: {size / 1e6:,.0f} MB for {days} days of event time ({rows / days:,.0f} rows a day, {size / rows:,.0f} bytes a row)")
PY
