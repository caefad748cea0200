"""Adding a node to a ``ray.cluster_utils.Cluster`` on a loaded machine.

Ray waits a fixed 30 s for a new raylet to register with the GCS and then raises
"The current node timed out during startup". On a 2-core machine running the test suite,
that happened to a healthy node (CI, the GCS answered "Deadline Exceeded" while busy). The
half-started node's processes are descendants of this process that Ray no longer tracks:
they are killed by PID, then the node is started again, up to ``attempts`` times.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

NODE_TIMEOUT = "timed out during startup"


def descendants(root: int | None = None) -> set[int]:
    """PIDs of every live process below ``root`` (this process by default), from /proc."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root or os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def add_node(cluster, attempts: int = 3, **node_args):
    """``cluster.add_node(**node_args)``, retried when the raylet registers too slowly."""
    for attempt in range(1, attempts + 1):
        before = descendants()
        try:
            return cluster.add_node(**node_args)
        except Exception as exc:  # Ray raises a bare Exception for this
            if NODE_TIMEOUT not in str(exc) or attempt == attempts:
                raise
            started = descendants() - before
            for pid in started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 30
            while started & descendants() and time.monotonic() < deadline:
                time.sleep(0.2)


MB = 1024 * 1024


def one_cpu_cluster(workers: int, **head_config):
    """A ``ray.cluster_utils.Cluster`` of a 0-CPU head and ``workers`` 1-CPU nodes (a module
    fixture's body: yields the cluster, shuts it down after). ``head_config``: the head's
    ``_system_config``."""
    from ray.cluster_utils import Cluster

    head = {"num_cpus": 0, "object_store_memory": 128 * MB, **({"_system_config": head_config} if head_config else {})}
    c = Cluster(initialize_head=True, connect=False, head_node_args=head)
    for _ in range(workers):
        add_node(c, num_cpus=1, object_store_memory=96 * MB)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def cluster_stub(cluster, data_dir):
    """A JobService stub of an ``esgd serve`` on ``cluster`` (a module fixture's body); the
    server must exit 0 at the end."""
    from services.api import jobs_pb2_grpc
    from tests.service_harness import ServerProcess

    srv = ServerProcess(data_dir, "--ray-address", cluster.address)
    with srv.channel() as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)
    assert srv.terminate() == 0, srv.read_log()[-3000:]

