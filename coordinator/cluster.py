"""Connecting to Ray: an embedded local instance by default, or an existing cluster."""
from __future__ import annotations

import os


def connect(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int = 512,
            metrics_export_port: int = 0) -> dict:
    """Start (or attach to) Ray once per process; return the cluster's total resources.

    Embedded mode follows the measured defaults (DESIGN.md §6): no dashboard, no usage
    stats, token auth off for a loopback-only local instance, a bounded object store.
    ``metrics_export_port`` fixes the port of the embedded Ray's own Prometheus endpoint.
    Embedded means a new local instance (``address="local"``), never a cluster that
    ``ray start`` or ``$RAY_ADDRESS`` left on the machine: attaching to one is ``address``'s job.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=object_store_mb * 1024 * 1024, log_to_driver=False,
                     configure_logging=False, **({"_metrics_export_port": metrics_export_port}
                                                  if metrics_export_port else {}))
    return dict(ray.cluster_resources())


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
