"""Bearer-token authentication as a gRPC server interceptor, and how the token is chosen.

Every RPC must carry ``authorization: Bearer <token>``, except health checks (load balancers
and orchestrators probe without credentials) and server reflection (the schema is public).
Tokens are compared in constant time.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import sys
from pathlib import Path

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")


class BearerAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_PREFIXES):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return continuation(details)
        return _deny(continuation(details))


def _deny(handler):
    if handler is None:
        return None

    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token (authorization metadata)")

    kinds = [("unary_unary", grpc.unary_unary_rpc_method_handler),
             ("unary_stream", grpc.unary_stream_rpc_method_handler),
             ("stream_unary", grpc.stream_unary_rpc_method_handler),
             ("stream_stream", grpc.stream_stream_rpc_method_handler)]
    for attr, make in kinds:
        if getattr(handler, attr):
            return make(abort, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    return None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token_file: str | None, data_dir: Path) -> str | None:
    """The server's token: from ``token_file``, else ``$ESGD_TOKEN``; a server reachable from
    outside loopback without one gets a generated token, printed once and saved (mode 600)."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"--token-file: {token_file} is empty")
        return token
    if os.environ.get("ESGD_TOKEN"):
        return os.environ["ESGD_TOKEN"].strip()
    if is_loopback(host):
        return None
    token = secrets.token_urlsafe(32)
    path = data_dir / "token"
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    print(f"esgd: {host} is not loopback, so auth is on. Generated token (also in {path}):\n{token}",
          file=sys.stderr, flush=True)
    return token
