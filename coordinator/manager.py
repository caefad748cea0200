"""The job manager: queue, run, watch, cancel and resume jobs, with SQLite as the truth.

* ``create`` checks the request's size caps, validates the spec (SpecError), confines
  ``dataset.path`` to the data roots (SpecError naming it, revealing nothing about the file),
  checks the cluster could ever host it — CPUs, the CPU floor, replica processes per node,
  the memory estimate (CapacityError; coordinator.limits) — and records a QUEUED job owned by
  the caller, within the queue caps. A repeated ``request_id`` of the same principal returns
  the first job for the same spec, and is ALREADY_EXISTS for another.
* Jobs belong to principals: another principal's job is NOT_FOUND (``get``, ``cancel``,
  ``scale``, ``list_jobs``); admins see every job.
* The scheduler (coordinator.scheduler) starts queued jobs in order while the cluster has room
  (``cpus_needed``: the one capacity rule) and fewer than ``max_concurrent`` run.
* Each running job's round loop runs in a :class:`coordinator.runner.JobRunner` actor on this
  node (its own process, so API calls and the loop never share a GIL); a thread here
  (coordinator.job_run; a sweep: coordinator.sweep_runner) stores what it reports: every
  round, evaluation and state change is written to the store (and wakes watchers) before it is
  shown, and before the loop goes on.
* This class is the facade the servicer calls: the calls below, plus ``record``, ``events``,
  ``last_seq`` and ``wait_for_change`` for watchers; nothing outside reaches into its store or
  its condition variable.
* ``cancel`` has the runner kill the job's replica actors at once, so a long round stops promptly and its
  resources return to Ray; the job ends CANCELLED with a checkpoint of its last full round. A job
  still starting (its runner building the engine: data loading, replicas waiting for placement
  or importing torch) has its runner killed instead, and with it every actor it created (an
  actor dies with its owner): no start-up step can hold a cancel.
* Terminal states are final: the store writes a state only to a job not yet terminal
  (coordinator.store), so a cancel racing the end of a run leaves one terminal event.
* ``scale`` changes a job's replica count: a queued job's spec is rewritten; a running job's
  runner applies it at the next round boundary (Parle replicas join at the reference).
* A job whose spec asks for it (``flatness.enabled``) gets a flatness report of its final
  model in its run directory (an artifact), with the headline numbers in its summary.
* ``shutdown`` (SIGTERM) asks running jobs to checkpoint after their current round and leaves
  them RUNNING in the store; the next server start resumes them from that checkpoint.
* Warm start (:mod:`coordinator.warm`): Ray's idle worker processes have already imported
  torch and our modules, and a few are kept idle on this node (no CPUs held), so a job's runner
  and replicas start in them; each dataset is loaded and put in the object store once, and the
  next job on the same data gets the same object. Each job's start-up steps are logged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import uuid
from pathlib import Path

from core.errors import CapacityError, ClusterUnavailable, JobFinished, JobNotFound, SpecError
from coordinator.init_from import resolve as resolve_init_from
from coordinator.limits import ServiceLimits, cluster_nodes
from coordinator.metrics import ServiceMetrics
from coordinator.retention import delete_job
from coordinator.rundir import RunDir
from coordinator.scheduler import Scheduler, cpus_needed
from coordinator.strategies import STRATEGIES
from core.spec import JobSpec
from coordinator.store import DEFAULT_OWNER, TERMINAL, JobRecord, JobStore, QueueFull
from core.sweep_spec import trial_specs

log = logging.getLogger("esgd.manager")

# what ``scale`` may resize: each strategy class's method says (core.methods; sgd's K is its batch)
SCALABLE = tuple(name for name, cls in STRATEGIES.items() if cls.method.scalable)


class JobManager:
    def __init__(self, data_dir: str | Path, *, ray_address: str | None = None, num_cpus: int | None = None,
                 max_concurrent: int = 0, metrics: ServiceMetrics | None = None, ray_metrics_port: int = 0,
                 limits: ServiceLimits | None = None, data_policy=None):
        from worker.data.roots import DataPolicy

        self.data_dir = Path(data_dir)
        self.limits = limits or ServiceLimits()
        # what dataset.path may name: the server's data roots (serve_main), else the environment's
        self.data_policy = data_policy if data_policy is not None else DataPolicy.from_env()
        self.nodes: list[dict] = []  # the cluster's nodes (CPUs, memory), for admission
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
        self.changed = threading.Condition()  # notified on every store write (wait_for_change)
        self.running: dict = {}  # job id → coordinator.scheduler.Running, under ``lock``: the ledger
        self.lock = threading.RLock()
        self.stopping_event = threading.Event()
        self.scheduler = Scheduler(self)
        self.warm = None  # coordinator.warm.WarmWorkers: idle preloaded worker processes on this node
        self.datasets = None  # coordinator.warm.DatasetCache: each dataset put once

    # ----- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to Ray, requeue jobs a dead server left RUNNING, start scheduling."""
        self._connect()
        for rec in self.store.in_states(("RUNNING",), trials=False):  # a sweep's trials: its runner's
            self.store.update(rec.id, state="QUEUED", restarts=rec.restarts + 1,
                              event=("state", {"state": "QUEUED", "reason": "server restarted; resuming from checkpoint"}))
        self.scheduler.start()

    def _connect(self) -> None:
        from coordinator import warm
        from coordinator.cluster import connect

        if self.ray_address and not _reachable(self.ray_address):
            self.cluster_error = f"Ray cluster at {self.ray_address} is unreachable"
            log.error(self.cluster_error)
            return
        if not self.ray_address:
            warm.configure_embedded()  # its worker processes import torch and our modules as they start
        try:
            self.resources = connect(self.ray_address, num_cpus=self.num_cpus,
                                     metrics_export_port=self.ray_metrics_port)
            self.nodes = cluster_nodes()
        except Exception as exc:  # noqa: BLE001 - any failure means no cluster
            self.cluster_error = f"cannot connect to Ray ({self.ray_address or 'embedded'}): {exc}"
            log.error(self.cluster_error)
            return
        if not warm.enabled():  # ESGD_WARM_WORKERS=0: every job starts cold
            return
        self.datasets = warm.DatasetCache(warm.default_cache_budget())
        self.warm = warm.WarmWorkers.for_this_node(hold=self._jobs_starting)
        if self.warm is not None:
            self.warm.start()
            log.info("keeping %d idle worker processes warm on this node", self.warm.target)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop scheduling; running jobs checkpoint after their round and stay RUNNING."""
        self.stopping_event.set()
        self.notify()
        if self.warm is not None:
            self.warm.stop()
        with self.lock:
            threads = [r.thread for r in self.running.values() if r.thread]
        for t in threads:
            t.join(timeout)
        self.scheduler.join(timeout)  # it reads the store: never close it under a query (a segfault in sqlite)
        self.store.close()

    @property
    def stopping(self) -> bool:
        return self.stopping_event.is_set()

    # ----- API ---------------------------------------------------------------------------------
    def create(self, spec_data: dict, request_id: str | None = None, *, principal=None,
               spec_bytes: int | None = None) -> JobRecord:
        self.limits.check_request(spec_data, spec_bytes, request_id)  # sizes, before anything is parsed
        spec = JobSpec.parse(spec_data).resolved()
        asked = spec.to_dict()  # the idempotency digest's: init_from's round is pinned next
        spec = resolve_init_from(self, spec, principal)  # ownership, checkpoint, model (coordinator.init_from)
        specs = trial_specs(spec)  # a sweep: every trial must be able to run (at its space's boundary values)
        for each in specs:
            self.check_data(each)
        resources = self._cluster()
        for each in specs:
            each.check_capacity(resources.get("CPU", 0.0), resources.get("GPU", 0.0))
            self.limits.admit(each, self.nodes)
        owner = _owner(principal)
        data = spec.to_dict()
        digest = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()
        try:
            rec, created = self.store.create(uuid.uuid4().hex[:12], data, request_id, owner=owner, digest=digest,
                                             max_queued=self.limits.max_queued_jobs,
                                             max_queued_per_owner=self.limits.max_queued_per_principal)
        except QueueFull as exc:
            mine = exc.scope == "principal"
            raise CapacityError(
                f"queue: {exc.queued} jobs are queued{' for ' + owner if mine else ''}, the cap is {exc.limit} "
                f"({'--max-queued-per-principal' if mine else '--max-queued-jobs'}); retry once some have "
                "started, or cancel some", "queue") from None
        if created:
            self.notify()
        return rec

    def check_data(self, spec: JobSpec) -> None:
        """``dataset.path`` must lie inside the server's data roots; the refusal is one message
        for every refused path (worker.data.roots), naming the field and nothing about the file."""
        from worker.data.base import DataError

        try:
            self.data_policy.check(spec.dataset.name, spec.dataset.path)
        except DataError as exc:
            raise SpecError(str(exc), "dataset.path") from None

    def get(self, job_id: str, principal=None) -> JobRecord:
        """The job, if ``principal`` may see it (its owner, or an admin; None: the server
        itself); anyone else gets the same NOT_FOUND as for a job that does not exist."""
        rec = self.store.get(job_id)
        if rec is None or not _may_see(principal, rec):
            raise JobNotFound(f"job {job_id!r} not found")
        return rec

    def list_jobs(self, principal, state: str | None, after: int, limit: int) -> list[JobRecord]:
        """Jobs in creation order after the cursor: the caller's own, or all for an admin."""
        owner = None if principal is None or principal.admin else principal.name
        return self.store.list(state, after, limit, owner=owner)

    def cancel(self, job_id: str, principal=None) -> JobRecord:
        rec = self.get(job_id, principal)
        if rec.state in TERMINAL:
            raise JobFinished(f"job {job_id} already {rec.state}; only QUEUED or RUNNING jobs can be cancelled")
        with self.lock:
            running = self.running.get(job_id)
            if running is None:
                if self.store.set_state(job_id, "CANCELLED", "cancelled before it started", cancel_requested=1) is None:
                    rec = self.get(job_id)
                    raise JobFinished(f"job {job_id} already {rec.state}; only QUEUED or RUNNING jobs can be cancelled")
                self.notify()
                return self.get(job_id)
            running.cancel.set()
            self.store.update(job_id, cancel_requested=1)
            if running.runner is not None:
                if running.spec.sweep is not None:  # its trials, placement groups and replicas go with it
                    _kill(running.runner)
                elif running.started:
                    running.runner.cancel.remote()  # stop the round in flight: kill the replicas now
                else:  # still starting: its engine is not built, so nothing but the process can stop it
                    _kill(running.runner)  # the replicas it created die with it
        return self.get(job_id)

    def scale(self, job_id: str, replicas: int, principal=None) -> JobRecord:
        """Set a job's replica count: at once for a queued job, at the next round boundary for
        a running one. Checked like a new job (strategy, min_replicas, cluster capacity, the
        service's limits)."""
        rec = self.get(job_id, principal)
        if rec.state in TERMINAL:
            raise JobFinished(f"job {job_id} already {rec.state}; only QUEUED or RUNNING jobs can be scaled")
        if rec.parent or rec.spec.get("sweep"):
            raise SpecError("replicas: a sweep and its trials cannot be scaled (a trial's replicas are its "
                            "placement group); sweep over replicas instead", "replicas")
        spec = JobSpec.parse(rec.spec)
        if spec.strategy not in SCALABLE:
            raise SpecError(f"replicas: a {spec.strategy} job cannot be scaled (its replica count is part of the "
                            f"method); allowed for strategies {', '.join(SCALABLE)}", "replicas")
        if not isinstance(replicas, int) or not 1 <= replicas <= 1024:
            raise SpecError(f"replicas: must be an integer in [1, 1024], got {replicas!r}", "replicas")
        if replicas < spec.train.min_replicas:
            raise SpecError(f"replicas: {replicas} is below the job's train.min_replicas = "
                            f"{spec.train.min_replicas}", "replicas")
        new = spec.model_copy(update={"replicas": replicas})
        resources = self._cluster()
        new.check_capacity(resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        self.limits.admit(new, self.nodes)
        with self.lock:
            running = self.running.get(job_id)
            if running is None or not running.started:
                if running is not None:
                    raise JobFinished(f"job {job_id} is starting; scale it once its first round has begun")
                self.write(job_id, spec=new.to_dict(),
                            event=("replica", {"replica": -1, "round": 0, "kind": "resized",
                                               "cause": f"scaled from {spec.replicas} to {replicas} before it started",
                                               "replicas": replicas}))
            else:
                others, _ = self.scheduler.in_use(exclude=job_id)
                need, _ = cpus_needed(new, resources.get("CPU", 0.0))
                if others + need > resources.get("CPU", 0.0) + 1e-9:
                    raise CapacityError(
                        f"replicas: {replicas} replicas need {need:g} CPUs but only "
                        f"{resources.get('CPU', 0.0) - others:g} are not used by other jobs; "
                        f"allowed: replicas ≤ {int((resources.get('CPU', 0.0) - others) // spec.resources.cpus_per_replica)}",
                        "replicas")
                running.runner.resize.remote(replicas)
        return self.get(job_id)

    def delete(self, job_id: str, principal=None) -> list[str]:
        """Delete a finished job, its rows and files (coordinator.retention)."""
        return delete_job(self, job_id, principal)

    def run_dir(self, job_id: str) -> RunDir:
        return RunDir(self.runs / job_id)

    def download_job(self, job_id: str, principal=None) -> str:
        """Whose run directory a download of ``job_id`` serves (checkpoints and artifacts): its
        own, or for a sweep its best trial's, so the best model and its spec are one call away."""
        rec = self.get(job_id, principal)
        best = (rec.sweep or {}).get("best_trial") if rec.spec.get("sweep") else None
        if rec.spec.get("sweep") and not best:
            raise JobNotFound(f"sweep {job_id} has no trial with a result yet")
        return best or job_id

    # ----- scheduling ------------------------------------------------------------------------
    def _cluster(self) -> dict:
        if self.resources is None:
            raise ClusterUnavailable(self.cluster_error or "the Ray cluster is not connected")
        return self.resources

    def _jobs_starting(self) -> bool:
        return any(not r.started for r in list(self.running.values()))

    def poke_warm(self) -> None:
        if self.warm is not None:
            self.warm.poke()

    # ----- for watchers: the job's record and events, and a signal on every change --------------
    def record(self, job_id: str) -> JobRecord | None:
        """The stored job, unchecked (the caller checked who asks, e.g. with :meth:`get`)."""
        return self.store.get(job_id)

    def events(self, job_id: str, after: int, limit: int) -> list:
        return self.store.events(job_id, after, limit=limit)

    def last_seq(self, job_id: str) -> int:
        return self.store.last_seq(job_id)

    def wait_for_change(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout=timeout)

    # ----- store writes + wake-ups -------------------------------------------------------------
    def write(self, job_id: str, *, state_change: tuple[str, str] | None = None, **columns) -> None:
        if state_change:
            self.store.set_state(job_id, state_change[0], state_change[1], **columns)
        else:
            self.store.update(job_id, **columns)
        self.notify()

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


def _reachable(address: str, timeout: float = 3.0) -> bool:
    """A TCP connect to the GCS: ray.init on a dead address would hang, so ask first."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _owner(principal) -> str:
    return principal.name if principal is not None else DEFAULT_OWNER


def _may_see(principal, rec: JobRecord) -> bool:
    return principal is None or principal.admin or rec.owner == principal.name


def _kill(actor) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already dead
        pass
