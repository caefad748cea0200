"""What a job's runner reports, as the job manager stores it: the listener that turns the
runner's events (core.events) into store writes and events, and the start-up report logged with
a job's first round. (Split from coordinator/manager.py.)

The events carry the API's names, so what is stored is :func:`core.events.api` of each: the
fields of its message, which services.convert fills by name."""
from __future__ import annotations

import json
import logging
import time

from core.events import CheckpointEvent, CheckpointFailed, EvalRecord, Listener, ReplicaEvent, RoundRecord, api, emit
from core.spec import JobSpec

log = logging.getLogger("esgd.manager")


class StoreListener(Listener):
    """The runner's events as stored events: every round and evaluation, checkpoints, replica
    changes (with where the replicas now run and, for a new membership, the new spec)."""

    def __init__(self, manager, job_id: str):  # manager: coordinator.manager.JobManager
        self.m, self.job_id = manager, job_id

    def on_round(self, event: RoundRecord) -> None:
        progress = api(event)
        self.m.write(self.job_id, progress=progress, event=("progress", progress))
        running = self.m.running.get(self.job_id)
        if running is not None and running.startup is not None:
            startup, running.startup = running.startup, None
            startup.update(first_round=round(time.time() - startup.pop("t0"), 3),
                           round_s=round(event.round_seconds, 3))
            log.info("job %s start-up %s", self.job_id, json.dumps(startup))

    def on_eval(self, event: EvalRecord) -> None:
        ev = api(event)
        self.m.write(self.job_id, last_eval=ev, event=("evaluation", ev))

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        self.m.write(self.job_id, checkpoint_round=event.round)

    def on_checkpoint_failed(self, event: CheckpointFailed) -> None:
        """A checkpoint write that failed but that training survives becomes an ``error`` event
        (code STORAGE) without touching the job's error column: the job is still healthy. A
        fatal failure is left to the job's own FAILED error, so it is not reported twice."""
        if not event.fatal:
            self.m.write(self.job_id, event=("error", {"code": "STORAGE", "message": event.message, "replica": -1,
                                                        "round": event.round, "root_cause": event.cause}))

    def on_replica(self, event: ReplicaEvent) -> None:
        """``event.placement`` and ``event.spec``: added by the runner's outbox."""
        columns = {}
        running = self.m.running[self.job_id]
        if event.kind in ("restarted", "added", "removed"):  # new actors may live elsewhere
            columns["replicas"] = event.placement
            self.m.poke_warm()  # new replicas took idle worker processes
        if event.kind in ("added", "removed"):  # the stored spec says what runs now
            running.resized(JobSpec.parse(event.spec))
            columns["spec"] = event.spec
        self.m.write(self.job_id, event=("replica", api(event)), **columns)


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


def follow(runner, listeners: list[Listener], stopping) -> dict:
    """:func:`drain` a JobRunner into engine listeners (StoreListener, the job's metrics): each
    record is an engine event, handed to every listener by core.events.emit."""
    return drain(runner, lambda kind, event: emit(listeners, event), stopping)


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
