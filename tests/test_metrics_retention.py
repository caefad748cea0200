"""A finished job's Prometheus series are removed after the retention period; running jobs'
series and the service-wide ones stay (coordinator.metrics.ServiceMetrics)."""
from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from coordinator.metrics import ServiceMetrics


def exported(m: ServiceMetrics) -> str:
    return generate_latest(m.registry).decode()


def feed(m: ServiceMetrics, job_id: str) -> None:
    listener = m.listener(job_id)
    listener.on_round({"loss": 1.0, "gamma": 0.1, "rho": 0.5, "lr": 0.1, "grad_evals": 4, "samples": 64,
                       "compute_s": 0.1, "comm_s": 0.01, "bytes_sent": 10, "bytes_received": 10,
                       "grad_norm": 0.2, "spread": 0.3,
                       "replicas": [{"replica": 0, "loss": 1.0, "compute_s": 0.1, "grad_evals": 4}]})
    listener.on_eval({"test_error": 0.5, "test_loss": 1.2})
    listener.on_replica({"kind": "added", "replicas": 1})


def wait_until_gone(m: ServiceMetrics, needle: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while needle in exported(m):
        assert time.monotonic() < deadline, f"{needle} still exported after {timeout} s"
        time.sleep(0.05)


def test_every_series_of_a_finished_job_goes_after_retention_and_only_its():
    m = ServiceMetrics(retain_s=0.2)
    feed(m, "done")
    feed(m, "running")
    m.job_finished("done", "SUCCEEDED")
    text = exported(m)
    assert 'job_id="done"' in text and 'esgd_job_end_time_seconds{job_id="done",state="SUCCEEDED"}' in text
    wait_until_gone(m, 'job_id="done"')
    text = exported(m)
    per_job = {line.split("{")[0] for line in text.splitlines() if 'job_id="running"' in line}
    assert {"esgd_job_train_loss", "esgd_replica_inner_loss", "esgd_job_round_duration_seconds_bucket",
            "esgd_job_membership_changes_total", "esgd_job_start_time_seconds"} <= per_job
    # every metric with a job_id label is covered by the removal
    assert {m_.describe()[0].name for m_ in m.per_job()} >= {
        "esgd_job_train_loss", "esgd_replica_inner_loss", "esgd_job_round_duration_seconds",
        "esgd_job_bytes", "esgd_job_flatness", "esgd_job_end_time_seconds"}


def test_a_job_started_again_keeps_its_series():
    m = ServiceMetrics(retain_s=0.3)
    feed(m, "j")
    m.job_finished("j", "FAILED")
    m.job_started("j")  # resumed (server restart, retry) before the removal: cancel it
    time.sleep(0.6)
    assert 'esgd_job_train_loss{job_id="j"}' in exported(m)


def test_retention_must_be_non_negative():
    with pytest.raises(ValueError, match="--metrics-retention"):
        ServiceMetrics(retain_s=-1)
