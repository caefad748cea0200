"""The image's build-time check (deploy/Dockerfile, build stage, after deploy/trim-venv.sh): the
trimmed environment is consistent and the runtime still works, so a removal that breaks it
fails the build.

1. `pip check`, where the only problems allowed are requirements on the packages the trim
   removes on purpose (REMOVED: torch requires networkx, which only torch.compile's graph
   partitioner and fx passes import); anything else fails.
2. Every entry point imports: the CLI, the gRPC server, sweeps (Ray Tune, with its pandas and
   pyarrow), pyarrow.fs with S3 (a cluster's Tune storage path may be s3://), flatness reports
   (matplotlib), Ray's dashboard.
3. A real job: `esgd run --local --flatness` on synthetic data, a few rounds, with its checkpoint
   and its flatness report (Hessian spectrum, flatness.png drawn by matplotlib).
4. A real one-trial sweep on an embedded Ray: Ray Tune runs the trial as an actor, its replica
   is a Ray actor, and Tune keeps the experiment through pyarrow.fs.

    python deploy/smoke-check.py     # with the environment's python, once the project is installed
                                     # (it imports the installed package, not the source tree)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What deploy/trim-venv.sh removes on purpose: the only packages `pip check` may name as missing.
REMOVED = {"networkx"}
MISSING = re.compile(r"^(\S+) \S+ requires (\S+), which is not installed\.$")

SPEC = {"name": "smoke", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "sgd", "replicas": 1,
        "inner": {"steps": 2}, "resources": {"cpus_per_replica": 1},
        "train": {"batch_size": 256, "outer_steps": 4, "eval_every": 2, "seed": 0}}


def step(message: str) -> None:
    print(f"smoke-check: {message}", flush=True)


def pip_check() -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    allowed = [ln for ln in lines if (m := MISSING.match(ln)) and m.group(2).lower() in REMOVED]
    others = [ln for ln in lines if ln not in allowed]
    if out.returncode != 0 and (others or not allowed):
        sys.exit("smoke-check: pip check found problems besides the packages removed on purpose:\n  "
                 + "\n  ".join(others or lines))
    step("pip check: " + ("; ".join(allowed) + " (removed on purpose), nothing else" if allowed else lines[0]))


def imports() -> None:
    import matplotlib
    import pandas  # noqa: F401
    import pyarrow.fs
    import ray
    import ray.dashboard  # noqa: F401
    import ray.tune  # noqa: F401
    import torch

    import coordinator.flatness_job  # noqa: F401
    import coordinator.sweep  # noqa: F401
    import services.cli  # noqa: F401
    import services.server  # noqa: F401

    pyarrow.fs.S3FileSystem(anonymous=True, region="us-east-1")  # libarrow_s3 loads and initializes
    pyarrow.fs.LocalFileSystem().get_file_info("/")
    assert float(torch.ones(2).sum()) == 2.0
    step(f"imports: torch {torch.__version__}, ray {ray.__version__}, pyarrow {pyarrow.__version__}, "
         f"pandas {pandas.__version__}, matplotlib {matplotlib.__version__}")


def local_job(tmp: Path) -> None:
    spec = tmp / "job.json"
    spec.write_text(json.dumps(SPEC))
    run_dir = tmp / "run"
    t0 = time.monotonic()
    out = subprocess.run(["esgd", "run", str(spec), "--local", "--flatness", "--no-progress",
                          "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"smoke-check: esgd run failed (exit {out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 4, summary
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt")), "no checkpoint"
    png = (run_dir / "flatness.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000, "no flatness plot"
    assert json.loads((run_dir / "flatness.json").read_text())["top_eigenvalues"]
    step(f"esgd run --local --flatness: {summary['rounds']} rounds, checkpoint, flatness.png "
         f"({time.monotonic() - t0:.0f} s)")


def sweep(tmp: Path) -> None:
    from coordinator.sweep_runner import TUNE_ENV

    os.environ.update(TUNE_ENV)
    from coordinator.cluster import connect, disconnect
    from coordinator.sweep import run_sweep
    from core.spec import JobSpec

    t0 = time.monotonic()
    connect(num_cpus=2, object_store_mb=80)  # the embedded Ray the service starts
    try:
        spec = JobSpec.parse({**SPEC, "sweep": {"space": {"inner.lr": "choice(0.1)"}, "trials": 1,
                                                "scheduler": "none", "seed": 0}})
        out = run_sweep(spec, tmp / "sweep", trial_root=tmp / "sweep" / "trials")
    finally:
        disconnect()
    states = [(t.trial_id, t.state) for t in out["trials"]]
    assert len(states) == 1 and states[0][1] == "SUCCEEDED", states
    assert (tmp / "sweep" / "tune").is_dir(), "Tune kept no experiment"
    step(f"one-trial sweep on Ray Tune: {states[0][1]} ({time.monotonic() - t0:.0f} s)")


def main() -> None:
    pip_check()
    imports()
    with tempfile.TemporaryDirectory(prefix="esgd-smoke-") as tmp:
        local_job(Path(tmp))
        sweep(Path(tmp))
    step("passed")


if __name__ == "__main__":
    main()
