"""Replica pools: where the K replicas of a job live and how one round reaches them.

Both pools implement :class:`ReplicaPool`, the one interface the round loop (coordinator.engine)
and the membership policy (coordinator.membership) use: ``RayPool`` holds one
:class:`worker.actor.ReplicaActor` per replica (lifecycle in one small class, in the spirit of
``ray.util.ActorPool``); ``LocalPool`` holds plain :class:`worker.replica.Replica` objects in
this process, for tests and debugging. Each replica sits in a :class:`Slot`: its identity, the
replica (or its actor) and where it runs. A pool is built from the resolved job spec (its
replica count and resources); each replica gets only the spec's
:class:`worker.replica.ReplicaConfig`, built once per pool.

Membership: position ``p`` in the pool is ``slots[p]``, the replica with identity
``slots[p].id`` (the seed of its data stream and RNGs). ``restart`` recreates one in place;
``add``/``remove`` change the membership between rounds (elastic scaling, or a lost replica
that cannot be re-placed). A new identity is the smallest one not in use, so a pool scaled
4 → 2 → 4 has ids 0..3 again.

A round's broadcast is one ``ray.put`` per *distinct* anchor: a shared anchor is put once and
read zero-copy by every replica on the node; Parle's K anchors are K puts, one each.
The dataset is put once per job and shared the same way.

Compression (``comm.dtype``, worker.comm): ``run_round`` encodes each distinct anchor once
before it leaves and decodes each result once on arrival, so strategies see float32 only;
``bytes_sent``/``bytes_received`` count the encoded arrays, what actually crossed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from core.spec import JobSpec
from coordinator.strategies.base import ReplicaFailure, RoundResult
from worker import comm
from worker.data.datasets import Dataset
from worker.langevin import InnerParams
from worker.replica import Replica, ReplicaConfig


@dataclass
class Slot:
    """One replica of a pool, at its position."""

    id: int  # its identity in the job: the seed of its data stream and RNGs (worker.replica)
    replica: Any  # the worker.replica.Replica (LocalPool), or its ReplicaActor's handle (RayPool)
    info: dict = field(default_factory=dict)  # where it runs (RayPool: node_id, node_ip, pid, device, threads)


@runtime_checkable
class ReplicaPool(Protocol):
    """Where a job's replicas live. Positions are indices into ``slots``; a strategy's
    ``RoundResult.index`` and a ``ReplicaFailure.index`` are positions too."""

    slots: list[Slot]
    #: called with (replica id, lines) with each replica's captured output, by a pool that
    #: captures it (RayPool; LocalPool's replicas print in this process)
    on_log: Callable[[int, list], None] | None

    @property
    def ids(self) -> list[int]:
        """Each position's identity."""

    @property
    def size(self) -> int: ...

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams
                  ) -> tuple[list[RoundResult], list[ReplicaFailure], dict]:
        """One round on every replica: one anchor for all, or one per position. Returns the
        results that came back, the replicas that failed instead, and the bytes that crossed."""

    def restart(self, index: int, state: dict) -> None:
        """Recreate the replica at position ``index`` (same identity) and give it ``state``."""

    def add(self, ids: list[int], state: dict) -> None:
        """Append replicas with identities ``ids``, each given ``state``; all or none."""

    def remove(self, positions: list[int]) -> None:
        """Stop the replicas at ``positions``; the others keep their order."""

    def get_states(self) -> list[dict]: ...

    def collect_states(self) -> tuple[list[dict | None], list[ReplicaFailure]]:
        """Every replica's state, and the replicas that failed instead of answering (None)."""

    def set_states(self, states: list[dict]) -> None: ...

    def shutdown(self) -> None: ...


#: what the composition root (coordinator.compose.build_engine) is given to make a job's pool
PoolFactory = Callable[[JobSpec, Dataset], ReplicaPool]


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


class _Slots:
    """What both pools answer from their slots alone."""

    slots: list[Slot]

    @property
    def ids(self) -> list[int]:
        return [s.id for s in self.slots]

    @property
    def size(self) -> int:
        return len(self.slots)


class LocalPool(_Slots):
    def __init__(self, spec: JobSpec, dataset: Dataset):
        self.config, self.dataset = ReplicaConfig.from_spec(spec), dataset
        self.on_log = None  # never called: in-process replicas print here
        self.slots = [self._slot(k) for k in range(spec.replicas)]

    def _slot(self, k: int) -> Slot:
        return Slot(k, Replica(self.config, k, self.dataset))

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams):
        dtype, received, results = self.config.comm_dtype, 0, []
        wires = [comm.encode(a, dtype, "anchor values") for a in anchors]
        for k, slot in enumerate(self.slots):
            j = k if len(anchors) > 1 else 0
            wire, stats = slot.replica.run(wires[j], hp)
            received += wire.nbytes
            results.append(RoundResult(k, comm.unpack_result(wire, anchors[j], dtype), stats))
        return results, [], {"bytes_sent": sum(w.nbytes for w in wires) + hp_bytes(hp), "bytes_received": received}

    def restart(self, index: int, state: dict) -> None:
        """Recreate the replica at position ``index`` (same seed-derived stream), give it ``state``."""
        self.slots[index] = self._slot(self.slots[index].id)
        self.slots[index].replica.set_state(state)

    def add(self, ids: list[int], state: dict) -> None:
        for k in ids:
            self.slots.append(self._slot(k))
            self.slots[-1].replica.set_state(state)

    def remove(self, positions: list[int]) -> None:
        drop = set(positions)
        self.slots = [s for p, s in enumerate(self.slots) if p not in drop]

    def get_states(self) -> list[dict]:
        return [s.replica.get_state() for s in self.slots]

    def collect_states(self) -> tuple[list[dict], list[ReplicaFailure]]:
        return self.get_states(), []

    def set_states(self, states: list[dict]) -> None:
        for s, state in zip(self.slots, states):
            s.replica.set_state(state)

    def shutdown(self) -> None:
        self.slots = []


def resolve_gpus(spec: JobSpec, cluster_gpus: float) -> float:
    """GPUs per replica: the spec's number, or with ``auto`` an equal share of the cluster's."""
    g = spec.resources.gpus_per_replica
    if g != "auto":
        return float(g)
    if cluster_gpus <= 0:
        return 0.0
    return min(1.0, cluster_gpus / spec.replicas)


class RayPool(_Slots):
    def __init__(self, spec: JobSpec, dataset: Dataset, *, placement_timeout_s: float | None = None,
                 dataset_ref=None):
        import ray

        from worker.actor import ReplicaActor

        self._ray = ray
        config = ReplicaConfig.from_spec(spec)
        self.comm_dtype = config.comm_dtype
        gpus = resolve_gpus(spec, ray.cluster_resources().get("GPU", 0.0))
        r = spec.resources
        threads = r.threads_per_replica or max(1, int(r.cpus_per_replica))
        device = "cuda" if gpus > 0 else "cpu"
        self.closed = False
        self.on_log = None  # called with (replica id, lines) for each replica's captured output (worker.actor)
        self.placement_timeout_s = placement_timeout_s or r.placement_timeout_s
        self._new = lambda k: (ray.remote(ReplicaActor)
                               .options(num_cpus=r.cpus_per_replica, num_gpus=gpus, max_restarts=0)
                               .remote(config, k, self._dataset_ref, threads, device))
        # a server's dataset cache (coordinator.warm) hands over the reference it already holds
        self._dataset_ref = dataset_ref if dataset_ref is not None else ray.put(dataset)
        self._describe = f"num_cpus={r.cpus_per_replica}, num_gpus={gpus:g} each"
        self.slots = self._start(list(range(spec.replicas)))

    def _start(self, ids: list[int]) -> list[Slot]:
        """Start one actor per identity in ``ids`` and wait until all are placed and built,
        within ``placement_timeout_s`` in all. On timeout kill them (releasing their pending
        resource requests) and raise :class:`PlacementError` — never wait forever.

        An actor that dies on its way up for a system reason (its node went before the GCS
        noticed, so Ray had just placed it there; its process was killed) is replaced by a
        fresh one while time is left: Ray then places it on a node that is still alive. An
        error raised by the replica's own constructor is not retried; it is raised as it is."""
        ray = self._ray
        deadline = time.monotonic() + self.placement_timeout_s
        slots = [Slot(k, self._new(k)) for k in ids]
        last_death = ""
        try:
            for slot in slots:
                while True:
                    try:
                        slot.info = ray.get(slot.replica.ready.remote(), timeout=max(0.0, deadline - time.monotonic()))
                        break
                    except ray.exceptions.RayActorError as exc:
                        if exc.actor_init_failed:
                            raise
                        last_death = f"; replica {slot.id} died on its way up: {_root_cause(exc)}"
                        if time.monotonic() >= deadline:
                            raise ray.exceptions.GetTimeoutError() from None
                        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                        slot.replica = self._new(slot.id)
        except ray.exceptions.GetTimeoutError:
            self._kill(slots)
            raise PlacementError(
                f"{len(slots)} replica(s) ({self._describe}) were not placed within {self.placement_timeout_s:g} s "
                f"(resources.placement_timeout_s); the cluster has {_free(ray)} free{last_death}") from None
        except BaseException:
            self._kill(slots)
            raise
        return slots

    def _kill(self, slots: list[Slot]) -> None:
        for s in slots:
            try:
                self._ray.kill(s.replica)
            except Exception:  # already dead: nothing to release
                pass

    def restart(self, index: int, state: dict) -> None:
        """Replace the replica at position ``index`` by a fresh actor (placed wherever Ray finds
        room), give it ``state``; raise :class:`PlacementError` when it cannot be placed in time."""
        if self.closed:
            raise RuntimeError("the replica pool is shut down")
        self._kill([self.slots[index]])  # usually already dead: that is why it is restarted
        (slot,) = self._start([self.slots[index].id])
        self.slots[index] = slot
        self._ray.get(slot.replica.set_state.remote(state))

    def add(self, ids: list[int], state: dict) -> None:
        """Start replicas with identities ``ids`` and give them ``state``; all or none:
        when they cannot all be placed in time, none is kept and PlacementError is raised."""
        if self.closed:
            raise RuntimeError("the replica pool is shut down")
        slots = self._start(ids)
        self._ray.get([s.replica.set_state.remote(state) for s in slots])
        self.slots += slots

    def remove(self, positions: list[int]) -> None:
        """Stop the replicas at ``positions`` and release their resources."""
        drop = set(positions)
        self._kill([s for p, s in enumerate(self.slots) if p in drop])
        self.slots = [s for p, s in enumerate(self.slots) if p not in drop]

    def run_round(self, anchors: list[np.ndarray], hp: InnerParams):
        ray = self._ray
        dtype, received = self.comm_dtype, 0
        t0 = time.perf_counter()
        wires = [comm.encode(a, dtype, "anchor values") for a in anchors]
        refs = [ray.put(w) for w in wires]
        hp_arg = ray.put(hp) if hp_bytes(hp) else hp  # Replicated-SGD's centre: put once, like an anchor
        put_s = time.perf_counter() - t0  # encode + put
        slots = list(self.slots)
        futures = [s.replica.run.remote(refs[k if len(refs) > 1 else 0], hp_arg) for k, s in enumerate(slots)]
        results, failures = [], []
        for k, fut in enumerate(futures):
            try:
                wire, stats = ray.get(fut)
            except ray.exceptions.RayError as exc:
                failures.append(ReplicaFailure(k, _root_cause(exc)))
                continue
            lines = stats.pop("log", None)
            if lines and self.on_log is not None:
                self.on_log(slots[k].id, lines)
            received += wire.nbytes
            state = comm.unpack_result(wire, anchors[k if len(anchors) > 1 else 0], dtype)
            results.append(RoundResult(k, state, stats))
        return results, failures, {"put_s": put_s, "bytes_sent": sum(w.nbytes for w in wires) + hp_bytes(hp),
                                   "bytes_received": received}

    def get_states(self) -> list[dict]:
        return self._ray.get([s.replica.get_state.remote() for s in self.slots])

    def collect_states(self) -> tuple[list[dict | None], list[ReplicaFailure]]:
        """Every replica's state, and the replicas that died instead of answering (a replica
        can die between rounds too, e.g. while the engine checkpoints)."""
        states, failures = [], []
        for k, ref in enumerate([s.replica.get_state.remote() for s in self.slots]):
            try:
                states.append(self._ray.get(ref))
            except self._ray.exceptions.RayError as exc:
                states.append(None)
                failures.append(ReplicaFailure(k, _root_cause(exc)))
        return states, failures

    def set_states(self, states: list[dict]) -> None:
        self._ray.get([s.replica.set_state.remote(state) for s, state in zip(self.slots, states)])

    def shutdown(self) -> None:
        self.closed = True
        self._kill(getattr(self, "slots", []))
        self.slots = []


def _free(ray) -> str:
    free = ray.available_resources()
    return ", ".join(f"{k} {v:g}" for k, v in sorted(free.items()) if k in ("CPU", "GPU")) or "nothing"


def _root_cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc.__cause__
    text = str(cause or exc).strip().splitlines()
    return f"{type(cause or exc).__name__}: {text[-1] if text else ''}"
