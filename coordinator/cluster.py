"""Connecting to Ray: an embedded local instance by default, or an existing cluster.

The embedded instance is private to this machine: every listener it opens — GCS, raylet,
object manager, the worker processes' gRPC servers, dashboard agent, runtime-env agent,
metrics export — binds the loopback address, and the dashboard is off. Ray 2.60 has no
``bind`` setting for this: ``ray.init(_node_ip_address="127.0.0.1")`` is turned back into the
machine's outward IP (``services.resolve_ip_for_localhost``), and its servers listen on the
wildcard address unless the node's IP is the loopback one. What makes the node's IP the
loopback is Ray's single-machine mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the default on
macOS and Windows): :func:`connect` sets it for the processes Ray starts and for this one
while the embedded instance runs. tests/security/test_ray_private.py lists the sockets.
"""
from __future__ import annotations

import os

# Ray's single-machine switch (ray._private.ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR).
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"

_restore: list = []  # how to undo the loopback settings at disconnect()


def connect(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int = 512,
            metrics_export_port: int = 0) -> dict:
    """Start (or attach to) Ray once per process; return the cluster's total resources.

    Embedded mode uses the settings measured to start Ray quickly and quietly on a small
    machine (3–6 s on 2 cores): no dashboard, no usage stats, token auth off (Ray 2.60 turns
    it on by default) for a loopback-only local instance, a bounded object store.
    ``metrics_export_port`` fixes the port of the embedded Ray's own Prometheus endpoint.
    Embedded means a new local instance (``address="local"``), never a cluster that
    ``ray start`` or ``$RAY_ADDRESS`` left on the machine: attaching to one is ``address``'s job.
    Every listener of the embedded instance binds 127.0.0.1 (module docstring).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            _loopback_only()
            try:
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         object_store_memory=object_store_mb * 1024 * 1024, log_to_driver=False,
                         configure_logging=False, _node_ip_address=LOOPBACK,
                         **({"_metrics_export_port": metrics_export_port} if metrics_export_port else {}))
            except BaseException:
                _undo_loopback_only()
                raise
            node_ip = ray._private.worker._global_node.node_ip_address
            if not _is_loopback(node_ip):  # a Ray that ignores the switch must not run exposed
                ray.shutdown()
                _undo_loopback_only()
                raise RuntimeError(f"the embedded Ray took node IP {node_ip}, not loopback; refusing to run it "
                                   f"exposed (this Ray version ignores {LOCAL_ONLY_ENV}=0)")
    return dict(ray.cluster_resources())


def _is_loopback(ip: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _loopback_only() -> None:
    """Ray's single-machine mode, here (Ray may already be imported: its constant is read at
    import) and in the processes it starts (the environment)."""
    from ray._private import ray_constants

    _restore.append((os.environ.get(LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER))
    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def _undo_loopback_only() -> None:
    if not _restore:
        return
    from ray._private import ray_constants

    env, constant = _restore.pop()
    if env is None:
        os.environ.pop(LOCAL_ONLY_ENV, None)
    else:
        os.environ[LOCAL_ONLY_ENV] = env
    ray_constants.ENABLE_RAY_CLUSTER = constant


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _undo_loopback_only()
