"""Server death and restart, graceful shutdown, auth, health and reflection — real processes."""
from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.service_harness import ServerProcess, report_fault
from tests.test_service import code_of, create, quick_spec, wait_state

pytestmark = pytest.mark.slow


def _wait_round(stub, name, at_least, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(name=name), timeout=10)
        if job.checkpoint_round >= at_least:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_server_death_resumes_the_job_from_its_checkpoint(tmp_path, how):
    spec = quick_spec(train={"outer_steps": 60, "eval_every": 5})
    srv = ServerProcess(tmp_path, "--num-cpus", "2")
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, spec)
            before = _wait_round(stub, job.name, 10)
    finally:
        killed_at = time.time()
        if how == "SIGKILL":
            srv.kill()
        else:
            assert srv.terminate() == 0  # graceful: checkpoint after the round in flight, then exit
    assert before.state == pb.RUNNING
    srv2 = ServerProcess(tmp_path, "--num-cpus", "2")
    try:
        with srv2.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            final = wait_state(stub, job.name, {pb.SUCCEEDED, pb.FAILED}, timeout=240)
            assert final.state == pb.SUCCEEDED, final.error
            assert final.restarts == 1 and final.summary.rounds == 60
            events = list(stub.WatchJob(pb.WatchJobRequest(name=job.name, after_seq=0), timeout=30))
            assert [e.seq for e in events] == list(range(1, len(events) + 1))  # the whole history, no gaps
            reasons = [e.state_change.reason for e in events if e.HasField("state_change")]
            assert any("restarted" in r for r in reasons)
            rounds = [e.progress.round for e in events if e.HasField("progress")]
            assert set(rounds) == set(range(1, 61))
            if how == "SIGTERM":
                assert rounds == list(range(1, 61))  # checkpointed exactly where it stopped
            else:  # rounds after the last checkpoint (if any ran before the kill) ran twice
                restarts = [r for i, r in enumerate(rounds) if i and r <= rounds[i - 1]]
                assert len(restarts) <= 1 and all(r > 10 for r in restarts)  # resumed from a checkpoint ≥ 10
            restart = max(i for i, e in enumerate(events)
                          if e.HasField("state_change") and "restarted" in e.state_change.reason)
            resumed = next(e for e in events[restart:] if e.HasField("progress"))
            report_fault(fault=f"server {how} while a job runs", count=1,
                         lost="nothing (60/60 rounds recorded" + (", rounds after the last checkpoint re-run)"
                                                                 if how == "SIGKILL" else ")"),
                         recovery_s=round(resumed.time.ToNanoseconds() / 1e9 - killed_at, 2),
                         recovery="signal to the first resumed round (includes starting a new server and Ray)",
                         test=f"tests/test_service_lifecycle.py::test_server_death_resumes_the_job_from_its_checkpoint[{how}]")
    finally:
        assert srv2.terminate() == 0


def test_auth_health_and_reflection(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    srv = ServerProcess(tmp_path / "data", "--token-file", str(token_file), "--num-cpus", "2")
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            code, _ = code_of(lambda: stub.ListJobs(pb.ListJobsRequest(), timeout=10))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            code, _ = code_of(lambda: stub.ListJobs(pb.ListJobsRequest(), timeout=10,
                                                    metadata=[("authorization", "Bearer wrong")]))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            code, _ = code_of(lambda: list(stub.WatchJob(pb.WatchJobRequest(name="jobs/x"), timeout=10)))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            ok = stub.ListJobs(pb.ListJobsRequest(), timeout=10,
                               metadata=[("authorization", "Bearer s3cret-token")])
            assert list(ok.jobs) == []
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", "esgd.v1.JobService"):
                resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            import os
            import subprocess
            import sys

            from tests.service_harness import ROOT

            probe = subprocess.run([sys.executable, "-m", "services.cli", "health", "--server", srv.target],
                                   capture_output=True, text=True, timeout=60, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert probe.returncode == 0 and probe.stdout.strip() == "SERVING", probe.stderr  # no token needed
            from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
                ProtoReflectionDescriptorDatabase)

            services = ProtoReflectionDescriptorDatabase(ch).get_services()
            assert "esgd.v1.JobService" in services and "grpc.health.v1.Health" in services
    finally:
        assert srv.terminate() == 0
