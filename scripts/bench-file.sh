#!/usr/bin/env bash
# File mode against DuckDB's one-thread batch query on a workload
# salespulse did not write (see scripts/bench-file.py). Installs DuckDB's
# Python package if missing (a virtualenv under $TMPDIR).
#
#   ./scripts/bench-file.sh [EVENTS] [RUNS]   (default 1000000 5)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TMPDIR:-/tmp}/salespulse-bench-venv"
if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$venv" || {
    echo "cannot create a Python virtualenv: on Debian, apt-get install python3-venv" >&2
    exit 1
  }
  "$venv/bin/pip" install --quiet 'duckdb>=1.1'
fi
cargo build --release --locked --bin salespulse --example throughput
"$venv/bin/python" scripts/bench-file.py "$@"
