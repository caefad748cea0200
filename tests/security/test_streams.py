"""Streams cannot starve the server: hundreds of open watches (health and WatchJob, with the
metrics interceptor on) hold no thread, GetJob still answers while they are open, a stream
over ``--max-streams`` is refused at once, and closing streams frees their slots. Checks
correctness only; bench/streams.py measures latency under 1,000 watchers."""
from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.security.util import TERMINAL, create, quick, wait_state
from tests.service_harness import ServerProcess, wait_for

pytestmark = pytest.mark.slow
CAP = 400
HEALTH_WATCHES, JOB_WATCHES = 300, 100  # 300 alone is more than the old server's 256 threads


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("streams"), "--num-cpus", "2", "--max-streams", str(CAP),
                        "--metrics-port", "0")
    yield srv
    assert srv.terminate() == 0, srv.read_log()[-3000:]


def test_hundreds_of_open_streams_hold_no_thread_and_the_cap_refuses_at_once(server):
    channels = [grpc.insecure_channel(server.target) for _ in range(16)]
    try:
        stub = jobs_pb2_grpc.JobServiceStub(channels[0])
        job = create(stub, quick(train={"outer_steps": 100000, "eval_every": 100000}))
        wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).progress.round >= 1, 180,
                 "the job's first round")
        streams = []
        for i in range(HEALTH_WATCHES):
            call = health_pb2_grpc.HealthStub(channels[i % 16]).Watch(health_pb2.HealthCheckRequest(), timeout=600)
            assert next(call).status == health_pb2.HealthCheckResponse.SERVING
            streams.append(call)
        watches = []
        for i in range(JOB_WATCHES):
            call = jobs_pb2_grpc.JobServiceStub(channels[i % 16]).WatchJob(pb.WatchJobRequest(name=job.name),
                                                                           timeout=600)
            assert next(call).HasField("snapshot")
            watches.append(call)
        # every slot is taken: one more stream, of either kind, is refused at once
        for extra in (lambda: next(stub.WatchJob(pb.WatchJobRequest(name=job.name), timeout=30)),
                      lambda: next(health_pb2_grpc.HealthStub(channels[1]).Watch(health_pb2.HealthCheckRequest(),
                                                                                   timeout=30))):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                extra()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
            assert "--max-streams" in err.value.details() and time.monotonic() - t0 < 5
        # unary calls still answer promptly while 400 streams are open
        for _ in range(20):
            t0 = time.monotonic()
            assert stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state == pb.RUNNING
            assert time.monotonic() - t0 < 5
        stub.ListJobs(pb.ListJobsRequest(page_size=10), timeout=10)
        # the watchers follow the job live, gap-free
        for call in watches[:10]:
            seqs = [next(call).seq for _ in range(2)]
            assert seqs[1] == seqs[0] + 1
        # closing streams frees their slots
        for call in streams[:50]:
            call.cancel()
        fresh = wait_for(lambda: _try_watch(stub, job.name), 20, "a stream slot to free up")
        fresh.cancel()
        stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=10)
        for call in watches[:5]:  # the live watchers see the end and their streams close
            last = list(call)[-1]
            assert last.HasField("state_change") and last.state_change.state in TERMINAL
        wait_state(stub, job.name, TERMINAL)
        for call in streams + watches:
            call.cancel()
    finally:
        for ch in channels:
            ch.close()
    assert "Traceback" not in server.read_log()


def _try_watch(stub, name):
    call = stub.WatchJob(pb.WatchJobRequest(name=name), timeout=60)
    try:
        next(call)
        return call
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return None
