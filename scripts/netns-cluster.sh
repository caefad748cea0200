#!/usr/bin/env bash
# A multi-node Ray cluster in network namespaces with capped links: see scripts/netns_cluster.py.
#   scripts/netns-cluster.sh up --nodes 2 --rate 100mbit | status | counters | exec -- CMD... | down
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/netns_cluster.py" "$@"
