#!/usr/bin/env bash
# The GPU path in one prepared script (docs/benchmarks.md, "The GPU path"). Under 5 minutes on
# one H100/H200, it measures
#   1. bench/scaling.py --device cuda: the engine with K = 1, 2, 4 replicas at num_gpus=0.25 on
#      the one GPU against one plain-torch process (samples/s, round split, bytes/sample);
#   2. a short LeNet Parle run to a test error: `esgd run examples/quickstart.yaml` (through
#      python -m services.cli) with 4 replicas at num_gpus=0.25 and a shorter budget.
#
# The GPU host is offline: Python 3.12 with torch (CUDA), grpcio, protobuf, PyYAML, tqdm, numpy,
# but no Ray and no pydantic. So, here, with network, once:
#   ../shared/tools/device-ray-wheels.sh    # .whl/: slim Ray 2.60.0 wheel for cp312 + its deps
#   bench/gpu.sh --prepare                  # adds pydantic's wheels to .whl/, writes .gpu-data/
# .gpu-data/fashion-mnist holds the first $GPU_TRAIN_IMAGES (default 15000) Fashion-MNIST training
# images and the full test set: with the Ray wheels (~46 MiB) that keeps what travels under the
# device tool's 64 MiB. Then on the GPU host (device tool: carry [".whl", ".gpu-data"]):
#   bench/gpu.sh --device cuda
# which installs .whl/*.whl into a temporary --target folder when ray or pydantic is missing.
# `bench/gpu.sh --device cpu` runs the same steps, shortened, on a CPU box (a check of the script;
# with no .gpu-data it reads /usr/share/datasets/fashion-mnist). Outputs: $OUT (or runs/gpu-bench):
# gpu.log, env.txt, scaling.md, parle-summary.json, parle-metrics.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=cuda
MODE=run
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    --prepare) MODE=prepare; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (use --device cuda|cpu or --prepare)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "bench/gpu.sh: --device must be cpu or cuda" >&2; exit 2 ;; esac
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
DATA_SRC=/usr/share/datasets/fashion-mnist
DATA=.gpu-data/fashion-mnist

prepare() {
  if ! ls .whl/ray-*.whl >/dev/null 2>&1; then
    "$ROOT/../shared/tools/device-ray-wheels.sh"
  fi
  # pydantic (the job spec) is not on the GPU host: the versions of this checkout's venv, with a
  # typing-extensions new enough for pydantic-core.
  local pins
  pins=$("$PY" -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")))')
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .whl $pins
  "$PY" - "$DATA_SRC" "$DATA" "${GPU_TRAIN_IMAGES:-15000}" <<'PY'
import gzip, shutil, sys
from pathlib import Path
import numpy as np
src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dst.mkdir(parents=True, exist_ok=True)
for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):       # the full test set
    shutil.copyfile(src / f"{stem}.gz", dst / f"{stem}.gz")
for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):     # the first n training samples
    data = gzip.decompress((src / f"{stem}.gz").read_bytes())
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", ndim, 4).copy()
    item, n = int(np.prod(dims[1:])), min(n, int(dims[0]))
    dims[0] = n
    body = data[4 + 4 * ndim: 4 + 4 * ndim + n * item]
    (dst / f"{stem}.gz").write_bytes(gzip.compress(data[:4] + dims.tobytes() + body, 9))
print(f"{dst}: first {n} training samples, full test set")
PY
  local tree
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
  local total=$(( tree + $(du -sb .whl | cut -f1) + $(du -sb .gpu-data | cut -f1) ))
  du -sh .whl .gpu-data
  echo "travels: $(( total / 1048576 )) MiB of the device tool's 64 MiB (tree, .whl, .gpu-data)"
  [ "$total" -lt $(( 63 * 1048576 )) ] || { echo "too big: lower GPU_TRAIN_IMAGES" >&2; exit 1; }
}

if [ "$MODE" = prepare ]; then prepare; exit 0; fi

OUT=${OUT:-runs/gpu-bench}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
START=$(date +%s)
WORK=$(mktemp -d)  # the Ray/pydantic install and the Parle run directory; removed at exit
trap 'rm -rf "$WORK"' EXIT
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # the project is not installed on the GPU host
if ! "$PY" -c 'import ray, pydantic' 2>/dev/null; then
  ls .whl/ray-*.whl .whl/pydantic-*.whl >/dev/null 2>&1 || {
    echo "no Ray/pydantic here and no wheels in .whl/: run ../shared/tools/device-ray-wheels.sh and" \
         "bench/gpu.sh --prepare on a machine with network, and carry .whl" >&2; exit 1; }
  SITE=$WORK/site
  echo "== installing .whl/*.whl into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
if [ ! -d "$DATA" ]; then
  if [ "$DEVICE" = cpu ] && [ -d "$DATA_SRC" ]; then DATA=$DATA_SRC
  else echo "no $DATA: run bench/gpu.sh --prepare here and carry .gpu-data" >&2; exit 1; fi
fi

{ echo "date: $(date -u +%FT%TZ)  device: $DEVICE  data: $DATA  cpus: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -c 'import platform, torch, ray; print("python", platform.python_version(), "torch", torch.__version__,
"ray", ray.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
} | tee "$OUT/env.txt"

if [ "$DEVICE" = cuda ]; then
  LIMITS=(170 110)  # seconds for steps 1 and 2: with the install, well under 5 minutes
  SCALE=(--rounds 20 --warmup 3 --plain-steps 300)
  PARLE=(--set replicas=4 --set resources.gpus_per_replica=0.25 --set resources.cpus_per_replica=1
         --set train.outer_steps=300 --set train.eval_every=100)
else  # a check that every step runs: few rounds, 2 replicas of 1 CPU
  LIMITS=(900 600)  # a shared 2-core box can be slow to start actors
  SCALE=(--rounds 1 --warmup 1 --steps 5 --plain-steps 10)
  PARLE=(--set replicas=2 --set resources.gpus_per_replica=0 --set resources.cpus_per_replica=1
         --set inner.steps=5 --set train.outer_steps=6 --set train.eval_every=3 --set dataset.test_subset=2000)
fi

echo "== 1. bench/scaling.py --device $DEVICE"
timeout "${LIMITS[0]}" "$PY" bench/scaling.py --device "$DEVICE" --data "$DATA" "${SCALE[@]}" | tee "$OUT/scaling.md"

echo "== 2. a short LeNet Parle run (examples/quickstart.yaml)"
RUN_DIR=$WORK/gpu-parle
timeout "${LIMITS[1]}" "$PY" -m services.cli run examples/quickstart.yaml --run-dir "$RUN_DIR" --no-progress \
  --set name=gpu-parle --set dataset.path="$DATA" "${PARLE[@]}"
cp "$RUN_DIR/summary.json" "$OUT/parle-summary.json"
cp "$RUN_DIR/metrics.jsonl" "$OUT/parle-metrics.jsonl" 2>/dev/null || true
"$PY" -c 'import json, sys
print("parle: K={replicas} rounds={rounds} test_error={test_error:.4f} wall={wall_s:.1f}s".format(**json.load(open(sys.argv[1]))))' \
  "$OUT/parle-summary.json"
echo "== done in $(( $(date +%s) - START )) s; outputs in $OUT"
