#!/usr/bin/env bash
# Installs the Debian packages the build needs for librdkafka (bundled in
# the rdkafka crate and compiled from source): a C compiler, make,
# pkg-config, zlib and OpenSSL headers; procps (`kill`, used by the
# tests to stop the binary); prometheus (the server and promtool the
# tests run against deploy/prometheus); and prometheus-alertmanager (the
# alert tests post to a real Alertmanager); python3 and python3-venv (the
# Grafana dashboard generator, and scripts/install-validators.sh);
# openssl (the endpoint tests make a TLS certificate with it); stunnel4
# (the Kafka security test puts TLS in front of tansu with it);
# postgresql (the server binaries — initdb, pg_ctl, postgres — and psql:
# the KPI history tests start their own server in a temporary
# directory). Idempotent: does nothing when they are all there.
set -euo pipefail
need=()
for pkg in gcc make pkg-config zlib1g-dev libssl-dev procps prometheus prometheus-alertmanager python3 python3-venv openssl stunnel4 postgresql; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
