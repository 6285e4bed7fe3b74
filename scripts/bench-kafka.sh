#!/usr/bin/env bash
# Kafka benchmark: starts a tansu broker on a free port, creates the
# topics, runs examples/kafka_bench.rs (throughput per core of the full
# pipeline next to a bare rdkafka consume loop, and produce → KPI
# latency at a fixed rate), then stops the broker.
#
#   ./scripts/bench-kafka.sh [EVENTS] [RATE] [SECONDS]   (default 200000 2000 10)
#
# KAFKA_BENCH_RATES="5000 10000 …" runs the latency stage again at each
# rate (the highest rate the machine sustains); KAFKA_BENCH_UPDATE and
# KAFKA_BENCH_TOML try knobs (examples/kafka_bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
source ./scripts/start-tansu.sh
cargo build --release --locked --example kafka_bench
tansu topic create bench.events --broker "$url" --partitions 3
tansu topic create bench.kpis --broker "$url" --partitions 1
tansu topic create bench.live --broker "$url" --partitions 3
tansu topic create bench.live.kpis --broker "$url" --partitions 1
RUST_LOG=warn target/release/examples/kafka_bench "127.0.0.1:$port" "${1:-200000}" "${2:-2000}" "${3:-10}"
