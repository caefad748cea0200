"""The job manager: queue, run, watch, cancel and resume jobs, with SQLite as the truth.

* ``create`` validates the spec (SpecError), checks the cluster could ever host it
  (CapacityError), and records a QUEUED job; a repeated ``request_id`` returns the first job.
* A scheduler thread starts queued jobs in order while the cluster has free CPUs (each job
  needs ``replicas × cpus_per_replica``) and fewer than ``max_concurrent`` run.
* Each running job is one thread driving an :class:`coordinator.engine.Engine`; every round,
  evaluation and state change is written to the store (and wakes watchers) before it is shown.
* ``cancel`` kills the job's replica actors at once, so a long round stops promptly and its
  resources return to Ray; the job ends CANCELLED with a checkpoint of its last full round.
* ``shutdown`` (SIGTERM) asks running jobs to checkpoint after their current round and leaves
  them RUNNING in the store; the next server start resumes them from that checkpoint.
"""
from __future__ import annotations

import logging
import socket
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.engine import DivergenceError, Engine, ReplicaError
from coordinator.errors import ClusterUnavailable, JobFinished, JobNotFound
from coordinator.local_run import build_engine
from coordinator.metrics import ServiceMetrics
from coordinator.rundir import MetricsLog, RunDir
from coordinator.spec import JobSpec
from coordinator.store import TERMINAL, JobRecord, JobStore

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
                "data_passes_total": "data_passes_total", "wall_s": "wall_seconds"}


def _pick(record: dict, keys: dict) -> dict:
    return {out: record[k] for k, out in keys.items() if record.get(k) is not None}


@dataclass
class _Running:
    spec: JobSpec
    cpus: float
    cancel: threading.Event = field(default_factory=threading.Event)
    engine: Engine | None = None
    thread: threading.Thread | None = None


class _StoreListener:
    """Engine listener: every round and evaluation becomes a stored event."""

    def __init__(self, manager: "JobManager", job_id: str, total: int):
        self.m, self.job_id, self.total = manager, job_id, total

    def on_round(self, record: dict) -> None:
        progress = {**_pick(record, PROGRESS_KEYS), "total_rounds": self.total}
        self.m._write(self.job_id, progress=progress, event=("progress", progress))

    def on_eval(self, record: dict) -> None:
        ev = _pick(record, EVAL_KEYS)
        self.m._write(self.job_id, last_eval=ev, event=("evaluation", ev))

    def on_checkpoint(self, path: Path, step: int) -> None:
        self.m._write(self.job_id, checkpoint_round=step)

    def on_replica(self, record: dict) -> None:
        placement = {}
        if record["kind"] == "restarted":  # the new actor may live elsewhere
            placement["replicas"] = _placement(self.m._running[self.job_id].engine)
        self.m._write(self.job_id, event=("replica", record), **placement)


class JobManager:
    def __init__(self, data_dir: str | Path, *, ray_address: str | None = None, num_cpus: int | None = None,
                 max_concurrent: int = 0, metrics: ServiceMetrics | None = None, ray_metrics_port: int = 0):
        self.data_dir = Path(data_dir)
        self.runs = self.data_dir / "runs"
        self.store = JobStore(self.data_dir / "jobs.sqlite")
        self.ray_address, self.num_cpus = ray_address, num_cpus
        self.max_concurrent = max_concurrent
        self.metrics = metrics
        self.ray_metrics_port = ray_metrics_port
        if metrics is not None:
            metrics.watch_store(self.store.counts)
        self.resources: dict | None = None
        self.cluster_error: str | None = None
        self.changed = threading.Condition()
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._scheduler: threading.Thread | None = None

    # ----- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to Ray, requeue jobs a dead server left RUNNING, start scheduling."""
        self._connect()
        for rec in self.store.in_states(("RUNNING",)):
            self.store.update(rec.id, state="QUEUED", restarts=rec.restarts + 1,
                              event=("state", {"state": "QUEUED", "reason": "server restarted; resuming from checkpoint"}))
        self._scheduler = threading.Thread(target=self._schedule_loop, name="esgd-scheduler", daemon=True)
        self._scheduler.start()

    def _connect(self) -> None:
        from coordinator.cluster import connect

        if self.ray_address and not _reachable(self.ray_address):
            self.cluster_error = f"Ray cluster at {self.ray_address} is unreachable"
            log.error(self.cluster_error)
            return
        try:
            self.resources = connect(self.ray_address, num_cpus=self.num_cpus,
                                     metrics_export_port=self.ray_metrics_port)
        except Exception as exc:  # noqa: BLE001 - any failure means no cluster
            self.cluster_error = f"cannot connect to Ray ({self.ray_address or 'embedded'}): {exc}"
            log.error(self.cluster_error)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop scheduling; running jobs checkpoint after their round and stay RUNNING."""
        self._stopping.set()
        self._notify()
        with self._lock:
            threads = [r.thread for r in self._running.values() if r.thread]
        for t in threads:
            t.join(timeout)
        self.store.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # ----- API ---------------------------------------------------------------------------------
    def create(self, spec_data: dict, request_id: str | None = None) -> JobRecord:
        spec = JobSpec.parse(spec_data).resolved()
        resources = self._cluster()
        spec.check_capacity(resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        rec, created = self.store.create(uuid.uuid4().hex[:12], spec.to_dict(), request_id)
        if created:
            self._notify()
        return rec

    def get(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        if rec is None:
            raise JobNotFound(f"job {job_id!r} not found")
        return rec

    def cancel(self, job_id: str) -> JobRecord:
        rec = self.get(job_id)
        if rec.state in TERMINAL:
            raise JobFinished(f"job {job_id} already {rec.state}; only QUEUED or RUNNING jobs can be cancelled")
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                self._write(job_id, state_change=("CANCELLED", "cancelled before it started"), cancel_requested=1)
                return self.get(job_id)
            running.cancel.set()
            self.store.update(job_id, cancel_requested=1)
            if running.engine is not None:
                running.engine.pool.shutdown()  # stop the round in flight: kill the actors now
        return self.get(job_id)

    def run_dir(self, job_id: str) -> RunDir:
        return RunDir(self.runs / job_id)

    # ----- scheduling ------------------------------------------------------------------------
    def _cluster(self) -> dict:
        if self.resources is None:
            raise ClusterUnavailable(self.cluster_error or "the Ray cluster is not connected")
        return self.resources

    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._start_ready_jobs()
            except Exception:  # noqa: BLE001 - the scheduler must outlive any one job
                log.exception("scheduler error")
            with self.changed:
                self.changed.wait(timeout=1.0)

    def _start_ready_jobs(self) -> None:
        if self.resources is None:
            return
        for rec in self.store.in_states(("QUEUED",)):
            if self._stopping.is_set():
                return
            spec = JobSpec.parse(rec.spec)
            need = spec.replicas * spec.resources.cpus_per_replica
            with self._lock:
                used = sum(r.cpus for r in self._running.values())
                full = self.max_concurrent and len(self._running) >= self.max_concurrent
                if full or used + need > self.resources.get("CPU", 0.0) + 1e-9:
                    return  # first come, first served: wait for room
                if self.store.get(rec.id).state != "QUEUED":
                    continue  # cancelled meanwhile
                running = _Running(spec, need)
                self._running[rec.id] = running
                self._write(rec.id, state_change=("RUNNING", "started"))
            running.thread = threading.Thread(target=self._run, args=(rec.id, running), name=f"job-{rec.id}",
                                              daemon=True)
            running.thread.start()

    # ----- one job ---------------------------------------------------------------------------
    def _run(self, job_id: str, running: _Running) -> None:
        spec = running.spec
        rd = self.run_dir(job_id)
        metrics = None
        try:
            rd.prepare(spec, resume=True)
            metrics = MetricsLog(rd)
            engine = build_engine(spec, rd, resume=True, listeners=[metrics])
            engine.listeners.append(_StoreListener(self, job_id, engine.total))
            if self.metrics is not None:
                engine.listeners.append(self.metrics.listener(job_id))
            running.engine = engine
            self._write(job_id, replicas=_placement(engine))
            summary = engine.summary() if running.cancel.is_set() else engine.run(should_stop=lambda: running.cancel.is_set() or self._stopping.is_set())
            if running.cancel.is_set():
                self._finish(job_id, "CANCELLED", "cancelled by user", summary=summary)
            elif summary.get("stopped"):
                log.info("job %s checkpointed at round %s for server shutdown", job_id, summary["rounds"])
            else:
                rd.write_summary({"status": "succeeded", **summary})
                self._finish(job_id, "SUCCEEDED", "finished", summary=summary)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
            if running.cancel.is_set():
                engine = running.engine
                self._finish(job_id, "CANCELLED", "cancelled by user", summary=engine.summary() if engine else None)
            else:
                self._finish(job_id, "FAILED", "failed", error=_error_of(exc))
        finally:
            if running.engine is not None:
                running.engine.pool.shutdown()
            if metrics:
                metrics.close()
            with self._lock:
                self._running.pop(job_id, None)
            self._notify()

    def _finish(self, job_id: str, state: str, reason: str, summary: dict | None = None,
                error: dict | None = None) -> None:
        if summary is not None:
            s = _pick(summary, SUMMARY_KEYS)
            self._write(job_id, summary=s, event=("summary", s))
        if error is not None:
            self._write(job_id, error=error, event=("error", error))
        self._write(job_id, state_change=(state, reason))

    # ----- store writes + wake-ups -------------------------------------------------------------
    def _write(self, job_id: str, *, state_change: tuple[str, str] | None = None, **columns) -> None:
        if state_change:
            self.store.set_state(job_id, state_change[0], state_change[1], **columns)
        else:
            self.store.update(job_id, **columns)
        self._notify()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


def _placement(engine) -> list[dict]:
    return [{k: i[k] for k in ("index", "node_id", "node_ip", "pid", "device")}
            for i in getattr(engine.pool, "info", []) if i]


def _error_of(exc: BaseException) -> dict:
    from worker.data.datasets import DataError

    if isinstance(exc, DivergenceError):
        code = "DIVERGED"
    elif isinstance(exc, ReplicaError):
        code = "REPLICA_FAILED"
    elif isinstance(exc, DataError):
        code = "DATA"
    else:
        code = "INTERNAL"
    lines = traceback.format_exception_only(type(exc), exc)
    return {"code": code, "message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            "replica": getattr(exc, "replica", -1), "round": getattr(exc, "round", -1),
            "root_cause": "".join(lines).strip()[-2000:]}


def _reachable(address: str, timeout: float = 3.0) -> bool:
    """A TCP connect to the GCS: ray.init on a dead address would hang, so ask first."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
