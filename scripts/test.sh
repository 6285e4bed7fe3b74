#!/usr/bin/env bash
# The project's test command (README "Quick start"): installs what the
# tests need, idempotently, then runs every test.
#
# Today the tests need only the Rust toolchain: the build compiles the
# protobuf schema with the pure-Rust protox (no protoc), and the tests
# start their own HTTP listeners. Later tiers (Kafka broker, Prometheus)
# add their installs here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust from https://rustup.rs (rustup toolchain install stable)" >&2
  exit 1
fi
cargo test --locked "$@"
