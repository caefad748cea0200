"""Replica pools: where the K replicas of a job live and how one round reaches them.

``RayPool`` holds one :class:`worker.actor.ReplicaActor` per replica (lifecycle in one small
class, in the spirit of ``ray.util.ActorPool``); ``LocalPool`` holds plain
:class:`worker.replica.Replica` objects in this process, for tests and debugging. Both answer
``run_round(anchors, hp) -> (results, failures, comm)`` so the round loop does not care.

Membership: position ``p`` in the pool holds the replica with identity ``ids[p]`` (the seed of
its data stream and RNGs). ``restart`` recreates one in place; ``add``/``remove`` change the
membership between rounds (elastic scaling, or a lost replica that cannot be re-placed).
A new identity is the smallest one not in use, so a pool scaled 4 → 2 → 4 has ids 0..3 again.

A round's broadcast is one ``ray.put`` per *distinct* anchor: a shared anchor is put once and
read zero-copy by every replica on the node; Parle's K anchors are K puts, one each.
The dataset is put once per job and shared the same way.

Compression (``comm.dtype``, worker.comm): ``run_round`` encodes each distinct anchor once
before it leaves and decodes each result once on arrival, so strategies see float32 only;
``bytes_sent``/``bytes_received`` count the encoded arrays, what actually crossed.
"""
from __future__ import annotations

import time

import numpy as np

from core.spec import JobSpec
from coordinator.strategies.base import ReplicaFailure, RoundResult
from worker import comm
from worker.data.datasets import Dataset
from worker.langevin import InnerParams
from worker.replica import Replica


def hp_bytes(hp: InnerParams) -> int:
    """Bytes of array data the round's hyperparameters carry (Replicated-SGD's centre x̄, float32)."""
    center = getattr(hp, "center", None)
    return 0 if center is None else int(np.asarray(center).nbytes)


class PlacementError(RuntimeError):
    """Replicas could not be placed on the cluster in time."""


def free_ids(ids: list[int], count: int) -> list[int]:
    """The ``count`` smallest non-negative identities not in ``ids``."""
    out, k, used = [], 0, set(ids)
    while len(out) < count:
        if k not in used:
            out.append(k)
        k += 1
    return out


class LocalPool:
    def __init__(self, spec: JobSpec, dataset: Dataset):
        self.spec, self.dataset = spec, dataset
        self.replicas = [Replica(spec, k, dataset) for k in range(spec.replicas)]

    @property
    def ids(self) -> list[int]:
        return [r.index for r in self.replicas]

    @property
    def size(self) -> int:
        return len(self.replicas)

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams):
        dtype, received, results = self.spec.comm.dtype, 0, []
        wires = [comm.encode(a, dtype, "anchor values") for a in anchors]
        for k, rep in enumerate(self.replicas):
            j = k if len(anchors) > 1 else 0
            wire, stats = rep.run(wires[j], hp)
            received += wire.nbytes
            results.append(RoundResult(k, comm.unpack_result(wire, anchors[j], dtype), stats))
        return results, [], {"bytes_sent": sum(w.nbytes for w in wires) + hp_bytes(hp), "bytes_received": received}

    def restart(self, index: int, state: dict) -> None:
        """Recreate the replica at position ``index`` (same seed-derived stream), give it ``state``."""
        self.replicas[index] = Replica(self.spec, self.replicas[index].index, self.dataset)
        self.replicas[index].set_state(state)

    def add(self, ids: list[int], state: dict) -> None:
        for k in ids:
            self.replicas.append(Replica(self.spec, k, self.dataset))
            self.replicas[-1].set_state(state)

    def remove(self, positions: list[int]) -> None:
        self.replicas = [r for p, r in enumerate(self.replicas) if p not in set(positions)]

    def get_states(self) -> list[dict]:
        return [r.get_state() for r in self.replicas]

    def collect_states(self) -> tuple[list[dict], list[ReplicaFailure]]:
        return self.get_states(), []

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
    def __init__(self, spec: JobSpec, dataset: Dataset, *, placement_timeout_s: float | None = None,
                 dataset_ref=None):
        import ray

        from worker.actor import ReplicaActor

        self._ray = ray
        self.comm_dtype = spec.comm.dtype
        gpus = resolve_gpus(spec, ray.cluster_resources().get("GPU", 0.0))
        r = spec.resources
        threads = r.threads_per_replica or max(1, int(r.cpus_per_replica))
        device = "cuda" if gpus > 0 else "cpu"
        self.closed = False
        self.on_log = None  # called with (replica id, lines) for each replica's captured output (worker.actor)
        self.placement_timeout_s = placement_timeout_s or r.placement_timeout_s
        self._new = lambda k: (ray.remote(ReplicaActor)
                               .options(num_cpus=r.cpus_per_replica, num_gpus=gpus, max_restarts=0)
                               .remote(spec, k, self._dataset_ref, threads, device))
        # a server's dataset cache (coordinator.warm) hands over the reference it already holds
        self._dataset_ref = dataset_ref if dataset_ref is not None else ray.put(dataset)
        self._describe = f"num_cpus={r.cpus_per_replica}, num_gpus={gpus:g} each"
        self.ids = list(range(spec.replicas))
        self.actors, self.info = self._start(self.ids)

    def _start(self, ids: list[int]) -> tuple[list, list[dict]]:
        """Start one actor per identity in ``ids`` and wait until all are placed and built,
        within ``placement_timeout_s`` in all. On timeout kill them (releasing their pending
        resource requests) and raise :class:`PlacementError` — never wait forever.

        An actor that dies on its way up for a system reason (its node went before the GCS
        noticed, so Ray had just placed it there; its process was killed) is replaced by a
        fresh one while time is left: Ray then places it on a node that is still alive. An
        error raised by the replica's own constructor is not retried; it is raised as it is."""
        ray = self._ray
        deadline = time.monotonic() + self.placement_timeout_s
        actors = [self._new(k) for k in ids]
        info: list[dict] = []
        last_death = ""
        try:
            for p, k in enumerate(ids):
                while True:
                    try:
                        info.append(ray.get(actors[p].ready.remote(), timeout=max(0.0, deadline - time.monotonic())))
                        break
                    except ray.exceptions.RayActorError as exc:
                        if exc.actor_init_failed:
                            raise
                        last_death = f"; replica {k} died on its way up: {_root_cause(exc)}"
                        if time.monotonic() >= deadline:
                            raise ray.exceptions.GetTimeoutError() from None
                        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                        actors[p] = self._new(k)
        except ray.exceptions.GetTimeoutError:
            self._kill(actors)
            raise PlacementError(
                f"{len(actors)} replica(s) ({self._describe}) were not placed within {self.placement_timeout_s:g} s "
                f"(resources.placement_timeout_s); the cluster has {_free(ray)} free{last_death}") from None
        except BaseException:
            self._kill(actors)
            raise
        return actors, info

    def _kill(self, actors: list) -> None:
        for a in actors:
            try:
                self._ray.kill(a)
            except Exception:  # already dead: nothing to release
                pass

    def restart(self, index: int, state: dict) -> None:
        """Replace the replica at position ``index`` by a fresh actor (placed wherever Ray finds
        room), give it ``state``; raise :class:`PlacementError` when it cannot be placed in time."""
        if self.closed:
            raise RuntimeError("the replica pool is shut down")
        self._kill([self.actors[index]])  # usually already dead: that is why it is restarted
        (actor,), (info,) = self._start([self.ids[index]])
        self.actors[index], self.info[index] = actor, info
        self._ray.get(actor.set_state.remote(state))

    def add(self, ids: list[int], state: dict) -> None:
        """Start replicas with identities ``ids`` and give them ``state``; all or none:
        when they cannot all be placed in time, none is kept and PlacementError is raised."""
        if self.closed:
            raise RuntimeError("the replica pool is shut down")
        actors, info = self._start(ids)
        self._ray.get([a.set_state.remote(state) for a in actors])
        self.ids += ids
        self.actors += actors
        self.info += info

    def remove(self, positions: list[int]) -> None:
        """Stop the replicas at ``positions`` and release their resources."""
        drop = set(positions)
        self._kill([a for p, a in enumerate(self.actors) if p in drop])
        keep = [p for p in range(len(self.actors)) if p not in drop]
        self.ids = [self.ids[p] for p in keep]
        self.actors = [self.actors[p] for p in keep]
        self.info = [self.info[p] for p in keep]

    @property
    def size(self) -> int:
        return len(self.actors)

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams):
        ray = self._ray
        dtype, received = self.comm_dtype, 0
        t0 = time.perf_counter()
        wires = [comm.encode(a, dtype, "anchor values") for a in anchors]
        refs = [ray.put(w) for w in wires]
        hp_arg = ray.put(hp) if hp_bytes(hp) else hp  # Replicated-SGD's centre: put once, like an anchor
        put_s = time.perf_counter() - t0  # encode + put
        futures = [a.run.remote(refs[k if len(refs) > 1 else 0], hp_arg) for k, a in enumerate(self.actors)]
        results, failures = [], []
        for k, fut in enumerate(futures):
            try:
                wire, stats = ray.get(fut)
            except ray.exceptions.RayError as exc:
                failures.append(ReplicaFailure(k, _root_cause(exc)))
                continue
            lines = stats.pop("log", None)
            if lines and self.on_log is not None:
                self.on_log(self.ids[k], lines)
            received += wire.nbytes
            state = comm.unpack_result(wire, anchors[k if len(anchors) > 1 else 0], dtype)
            results.append(RoundResult(k, state, stats))
        return results, failures, {"put_s": put_s, "bytes_sent": sum(w.nbytes for w in wires) + hp_bytes(hp),
                                   "bytes_received": received}

    def get_states(self) -> list[dict]:
        return self._ray.get([a.get_state.remote() for a in self.actors])

    def collect_states(self) -> tuple[list[dict], list[ReplicaFailure]]:
        """Every replica's state, and the replicas that died instead of answering (a replica
        can die between rounds too, e.g. while the engine checkpoints)."""
        states, failures = [], []
        for k, ref in enumerate([a.get_state.remote() for a in self.actors]):
            try:
                states.append(self._ray.get(ref))
            except self._ray.exceptions.RayError as exc:
                states.append(None)
                failures.append(ReplicaFailure(k, _root_cause(exc)))
        return states, failures

    def set_states(self, states: list[dict]) -> None:
        self._ray.get([a.set_state.remote(s) for a, s in zip(self.actors, states)])

    def shutdown(self) -> None:
        self.closed = True
        self._kill(getattr(self, "actors", []))
        self.actors = []


def _free(ray) -> str:
    free = ray.available_resources()
    return ", ".join(f"{k} {v:g}" for k, v in sorted(free.items()) if k in ("CPU", "GPU")) or "nothing"


def _root_cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc.__cause__
    text = str(cause or exc).strip().splitlines()
    return f"{type(cause or exc).__name__}: {text[-1] if text else ''}"
