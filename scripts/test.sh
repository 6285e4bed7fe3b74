#!/usr/bin/env bash
# The project's test command (README "Quick start"): installs what the
# tests need, idempotently, then runs every test.
#
# The tests need:
# - the Rust toolchain (the protobuf schema is compiled by the pure-Rust
#   protox: no protoc);
# - a C toolchain, make, pkg-config, zlib and OpenSSL headers, to build
#   the bundled librdkafka, Prometheus (server + promtool) for the
#   rules and scrape tests, and PostgreSQL for the KPI history tests
#   (Debian packages, installed when missing);
# - tansu, the Kafka-compatible broker the end-to-end tests start
#   (scripts/install-tansu.sh, from crates.io, once);
# - kubernetes-validate for the Kubernetes manifests
#   (scripts/install-validators.sh, from PyPI into a virtualenv, once);
#   python3 also runs the Grafana dashboard generator.
# The HTTP listeners, librdkafka's mock cluster and the PostgreSQL
# servers (initdb in a temporary directory) are started by the tests
# themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust from https://rustup.rs (rustup toolchain install stable)" >&2
  exit 1
fi
./scripts/install-deps.sh
./scripts/install-tansu.sh
validators="$(./scripts/install-validators.sh)"
export PATH="$HOME/.cargo/bin:$validators:$PATH"
cargo test --locked "$@"
