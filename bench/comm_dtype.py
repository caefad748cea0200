"""Does bfloat16 communication cost accuracy? The same Parle job with ``comm.dtype`` float32 and
bfloat16, over several seeds, side by side in one run.

Parle K = 2 on LeNet / Fashion-MNIST (``examples/quickstart.yaml``, a shorter budget), real Ray
actors on this machine. For each seed both formats run; the table gives each run's test error
and the bytes the engine sent and received per round, then mean ± std per format and the
difference of the means against the seeds' spread. The goal: half the bytes, and the error
within seed noise.

Usage:  python bench/comm_dtype.py [--seeds 0,1,2] [--outer-steps 100]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from coordinator.cluster import connect, disconnect  # noqa: E402
from coordinator.local_run import run_job  # noqa: E402
from core.spec import JobSpec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--outer-steps", type=int, default=100)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    seeds, dtypes = [int(s) for s in args.seeds.split(",")], args.dtypes.split(",")
    print(f"# comm.dtype: Parle K=2 LeNet / Fashion-MNIST, {args.outer_steps} rounds of L=20, seeds {seeds}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    connect(num_cpus=2)
    errors: dict[str, list[float]] = {d: [] for d in dtypes}
    print("| seed | comm.dtype | test error % | bytes sent / round | bytes received / round | wall s |")
    print("|---|---|---|---|---|---|")
    try:
        for seed in seeds:
            for dtype in dtypes:
                spec = JobSpec.from_file(ROOT / "examples" / "quickstart.yaml").replace(
                    train={"outer_steps": args.outer_steps, "eval_every": args.outer_steps, "seed": seed},
                    comm={"dtype": dtype})
                with tempfile.TemporaryDirectory(prefix="esgd-comm-") as tmp:
                    s = run_job(spec, Path(tmp) / "run", progress=False)
                    records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
                last = [r for r in records if r["kind"] == "round"][-1]
                errors[dtype].append(100 * s["test_error"])
                print(f"| {seed} | {dtype} | {100 * s['test_error']:.2f} | {last['bytes_sent']:,} "
                      f"| {last['bytes_received']:,} | {s['wall_s']:.0f} |", flush=True)
    finally:
        disconnect()
    for d, e in errors.items():
        sd = statistics.stdev(e) if len(e) > 1 else 0.0
        print(f"# {d}: test error {statistics.mean(e):.2f} ± {sd:.2f} % over {len(e)} seeds")
    if len(dtypes) == 2 and len(seeds) > 1:
        a, b = errors[dtypes[0]], errors[dtypes[1]]
        diff = statistics.mean(b) - statistics.mean(a)
        noise = max(statistics.stdev(a), statistics.stdev(b))
        print(f"# {dtypes[1]} - {dtypes[0]}: {diff:+.2f} points; the larger seed std is {noise:.2f} "
              f"({'within' if abs(diff) <= noise else 'outside'} seed noise)")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
