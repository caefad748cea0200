"""The round loop, written once for every strategy (docs/design.md, "A job's data flow")::

    for t in range(total):
        hp      = strategy.round_params(t)          # γ_t scoped, LR schedule applied
        results = pool.run_round(strategy.anchors(), hp)     # L inner steps on each replica
        stats   = strategy.aggregate(t, results, failures)   # the outer step
        record metrics; every eval_every: evaluate x̄, checkpoint

Membership changes happen only between rounds, under the engine's control: a failed replica
is recreated (or, when Ray cannot place it within ``resources.placement_timeout_s``, dropped
while at least ``train.min_replicas`` remain), and ``request_resize(n)`` (esgd scale) takes
effect at the start of the next round. No round is ever re-run and no one stops the world.

Cost accounting (docs/design.md, "Data per replica and cost accounting"): a round costs L
gradient evaluations per replica; an *epoch* is ``nb`` outer steps (nb = minibatches in one
pass over a replica's data), i.e. L data passes per replica — the papers' "effective epochs"
are reported as data passes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Protocol

from coordinator.checkpoint import save_checkpoint
from coordinator.evaluate import Evaluator
from coordinator.pool import PlacementError, free_ids
from coordinator.spec import JobSpec
from coordinator.strategies.base import Strategy


class ReplicaError(RuntimeError):
    """A replica failed; ``replica`` and ``round`` say where, the message says why."""

    def __init__(self, message: str, replica: int, round: int):
        super().__init__(message)
        self.replica, self.round = replica, round


class DivergenceError(ReplicaError):
    """A loss or weight became NaN/Inf."""


class PlacementFailed(ReplicaError):
    """A lost replica could not be re-placed and the job may not shrink any further."""


class Listener(Protocol):
    def on_round(self, record: dict) -> None: ...
    def on_eval(self, record: dict) -> None: ...
    def on_checkpoint(self, path: Path, step: int) -> None: ...
    def on_replica(self, record: dict) -> None: ...
    # {"replica", "round", "kind": failed|restarted|added|removed|scale_failed, "cause", "replicas"}


def batches_per_pass(spec: JobSpec, num_train: int) -> int:
    pool = max(spec.train.batch_size, int(round(num_train * spec.dataset.fraction)))
    return max(1, min(pool, num_train) // spec.train.batch_size)


class Engine:
    def __init__(self, spec: JobSpec, strategy: Strategy, pool, evaluator: Evaluator, *,
                 num_train: int, checkpoint_dir: Path | None = None, listeners: list | None = None):
        self.spec = spec.resolved()
        self.strategy, self.pool, self.evaluator = strategy, pool, evaluator
        self.checkpoint_dir = checkpoint_dir
        self.listeners = list(listeners or [])
        tr = self.spec.train
        self.nb = batches_per_pass(self.spec, num_train)
        self.total = tr.outer_steps if tr.outer_steps is not None else max(1, math.ceil(tr.epochs * self.nb))
        self.strategy.set_budget(self.total)  # the cosine schedule spans the whole budget
        self.eval_every = tr.eval_every or max(1, self.total // 10)
        self.ckpt_every = self.spec.checkpoint.every or self.eval_every
        self.milestones = [round(m * self.nb) for m in self.spec.outer.milestones]
        self.t = 0
        self.counters = {"grad_evals": 0, "samples": 0, "wall_s": 0.0, "bytes_sent": 0, "bytes_received": 0,
                         "replica_failures": 0, "replica_restarts": 0}
        self.last_eval: dict = {}
        self.samples_per_replica = num_train * self.spec.dataset.fraction
        self.drawn = 0  # batches each replica has drawn: all streams advance together
        self.pending_replicas: int | None = None
        self.membership_changed = False
        self._checkpoint_failures = 0  # consecutive refused checkpoint writes

    def lr_factor(self, t: int) -> float:
        return self.spec.outer.lr_factor ** sum(t >= m for m in self.milestones)

    # ----- one round ----------------------------------------------------------------------
    def step(self) -> dict:
        t = self.t
        start = time.perf_counter()
        if self.pending_replicas is not None:
            self._apply_resize(t)
        hp = self.strategy.round_params(t, self.lr_factor(t))
        results, failures, comm = self.pool.run_round(self.strategy.anchors(), hp)
        gathered = time.perf_counter()
        if failures:
            self._record_failures(t, failures, bool(results))
        for r in results:
            if not r.stats.get("finite", True):
                why = r.stats.get("cause") or f"loss {r.stats['loss']:.4g}"  # cause: e.g. beyond comm.dtype's range
                raise DivergenceError(
                    f"diverged in round {t + 1} on replica {r.index}: {why} "
                    f"(γ={hp.gamma:.4g}, η'={hp.lr:g}, ε={hp.noise:g}, η={self.strategy.round_values(t)['lr']:g})",
                    r.index, t + 1)
        agg = self.strategy.aggregate(t, results, failures)
        self.drawn = results[0].stats["drawn"]
        if failures:
            self._restart(t, failures)
        end = time.perf_counter()
        self.t = t + 1
        round_s = end - start
        compute_s = max(r.stats["compute_s"] for r in results)
        samples = sum(r.stats["samples"] for r in results)
        self.counters["grad_evals"] += sum(r.stats["grad_evals"] for r in results)
        self.counters["samples"] += samples
        self.counters["wall_s"] += round_s
        self.counters["bytes_sent"] += comm.get("bytes_sent", 0)
        self.counters["bytes_received"] += comm.get("bytes_received", 0)
        record = {
            "round": self.t, "epoch": self.t / self.nb,
            "loss": sum(r.stats["loss"] for r in results) / len(results),
            "train_error": sum(r.stats["train_error"] for r in results) / len(results),
            **self.strategy.round_values(t), **agg,
            "round_s": round_s, "compute_s": compute_s, "comm_s": max(0.0, round_s - compute_s),
            "aggregate_s": end - gathered, "samples_per_s": samples / round_s if round_s > 0 else 0.0,
            "samples": samples, "grad_evals": sum(r.stats["grad_evals"] for r in results),
            "bytes_sent": comm.get("bytes_sent", 0), "bytes_received": comm.get("bytes_received", 0),
            "replica_failures": len(failures),
            "replicas": [{k: r.stats[k] for k in ("replica", "loss", "compute_s", "grad_evals")} for r in results],
        }
        for listener in self.listeners:
            listener.on_round(record)
        return record

    # ----- replica failures ------------------------------------------------------------------
    def _notify_replica(self, **record) -> None:
        for listener in self.listeners:
            listener.on_replica(record)

    def _record_failures(self, t: int, failures: list, survivors: bool) -> None:
        """Count and report failures; past the job's budget, or with no survivor, fail the job."""
        budget = self.spec.train.max_replica_failures
        for f in failures:
            self.counters["replica_failures"] += 1
            self._notify_replica(replica=f.index, round=t + 1, kind="failed", cause=f.error)
        f = failures[0]
        if self.counters["replica_failures"] > budget:
            raise ReplicaError(f"replica failure budget exhausted ({self.counters['replica_failures']} failures, "
                               f"train.max_replica_failures = {budget}); last: replica {f.index} in round {t + 1}: "
                               f"{f.error}", f.index, t + 1)
        if not survivors:
            raise ReplicaError(f"all {len(failures)} replicas failed in round {t + 1}: {f.error}", f.index, t + 1)

    def _restart(self, t: int, failures: list) -> None:
        """Recreate failed replicas; they continue their seeded data streams where the others are.
        The round's outer step already used the survivors (failures passed to the strategy).
        A replica Ray cannot place in time (its node is gone, the rest is full) is dropped."""
        lost = []
        for f in failures:
            try:
                self.pool.restart(f.index, {"drawn": self.drawn})
            except PlacementError as exc:
                lost.append((f.index, str(exc)))
                continue
            self.counters["replica_restarts"] += 1
            self._notify_replica(replica=f.index, round=t + 1, kind="restarted", cause=f.error,
                                 replicas=self.pool.size)
        if lost:
            self._shrink(t, lost)

    def _shrink(self, t: int, lost: list[tuple[int, str]]) -> None:
        """Drop replicas that could not be re-placed, unless that goes below train.min_replicas."""
        left, floor = self.pool.size - len(lost), self.spec.train.min_replicas
        index, why = lost[0]
        if left < floor:
            raise PlacementFailed(f"replica {index} lost in round {t + 1} could not be re-placed and the job may not "
                                  f"shrink to {left} replica(s) (train.min_replicas = {floor}): {why}", index, t + 1)
        gone = [p for p, _ in lost]
        self.strategy.resize([p for p in range(self.pool.size) if p not in gone], 0)
        self.pool.remove(gone)
        self._set_size()
        for p, why in lost:
            self._notify_replica(replica=p, round=t + 1, kind="removed", replicas=self.pool.size,
                                 cause=f"could not be re-placed; the job goes on with {self.pool.size} replicas: {why}")

    # ----- elastic membership ------------------------------------------------------------------
    def request_resize(self, replicas: int) -> None:
        """Ask for ``replicas`` replicas from the next round on (safe from another thread)."""
        self.pending_replicas = int(replicas)

    def _apply_resize(self, t: int) -> None:
        """Round boundary: shrink by dropping the last replicas, or grow by new replicas that
        start from the reference and their own seeded streams at the common position."""
        n, k = self.pending_replicas, self.pool.size
        self.pending_replicas = None
        if n == k:
            return
        if n < k:
            self.strategy.resize(list(range(n)), 0)
            self.pool.remove(list(range(n, k)))
            changed = [(p, "removed") for p in range(n, k)]
        else:
            try:
                self.pool.add(free_ids(self.pool.ids, n - k), {"drawn": self.drawn})
            except PlacementError as exc:
                self._notify_replica(replica=-1, round=t + 1, kind="scale_failed", replicas=k,
                                     cause=f"could not scale to {n} replicas: {exc}")
                return
            self.strategy.resize(list(range(k)), n - k)
            changed = [(p, "added") for p in range(k, n)]
        self._set_size()
        for p, kind in changed:
            self._notify_replica(replica=p, round=t + 1, kind=kind, cause=f"scaled from {k} to {n} replicas",
                                 replicas=n)

    def _set_size(self) -> None:
        self.spec = self.spec.model_copy(update={"replicas": self.pool.size})
        self.membership_changed = True

    # ----- evaluation, checkpoints, the whole run ---------------------------------------------
    def evaluate(self) -> dict:
        record = {"round": self.t, "epoch": self.t / self.nb, **self.evaluator.evaluate(self.strategy.reference()),
                  **self.cost()}
        self.last_eval = record
        for listener in self.listeners:
            listener.on_eval(record)
        return record

    def cost(self) -> dict:
        k = self.pool.size
        per_replica_samples = self.counters["samples"] / max(k, 1)
        return {"grad_evals_total": self.counters["grad_evals"],
                "grad_evals_per_replica": self.counters["grad_evals"] / max(k, 1),
                "samples_total": self.counters["samples"],
                "data_passes_per_replica": per_replica_samples / self.samples_per_replica,
                "data_passes_total": self.counters["samples"] / self.samples_per_replica,
                "wall_s": self.counters["wall_s"]}

    def checkpoint(self) -> Path | None:
        """Checkpoint the last completed round. A failed write (full disk, I/O error) leaves the
        older checkpoints as they were and is reported to listeners that have
        ``on_checkpoint_failed``; training goes on and the next checkpoint retries. The final
        round's checkpoint, or the MAX_CONSECUTIVE_FAILURES-th failure in a row, raises
        CheckpointError instead: a job must not end, or run on, with nothing durable behind it."""
        from coordinator.checkpoint import (MAX_CONSECUTIVE_FAILURES, CheckpointError, failure_record,
                                            give_up_error)

        if self.checkpoint_dir is None:
            return None
        payload = {
            "spec": self.spec.to_dict(), "round": self.t,
            "model": self.evaluator.state_dict(self.strategy.reference()),
            "strategy": self.strategy.state_dict(), "replicas": self._replica_states(),
            "counters": dict(self.counters), "last_eval": dict(self.last_eval),
            "replica_ids": list(self.pool.ids),
        }
        try:
            path = save_checkpoint(self.checkpoint_dir, self.t, payload, self.spec.checkpoint.keep_last)
        except CheckpointError as exc:
            self._checkpoint_failures = self._checkpoint_failures + 1
            final = self.t >= self.total
            fatal = final or self._checkpoint_failures >= MAX_CONSECUTIVE_FAILURES
            record = failure_record(exc, self.t, self._checkpoint_failures, fatal)
            for listener in self.listeners:
                if hasattr(listener, "on_checkpoint_failed"):
                    listener.on_checkpoint_failed(record)
            if fatal:
                raise give_up_error(exc, self.t, self._checkpoint_failures, final) from exc
            return None
        self._checkpoint_failures = 0
        for listener in self.listeners:
            listener.on_checkpoint(path, self.t)
        return path

    def _replica_states(self) -> list[dict]:
        """The replicas' states for a checkpoint. A replica that died since its round is a
        failure like one mid-round (counted against the budget, reported, recreated at the
        common stream position), and its fresh state is taken instead."""
        for _ in range(self.spec.train.max_replica_failures + 2):
            states, failures = self.pool.collect_states()
            if not failures:
                return states
            self._record_failures(self.t - 1, failures, survivors=len(failures) < self.pool.size)
            self._restart(self.t - 1, failures)
        raise ReplicaError(f"replicas kept failing while checkpointing round {self.t}", failures[0].index, self.t)

    def restore(self, ckpt: dict) -> None:
        self.t = int(ckpt["round"])
        ids = list(ckpt.get("replica_ids") or range(len(ckpt["replicas"])))
        if ids != list(self.pool.ids):  # the job was scaled or shrank before this checkpoint
            self.pool.remove(list(range(self.pool.size)))
            self.pool.add(ids, {"drawn": 0})
            self.strategy.resize([0] * min(1, len(ids)), len(ids) - 1)
            self.spec = self.spec.model_copy(update={"replicas": len(ids)})
        self.strategy.load_state_dict(ckpt["strategy"])
        self.pool.set_states(ckpt["replicas"])
        self.drawn = int(ckpt["replicas"][0]["drawn"]) if ckpt["replicas"] else 0
        self.counters.update(ckpt["counters"])
        self.last_eval = dict(ckpt.get("last_eval", {}))

    def run(self, should_stop=None) -> dict:
        """Run to the end of the budget and return the final summary. ``should_stop()`` is
        asked after every round; when it answers True the run checkpoints and returns early
        with ``summary()["stopped"] = True``."""
        while self.t < self.total:
            self.step()
            if self.t % self.eval_every == 0 or self.t == self.total:
                self.evaluate()
            stop = should_stop is not None and should_stop() and self.t < self.total
            if stop or self.t % self.ckpt_every == 0 or self.t == self.total or self.membership_changed:
                self.membership_changed = False  # a new membership is checkpointed at once
                self.checkpoint()
            if stop:
                return {**self.summary(), "stopped": True}
        if self.last_eval.get("round") != self.t:
            self.evaluate()
        return self.summary()

    def summary(self) -> dict:
        return {"strategy": self.spec.strategy, "model": self.spec.model, "dataset": self.spec.dataset.name,
                "replicas": self.pool.size, "rounds": self.t, "epochs": self.t / self.nb,
                **{k: v for k, v in self.last_eval.items() if k.startswith("test_")}, **self.cost()}
