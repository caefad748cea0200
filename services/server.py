"""``esgd serve``: the gRPC server around a :class:`coordinator.manager.JobManager`.

Binds 127.0.0.1 by default; any other address turns bearer-token auth on (services.auth),
optionally with TLS. Health checking (grpc.health.v1) and server reflection are on. Message
sizes are bounded deliberately: requests (job specs) at 4 MiB — larger ones get
RESOURCE_EXHAUSTED — and responses at 16 MiB (checkpoints stream in 1 MiB chunks).
SIGTERM/SIGINT: health goes NOT_SERVING, running jobs checkpoint after their round, the
server drains for a few seconds and the process exits; the jobs resume on the next start.

API calls yield to training (``api_nice``; ``esgd serve`` defaults to 10): every thread gRPC
creates to answer calls runs at that nice value, while the job threads (which store what each
job's round loop, a process of its own, reports; started earlier by the manager's scheduler)
and Ray's threads keep the process's own. The replicas need all the cores they were given; on
a busy machine a burst of clients then waits a few milliseconds longer instead of taking the
job's CPU (Linux; elsewhere the option is a no-op, logged once).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coordinator.manager import JobManager
from coordinator.metrics import ServiceMetrics
from services.api import jobs_pb2, jobs_pb2_grpc
from services.auth import BearerAuthInterceptor, resolve_token
from services.observability import GrpcMetricsInterceptor, start_exporter
from services.servicer import JobServicer

MAX_REQUEST_BYTES = 4 << 20
MAX_RESPONSE_BYTES = 16 << 20
SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
log = logging.getLogger("esgd.server")


class Server:
    """A started gRPC server; ``stop()`` is the graceful shutdown."""

    def __init__(self, manager: JobManager, host: str = "127.0.0.1", port: int = 50051, *,
                 token: str | None = None, tls: tuple[bytes, bytes] | None = None, max_workers: int = 256,
                 registry=None, api_nice: int = 0):
        if not 0 <= api_nice <= 19:
            raise ValueError(f"api_nice: must be an integer in 0..19, got {api_nice!r}")
        self.manager = manager
        self.api_nice = api_nice
        interceptors = [GrpcMetricsInterceptor(registry)] if registry is not None else []
        interceptors += [BearerAuthInterceptor(token)] if token else []
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                     ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                     ("grpc.so_reuseport", 0)])
        jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(manager), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        address = f"{host}:{port}"
        if tls:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])])  # (private key, certificate chain)
            self.port = self.grpc.add_secure_port(address, creds)
        else:
            self.port = self.grpc.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind {address}")

    def start(self) -> "Server":
        if self.api_nice:
            # Linux threads inherit their creator's nice value: gRPC's polling thread, made in
            # grpc.start(), and the handler threads it makes later all get this thread's.
            starter = threading.Thread(target=self._start_at_nice, name="rpc-start")
            starter.start()
            starter.join()
        else:
            self.grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def _start_at_nice(self) -> None:
        if sys.platform.startswith("linux"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.api_nice)  # this thread only
        else:
            log.info("api_nice %d ignored: per-thread priorities need Linux", self.api_nice)
        self.grpc.start()

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()  # every service answers NOT_SERVING from now on
        self.manager.shutdown()
        self.grpc.stop(grace).wait()


def serve_main(args) -> int:
    """Entry point of ``esgd serve`` (flags parsed in services.cli)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = Path(args.data_dir)
    token = resolve_token(args.host, args.token_file, data_dir)
    tls = None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        tls = (Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes())
    metrics = ServiceMetrics()
    manager = JobManager(data_dir, ray_address=args.ray_address, num_cpus=args.num_cpus,
                         max_concurrent=args.max_concurrent_jobs, metrics=metrics,
                         ray_metrics_port=args.ray_metrics_port)
    manager.start()
    server = Server(manager, args.host, args.port, token=token, tls=tls, registry=metrics.registry,
                    api_nice=args.api_nice).start()
    if args.metrics_port:
        bound = start_exporter(metrics.registry, args.metrics_host, args.metrics_port)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, bound)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("esgd serving on %s:%d (auth %s, tls %s), data in %s", args.host, server.port,
             "on" if token else "off", "on" if tls else "off", data_dir)
    if args.port_file:
        Path(args.port_file).write_text(f"{server.port}\n")
    print(f"esgd: serving on {args.host}:{server.port}", file=sys.stderr, flush=True)
    stop.wait()
    log.info("shutting down: checkpointing running jobs")
    server.stop()
    from coordinator.cluster import disconnect

    disconnect()
    return 0
