#!/usr/bin/env bash
# Kafka benchmark: starts a tansu broker on a free port, creates the
# topics, runs examples/kafka_bench.rs (throughput per core of the full
# pipeline next to a bare rdkafka consume loop, and produce → KPI
# latency at a fixed rate), then stops the broker.
#
#   ./scripts/bench-kafka.sh [EVENTS] [RATE] [SECONDS]   (default 200000 2000 10)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/install-tansu.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --example kafka_bench
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="tcp://127.0.0.1:$port"
tansu broker --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/ >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
tansu topic create bench.events --broker "$url" --partitions 3
tansu topic create bench.kpis --broker "$url" --partitions 1
tansu topic create bench.live --broker "$url" --partitions 3
tansu topic create bench.live.kpis --broker "$url" --partitions 1
RUST_LOG=warn target/release/examples/kafka_bench "127.0.0.1:$port" "${1:-200000}" "${2:-2000}" "${3:-10}"
