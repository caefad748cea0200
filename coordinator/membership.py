"""Who takes part in a job's rounds: the failure and membership policy of the round loop.

Membership changes only between rounds, so every outer step sees one fixed set of replicas:

* **A failed replica** (its actor or process died, its node went) is counted against
  ``train.max_replica_failures`` and reported; the round's outer step has already used the
  survivors (the strategy sees only the results that came back). It is then recreated from
  the current anchors, its own seeded data stream continuing at the common position
  (``drawn``), so no round is re-run and no one stops the world.
* **A replica Ray cannot place** within ``resources.placement_timeout_s`` (its node is gone,
  the rest is full) is dropped, as long as at least ``train.min_replicas`` remain; below that
  the job fails with a placement error rather than hang or silently change its method.
* **A resize** (``esgd scale``) is requested from any thread and applied at the start of the
  next round: shrinking drops the last replicas, growing adds replicas that start from the
  reference at the common stream position.

Each change is reported to the listeners as a core.events.ReplicaEvent with kind failed |
restarted | removed | added | scale_failed. Why a module of its own: the round loop
(coordinator.engine) stays the equation's loop, and a change of failure policy touches this
file only.
"""
from __future__ import annotations

from typing import Callable

from coordinator.pool import PlacementError, ReplicaPool, free_ids
from core.events import ReplicaEvent


class ReplicaError(RuntimeError):
    """A replica failed; ``replica`` and ``round`` say where, the message says why."""

    def __init__(self, message: str, replica: int, round: int):
        super().__init__(message)
        self.replica, self.round = replica, round

    def __reduce__(self):  # pickled across Ray (a trial's error reaches Tune's driver): keep the fields
        return type(self), (str(self), self.replica, self.round)


class DivergenceError(ReplicaError):
    """A loss or weight became NaN/Inf."""


class PlacementFailed(ReplicaError):
    """A lost replica could not be re-placed and the job may not shrink any further."""


class Membership:
    """The failure and resize policy over one job's ``pool`` and ``strategy``.

    ``notify(event)`` reports each change (a ReplicaEvent); ``counters`` (the engine's) receives
    ``replica_failures`` and ``replica_restarts``; ``on_size(k)`` is called after the replica
    count changed (the engine records the new size and checkpoints at once)."""

    def __init__(self, pool: ReplicaPool, strategy, *, max_failures: int, min_replicas: int, counters: dict,
                 notify: Callable[[ReplicaEvent], None], on_size: Callable[[int], None]):
        self.pool, self.strategy = pool, strategy
        self.max_failures, self.min_replicas = max_failures, min_replicas
        self.counters, self.notify, self.on_size = counters, notify, on_size
        self.pending: int | None = None

    # ----- failures ------------------------------------------------------------------------
    def record_failures(self, t: int, failures: list, survivors: bool) -> None:
        """Count and report failures; past the job's budget, or with no survivor, fail the job."""
        for f in failures:
            self.counters["replica_failures"] += 1
            self.notify(ReplicaEvent(replica=f.index, round=t + 1, kind="failed", cause=f.error))
        f = failures[0]
        if self.counters["replica_failures"] > self.max_failures:
            raise ReplicaError(f"replica failure budget exhausted ({self.counters['replica_failures']} failures, "
                               f"train.max_replica_failures = {self.max_failures}); last: replica {f.index} in "
                               f"round {t + 1}: {f.error}", f.index, t + 1)
        if not survivors:
            raise ReplicaError(f"all {len(failures)} replicas failed in round {t + 1}: {f.error}", f.index, t + 1)

    def restart(self, t: int, failures: list, drawn: int) -> None:
        """Recreate failed replicas at stream position ``drawn``; drop those Ray cannot place."""
        lost = []
        for f in failures:
            try:
                self.pool.restart(f.index, {"drawn": drawn})
            except PlacementError as exc:
                lost.append((f.index, str(exc)))
                continue
            self.counters["replica_restarts"] += 1
            self.notify(ReplicaEvent(replica=f.index, round=t + 1, kind="restarted", cause=f.error,
                                     replicas=self.pool.size))
        if lost:
            self._shrink(t, lost)

    def _shrink(self, t: int, lost: list[tuple[int, str]]) -> None:
        """Drop replicas that could not be re-placed, unless that goes below train.min_replicas."""
        left = self.pool.size - len(lost)
        index, why = lost[0]
        if left < self.min_replicas:
            raise PlacementFailed(f"replica {index} lost in round {t + 1} could not be re-placed and the job may not "
                                  f"shrink to {left} replica(s) (train.min_replicas = {self.min_replicas}): {why}",
                                  index, t + 1)
        gone = [p for p, _ in lost]
        self.strategy.resize([p for p in range(self.pool.size) if p not in gone], 0)
        self.pool.remove(gone)
        self.on_size(self.pool.size)
        for p, why in lost:
            self.notify(ReplicaEvent(replica=p, round=t + 1, kind="removed", replicas=self.pool.size,
                                     cause=f"could not be re-placed; the job goes on with {self.pool.size} "
                                           f"replicas: {why}"))

    # ----- resize ----------------------------------------------------------------------------
    def request_resize(self, replicas: int) -> None:
        """Ask for ``replicas`` replicas from the next round on (safe from another thread)."""
        self.pending = int(replicas)

    def apply_resize(self, t: int, drawn: int) -> None:
        """Round boundary: shrink by dropping the last replicas, or grow by new replicas that
        start from the reference and their own seeded streams at the common position."""
        n, k = self.pending, self.pool.size
        self.pending = None
        if n is None or n == k:
            return
        if n < k:
            self.strategy.resize(list(range(n)), 0)
            self.pool.remove(list(range(n, k)))
            changed = [(p, "removed") for p in range(n, k)]
        else:
            try:
                self.pool.add(free_ids(self.pool.ids, n - k), {"drawn": drawn})
            except PlacementError as exc:
                self.notify(ReplicaEvent(replica=-1, round=t + 1, kind="scale_failed", replicas=k,
                                         cause=f"could not scale to {n} replicas: {exc}"))
                return
            self.strategy.resize(list(range(k)), n - k)
            changed = [(p, "added") for p in range(k, n)]
        self.on_size(self.pool.size)
        for p, kind in changed:
            self.notify(ReplicaEvent(replica=p, round=t + 1, kind=kind, cause=f"scaled from {k} to {n} replicas",
                                     replicas=n))
