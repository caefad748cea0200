"""The composition root: the one place a job's engine is put together from its parts.

Every caller hands in what it already holds and what differs between them:

* the **resolved spec** (``JobSpec.resolved()``, called where the spec entered);
* the **dataset**, loaded by the caller: ``esgd run`` loads it (coordinator.local_run), a
  service job's runner reads it from the object store or loads it (coordinator.runner), a sweep
  trial loads it (coordinator.sweep), ``esgd reproduce`` loads each dataset once per command,
  the benches and the tests bring their own;
* the **pool factory** (:data:`coordinator.pool.PoolFactory`), called as ``pool(spec, dataset)``:
  ``LocalPool`` (replicas in this process), ``RayPool`` (one actor each), or RayPool bound to the
  dataset's object-store reference;

and :func:`build_engine` builds the rest, in this order, here only:

1. the :class:`~coordinator.evaluate.Evaluator`: the job's initial weights, under the job seed;
2. with ``resume``, the newest valid checkpoint in ``checkpoint_dir``; without one, the
   weights of ``init_from`` (coordinator.init_from), if the spec names a checkpoint;
3. the strategy (coordinator.strategies) on those weights;
4. the pool of K replicas (a RayPool waits until they are placed);
5. the :class:`~coordinator.engine.Engine`, restored from that checkpoint. If this last step
   fails, the pool is shut down: no replica outlives a job that never started.

Why one function: the service, ``esgd run``, a sweep trial, the benches and the tests used to
wire these by hand, each slightly differently (or by patching a module's loader); now they
differ only in the parts they pass.
"""
from __future__ import annotations

import time
from pathlib import Path

from coordinator.checkpoint import load_latest
from coordinator.engine import Engine
from coordinator.evaluate import Evaluator
from coordinator.init_from import load_initial_weights
from coordinator.pool import PoolFactory
from coordinator.strategies import make_strategy
from core.spec import JobSpec
from worker.data.datasets import Dataset


def build_engine(spec: JobSpec, dataset: Dataset, pool: PoolFactory, *, checkpoint_dir: Path | None = None,
                 resume: bool = False, runs: Path | None = None, listeners: list | None = None,
                 marks: dict | None = None) -> Engine:
    """The engine for the resolved ``spec`` on ``dataset``, its replicas made by ``pool``.

    ``checkpoint_dir``: where the engine writes checkpoints (None: it writes none); with
    ``resume`` it continues from the newest valid one there. ``runs``: where a spec's
    ``init_from: {job: ID}`` finds that job's run directory (the server's runs directory; None
    for ``esgd run``, whose init_from names a file). ``marks`` gets the time each step ended
    (model, replicas, engine), for a service job's start-up report."""
    spec.require_resolved("build_engine")
    marks = {} if marks is None else marks
    evaluator = Evaluator(spec, dataset)
    found = load_latest(checkpoint_dir) if resume and checkpoint_dir is not None else None
    if found is None:  # a fresh start: from init_from's weights, if any (a resume restores its own)
        load_initial_weights(spec, evaluator, runs=runs)
    strategy = make_strategy(spec, evaluator.initial_state, evaluator.flat.num_params)
    marks["model"] = time.time()
    replicas = pool(spec, dataset)
    marks["replicas"] = time.time()
    try:
        engine = Engine(spec, strategy, replicas, evaluator, num_train=dataset.num_train,
                        checkpoint_dir=checkpoint_dir, listeners=listeners)
        if found:
            engine.restore(found[1])
    except BaseException:
        replicas.shutdown()
        raise
    marks["engine"] = time.time()
    return engine
