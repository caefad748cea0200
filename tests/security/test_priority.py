"""API priority never breaks serving: a server started under ``nice -n 15`` with
``--api-nice 10`` answers (health SERVING only once it does), warns, and never runs its API
threads above the process's priority; the job's Ray processes (round loop and replicas) run
at the server's priority, never below its API threads."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.security.util import TERMINAL, create, quick, wait_state
from tests.service_harness import ServerProcess, descendants, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice values per thread: Linux")]


def nice_of(pid: int, tid: int | None = None) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def thread_nices(pid: int) -> dict[int, int]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = nice_of(pid, int(task.name))
        except (OSError, ValueError):
            pass
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_server_under_nice_15_with_api_nice_10_serves_and_jobs_are_not_below_it(tmp_path):
    srv = ServerProcess(tmp_path, "--num-cpus", "2", "--api-nice", "10", prefix=("nice", "-n", "15"))
    try:
        with srv.channel() as ch:
            health = health_pb2_grpc.HealthStub(ch)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
                health_pb2.HealthCheckResponse.SERVING
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            assert stub.ListJobs(pb.ListJobsRequest(), timeout=30) is not None
            assert "--api-nice 10 not applied" in srv.read_log()
            nices = thread_nices(srv.proc.pid)
            assert min(nices.values()) >= 15, nices  # nothing runs above the process's own priority
            job = create(stub, quick(train={"outer_steps": 100000, "eval_every": 100000}))
            wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).progress.round >= 1, 180,
                     "the job's first round")
            placed = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas
            below = descendants(srv.proc.pid)
            runners = [p for p in below if cmdline(p).startswith(b"ray::JobRunner")]
            replicas = [r.pid for r in placed]
            assert runners and replicas and set(replicas) <= set(below)
            job_nices = {p: nice_of(p) for p in runners + replicas}
            # Ray would put its workers at +15 (RAY_worker_niceness): 19 here, below the API at 15
            assert set(job_nices.values()) == {15}, job_nices
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=10)
            wait_state(stub, job.name, TERMINAL)
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]


def test_a_priority_the_kernel_refuses_is_logged_and_the_server_serves(tmp_path, monkeypatch, caplog):
    """In-process: setpriority fails (as for an unprivileged user asked to raise priority);
    the server still starts, answers, and reports SERVING."""
    import logging
    import os

    import grpc

    from coordinator.manager import JobManager
    from services.server import Server

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "setpriority", refuse)
    caplog.set_level(logging.WARNING, logger="esgd.server")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    server = Server(JobManager(tmp_path), port=0, api_nice=min(base + 5, 19)).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:
                jobs_pb2_grpc.JobServiceStub(ch).GetJob(pb.GetJobRequest(name="jobs/nope"), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "could not be applied" in caplog.text
    finally:
        server.stop(0)
