#!/usr/bin/env bash
# Kafka transactions on tansu: starts a tansu broker on a free port and
# runs examples/txn_probe.rs (consume → transactional produce +
# send_offsets_to_transaction → commit, an aborted transaction, what a
# read_committed reader sees, the committed offset, zombie fencing).
# docs/operations.md ("Kafka transactions") reports what it printed.
#
#   ./scripts/probe-transactions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source ./scripts/start-tansu.sh
cargo build --release --locked --example txn_probe
echo "tansu $(tansu --version 2>/dev/null | awk '{print $2}') on $url"
RUST_LOG=warn timeout 300 target/release/examples/txn_probe "127.0.0.1:$port"
