#!/usr/bin/env bash
# Kafka transactions on tansu: starts a tansu broker on a free port and
# runs examples/txn_probe.rs (consume → transactional produce +
# send_offsets_to_transaction → commit, an aborted transaction, what a
# read_committed reader sees, the committed offset, zombie fencing).
# README "Kafka" → "Transactions" reports what it printed.
#
#   ./scripts/probe-transactions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/install-tansu.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --example txn_probe
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="tcp://127.0.0.1:$port"
tansu broker --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/ >/dev/null 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
echo "tansu $(tansu --version 2>/dev/null | awk '{print $2}') on $url"
RUST_LOG=warn timeout 300 target/release/examples/txn_probe "127.0.0.1:$port"
