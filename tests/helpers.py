"""Shared test helpers: build a spec and an engine on in-process replicas."""
from __future__ import annotations

from functools import lru_cache

from coordinator.compose import build_engine
from coordinator.engine import Engine
from coordinator.pool import LocalPool
from core.spec import JobSpec
from core.events import RoundRecord
from worker.data.datasets import load_dataset


@lru_cache(maxsize=None)
def synthetic():
    return load_dataset("synthetic", synthetic_size=1024, seed=0)


def spec_of(**sections) -> JobSpec:
    """A small synthetic-data spec with ``sections`` merged in (dicts merge into their section)."""
    base = JobSpec.parse({"model": "mlp", "dataset": {"name": "synthetic"},
                          "train": {"outer_steps": 5, "batch_size": 32}})
    return base.replace(**sections) if sections else base


def local_engine(spec: JobSpec, dataset=None) -> Engine:
    """An engine on in-process replicas (LocalPool); the test's spec is resolved here, where it enters."""
    return build_engine(spec.resolved(), dataset or synthetic(), LocalPool)


def ray_engine(spec: JobSpec, dataset=None) -> Engine:
    """The same engine on real Ray actors (RayPool); needs a running Ray (the local_ray fixture)."""
    from coordinator.pool import RayPool

    return build_engine(spec.resolved(), dataset or synthetic(), RayPool)


def round_record(round: int = 1, **over) -> RoundRecord:
    """A plausible RoundRecord with ``over`` set, for tests that feed listeners by hand."""
    values = dict(round=round, total_rounds=10, epoch=round / 10, loss=1.0, train_error=0.5, gamma=0.1, lr=0.1,
                  inner_lr=0.1, grad_norm=0.2, spread=0.3, samples_per_second=640.0, round_seconds=0.1,
                  compute_seconds=0.09, comm_seconds=0.01, aggregate_seconds=0.001, samples=64, grad_evals=4,
                  bytes_sent=10, bytes_received=10, replica_failures=0,
                  replicas=[{"replica": 0, "loss": 1.0, "compute_s": 0.09, "grad_evals": 4}])
    return RoundRecord(**{**values, **over})
