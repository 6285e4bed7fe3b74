#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI; it carries the Kubernetes API
# schemas, so it validates offline) into a virtualenv under
# ~/.cache/salespulse, for tests/deploy.rs. Idempotent: does nothing when
# it is there. Prints the virtualenv's bin directory.
set -euo pipefail
VERSION=1.37.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/salespulse/validators"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$VERSION"; then
  echo "installing kubernetes-validate $VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" >&2
fi
echo "$venv/bin"
