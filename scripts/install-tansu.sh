#!/usr/bin/env bash
# Installs the tansu Kafka-compatible broker that the Kafka end-to-end
# tests start, unless a working one is already on PATH (idempotent).
#
# tansu comes from crates.io; its in-memory storage (`memory://`) needs
# the `dynostore` feature. The build takes about 10 minutes once; after
# that this script returns at once.
set -euo pipefail
VERSION="${TANSU_VERSION:-}"
if command -v tansu >/dev/null 2>&1 && tansu --version >/dev/null 2>&1; then
  exit 0
fi
if [ -x "$HOME/.cargo/bin/tansu" ]; then
  exit 0
fi
echo "installing tansu (Kafka-compatible broker for the tests; about 10 minutes, once)" >&2
args=(install tansu --locked --features dynostore)
if [ -n "$VERSION" ]; then
  args+=(--version "$VERSION")
fi
cargo "${args[@]}"
