"""``esgd run``: one job, start to finish, in this process (embedded Ray by default).

Resolves the spec (where it enters), loads the dataset, has the composition root
(coordinator.compose.build_engine) build the engine on a LocalPool or RayPool, adds the run
directory and a progress bar, and handles ``--resume`` and Ctrl-C: an interrupt abandons the
round in flight, writes a checkpoint of the last completed round, and exits cleanly.
A run that fails records ``"status": "failed"`` in summary.json, so a corrected rerun into the
same run directory starts afresh there instead of being refused. ``init_from: {path: FILE}``
starts from a checkpoint file's model weights (coordinator.init_from).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from coordinator.compose import build_engine
from coordinator.pool import LocalPool, RayPool
from coordinator.rundir import MetricsLog, RunDir
from core.events import EvalRecord, Listener, ReplicaEvent, RoundRecord
from core.spec import JobSpec
from worker.data.datasets import Dataset, load_dataset


def dataset_for(spec: JobSpec, load: Callable[..., Dataset] = load_dataset) -> Dataset:
    """The job's dataset: ``load`` (worker.data's loader, or a caller's cache of it) reads it;
    the spec's subsets and label noise are taken here, seeded by the job."""
    d = spec.dataset
    data = load(d.name, d.path, seq_len=d.seq_len, seed=spec.train.seed)
    if d.train_subset or d.test_subset:
        data = data.subset(train=d.train_subset, test=d.test_subset, seed=spec.train.seed)
    if d.label_noise:
        data = data.with_label_noise(d.label_noise, seed=spec.train.seed)
    return data


class ProgressBar(Listener):
    """Engine listener: a tqdm bar per round and one concise line per evaluation."""

    def __init__(self, total: int, initial: int, enabled: bool = True):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = tqdm(total=total, initial=initial, unit="round", disable=not enabled, dynamic_ncols=True,
                        file=sys.stderr)

    def on_round(self, r: RoundRecord) -> None:
        post = {"loss": f"{r.loss:.3f}", "γ": f"{r.gamma:.2g}", "smp/s": f"{r.samples_per_second:.0f}"}
        if r.rho is not None:
            post["ρ"] = f"{r.rho:.2g}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_eval(self, e: EvalRecord) -> None:
        line = (f"round {e.round:>6}  epoch {e.epoch:7.3f}  test_error {e.test_error:.4f}  "
                f"test_loss {e.test_loss:.4f}  data_passes/replica {e.data_passes_per_replica:.2f}  "
                f"wall {e.wall_seconds:.1f}s")
        self._tqdm.write(line, file=sys.stderr)

    def on_replica(self, r: ReplicaEvent) -> None:
        self._tqdm.write(f"round {r.round:>6}  replica {r.replica} {r.kind}: {r.cause}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def run_job(spec: JobSpec, run_dir: str | Path, *, resume: bool = False, ray_address: str | None = None,
            local: bool = False, progress: bool = True, num_cpus: int | None = None,
            dataset: Dataset | None = None) -> dict:
    """Run ``spec`` to completion in ``run_dir``; return the summary (also in summary.json).

    ``local=True`` runs the replicas in this process (no Ray): for debugging and tests.
    ``dataset``: the spec's dataset when the caller already holds it (``dataset_for``; reproduce
    loads each one once per command), else it is loaded here.
    """
    spec = spec.resolved()  # where an ``esgd run`` spec enters
    rd = RunDir(run_dir)
    rd.prepare(spec, resume)
    if not local:
        from coordinator.cluster import connect

        resources = connect(ray_address, num_cpus=num_cpus)
        spec.check_capacity(resources.get("CPU", 0.0), resources.get("GPU", 0.0))
    metrics = MetricsLog(rd)
    try:
        engine = build_engine(spec, dataset if dataset is not None else dataset_for(spec),
                              LocalPool if local else RayPool, checkpoint_dir=rd.checkpoints, resume=resume,
                              listeners=[metrics])
    except BaseException as exc:
        metrics.close()
        if not isinstance(exc, KeyboardInterrupt):
            rd.mark_failed(exc)  # a corrected rerun into the same --run-dir is not refused
        raise
    bar = ProgressBar(engine.total, engine.t, enabled=progress)
    engine.listeners.append(bar)
    status = "succeeded"
    try:
        summary = engine.run()
    except KeyboardInterrupt:
        status = "interrupted"
        engine.checkpoint()
        summary = engine.summary()
    except Exception as exc:
        rd.mark_failed(exc)
        raise
    finally:
        bar.close()
        metrics.close()
        engine.pool.shutdown()
    summary = {"status": status, "run_dir": str(rd.path), **summary}
    rd.write_summary(summary)
    return summary
