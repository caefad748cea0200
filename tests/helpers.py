"""Shared test helpers: build a spec and an engine on in-process replicas."""
from __future__ import annotations

from functools import lru_cache

from coordinator.compose import build_engine
from coordinator.engine import Engine
from coordinator.pool import LocalPool
from core.spec import JobSpec
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
