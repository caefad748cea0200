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
