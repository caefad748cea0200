import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def local_ray():
    """A real local Ray (2 CPUs) started for the tests that need it and stopped by handle."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()
