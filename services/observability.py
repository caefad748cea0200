"""gRPC request metrics (a server interceptor) and the Prometheus exporter of ``esgd serve``.

``esgd_grpc_requests_total{method, code}`` and ``esgd_grpc_request_duration_seconds{method,
code}``: method is the full gRPC path (a bounded set: unknown methods never reach a handler),
code the final status. For WatchJob the duration is the life of the stream.
"""
from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from services.guard import kind_of, rebuild, wrap

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call by method and final status (the outermost interceptor, so
    refusals — UNAUTHENTICATED, the stream cap — are counted too). Wrappers keep each
    handler's nature (services.guard.wrap): coroutines stay on the event loop."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("esgd_grpc_requests", "gRPC requests by method and status code.",
                                ["method", "code"], registry=registry)
        self.latency = Histogram("esgd_grpc_request_duration_seconds", "gRPC request latency.",
                                 ["method", "code"], buckets=LATENCY_BUCKETS, registry=registry)

    def _record(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method, kind = details.method, kind_of(handler)

        def before(request, rec):
            rec.note["t0"] = time.perf_counter()

        def after(rec, exc):
            self._record(method, rec.final_code(exc), time.perf_counter() - rec.note.get("t0", time.perf_counter()))

        return rebuild(handler, wrap(getattr(handler, kind), before, after, kind.endswith("_stream")))


def start_exporter(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve ``/metrics`` on ``host:port`` (loopback unless configured); return the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]
