#!/usr/bin/env bash
# Idle cost on Kafka: starts a tansu broker on a free port, creates an
# empty 3-partition input topic, runs `salespulse run --brokers …` on it
# (default configuration), and after a warm-up prints the CPU it and the
# broker use over SECONDS, per salespulse thread, as % of a core.
#
#   ./scripts/bench-idle.sh [SECONDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
source ./scripts/start-tansu.sh
cargo build --release --locked --bin salespulse
tansu topic create crm.events --broker "$url" --partitions 3
dir=$(mktemp -d)
SALESPULSE_HTTP__LISTEN=127.0.0.1:0 RUST_LOG=warn target/release/salespulse run \
  --brokers "127.0.0.1:$port" >/dev/null 2>"$dir/log" &
sp=$!
trap 'kill $sp $broker 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 8
# CPU ticks (1/100 s) by thread name, and the broker's.
ticks() {
  for t in /proc/"$sp"/task/*; do
    echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{c[$1] += $2} END {for (k in c) print k, c[k]}' | sort
  echo "~broker $(awk '{print $14 + $15}' /proc/"$broker"/stat)"
}
ticks > "$dir/a"
sleep "$secs"
ticks > "$dir/b"
echo "idle for ${secs} s, % of a core:"
join "$dir/a" "$dir/b" | awk -v s="$secs" '
  $1 == "~broker" { b = ($3 - $2) / s; next }
  { d = ($3 - $2) / s; t += d; printf "  %-18s %5.2f\n", $1, d }
  END { printf "salespulse %.2f, broker %.2f\n", t, b }'
