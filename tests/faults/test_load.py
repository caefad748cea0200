"""100 concurrent API clients against a real server while a job trains: no call may fail.

Each client is a thread with its own gRPC channel (as 100 separate users would have); a
quarter follow the job live with WatchJob for the whole window, the rest loop GetJob, ListJobs
and short WatchJob replays (tests.service_harness.api_clients). The job must keep training
through it, and every stream must be gap-free. bench/load.py measures what the load costs
the job's throughput.
"""
from __future__ import annotations

import time

import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.service_harness import ServerProcess, api_clients, follow, report_fault
from tests.test_service import create, quick_spec

pytestmark = pytest.mark.slow
CLIENTS, SECONDS = 100, 12.0


def test_100_concurrent_clients_get_no_error_while_a_job_trains(tmp_path):
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env={"RAY_ADDRESS": "local"})
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, quick_spec(train={"outer_steps": 100_000, "eval_every": 100_000},
                                          checkpoint={"every": 100_000}))
            follow(stub, job.name, until=lambda e: e.HasField("progress") and e.progress.round >= 2)
            before = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).progress.round
            start = time.monotonic()
            stats = api_clients(srv.target, job.name, CLIENTS, SECONDS)
            elapsed = time.monotonic() - start
            after = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30)
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    calls = sum(stats["calls"].values())
    print(f"\nLOAD {CLIENTS} clients {SECONDS:g}s: {stats['calls']} ({calls / SECONDS:.0f} calls/s), "
          f"{len(stats['errors'])} errors, live events {stats['live_events']}, rounds {before} -> {after.progress.round}")
    assert stats["errors"] == [], stats["errors"][:10]
    assert stats["gaps"] == [] and stats["stuck_threads"] == 0
    assert stats["calls"]["WatchJob"] >= CLIENTS // 4 and min(stats["calls"].values()) > 0
    assert after.state == pb.RUNNING and after.progress.round > before  # the job trained through it
    assert stats["live_events"] >= CLIENTS // 4  # every live watcher saw the job move
    report_fault(fault=f"load: {CLIENTS} concurrent clients (GetJob, ListJobs, WatchJob) for {SECONDS:g} s",
                 count=calls, lost="nothing (0 errors, streams gap-free, the job kept training)",
                 recovery_s=0.0, calls_per_s=round(calls / SECONDS), window_s=round(elapsed, 1),
                 rounds_during=after.progress.round - before,
                 test="tests/faults/test_load.py::test_100_concurrent_clients_get_no_error_while_a_job_trains")
