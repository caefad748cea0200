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

