"""Imported by Ray in every worker process as it starts (``RAY_preload_python_modules``).

What a job's processes import — torch, numpy, the models, the data loaders, the replica, the
round loop — is imported here once, while the worker sits idle in Ray's pool, instead of
after a job was submitted: an actor Ray hands a pooled worker to (a job's
:class:`coordinator.runner.JobRunner`, its :class:`worker.actor.ReplicaActor` s) starts
with all of it loaded. See :mod:`coordinator.warm`.

Importing is not all: torch loads some modules only when first used — the first
``torch.optim`` optimizer imports ``torch._dynamo`` (measured: 2.5 s of a job's start-up on
the 2-core machine). :func:`warm_up` runs one tiny forward, backward and SGD step so that
happens here too; it runs under ``fork_rng`` and leaves torch's thread settings alone (the
actors set their own).

Ray imports preload modules with ``try_import_each_module`` (a failure is logged, never
fatal); each step here is guarded as well, so a worker on a node without some optional
module still starts and imports it later, as before.
"""
from __future__ import annotations

import importlib

MODULES = (
    "numpy",
    "torch",
    "worker.actor",  # worker.replica, worker.models, worker.data
    "coordinator.runner",
    "coordinator.local_run",  # dataset_for, Evaluator, Engine, strategies, checkpoint, rundir
    "coordinator.pool",
)


def warm_up() -> None:
    """One step of a tiny model: torch's lazily loaded parts (autograd, optim, _dynamo)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.zeros(3, 4)).sum().backward()
        opt.step()


for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 - a warm-up, never a reason for a worker not to start
        pass
try:
    warm_up()
except Exception:  # noqa: BLE001
    pass
