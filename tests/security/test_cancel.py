"""Cancel always works: a job still creating its replicas (one placed, one waiting for a node
that is gone) is cancelled within seconds and every process it started goes away; a cancel
racing the end of a run leaves exactly one terminal event (the store-level race, 200 times
from two threads, is in test_store_rules.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from services.api import jobs_pb2 as pb
from tests.security.util import TERMINAL, create, quick, wait_state
from tests.ray_nodes import cluster_stub, one_cpu_cluster
from tests.service_harness import descendants, wait_for

pytestmark = pytest.mark.slow
MB = 1024 * 1024


def actor_pids(kind: bytes) -> set[int]:
    """PIDs of this test process's Ray actors of class ``kind`` (its servers' and clusters'
    processes are all below it; another test process's actors are not counted)."""
    found = set()
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::" + kind):
                found.add(pid)
        except OSError:
            pass
    return found


def alive(pids) -> set[int]:
    """The PIDs still running (a zombie, or a process gone while looking, is not)."""
    out = set()
    for p in pids:
        try:
            if b"zombie" not in Path(f"/proc/{p}/status").read_bytes().lower():
                out.add(p)
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def cluster():
    yield from one_cpu_cluster(2)


@pytest.fixture(scope="module")
def stub(cluster, tmp_path_factory):
    yield from cluster_stub(cluster, tmp_path_factory.mktemp("cancel"))


def test_cancel_stops_a_job_whose_replicas_cannot_all_be_placed(cluster, stub):
    # the server saw two 1-CPU nodes; one goes: a 2 × 1 CPU job gets one replica placed and
    # one waiting for placement (up to its 300 s timeout) while its runner builds the engine
    cluster.remove_node(next(iter(cluster.worker_nodes)))
    before_runners, before_replicas = actor_pids(b"JobRunner"), actor_pids(b"ReplicaActor")
    job = create(stub, quick(replicas=2, resources={"cpus_per_replica": 1, "placement_timeout_s": 300},
                             train={"outer_steps": 100000, "eval_every": 100000}))
    runners = wait_for(lambda: actor_pids(b"JobRunner") - before_runners, 120, "the job's runner process")
    replicas = wait_for(lambda: actor_pids(b"ReplicaActor") - before_replicas, 180, "its placed replica's process")
    time.sleep(2)  # the other replica is waiting for a node; the job is still starting
    assert stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state == pb.RUNNING
    assert not stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas  # not started yet
    start = time.monotonic()
    stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=10)
    final = wait_state(stub, job.name, TERMINAL, timeout=30)
    took = time.monotonic() - start
    assert final.state == pb.CANCELLED and took < 10, (final.state, took)
    wait_for(lambda: not alive(runners | replicas), 20, f"the job's processes {sorted(runners | replicas)} to exit")
    events = list(stub.WatchJob(pb.WatchJobRequest(name=job.name, after_seq=0), timeout=30))
    ends = [e.state_change.state for e in events if e.HasField("state_change") and e.state_change.state in TERMINAL]
    assert ends == [pb.CANCELLED]


def test_cancel_racing_completion_leaves_one_terminal_event(stub):
    for i in range(5):
        job = create(stub, quick(replicas=1, resources={"cpus_per_replica": 1},
                                 train={"outer_steps": 3, "eval_every": 3}))
        wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).progress.round >= 2 or
                 stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state in TERMINAL, 180, "round 2")
        try:
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=10)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # it had ended
        final = wait_state(stub, job.name, TERMINAL, timeout=60)
        events = list(stub.WatchJob(pb.WatchJobRequest(name=job.name, after_seq=0), timeout=30))
        ends = [e.state_change.state for e in events
                if e.HasField("state_change") and e.state_change.state in TERMINAL]
        assert ends == [final.state], (i, ends, final.state)
        if final.state == pb.SUCCEEDED:  # a finished job is never rewritten by a late cancel
            time.sleep(0.5)
            assert stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state == pb.SUCCEEDED
