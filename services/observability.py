"""gRPC server metrics (a server interceptor) and the Prometheus exporter of ``esgd serve``.

The names and labels are go-grpc-prometheus's (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``), so community gRPC
dashboards and alerts work unchanged:

* ``grpc_type``: unary, server_stream, client_stream or bidi_stream;
* ``grpc_service`` and ``grpc_method``: the full path split, e.g. ``esgd.v1.JobService`` and
  ``GetJob`` (a bounded set: unknown methods never reach a handler);
* ``grpc_code``: the final status in Go's spelling (OK, NotFound, Unauthenticated, ...), as
  those dashboards match on it.

For a stream, the handling time is the stream's whole life.
"""
from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from services.guard import kind_of, rebuild, wrap

# go-grpc-prometheus' default buckets, finer below 5 ms where this API's unary calls are
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
GRPC_TYPE = {"unary_unary": "unary", "unary_stream": "server_stream", "stream_unary": "client_stream",
             "stream_stream": "bidi_stream"}


def go_code(name: str) -> str:
    """``NOT_FOUND`` → ``NotFound`` (``OK`` stays): Go's ``codes.Code`` spelling."""
    return "OK" if name == "OK" else "".join(part.capitalize() for part in name.split("_"))


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call by method and final status (the outermost interceptor, so
    refusals — UNAUTHENTICATED, the stream cap — are counted too). Wrappers keep each
    handler's nature (services.guard.wrap): coroutines stay on the event loop."""

    def __init__(self, registry: CollectorRegistry):
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                               labels + ["grpc_code"], registry=registry)
        self.handling = Histogram("grpc_server_handling_seconds",
                                  "Response latency (seconds) of gRPC handled by the server.",
                                  labels, buckets=LATENCY_BUCKETS, registry=registry)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        kind = kind_of(handler)
        service, _, method = details.method.lstrip("/").rpartition("/")
        labels = (GRPC_TYPE[kind], service, method)

        def before(request, rec):
            rec.note["t0"] = time.perf_counter()
            self.started.labels(*labels).inc()

        def after(rec, exc):
            self.handled.labels(*labels, go_code(rec.final_code(exc))).inc()
            self.handling.labels(*labels).observe(time.perf_counter() - rec.note.get("t0", time.perf_counter()))

        return rebuild(handler, wrap(getattr(handler, kind), before, after, kind.endswith("_stream")))


def start_exporter(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve ``/metrics`` on ``host:port`` (loopback unless configured); return the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]
