"""Running many short jobs in one process and reading their results back.

:class:`Runner` starts the embedded Ray **once** per reproduce command, before its first job
(``coordinator.cluster.connect``; every ``run_job`` then finds it running and reuses it), and
stops it at the end, only if it started it. It also loads each dataset once per command and
hands it to each job (``run_job(dataset=...)``). Each job is an ordinary
``coordinator.local_run.run_job`` with real replica actors (or, with ``local=True``,
``LocalPool``: replicas in this process, for tests and debugging).

A run directory that already holds a successful run of the same spec is reused (so a command
interrupted half-way resumes at the next job); one holding anything else under the output
directory is cleared and run again. ``fresh=True`` reruns everything.
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.spec import JobSpec


@dataclass
class RunResult:
    """One finished run, as read back from its run directory."""

    spec: JobSpec
    run_dir: Path
    summary: dict
    evals: list[dict] = field(default_factory=list)
    total_s: float = float("nan")   # run_job end to end: actors, data, training, evaluations
    reused: bool = False

    @property
    def test_error(self) -> float:
        return float(self.summary.get("test_error", float("nan")))

    @property
    def perplexity(self) -> float:
        return float(self.summary.get("test_perplexity", float("nan")))


def read_run(run_dir: str | Path) -> RunResult:
    """Summary, resolved spec and evaluation records of a finished run directory."""
    rd = Path(run_dir)
    summary = json.loads((rd / "summary.json").read_text())
    spec = JobSpec.parse(yaml.safe_load((rd / "spec.yaml").read_text()))
    evals = []
    if (rd / "metrics.jsonl").exists():
        for line in (rd / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("kind") == "eval":
                    evals.append(rec)
    extra = rd / "reproduce.json"
    total_s = json.loads(extra.read_text()).get("total_s", float("nan")) if extra.exists() else float("nan")
    return RunResult(spec, rd, summary, evals, total_s)


class Runner:
    def __init__(self, out_dir: str | Path, *, local: bool = False, ray_address: str | None = None,
                 num_cpus: int | None = None, threads: int = 0, fresh: bool = False, log=print):
        from worker.data.datasets import load_dataset

        self.out_dir = Path(out_dir)
        self.threads = threads
        self.local, self.ray_address, self.num_cpus, self.fresh = local, ray_address, num_cpus, fresh
        self.log = log
        self._started_ray = False
        self.cpus = float(num_cpus or os.cpu_count() or 1)
        # Each dataset is loaded once per command instead of once per job (Fashion-MNIST takes
        # about a second to decompress). Datasets are frozen, and each job still takes its own
        # seeded subset of the cached copy (coordinator.local_run.dataset_for).
        self._load = functools.lru_cache(maxsize=8)(load_dataset)

    def __enter__(self) -> "Runner":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.threads:
            import torch

            # this process evaluates, computes flatness reports and, with local=True, hosts the replicas
            torch.set_num_threads(self.threads)
        if self.ray_address and not self.local:
            self._ensure_ray()  # an existing cluster: its CPU count shapes the specs
        return self

    def _ensure_ray(self) -> None:
        """Start the embedded Ray (or attach) on first use; a command whose runs are all reused
        never starts it. ``connect`` is a no-op when Ray is already up, as in every later job."""
        import ray

        from coordinator.cluster import connect

        started = not ray.is_initialized()
        t0 = time.perf_counter()
        resources = connect(self.ray_address, num_cpus=self.num_cpus)
        if started:
            self._started_ray = not self.ray_address
            self.cpus = float(resources.get("CPU", self.cpus))
            self.log(f"ray: {'attached to ' + self.ray_address if self.ray_address else 'embedded'}, "
                     f"{self.cpus:g} CPUs ({time.perf_counter() - t0:.1f} s)")

    def __exit__(self, *exc) -> None:
        if self._started_ray:
            from coordinator.cluster import disconnect

            disconnect()
            self._started_ray = False

    def run(self, spec: JobSpec, run_dir: str | Path) -> RunResult:
        """Run ``spec`` in ``run_dir`` (under the output directory), or reuse a finished identical run."""
        spec, rd = spec.resolved(), Path(run_dir)  # where a reproduce run's spec enters
        if not self.fresh and self._finished(spec, rd):
            result = read_run(rd)
            result.reused = True
            return result
        if rd.exists():
            if self.out_dir.resolve() not in rd.resolve().parents:
                raise RuntimeError(f"refusing to clear {rd}: it is not under {self.out_dir}")
            shutil.rmtree(rd)
        from coordinator.local_run import dataset_for, run_job

        if not self.local:
            self._ensure_ray()
        t0 = time.perf_counter()
        summary = run_job(spec, rd, local=self.local, ray_address=self.ray_address, progress=False,
                          num_cpus=self.num_cpus, dataset=dataset_for(spec, self._load))
        total = time.perf_counter() - t0
        if summary.get("status") != "succeeded":
            raise RuntimeError(f"{spec.name}: run ended {summary.get('status')} (see {rd})")
        (rd / "reproduce.json").write_text(json.dumps({"total_s": total}) + "\n")
        return read_run(rd)

    @staticmethod
    def _finished(spec: JobSpec, rd: Path) -> bool:
        try:
            summary = json.loads((rd / "summary.json").read_text())
            # parsed again, so fields added to the spec since (with their defaults) still compare equal
            old = JobSpec.parse(yaml.safe_load((rd / "spec.yaml").read_text())).resolved().to_dict()
        except (OSError, ValueError, yaml.YAMLError):  # SpecError is a ValueError
            return False
        return summary.get("status") == "succeeded" and old == spec.to_dict()


# ----- small statistics and formatting helpers ---------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def fmt_pm(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    m, s = mean_std([v * scale for v in values])
    if math.isnan(m):
        return "—"
    return f"{m:.{digits}f} ± {'—' if math.isnan(s) else f'{s:.{digits}f}'}"


def machine_line() -> str:
    """CPU count, GPU presence and the load average now: the context of a timing."""
    import platform

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # torch without CUDA support at all
        gpu = "no GPU"
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {gpu}; "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)")
