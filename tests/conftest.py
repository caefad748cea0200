import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Servers started by the tests start cold: each warm idle worker imports torch (about 2 CPU-s),
# and dozens of short-lived test servers would spend minutes of the suite on it.
# tests/test_warm_start.py turns warm start on explicitly and checks it for real.
os.environ.setdefault("ESGD_WARM_WORKERS", "0")

# Derived-data caches (the Bible's text, worker.data.text.cache_dir) go to a folder of this test
# session, never to ~/.cache/esgd: a cache left by an earlier run must not stand in for a
# package that is missing. Subprocesses and Ray workers inherit it.
_CACHE = tempfile.mkdtemp(prefix="esgd-test-cache-")
os.environ["ESGD_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray (2 CPUs) started for the tests that need it and stopped by handle."""
    import ray

    # address="local": always a new instance of this process's own, never a cluster that
    # RAY_ADDRESS or an earlier test of the same process (ray.cluster_utils) points at
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def stub(server):
    """A JobService stub on a channel to the module's ``server`` fixture (tests that need
    another stub, e.g. one of a Ray cluster's server, define their own)."""
    from services.api import jobs_pb2_grpc

    with server.channel() as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)



# `make test` runs the files on two xdist workers (--dist loadfile), which take files in
# collection order. The files that take minutes go first, so that the two workers end together
# instead of one of them running a long file alone at the end. Measured per file with
# --durations; the order changes how long the suite takes, never what it tests.
SLOW_FIRST = ("test_reproduce_smoke.py", "faults/test_checkpoint_recovery.py", "faults/test_disk_full.py",
              "faults/test_node_loss.py", "test_sweep.py", "test_service_lifecycle.py", "test_bench_vs_ray_smoke.py",
              "test_warm_start.py", "test_e2e.py", "test_netns_cluster.py", "test_cli_details.py", "test_service.py",
              "test_history_service.py", "test_observability.py", "security/test_cancel.py", "test_delete.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
        return next((i for i, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: a file's tests keep their order, and the other files theirs
