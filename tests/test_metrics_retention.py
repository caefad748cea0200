"""A finished job's Prometheus series are removed after the retention period; running jobs'
series and the service-wide ones stay (coordinator.metrics.ServiceMetrics)."""
from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from coordinator.metrics import ServiceMetrics
from core.events import EvalRecord, ReplicaEvent
from tests.helpers import round_record


def exported(m: ServiceMetrics) -> str:
    return generate_latest(m.registry).decode()


def feed(m: ServiceMetrics, job_id: str) -> None:
    listener = m.listener(job_id)
    listener.on_round(round_record(loss=1.0, gamma=0.1, rho=0.5, lr=0.1, grad_evals=4, samples=64,
                                   compute_seconds=0.1, comm_seconds=0.01, bytes_sent=10, bytes_received=10,
                                   grad_norm=0.2, spread=0.3,
                                   replicas=[{"replica": 0, "loss": 1.0, "compute_s": 0.1, "grad_evals": 4}]))
    listener.on_eval(EvalRecord(round=1, epoch=0.1, test_error=0.5, test_loss=1.2, grad_evals_total=4,
                                grad_evals_per_replica=4, samples_total=64, data_passes_per_replica=0.1,
                                data_passes_total=0.1, wall_seconds=0.1))
    listener.on_replica(ReplicaEvent(replica=0, round=1, kind="added", cause="", replicas=1))


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


def test_the_server_stamps_a_job_end_and_drops_its_series_after_retention(tmp_path):
    """A real esgd serve with --metrics-retention 2: right after a job ends /metrics holds its
    end time (the dashboard's annotation), and a little later none of its series."""
    import urllib.request

    from services.api import jobs_pb2 as pb
    from services.api import jobs_pb2_grpc
    from tests.service_harness import ServerProcess, free_port
    from tests.test_service import create, quick_spec, wait_state

    port = free_port()
    srv = ServerProcess(tmp_path, "--num-cpus", "1", "--metrics-port", str(port), "--metrics-retention", "2")
    try:
        with srv.channel() as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            job = create(stub, quick_spec(train={"outer_steps": 3}))
            assert wait_state(stub, job.name, {pb.SUCCEEDED, pb.FAILED}, timeout=240).state == pb.SUCCEEDED

            def scrape() -> str:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

            deadline = time.monotonic() + 60
            text = scrape()
            while f'job_id="{job.id}"' in text and time.monotonic() < deadline:
                if f'esgd_job_end_time_seconds{{job_id="{job.id}",state="SUCCEEDED"}}' in text:
                    break
                time.sleep(0.05)
                text = scrape()
            assert f'esgd_job_end_time_seconds{{job_id="{job.id}",state="SUCCEEDED"}}' in text
            assert f'esgd_job_outer_steps_total{{job_id="{job.id}"}} 3.0' in text
            while f'job_id="{job.id}"' in scrape():
                assert time.monotonic() < deadline, "the finished job's series are still exported"
                time.sleep(0.2)
            assert "esgd_jobs{" in scrape() and "grpc_server_handled_total{" in scrape()  # service-wide stay
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
