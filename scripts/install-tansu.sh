#!/usr/bin/env bash
# Installs the tansu Kafka-compatible broker that the Kafka end-to-end
# tests start, unless it is already installed (idempotent).
#
# tansu comes from crates.io, with two storage features: `dynostore`
# (the in-memory storage, `memory://`, most tests) and `libsql` (SQLite
# storage, `sqlite://`: it keeps SCRAM users, which the Kafka security
# test needs). The build takes 10–20 minutes once; after that this
# script returns at once. TANSU=/path/to/tansu skips it (that tansu must
# have both features).
set -euo pipefail
VERSION="${TANSU_VERSION:-0.6.0}"
FEATURES="dynostore,libsql"
if [ -n "${TANSU:-}" ]; then
  exit 0
fi
# cargo records the features of what it installed in ~/.cargo/.crates2.json.
installed_with_features() {
  python3 - "${CARGO_HOME:-$HOME/.cargo}/.crates2.json" "$FEATURES" <<'PY'
import json, sys
try:
    installs = json.load(open(sys.argv[1])).get("installs", {})
except Exception:
    sys.exit(1)
want = set(sys.argv[2].split(","))
ok = any(k.startswith("tansu ") and want <= set(v.get("features", [])) for k, v in installs.items())
sys.exit(0 if ok else 1)
PY
}
if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ] && installed_with_features; then
  exit 0
fi
echo "installing tansu $VERSION with $FEATURES (Kafka-compatible broker for the tests; 10–20 minutes, once)" >&2
cargo install tansu --locked --force --version "$VERSION" --features "$FEATURES"
