"""The scheduler: which queued job starts next, and the ledger of what running jobs hold.

A thread starts queued jobs first come, first served, while the cluster has room: a job holds
:func:`cpus_needed` — ``replicas × cpus_per_replica`` CPUs and ``replicas`` replica processes,
or for a sweep what its concurrent trials hold (core.sweep_spec.footprint) — and at most
``max_concurrent`` jobs run, within the cluster's cap on replica processes
(``--max-replicas-per-node``, summed over nodes). A job first in line that does not fit
blocks the ones behind it, so a wide job is never starved by narrow ones.

Each queued job's spec is parsed once, not on every tick: :meth:`Scheduler.spec_of` keeps the
parsed (resolved: the store holds what CreateJob resolved) spec while the stored one is unchanged.

It also requeues *orphans*: a job RUNNING in the store with no thread here lost that thread
to a store write error (disk full); once the store takes writes again it resumes from its
latest checkpoint, as after a server restart. Nothing is lost, nothing is run twice.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from core.spec import JobSpec
from core.sweep_spec import footprint

log = logging.getLogger("esgd.manager")


def cpus_needed(spec: JobSpec, cluster_cpus: float) -> tuple[float, int]:
    """(CPUs, replica processes) a job holds while it runs: the one capacity rule."""
    if spec.sweep is not None:  # the trials it runs at once
        _, cpus, procs = footprint(spec, cluster_cpus)
        return cpus, procs
    return spec.replicas * spec.resources.cpus_per_replica, spec.replicas


@dataclass
class Running:
    """A job this server runs now: what it holds, and the handles to stop it."""

    spec: JobSpec
    cpus: float
    cancel: threading.Event = field(default_factory=threading.Event)
    runner: object | None = None  # the JobRunner (or SweepRunner) actor handle
    procs: int = 0  # replica processes it holds; 0: spec.replicas
    started: bool = False  # the runner's engine is built and its loop runs
    thread: threading.Thread | None = None
    startup: dict | None = None  # start-up steps, logged with the first stored round

    def resized(self, spec: JobSpec) -> None:
        """The job now runs ``spec`` (``esgd scale`` changed its replicas): what it holds follows
        :func:`cpus_needed`. Only a plain job is scaled, never a sweep, so the cluster's size,
        which only a sweep's footprint depends on, does not enter."""
        self.spec, (self.cpus, _) = spec, cpus_needed(spec, 0.0)


class Scheduler:
    """Starts queued jobs on ``m``'s cluster (``m``: the JobManager, whose ``running`` table
    under ``m.lock`` is the ledger)."""

    def __init__(self, m):
        self.m = m
        self.thread: threading.Thread | None = None
        self._specs: dict[str, tuple[dict, JobSpec]] = {}  # queued job id → (stored spec, parsed)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="esgd-scheduler", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)  # it reads the store: never close it under a query

    def in_use(self, exclude: str | None = None) -> tuple[float, int]:
        """(CPUs, replica processes) held by the running jobs, but ``exclude``."""
        held = [r for jid, r in self.m.running.items() if jid != exclude]
        return sum(r.cpus for r in held), sum(r.procs or r.spec.replicas for r in held)

    def spec_of(self, rec) -> JobSpec:
        """A queued job's spec, parsed the first time it is seen and again only once its stored
        spec changed (``scale`` rewrites a queued job's replica count)."""
        cached = self._specs.get(rec.id)
        if cached is None or cached[0] != rec.spec:
            cached = self._specs[rec.id] = (rec.spec, JobSpec.parse(rec.spec))
        return cached[1]

    def process_cap(self) -> int:
        """Replica processes the cluster may host at once (--max-replicas-per-node, summed)."""
        return sum(self.m.limits.replicas_per_node(n["cpus"]) for n in self.m.nodes)

    def _loop(self) -> None:
        m = self.m
        while not m.stopping:
            try:
                self.start_ready_jobs()
            except Exception:  # noqa: BLE001 - the scheduler must outlive any one job
                log.exception("scheduler error")
            m.wait_for_change(1.0)

    def start_ready_jobs(self) -> None:
        from coordinator.job_run import run_job
        from coordinator.sweep_runner import run_sweep_job

        m = self.m
        if m.resources is None:
            return
        self.requeue_orphans()
        cluster = m.resources.get("CPU", 0.0)
        queued = m.store.in_states(("QUEUED",), trials=False)
        for gone in self._specs.keys() - {rec.id for rec in queued}:  # started, cancelled or deleted
            del self._specs[gone]
        for rec in queued:
            if m.stopping:
                return
            spec = self.spec_of(rec)
            need, own = cpus_needed(spec, cluster)
            with m.lock:
                used, procs = self.in_use()
                full = m.max_concurrent and len(m.running) >= m.max_concurrent
                crowded = self.process_cap() and procs + own > self.process_cap()
                if full or crowded or used + need > cluster + 1e-9:
                    return  # first come, first served: wait for room
                if m.store.get(rec.id).state != "QUEUED":
                    continue  # cancelled meanwhile
                running = Running(spec, need, procs=own)
                m.running[rec.id] = running
                m.write(rec.id, state_change=("RUNNING", "started"))
                # started under the lock: shutdown, which joins every running job's thread under
                # it, never finds a thread that exists but has not started
                target = run_sweep_job if spec.sweep is not None else run_job
                running.thread = threading.Thread(target=target, args=(m, rec.id, running), name=f"job-{rec.id}",
                                                  daemon=True)
                running.thread.start()

    def requeue_orphans(self) -> None:
        m = self.m
        if m.stopping:
            return  # jobs stay RUNNING on shutdown on purpose: the next start resumes them
        with m.lock:
            orphans = [rec for rec in m.store.in_states(("RUNNING",), trials=False) if rec.id not in m.running]
            for rec in orphans:
                m.store.update(rec.id, state="QUEUED", restarts=rec.restarts + 1,
                               event=("state", {"state": "QUEUED",
                                                "reason": "resuming from checkpoint after a job-store write error"}))
