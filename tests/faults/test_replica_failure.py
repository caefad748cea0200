"""Faults injected into real runs: a replica process killed by PID, a diverging hyperparameter.

Every wait follows the job's own event stream (WatchJob), never a sleep.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.service_harness import ServerProcess, report_fault
from tests.test_service import create, quick_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("faults"), "--num-cpus", "2")
    channel = srv.channel()
    yield jobs_pb2_grpc.JobServiceStub(channel)
    channel.close()
    assert srv.terminate() == 0, srv.read_log()[-3000:]


def follow(stub, name, until=None):
    """Events of a job from the start; stop early when ``until(event)`` is true."""
    seen = []
    for ev in stub.WatchJob(pb.WatchJobRequest(name=name, after_seq=0), timeout=300):
        seen.append(ev)
        if until is not None and until(ev):
            break
    return seen


def test_killed_replica_is_recreated_and_the_job_succeeds(stub):
    job = create(stub, quick_spec(train={"outer_steps": 40, "eval_every": 10}))
    follow(stub, job.name, until=lambda ev: ev.HasField("progress") and ev.progress.round >= 3)
    victim = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas[1]
    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    events = follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED, final.error
    replica_events = [e.replica for e in events if e.HasField("replica")]
    restarted = next(e for e in events if e.HasField("replica") and e.replica.kind == "restarted")
    report_fault(fault="replica process SIGKILLed by PID mid-job", count=1,
                 lost="nothing (the round used the survivor; 40/40 rounds recorded)",
                 recovery_s=round(restarted.time.ToNanoseconds() / 1e9 - killed_at, 2),
                 recovery="kill to the new replica placed and restored",
                 test="tests/faults/test_replica_failure.py::test_killed_replica_is_recreated_and_the_job_succeeds")
    assert [(r.replica, r.kind) for r in replica_events] == [(1, "failed"), (1, "restarted")]
    assert "Actor" in replica_events[0].cause or "died" in replica_events[0].cause.lower()
    rounds = [e.progress.round for e in events if e.HasField("progress")]
    assert rounds == list(range(1, 41))  # no completed round lost or repeated
    failed_round = replica_events[0].round
    assert [e.progress for e in events if e.HasField("progress")][failed_round - 1].round == failed_round
    new = {r.index: r.pid for r in final.replicas}
    assert new[1] != victim.pid and final.summary.rounds == 40 and final.summary.test_error < 0.9


def test_failure_budget_exhausted_fails_the_job_with_the_reason(stub):
    job = create(stub, quick_spec(train={"outer_steps": 400, "eval_every": 1000, "max_replica_failures": 0}))
    follow(stub, job.name, until=lambda ev: ev.HasField("progress") and ev.progress.round >= 2)
    victim = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas[0]
    os.kill(victim.pid, signal.SIGKILL)
    events = follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.FAILED
    assert final.error.code == "REPLICA_FAILED" and final.error.replica == 0
    assert "budget" in final.error.message and "max_replica_failures" in final.error.message
    assert any(e.HasField("replica") and e.replica.kind == "failed" for e in events)


def test_nan_from_a_hyperparameter_fails_within_one_round_and_keeps_the_last_good_checkpoint(stub):
    # γ_t = 1·(1+10)^t: η'γ passes 2 at t = 2, the chain blows up in round 3
    spec = quick_spec(inner={"gamma0": 1.0, "gamma1": 10.0, "steps": 20}, train={"outer_steps": 50},
                      checkpoint={"every": 1})
    job = create(stub, spec)
    follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.FAILED and final.error.code == "DIVERGED", final
    assert final.error.round == final.progress.round + 1  # failed in the round after the last good one
    assert "γ=" in final.error.message and "η'=" in final.error.message
    assert final.checkpoint_round == final.progress.round >= 1
    report_fault(fault="NaN through a hyperparameter (γ growing 11× a round)", count=1,
                 lost=f"nothing (FAILED DIVERGED in round {final.error.round}; checkpoint of round "
                      f"{final.checkpoint_round} kept)", recovery_s=0.0, recovery="fails within the round",
                 test="tests/faults/test_replica_failure.py::"
                      "test_nan_from_a_hyperparameter_fails_within_one_round_and_keeps_the_last_good_checkpoint")
    chunks = list(stub.DownloadCheckpoint(pb.DownloadCheckpointRequest(name=job.name), timeout=30))
    import io

    ckpt = torch.load(io.BytesIO(b"".join(c.data for c in chunks)))
    assert ckpt["round"] == final.checkpoint_round
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
