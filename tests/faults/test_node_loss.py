"""Node loss on a real multi-node Ray cluster (ray.cluster_utils.Cluster) under a real server.

A removed node takes its replica processes with it. The job's lost replicas are recreated
on the remaining capacity; when there is none, the job waits ``resources.placement_timeout_s``
and then goes on with fewer replicas, or fails with a placement error when that would take
it below ``train.min_replicas``. Waits follow the job's event stream, never a sleep.
"""
from __future__ import annotations

import time

import pytest

from services.api import jobs_pb2 as pb
from tests.faults.test_replica_failure import follow
from tests.ray_nodes import add_node, cluster_stub, one_cpu_cluster
from tests.service_harness import report_fault
from tests.test_service import create, quick_spec

pytestmark = pytest.mark.slow
MB = 1024 * 1024
# the GCS notices a dead node within ~2 s instead of the default ~30 s
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    yield from one_cpu_cluster(3, **FAST_HEALTH_CHECKS)


@pytest.fixture(scope="module")
def stub(cluster, tmp_path_factory):
    yield from cluster_stub(cluster, tmp_path_factory.mktemp("nodes"))


def node_spec(**train):
    # the timeout also covers starting the actor's process (importing torch): on a loaded
    # 2-core machine that alone can take 20 s, so 60 s, which every shrink then waits out
    return quick_spec(replicas=2, resources={"cpus_per_replica": 1, "placement_timeout_s": 60},
                      train={"outer_steps": 40, "eval_every": 10, **train})


def remove_node_of(cluster, stub, job, replica: int) -> str:
    """Remove the node hosting ``replica`` of ``job`` (ungracefully: its processes die)."""
    placed = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas
    node_id = next(r.node_id for r in placed if r.index == replica)
    node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
    cluster.remove_node(node, allow_graceful=False)
    return node_id, time.time()


def seconds_after(events, kind: str, since: float) -> float:
    ev = next(e for e in events if e.HasField("replica") and e.replica.kind == kind)
    return round(ev.time.ToNanoseconds() / 1e9 - since, 2)


def running(stub, job, rounds=2):
    follow(stub, job.name, until=lambda ev: ev.HasField("progress") and ev.progress.round >= rounds)


def replica_events(events):
    return [(e.replica.replica, e.replica.kind) for e in events if e.HasField("replica")]


def test_1_replicas_of_a_lost_node_move_to_the_remaining_capacity(cluster, stub):
    job = create(stub, node_spec())  # 2 replicas on 2 of the 3 one-CPU nodes
    running(stub, job)
    gone, removed_at = remove_node_of(cluster, stub, job, replica=0)
    events = follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED, final.error
    assert replica_events(events) == [(0, "failed"), (0, "restarted")]
    assert len(final.replicas) == 2 and gone not in {r.node_id for r in final.replicas}
    assert [e.progress.round for e in events if e.HasField("progress")] == list(range(1, 41))
    assert final.summary.rounds == 40 and final.checkpoint_round == 40
    report_fault(fault="Ray node removed (its replica moves to another node)", count=1,
                 lost="nothing (40/40 rounds recorded)", recovery_s=seconds_after(events, "restarted", removed_at),
                 recovery="node removal to the replica running on another node",
                 test="tests/faults/test_node_loss.py::test_1_replicas_of_a_lost_node_move_to_the_remaining_capacity")


def test_2_without_capacity_the_job_shrinks_after_the_placement_timeout(cluster, stub):
    job = create(stub, node_spec())  # the 2 nodes left, one replica each: no spare CPU
    running(stub, job)
    _, removed_at = remove_node_of(cluster, stub, job, replica=1)
    events = follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED, final.error
    assert replica_events(events) == [(1, "failed"), (1, "removed")]
    removed = next(e.replica for e in events if e.HasField("replica") and e.replica.kind == "removed")
    assert removed.replicas == 1 and "placement_timeout_s" in removed.cause
    assert len(final.replicas) == 1 and final.spec.replicas == 1
    assert [e.progress.round for e in events if e.HasField("progress")] == list(range(1, 41))
    report_fault(fault="Ray node removed, no spare capacity (the job shrinks 2 → 1)", count=1,
                 lost="nothing (40/40 rounds recorded; one replica fewer from then on)",
                 recovery_s=seconds_after(events, "removed", removed_at),
                 recovery="node removal to the job going on shrunk (includes the 60 s placement timeout)",
                 test="tests/faults/test_node_loss.py::test_2_without_capacity_the_job_shrinks_after_the_placement_timeout")


def test_3_below_min_replicas_the_job_fails_with_a_placement_error(cluster, stub):
    add_node(cluster, num_cpus=1, object_store_memory=96 * MB)
    cluster.wait_for_nodes()
    job = create(stub, node_spec(min_replicas=2, outer_steps=400))
    running(stub, job)
    _, removed_at = remove_node_of(cluster, stub, job, replica=0)
    follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.FAILED
    assert final.error.code == "PLACEMENT" and final.error.replica == 0, final.error
    assert "min_replicas = 2" in final.error.message and "placement_timeout_s" in final.error.message
    assert final.checkpoint_round >= 0  # the last good checkpoint stays downloadable
    report_fault(fault="Ray node removed, shrinking would go below train.min_replicas", count=1,
                 lost=f"nothing (FAILED PLACEMENT; checkpoint of round {final.checkpoint_round} kept)",
                 recovery_s=round(final.end_time.ToNanoseconds() / 1e9 - removed_at, 2),
                 recovery="node removal to the job FAILED with the placement error (no hang)",
                 test="tests/faults/test_node_loss.py::test_3_below_min_replicas_the_job_fails_with_a_placement_error")
