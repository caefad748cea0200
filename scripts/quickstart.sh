#!/usr/bin/env bash
# `make run`: the real path. Start the service (embedded Ray + SQLite in ./esgd-data), submit
# examples/quickstart.yaml over gRPC, watch it to the end, download its checkpoint, stop the service.
set -euo pipefail
cd "$(dirname "$0")/.."
ESGD=.venv/bin/esgd
DATA_DIR=${ESGD_DATA_DIR:-esgd-data}
JOB=${1:-examples/quickstart.yaml}
mkdir -p "$DATA_DIR" runs
PORT_FILE="$DATA_DIR/port"
rm -f "$PORT_FILE"
"$ESGD" serve --port 0 --port-file "$PORT_FILE" --data-dir "$DATA_DIR" 2>"$DATA_DIR/server.log" &
SERVER=$!
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER"
        wait "$SERVER" || true
    fi
}
trap stop_server EXIT
for _ in $(seq 1 600); do
    [ -s "$PORT_FILE" ] && break
    kill -0 "$SERVER" 2>/dev/null || { echo "esgd serve failed to start:" >&2; tail -20 "$DATA_DIR/server.log" >&2; exit 1; }
    sleep 0.2
done
[ -s "$PORT_FILE" ] || { echo "esgd serve did not start in 120 s" >&2; exit 1; }
export ESGD_SERVER="127.0.0.1:$(cat "$PORT_FILE")"
echo "esgd service on $ESGD_SERVER (log: $DATA_DIR/server.log)"
NAME=$("$ESGD" submit "$JOB")
echo "submitted $NAME"
"$ESGD" watch "$NAME"
OUT="runs/$(basename "$JOB" .yaml)-${NAME#jobs/}.pt"
"$ESGD" download "$NAME" -o "$OUT"
echo "checkpoint: $OUT (torch.load it; ckpt['model'] is the state_dict)"
