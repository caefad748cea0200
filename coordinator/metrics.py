"""Prometheus metrics of the service: jobs, rounds, replicas (the gRPC ones live in services).

Names follow Prometheus practice: prefix ``esgd_``, base units, counters end in ``_total``.
Labels are bounded: ``job_id`` (not ``job``, which Prometheus reserves for the scrape job),
``replica`` (an index), ``phase``, ``direction``, ``state``; never hyperparameters or text.
Each running job feeds them through an engine listener (:meth:`ServiceMetrics.listener`).

**A finished job's series go away.** Per-job and per-replica series would otherwise live as
long as the server, and the number of series would grow with every job ever run (each costs
Prometheus memory and every scrape). :meth:`ServiceMetrics.job_finished` stamps
``esgd_job_end_time_seconds`` and removes every series labelled with the job ``retain_s``
later (``esgd serve --metrics-retention``, default 10 minutes): long enough for any scrape
interval to record the final values, which Prometheus keeps in its own storage afterwards.
``esgd_job_start_time_seconds`` and the end time drive the dashboard's annotations.
"""
from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from core.events import EvalRecord, Listener, ReplicaEvent, RoundRecord

RETAIN_S = 600.0  # seconds a finished job's series stay exported
ROUND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _JobCounts:
    """``esgd_jobs{state}``, read from the job store at scrape time (always exact)."""

    def __init__(self, counts):
        self.counts = counts

    def collect(self):
        family = GaugeMetricFamily("esgd_jobs", "Jobs by state.", labels=["state"])
        for state, n in self.counts().items():
            family.add_metric([state], n)
        yield family


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, retain_s: float = RETAIN_S):
        if not retain_s >= 0:
            raise ValueError(f"--metrics-retention: must be >= 0 seconds, got {retain_s!r}")
        self.registry = r = registry or CollectorRegistry()
        self.retain_s = retain_s
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        j = ["job_id"]
        self.start_time = Gauge("esgd_job_start_time_seconds", "When the job (last) started running, Unix time.",
                                j, registry=r)
        self.end_time = Gauge("esgd_job_end_time_seconds", "When the job ended, Unix time, by final state.",
                              ["job_id", "state"], registry=r)
        self.train_loss = Gauge("esgd_job_train_loss", "Mean inner-loop training loss of the last round.", j, registry=r)
        self.test_error = Gauge("esgd_job_test_error_ratio", "Test error of the reference model (ratio).", j, registry=r)
        self.test_loss = Gauge("esgd_job_test_loss", "Test loss of the reference model.", j, registry=r)
        self.gamma = Gauge("esgd_job_gamma", "Current coupling γ_t (scope).", j, registry=r)
        self.rho = Gauge("esgd_job_rho", "Current elastic coupling ρ_t (Parle, Elastic-SGD).", j, registry=r)
        self.lr = Gauge("esgd_job_learning_rate", "Current outer learning rate η.", j, registry=r)
        self.outer_steps = Counter("esgd_job_outer_steps", "Outer steps (rounds) completed.", j, registry=r)
        self.inner_steps = Counter("esgd_job_inner_steps", "Inner (Langevin) steps, all replicas.", j, registry=r)
        self.samples = Counter("esgd_job_samples", "Training samples processed, all replicas.", j, registry=r)
        self.grad_evals = Counter("esgd_job_gradient_evaluations", "Minibatch gradient evaluations, all replicas.",
                                  j, registry=r)
        self.round_seconds = Histogram("esgd_job_round_duration_seconds",
                                       "Round time split into replica compute and communication/aggregation.",
                                       ["job_id", "phase"], buckets=ROUND_BUCKETS, registry=r)
        self.bytes = Counter("esgd_job_bytes", "Bytes moved between the coordinator and replicas.",
                             ["job_id", "direction"], registry=r)
        self.grad_norm = Gauge("esgd_job_entropy_gradient_norm", "‖x − μ̄‖: size of the local-entropy gradient.",
                               j, registry=r)
        self.spread = Gauge("esgd_job_replica_spread", "Spread of replicas around the reference (consensus).",
                            j, registry=r)
        self.failures = Counter("esgd_job_replica_failures", "Replica failures.", j, registry=r)
        self.restarts = Counter("esgd_job_replica_restarts", "Replicas recreated after a failure.", j, registry=r)
        self.membership = Counter("esgd_job_membership_changes", "Replicas added or removed (scale, lost node).",
                                  ["job_id", "change"], registry=r)
        self.replicas = Gauge("esgd_job_replicas", "Replicas the job runs now.", j, registry=r)
        self.flatness = Gauge("esgd_job_flatness", "Flatness report of the final model: top_eigenvalue, "
                              "hessian_trace, near_zero_fraction.", ["job_id", "quantity"], registry=r)
        rl = ["job_id", "replica"]
        self.replica_loss = Gauge("esgd_replica_inner_loss", "Mean inner loss of a replica in the last round.",
                                  rl, registry=r)
        self.replica_rate = Gauge("esgd_replica_inner_steps_per_second", "Inner steps per second of a replica.",
                                  rl, registry=r)

    def watch_store(self, counts) -> None:
        """Export ``esgd_jobs{state}`` from ``counts()`` (the job store's)."""
        self.registry.register(_JobCounts(counts))

    def job_started(self, job_id: str) -> None:
        """Create the job's counters at 0, so rates and increases exist from the first scrape."""
        with self._lock:
            timer = self._timers.pop(job_id, None)
        if timer is not None:  # resumed or re-run before its old series went: keep them
            timer.cancel()
        self.start_time.labels(job_id).set(time.time())
        for c in (self.outer_steps, self.inner_steps, self.samples, self.grad_evals, self.failures, self.restarts):
            c.labels(job_id)
        for d in ("sent", "received"):
            self.bytes.labels(job_id, d)
        for change in ("added", "removed"):
            self.membership.labels(job_id, change)

    def job_finished(self, job_id: str, state: str) -> None:
        """Stamp the end and remove the job's series ``retain_s`` from now (module docstring)."""
        self.end_time.labels(job_id, state).set(time.time())
        timer = threading.Timer(self.retain_s, self.forget, args=(job_id,))
        timer.daemon = True
        with self._lock:
            old, self._timers[job_id] = self._timers.get(job_id), timer
        if old is not None:
            old.cancel()
        timer.start()

    def forget(self, job_id: str) -> None:
        """Remove every series labelled ``job_id`` (all metrics, all other labels)."""
        with self._lock:
            self._timers.pop(job_id, None)
        for metric in self.per_job():
            metric.remove_by_labels({"job_id": job_id})

    def per_job(self) -> list:
        """The metrics that carry a ``job_id`` label."""
        return [m for m in vars(self).values() if getattr(m, "_labelnames", ())[:1] == ("job_id",)]

    def listener(self, job_id: str) -> "_JobListener":
        self.job_started(job_id)
        return _JobListener(self, job_id)


class _JobListener(Listener):
    """Engine listener translating round and evaluation events into metric updates."""

    def __init__(self, m: ServiceMetrics, job_id: str):
        self.m, self.id = m, job_id

    def on_round(self, rec: RoundRecord) -> None:
        m, jid = self.m, self.id
        m.train_loss.labels(jid).set(rec.loss)
        m.gamma.labels(jid).set(rec.gamma)
        if rec.rho is not None:
            m.rho.labels(jid).set(rec.rho)
        m.lr.labels(jid).set(rec.lr)
        m.outer_steps.labels(jid).inc()
        m.inner_steps.labels(jid).inc(rec.grad_evals)
        m.grad_evals.labels(jid).inc(rec.grad_evals)
        m.samples.labels(jid).inc(rec.samples)
        m.round_seconds.labels(jid, "compute").observe(rec.compute_seconds)
        m.round_seconds.labels(jid, "communication").observe(rec.comm_seconds)
        m.bytes.labels(jid, "sent").inc(rec.bytes_sent)
        m.bytes.labels(jid, "received").inc(rec.bytes_received)
        m.grad_norm.labels(jid).set(rec.grad_norm)
        m.spread.labels(jid).set(rec.spread)
        for r in rec.replicas:
            m.replica_loss.labels(jid, str(r["replica"])).set(r["loss"])
            if r["compute_s"] > 0:
                m.replica_rate.labels(jid, str(r["replica"])).set(r["grad_evals"] / r["compute_s"])

    def on_eval(self, rec: EvalRecord) -> None:
        self.m.test_error.labels(self.id).set(rec.test_error)
        self.m.test_loss.labels(self.id).set(rec.test_loss)

    def on_replica(self, event: ReplicaEvent) -> None:
        kind = event.kind
        if kind == "failed":
            self.m.failures.labels(self.id).inc()
        elif kind == "restarted":
            self.m.restarts.labels(self.id).inc()
        elif kind in ("added", "removed"):
            self.m.membership.labels(self.id, kind).inc()
        if event.replicas is not None:
            self.m.replicas.labels(self.id).set(event.replicas)

    def on_flatness(self, headline: dict) -> None:
        for quantity, value in headline.items():
            self.m.flatness.labels(self.id, quantity).set(value)
