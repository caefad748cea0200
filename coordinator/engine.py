"""The round loop, written once for every strategy (docs/design.md, "A job's data flow")::

    for t in range(total):
        hp      = strategy.round_params(t)          # γ_t scoped, LR schedule applied
        results = pool.run_round(strategy.anchors(), hp)     # L inner steps on each replica
        stats   = strategy.aggregate(t, results)         # the outer step, over the survivors
        report the round; every eval_every: evaluate x̄, checkpoint

What it reports goes to its listeners as core.events' typed events (RoundRecord, EvalRecord,
CheckpointEvent, CheckpointFailed, ReplicaEvent), named as the API names them.

Membership changes happen only between rounds; what happens to failed, unplaceable or
requested replicas is coordinator.membership's policy, which the loop calls at the round's
edges. No round is ever re-run and no one stops the world.

Cost accounting (docs/design.md, "Data per replica and cost accounting"): a round costs L
gradient evaluations per replica; an *epoch* is ``nb`` outer steps (nb = minibatches in one
pass over a replica's data), i.e. L data passes per replica — the papers' "effective epochs"
are reported as data passes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from coordinator.checkpoint import save_checkpoint
from coordinator.evaluate import Evaluator
from coordinator.membership import DivergenceError, Membership, ReplicaError
from coordinator.pool import ReplicaPool
from core.events import CheckpointEvent, CheckpointFailed, EvalRecord, Listener, RoundRecord, emit, record, to_run_dir
from core.spec import JobSpec
from coordinator.strategies.base import Strategy


def batches_per_pass(spec: JobSpec, num_train: int) -> int:
    pool = max(spec.train.batch_size, int(round(num_train * spec.dataset.fraction)))
    return max(1, min(pool, num_train) // spec.train.batch_size)


class Engine:
    def __init__(self, spec: JobSpec, strategy: Strategy, pool: ReplicaPool, evaluator: Evaluator, *,
                 num_train: int, checkpoint_dir: Path | None = None, listeners: list[Listener] | None = None):
        self.spec = spec.require_resolved("Engine")
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
        self.membership_changed = False
        self.membership = Membership(pool, strategy, max_failures=tr.max_replica_failures,
                                     min_replicas=tr.min_replicas, counters=self.counters,
                                     notify=lambda event: emit(self.listeners, event), on_size=self._set_size)
        self._checkpoint_failures = 0  # consecutive refused checkpoint writes

    def lr_factor(self, t: int) -> float:
        return self.spec.outer.lr_factor ** sum(t >= m for m in self.milestones)

    # ----- one round ----------------------------------------------------------------------
    def step(self) -> dict:
        """Run one round and report its :class:`RoundRecord`; return it as ``metrics.jsonl``
        holds it."""
        t = self.t
        start = time.perf_counter()
        self.membership.apply_resize(t, self.drawn)
        hp = self.strategy.round_params(t, self.lr_factor(t))
        results, failures, comm = self.pool.run_round(self.strategy.anchors(), hp)
        gathered = time.perf_counter()
        if failures:
            self.membership.record_failures(t, failures, bool(results))
        for r in results:
            if not r.stats.get("finite", True):
                why = r.stats.get("cause") or f"loss {r.stats['loss']:.4g}"  # cause: e.g. beyond comm.dtype's range
                raise DivergenceError(
                    f"diverged in round {t + 1} on replica {r.index}: {why} "
                    f"(γ={hp.gamma:.4g}, η'={hp.lr:g}, ε={hp.noise:g}, η={self.strategy.round_values(t)['lr']:g})",
                    r.index, t + 1)
        agg = self.strategy.aggregate(t, results)
        self.drawn = results[0].stats["drawn"]
        if failures:
            self.membership.restart(t, failures, self.drawn)
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
        event = RoundRecord(
            round=self.t, total_rounds=self.total, epoch=self.t / self.nb,
            loss=sum(r.stats["loss"] for r in results) / len(results),
            train_error=sum(r.stats["train_error"] for r in results) / len(results),
            **self.strategy.round_values(t), **agg,
            round_seconds=round_s, compute_seconds=compute_s, comm_seconds=max(0.0, round_s - compute_s),
            aggregate_seconds=end - gathered, samples_per_second=samples / round_s if round_s > 0 else 0.0,
            samples=samples, grad_evals=sum(r.stats["grad_evals"] for r in results),
            bytes_sent=comm.get("bytes_sent", 0), bytes_received=comm.get("bytes_received", 0),
            replica_failures=len(failures),
            replicas=[{k: r.stats[k] for k in ("replica", "loss", "compute_s", "grad_evals")} for r in results],
        )
        emit(self.listeners, event)
        return record(event)

    # ----- membership (coordinator.membership) -----------------------------------------------
    def request_resize(self, replicas: int) -> None:
        """Ask for ``replicas`` replicas from the next round on (safe from another thread)."""
        self.membership.request_resize(replicas)

    def _set_size(self, replicas: int) -> None:
        self.spec = self.spec.model_copy(update={"replicas": replicas})
        self.membership_changed = True

    # ----- evaluation, checkpoints, the whole run ---------------------------------------------
    def evaluate(self) -> dict:
        """Evaluate the reference model and report its :class:`EvalRecord`; return it as
        ``metrics.jsonl`` (and the checkpoint's ``last_eval``) holds it."""
        event = EvalRecord(round=self.t, epoch=self.t / self.nb, **self.evaluator.evaluate(self.strategy.reference()),
                           **self.cost())
        self.last_eval = record(event)
        emit(self.listeners, event)
        return self.last_eval

    def cost(self) -> dict:
        k = self.pool.size
        per_replica_samples = self.counters["samples"] / max(k, 1)
        return {"grad_evals_total": self.counters["grad_evals"],
                "grad_evals_per_replica": self.counters["grad_evals"] / max(k, 1),
                "samples_total": self.counters["samples"],
                "data_passes_per_replica": per_replica_samples / self.samples_per_replica,
                "data_passes_total": self.counters["samples"] / self.samples_per_replica,
                "wall_seconds": self.counters["wall_s"]}

    def checkpoint(self) -> Path | None:
        """Checkpoint the last completed round. A failed write (full disk, I/O error) leaves the
        older checkpoints as they were and is reported to the listeners (a
        :class:`CheckpointFailed`); training goes on and the next checkpoint retries. The final
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
            emit(self.listeners, CheckpointFailed(**failure_record(exc, self.t, self._checkpoint_failures, fatal)))
            if fatal:
                raise give_up_error(exc, self.t, self._checkpoint_failures, final) from exc
            return None
        self._checkpoint_failures = 0
        emit(self.listeners, CheckpointEvent(round=self.t, path=str(path)))
        return path

    def _replica_states(self) -> list[dict]:
        """The replicas' states for a checkpoint. A replica that died since its round is a
        failure like one mid-round (counted against the budget, reported, recreated at the
        common stream position), and its fresh state is taken instead."""
        for _ in range(self.spec.train.max_replica_failures + 2):
            states, failures = self.pool.collect_states()
            if not failures:
                return states
            self.membership.record_failures(self.t - 1, failures, survivors=len(failures) < self.pool.size)
            self.membership.restart(self.t - 1, failures, self.drawn)
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
        """The run's summary, as ``summary.json`` holds it (core.events.Summary: its API part)."""
        return {"strategy": self.spec.strategy, "model": self.spec.model, "dataset": self.spec.dataset.name,
                "replicas": self.pool.size, "rounds": self.t, "epochs": self.t / self.nb,
                **{k: v for k, v in self.last_eval.items() if k.startswith("test_")}, **to_run_dir(self.cost())}
