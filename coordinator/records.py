"""What a job's runner reports, as the job manager stores it: the record keys kept per event
kind, the listener that turns the runner's records into store writes and events, and the
start-up report logged with a job's first round. (Split from coordinator/manager.py.)"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from core.spec import JobSpec

log = logging.getLogger("esgd.manager")

PROGRESS_KEYS = {"round": "round", "epoch": "epoch", "loss": "loss", "train_error": "train_error",
                 "gamma": "gamma", "rho": "rho", "lr": "lr", "samples_per_s": "samples_per_second",
                 "round_s": "round_seconds", "compute_s": "compute_seconds", "grad_norm": "grad_norm",
                 "spread": "spread"}
EVAL_KEYS = {"round": "round", "epoch": "epoch", "test_error": "test_error", "test_loss": "test_loss",
             "grad_evals_total": "grad_evals_total", "data_passes_per_replica": "data_passes_per_replica",
             "wall_s": "wall_seconds"}
SUMMARY_KEYS = {"test_error": "test_error", "test_loss": "test_loss", "rounds": "rounds", "epochs": "epochs",
                "grad_evals_total": "grad_evals_total", "grad_evals_per_replica": "grad_evals_per_replica",
                "samples_total": "samples_total", "data_passes_per_replica": "data_passes_per_replica",
                "data_passes_total": "data_passes_total", "wall_s": "wall_seconds",
                "top_eigenvalue": "top_eigenvalue", "hessian_trace": "hessian_trace",
                "near_zero_fraction": "near_zero_fraction"}


def pick(record: dict, keys: dict) -> dict:
    return {out: record[k] for k, out in keys.items() if record.get(k) is not None}


class StoreListener:
    """The runner's records as stored events: every round and evaluation, checkpoints, replica
    changes (with where the replicas now run and, for a new membership, the new spec)."""

    def __init__(self, manager, job_id: str, total: int):  # manager: coordinator.manager.JobManager
        self.m, self.job_id, self.total = manager, job_id, total

    def on_round(self, record: dict) -> None:
        progress = {**pick(record, PROGRESS_KEYS), "total_rounds": self.total}
        self.m.write(self.job_id, progress=progress, event=("progress", progress))
        running = self.m.running.get(self.job_id)
        if running is not None and running.startup is not None:
            startup, running.startup = running.startup, None
            startup.update(first_round=round(time.time() - startup.pop("t0"), 3), round_s=round(record["round_s"], 3))
            log.info("job %s start-up %s", self.job_id, json.dumps(startup))

    def on_eval(self, record: dict) -> None:
        ev = pick(record, EVAL_KEYS)
        self.m.write(self.job_id, last_eval=ev, event=("evaluation", ev))

    def on_checkpoint(self, path: Path, step: int) -> None:
        self.m.write(self.job_id, checkpoint_round=step)

    def on_checkpoint_failed(self, record: dict) -> None:
        """A checkpoint write that failed but that training survives becomes an ``error`` event
        (code STORAGE) without touching the job's error column: the job is still healthy. A
        fatal failure is left to the job's own FAILED error, so it is not reported twice."""
        if not record["fatal"]:
            self.m.write(self.job_id, event=("error", {"code": "STORAGE", "message": record["message"], "replica": -1,
                                                        "round": record["round"], "root_cause": record["cause"]}))

    def on_replica_change(self, record: dict, placement: list[dict], spec_data: dict) -> None:
        columns = {}
        running = self.m.running[self.job_id]
        if record["kind"] in ("restarted", "added", "removed"):  # new actors may live elsewhere
            columns["replicas"] = placement
            self.m.poke_warm()  # new replicas took idle worker processes
        if record["kind"] in ("added", "removed"):  # the stored spec says what runs now
            spec = JobSpec.parse(spec_data)
            running.spec, running.cpus = spec, spec.replicas * spec.resources.cpus_per_replica
            columns["spec"] = spec_data
        self.m.write(self.job_id, event=("replica", record), **columns)


def drain(runner, handle, stopping) -> dict:
    """Take a runner's records in order (``runner.next``: a JobRunner or a SweepRunner) and
    pass each to ``handle(kind, payload)``, acknowledging a batch only once it is handled
    (stored); when ``stopping`` (server shutdown) is set, ask the runner to ``stop``.
    Returns its end-of-run record."""
    import ray

    ack, asked_stop = 0, False
    while True:
        if stopping.is_set() and not asked_stop:
            runner.stop.remote()
            asked_stop = True
        for seq, kind, payload in ray.get(runner.next.remote(ack, 1.0)):
            if kind == "end":
                return payload
            handle(kind, payload)
            ack = seq


def follow(runner, listeners: list, stopping) -> dict:
    """:func:`drain` a JobRunner into engine listeners (StoreListener, the job's metrics)."""
    def handle(kind: str, payload: dict) -> None:
        for listener in listeners:
            if kind == "round":
                listener.on_round(payload)
            elif kind == "eval":
                listener.on_eval(payload)
            elif kind == "checkpoint":
                listener.on_checkpoint(Path(payload["path"]), payload["step"])
            elif kind == "checkpoint_failed" and hasattr(listener, "on_checkpoint_failed"):
                listener.on_checkpoint_failed(payload)
            elif kind == "replica":
                if hasattr(listener, "on_replica_change"):
                    listener.on_replica_change(payload["record"], payload["placement"], payload["spec"])
                else:
                    listener.on_replica(payload["record"])

    return drain(runner, handle, stopping)


def startup_report(t0: float, reused: bool, marks: dict) -> dict:
    """A job's start-up steps in seconds, from the runner's timestamps: whether its runner and
    replica processes existed before the job started (warm), whether its dataset was already
    in the object store, and how long each step took."""
    def span(a, b):
        return round(marks[b] - marks[a], 3) if marks.get(a) and marks.get(b) else None

    starts = marks.get("replica_processes") or []
    return {"t0": t0, "runner_pid": marks.get("pid"),
            "runner_warm": bool(marks.get("process") and marks["process"] < t0),
            "runner_s": round(marks["init"] - t0, 3), "torch_import_s": span("init", "torch"),
            "runner_ready_s": round(marks["start"] - t0, 3), "dataset_reused": reused,
            "dataset_fallback": bool(marks.get("data_fallback")),
            "data_s": span("start", "data"), "model_s": span("data", "model"), "replicas_s": span("model", "replicas"),
            "replicas_warm": sum(1 for s in starts if s is not None and s < t0), "replicas_total": len(starts),
            "engine_s": span("replicas", "engine")}
