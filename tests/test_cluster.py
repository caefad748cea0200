"""The service on a multi-node Ray cluster started on this machine (ray.cluster_utils.Cluster)."""
from __future__ import annotations

import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.ray_nodes import add_node
from tests.service_harness import ServerProcess
from tests.test_service import create, quick_spec, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture()
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "object_store_memory": 128 * 1024 * 1024})
    add_node(cluster, num_cpus=1, object_store_memory=128 * 1024 * 1024)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_replicas_are_placed_across_nodes(tmp_path, two_node_cluster):
    srv = ServerProcess(tmp_path, "--ray-address", two_node_cluster.address)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            # 2 replicas × 1 CPU on two 1-CPU nodes: Ray must put one on each
            job = create(stub, quick_spec(replicas=2, resources={"cpus_per_replica": 1},
                                          train={"outer_steps": 6}))
            final = wait_state(stub, job.name, {pb.SUCCEEDED, pb.FAILED}, timeout=240)
            assert final.state == pb.SUCCEEDED, final.error
            nodes = {r.node_id for r in final.replicas}
            assert len(final.replicas) == 2 and len(nodes) == 2, final.replicas
            cluster_nodes = {n.node_id for n in two_node_cluster.list_all_nodes()}
            assert nodes == cluster_nodes
            # a job wider than the whole cluster can never run
            too_big = quick_spec(replicas=3, resources={"cpus_per_replica": 1})
            import grpc

            with pytest.raises(grpc.RpcError) as err:
                create(stub, too_big)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        assert srv.terminate() == 0
