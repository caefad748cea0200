"""API calls yield to training: the threads gRPC creates to answer calls run at ``api_nice``;
threads the process starts otherwise — the job round loops, which the manager's scheduler
thread starts — keep the process's priority."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import grpc
import pytest

from coordinator.manager import JobManager
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from services.server import Server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux-only")


def nice_of(tid: int) -> int:
    """The nice value of one thread of this process (field 19 of /proc/self/task/TID/stat)."""
    return int(Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_rpc_threads_run_at_api_nice_and_later_job_threads_do_not(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    want = min(base + 7, 19)
    spawn, spawned = threading.Event(), {}

    def scheduler() -> None:  # started before the server, like JobManager.start's scheduler
        spawn.wait(30)
        job = threading.Thread(target=lambda: spawned.setdefault("nice", nice_of(threading.get_native_id())))
        job.start()
        job.join()

    sched = threading.Thread(target=scheduler)
    sched.start()
    server = Server(JobManager(tmp_path), port=0, api_nice=want).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as err:
                    stub.GetJob(pb.GetJobRequest(name="jobs/nope"), timeout=10)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
        rpc = [t.native_id for t in threading.enumerate() if t.name.startswith("rpc")]
        assert rpc, "no handler thread was created"
        assert {nice_of(tid) for tid in rpc} == {want}
        spawn.set()  # a job thread started now, after the server, by the earlier thread
        sched.join(30)
        assert spawned["nice"] == base
        assert nice_of(threading.get_native_id()) == base  # the caller's thread is untouched
    finally:
        spawn.set()
        server.stop(0)  # the server runs grpc.aio on its own loop thread: stop() is its shutdown


def test_api_nice_is_validated(tmp_path):
    with pytest.raises(ValueError, match="api_nice: must be an integer in 0..19"):
        Server(JobManager(tmp_path), port=0, api_nice=20)
