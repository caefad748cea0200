"""gRPC request metrics (a server interceptor) and the Prometheus exporter of ``esgd serve``.

``esgd_grpc_requests_total{method, code}`` and ``esgd_grpc_request_duration_seconds{method,
code}``: method is the full gRPC path (a bounded set: unknown methods never reach a handler),
code the final status. For WatchJob the duration is the life of the stream.
"""
from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class GrpcMetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("esgd_grpc_requests", "gRPC requests by method and status code.",
                                ["method", "code"], registry=registry)
        self.latency = Histogram("esgd_grpc_request_duration_seconds", "gRPC request latency.",
                                 ["method", "code"], buckets=LATENCY_BUCKETS, registry=registry)

    def _record(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # no client-streaming methods in this API

    def _unary(self, behavior, method):
        def wrapped(request, context):
            with _Timed(self, method, context):
                return behavior(request, context)
        return wrapped

    def _stream(self, behavior, method):
        def wrapped(request, context):
            with _Timed(self, method, context):
                yield from behavior(request, context)
        return wrapped


class _Timed:
    """Times one call and records it with its final status code."""

    def __init__(self, interceptor: GrpcMetricsInterceptor, method: str, context):
        self.interceptor, self.method, self.context = interceptor, method, context

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is GeneratorExit:  # the client went away mid-stream
            code = "CANCELLED"
        else:
            code = _code(self.context, "UNKNOWN" if exc_type else "OK")
        self.interceptor._record(self.method, code, time.perf_counter() - self.start)


def _code(context, default: str) -> str:
    code = context.code() if hasattr(context, "code") else None
    return code.name if isinstance(code, grpc.StatusCode) else default


def start_exporter(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve ``/metrics`` on ``host:port`` (loopback unless configured); return the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]
