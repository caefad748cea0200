"""Replica pools: where the K replicas of a job live and how one round reaches them.

``RayPool`` holds one :class:`worker.actor.ReplicaActor` per replica (lifecycle in one small
class, in the spirit of ``ray.util.ActorPool``); ``LocalPool`` holds plain
:class:`worker.replica.Replica` objects in this process, for tests and debugging. Both answer
``run_round(anchors, hp) -> (results, failures, comm)`` so the round loop does not care.

A round's broadcast is one ``ray.put`` per *distinct* anchor: a shared anchor is put once and
read zero-copy by every replica on the node; Parle's K anchors are K puts, one each.
The dataset is put once per job and shared the same way.
"""
from __future__ import annotations

import time

import numpy as np

from coordinator.spec import JobSpec
from coordinator.strategies.base import ReplicaFailure, RoundResult
from worker.data.datasets import Dataset
from worker.langevin import InnerParams
from worker.replica import Replica


class PlacementError(RuntimeError):
    """Replicas could not be placed on the cluster in time."""


class LocalPool:
    def __init__(self, spec: JobSpec, dataset: Dataset):
        self.spec, self.dataset = spec, dataset
        self.replicas = [Replica(spec, k, dataset) for k in range(spec.replicas)]

    @property
    def size(self) -> int:
        return len(self.replicas)

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams):
        results = []
        for k, rep in enumerate(self.replicas):
            state, stats = rep.run(anchors[k if len(anchors) > 1 else 0], hp)
            results.append(RoundResult(k, state, stats))
        return results, [], {"bytes_sent": sum(a.nbytes for a in anchors),
                             "bytes_received": sum(r.state.nbytes for r in results)}

    def restart(self, index: int, state: dict) -> None:
        """Recreate replica ``index`` (same seed-derived stream) and give it ``state``."""
        self.replicas[index] = Replica(self.spec, index, self.dataset)
        self.replicas[index].set_state(state)

    def get_states(self) -> list[dict]:
        return [r.get_state() for r in self.replicas]

    def set_states(self, states: list[dict]) -> None:
        for r, s in zip(self.replicas, states):
            r.set_state(s)

    def shutdown(self) -> None:
        self.replicas = []


def resolve_gpus(spec: JobSpec, cluster_gpus: float) -> float:
    """GPUs per replica: the spec's number, or with ``auto`` an equal share of the cluster's."""
    g = spec.resources.gpus_per_replica
    if g != "auto":
        return float(g)
    if cluster_gpus <= 0:
        return 0.0
    return min(1.0, cluster_gpus / spec.replicas)


class RayPool:
    def __init__(self, spec: JobSpec, dataset: Dataset, *, placement_timeout_s: float = 120.0):
        import ray

        from worker.actor import ReplicaActor

        self._ray = ray
        gpus = resolve_gpus(spec, ray.cluster_resources().get("GPU", 0.0))
        r = spec.resources
        threads = r.threads_per_replica or max(1, int(r.cpus_per_replica))
        device = "cuda" if gpus > 0 else "cpu"
        self.closed = False
        self.placement_timeout_s = placement_timeout_s
        self._new = lambda k: (ray.remote(ReplicaActor)
                               .options(num_cpus=r.cpus_per_replica, num_gpus=gpus, max_restarts=0)
                               .remote(spec, k, self._dataset_ref, threads, device))
        self._dataset_ref = ray.put(dataset)
        self._describe = f"num_cpus={r.cpus_per_replica}, num_gpus={gpus:g} each"
        self.actors = [self._new(k) for k in range(spec.replicas)]
        self.info = self._ready(self.actors)

    def _ready(self, actors: list) -> list[dict]:
        ray = self._ray
        try:
            return ray.get([a.ready.remote() for a in actors], timeout=self.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise PlacementError(
                f"{len(actors)} replica(s) ({self._describe}) were not placed within {self.placement_timeout_s:g} s; "
                f"the cluster has {ray.available_resources()} free") from None

    def restart(self, index: int, state: dict) -> None:
        """Replace replica ``index`` by a fresh actor (placed wherever Ray finds room) and give it
        ``state``; raises :class:`PlacementError` when it cannot be placed in time."""
        if self.closed:
            raise RuntimeError("the replica pool is shut down")
        try:
            self._ray.kill(self.actors[index])
        except Exception:  # already dead: that is why it is restarted
            pass
        actor = self._new(index)
        self.actors[index] = actor
        self.info[index] = self._ready([actor])[0]
        self._ray.get(actor.set_state.remote(state))

    @property
    def size(self) -> int:
        return len(self.actors)

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams):
        ray = self._ray
        t0 = time.perf_counter()
        refs = [ray.put(a) for a in anchors]
        put_s = time.perf_counter() - t0
        futures = [a.run.remote(refs[k if len(refs) > 1 else 0], hp) for k, a in enumerate(self.actors)]
        results, failures = [], []
        for k, fut in enumerate(futures):
            try:
                state, stats = ray.get(fut)
                results.append(RoundResult(k, state, stats))
            except ray.exceptions.RayError as exc:
                failures.append(ReplicaFailure(k, _root_cause(exc)))
        return results, failures, {"put_s": put_s, "bytes_sent": sum(a.nbytes for a in anchors),
                                   "bytes_received": sum(r.state.nbytes for r in results)}

    def get_states(self) -> list[dict]:
        return self._ray.get([a.get_state.remote() for a in self.actors])

    def set_states(self, states: list[dict]) -> None:
        self._ray.get([a.set_state.remote(s) for a, s in zip(self.actors, states)])

    def shutdown(self) -> None:
        self.closed = True
        for a in getattr(self, "actors", []):
            try:
                self._ray.kill(a)
            except Exception:  # already dead: nothing to release
                pass
        self.actors = []


def _root_cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc.__cause__
    text = str(cause or exc).strip().splitlines()
    return f"{type(cause or exc).__name__}: {text[-1] if text else ''}"
