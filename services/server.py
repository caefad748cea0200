"""``esgd serve``: the gRPC server around a :class:`coordinator.manager.JobManager`.

Binds 127.0.0.1 by default; any other address turns bearer-token auth on (services.auth),
optionally with TLS. Health checking (grpc.health.v1) and server reflection are on. Limits
(coordinator.limits.ServiceLimits, from the flags) bound requests (the spec at 64 KiB, a
request message at 4 × that — larger ones get RESOURCE_EXHAUSTED before they are read),
streams (``--max-streams``) and ListJobs pages; responses are capped at 16 MiB (checkpoints
stream in 1 MiB chunks). SIGTERM/SIGINT: health goes NOT_SERVING, running jobs checkpoint
after their round, the server drains for a few seconds and the process exits; the jobs
resume on the next start. docs/security.md has the threat model.

**One event loop, one thread pool.** The server is ``grpc.aio``'s, run on an event loop in a
thread of its own. Unary calls and the downloads are plain functions the server runs in its
thread pool (``max_workers``), exactly as the synchronous server did; WatchJob and health
Watch are coroutines on the loop, so a watcher holds no thread (services.watch) and a
thousand of them cannot starve GetJob. Interceptors — metrics, auth, the stream cap — keep
each handler's nature (services.guard.wrap).

API calls yield to training (``api_nice``; ``esgd serve`` defaults to 10): the loop thread
runs at that nice value, and every thread gRPC and the pool create from it inherits it (Linux
threads inherit their creator's), while the manager's job threads and Ray keep the process's
own. The API is never put *above* the process: a server already running at a higher nice
value keeps it, and a nice value the kernel refuses is logged and skipped — the server serves
either way. Ray's worker processes (each job's round loop and replicas) would otherwise run at
nice +15 (Ray's ``worker_niceness``), below the API; the embedded Ray is started with
``RAY_worker_niceness=0`` so the jobs run at the server's priority (docs/reliability.md, Load).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from coordinator.limits import ServiceLimits
from coordinator.manager import JobManager
from services.api import jobs_pb2, jobs_pb2_grpc
from services.auth import OWNER, AuthInterceptor, Authenticator
from services.convert import event_to_proto
from services.guard import GuardInterceptor
from services.observability import GrpcMetricsInterceptor
from services.servicer import JobServicer
from services.watch import WatchHub

MAX_RESPONSE_BYTES = 16 << 20
SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
log = logging.getLogger("esgd.server")


class Server:
    """A gRPC server on its own event loop thread; ``start()`` serves, ``stop()`` is the
    graceful shutdown."""

    def __init__(self, manager: JobManager, host: str = "127.0.0.1", port: int = 50051, *,
                 auth: Authenticator | None = None, token: str | None = None, tls: tuple[bytes, bytes] | None = None,
                 max_workers: int = 64, registry=None, api_nice: int = 0, limits: ServiceLimits | None = None):
        if not 0 <= api_nice <= 19:
            raise ValueError(f"api_nice: must be an integer in 0..19, got {api_nice!r}")
        self.manager, self.api_nice = manager, api_nice
        self.limits = limits or getattr(manager, "limits", None) or ServiceLimits()
        self.auth = auth or (Authenticator({token: OWNER}) if token else Authenticator())
        self.pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc")
        self.loop = asyncio.new_event_loop()
        self.nice_applied: int | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(started,), name="rpc-loop", daemon=True)
        self._thread.start()
        started.wait()
        try:
            self.port = self._call(self._build(host, port, tls, registry))
        except BaseException:
            self._close_loop()
            raise

    # ----- the loop thread -----------------------------------------------------------------------
    def _run_loop(self, started: threading.Event) -> None:
        self.nice_applied = self._apply_api_nice()
        asyncio.set_event_loop(self.loop)
        self.loop.set_default_executor(self.pool)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def _apply_api_nice(self) -> int | None:
        """This thread's nice value to ``api_nice`` (threads made from it inherit it). Never
        raises: a value that would raise the API above the process, or that the kernel
        refuses, is logged and skipped."""
        if not self.api_nice:
            return None
        if not sys.platform.startswith("linux"):
            log.info("api_nice %d ignored: per-thread priorities need Linux", self.api_nice)
            return None
        tid = threading.get_native_id()
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            if current >= self.api_nice:
                log.warning("--api-nice %d not applied: the server already runs at nice %d, and the API must "
                            "never run above the jobs; API threads stay at %d", self.api_nice, current, current)
                return current
            os.setpriority(os.PRIO_PROCESS, tid, self.api_nice)  # this thread only
            return self.api_nice
        except OSError as exc:
            log.warning("--api-nice %d could not be applied (%s); serving at the process's priority",
                        self.api_nice, exc.strerror or exc)
            return None

    def _call(self, coro, timeout: float | None = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _build(self, host: str, port: int, tls, registry) -> int:
        interceptors = [GrpcMetricsInterceptor(registry)] if registry is not None else []
        interceptors += [AuthInterceptor(self.auth), GuardInterceptor(self.limits.max_streams)]
        self.grpc = grpc.aio.server(
            migration_thread_pool=self.pool, interceptors=interceptors,
            options=[("grpc.max_receive_message_length", self.limits.max_receive_bytes),
                     ("grpc.max_send_message_length", MAX_RESPONSE_BYTES), ("grpc.so_reuseport", 0)])
        self.hub = WatchHub(self.manager, self.loop, self.pool, convert=event_to_proto)
        self.servicer = JobServicer(self.manager, self.auth, self.hub)
        jobs_pb2_grpc.add_JobServiceServicer_to_server(self.servicer, self.grpc)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME), self.grpc)
        address = f"{host}:{port}"
        try:
            if tls:
                creds = grpc.ssl_server_credentials([(tls[1], tls[0])])  # (private key, certificate chain)
                bound = self.grpc.add_secure_port(address, creds)
            else:
                bound = self.grpc.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot bind {address}: {exc}") from None
        if not bound:
            raise OSError(f"cannot bind {address}")
        return bound

    async def _start(self) -> None:
        await self.grpc.start()
        self.hub.start()
        for name in ("", SERVICE_NAME):  # only now: the server answers
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def start(self) -> "Server":
        self._call(self._start())
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Health NOT_SERVING; watchers end; calls in flight get ``grace`` seconds; then the
        manager's shutdown (jobs checkpoint after their round) closes the store — after the
        last call that could read it, never under one."""
        try:
            self._call(self.health.enter_graceful_shutdown())  # every service answers NOT_SERVING from now on
        except Exception:  # noqa: BLE001 - shutting down regardless
            pass
        self.hub.stop()
        try:
            self._call(self.grpc.stop(grace), timeout=grace + 30)
        except Exception as exc:  # noqa: BLE001 - the jobs must still checkpoint
            log.warning("gRPC server did not stop cleanly: %s", exc)
        finally:
            self._close_loop()
        log.info("API stopped; checkpointing running jobs")
        self.manager.shutdown()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve_main(args) -> int:
    """Entry point of ``esgd serve`` (flags parsed in services.serve_flags)."""
    from core.spec import SpecError
    from services.auth import resolve_tokens
    from services.datadir import lock_data_dir, make_private
    from worker.data.roots import configure_data_access

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)  # everything this process and its embedded Ray create is private
    data_dir = Path(args.data_dir)
    lock = lock_data_dir(data_dir)  # before anything reads or writes the directory  # noqa: F841 - held for life
    make_private(data_dir)
    try:
        limits = ServiceLimits.from_flags(args)
    except ValueError as exc:  # names the flag
        raise SpecError(str(exc), str(exc).split(":", 1)[0]) from None
    auth = resolve_tokens(args.host, args.token_file, data_dir)
    tls = None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        tls = (Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes())
    try:  # before Ray starts: the job runners it spawns inherit the data roots and caps
        data_policy = configure_data_access(args.data_root, data_dir, max_bytes=args.data_max_bytes,
                                            max_compressed_bytes=args.data_max_compressed_bytes,
                                            max_text_bytes=args.data_max_text_bytes)
    except ValueError as exc:  # names the flag: --data-root DIR: not a directory, --data-max-bytes ...
        raise SpecError(str(exc), "--data-root") from None
    log.info("data roots: %s", ", ".join(map(str, data_policy.roots)))
    if not args.ray_address:  # Ray's workers default to nice +15, below the API threads: keep them level
        os.environ.setdefault("RAY_worker_niceness", "0")
    from coordinator.metrics import ServiceMetrics
    from services.observability import start_exporter

    metrics = ServiceMetrics(retain_s=args.metrics_retention)
    manager = JobManager(data_dir, ray_address=args.ray_address, num_cpus=args.num_cpus,
                         max_concurrent=args.max_concurrent_jobs, metrics=metrics,
                         ray_metrics_port=args.ray_metrics_port, limits=limits, data_policy=data_policy)
    manager.start()
    from coordinator.retention import Retention

    retention = Retention(manager, getattr(args, "retain_jobs", None), getattr(args, "retain_days", None)).start()  # a pass now, then hourly
    server = Server(manager, args.host, args.port, auth=auth, tls=tls, registry=metrics.registry,
                    api_nice=args.api_nice, limits=limits).start()
    if args.metrics_port:
        bound = start_exporter(metrics.registry, args.metrics_host, args.metrics_port)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, bound)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    who = ", ".join(f"{p.name}{' (admin)' if p.admin else ''}" for p in auth.principals) or "off"
    log.info("esgd serving on %s:%d (auth: %s; tls %s), data in %s; limits %s", args.host, server.port, who,
             "on" if tls else "off", data_dir, limits)
    if args.port_file:
        Path(args.port_file).write_text(f"{server.port}\n")
    print(f"esgd: serving on {args.host}:{server.port}", file=sys.stderr, flush=True)
    stop.wait()
    log.info("shutting down")
    retention.stop()  # before the store closes
    server.stop()
    log.info("jobs checkpointed; stopping Ray")
    from coordinator.cluster import disconnect

    disconnect()
    log.info("stopped")
    os.close(lock)
    return 0
