"""Who may call the API: bearer tokens, named principals, and the interceptor that checks them.

Every RPC must carry ``authorization: Bearer <token>``, except health checks (load balancers
and orchestrators probe without credentials) and server reflection (the schema is public);
those two stay bounded by the stream cap (services.guard).

**Principals.** The token file holds one token per line, each with a name and a role::

    # name   token                          role (admin | user; default user)
    alice    3q2-YhBqk8Vb0q...              admin
    bob      p1Zr6cH0m8Xk...
    ci:Zk2d0WbqjR1x...:user                 (the same with colons)

A file holding a single bare token (the format before principals, and ``$ESGD_TOKEN``) is
the principal ``default`` with the admin role. A job belongs to the principal that created
it; to every other principal it does not exist (NOT_FOUND), except to admins, who see all.
A server without a token (loopback only) has one caller, ``default``, an admin.

**Before work.** The interceptor decides from the method name and the metadata alone, before
gRPC reads the request body: a refused call gets a handler that does not deserialize its body
(``request_deserializer=None``) and answers UNAUTHENTICATED, for unary calls and streams
alike, so nothing a stranger sends is parsed, logged or allowed to hold a stream. Tokens are
looked up by their SHA-256 digest: the time a lookup takes depends on the digest's hash, never
on how much of a guessed token is right.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")
ROLES = ("admin", "user")
DEFAULT_PRINCIPAL = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what a header value can carry


@dataclass(frozen=True)
class Principal:
    """A caller: its name (the owner of the jobs it creates) and whether it is an admin."""

    name: str
    admin: bool = False


OWNER = Principal(DEFAULT_PRINCIPAL, admin=True)  # the caller of a server without tokens


class Authenticator:
    """Maps a call's metadata to its :class:`Principal` (None: refused). Without tokens every
    call is :data:`OWNER`."""

    def __init__(self, tokens: dict[str, Principal] | None = None):
        self._by_digest = {_digest(t): p for t, p in (tokens or {}).items()}

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    @property
    def principals(self) -> list[Principal]:
        return sorted(set(self._by_digest.values()), key=lambda p: p.name)

    def identify(self, metadata) -> Principal | None:
        if not self._by_digest:
            return OWNER
        given = next((v for k, v in (metadata or ()) if k == "authorization"), "")
        if isinstance(given, bytes):
            given = given.decode("latin-1")
        if not given.startswith("Bearer "):
            return None
        return self._by_digest.get(_digest(given[7:]))

    def principal_of(self, context) -> Principal:
        """The caller of a call that passed the interceptor (its metadata was checked there)."""
        principal = self.identify(context.invocation_metadata())
        if principal is None:  # unreachable behind AuthInterceptor; never serve a stranger
            raise PermissionError("unauthenticated call reached a handler")
        return principal


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known token before their body is read (module docstring)."""

    def __init__(self, auth: Authenticator):
        self.auth = auth

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        if self.auth.identify(details.invocation_metadata) is not None:
            return handler
        return _deny(handler)


async def _refuse(request, context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token (authorization metadata)")


def _deny(handler):
    """A handler of the same kind that reads no body and answers UNAUTHENTICATED."""
    kinds = [("unary_unary", grpc.unary_unary_rpc_method_handler),
             ("unary_stream", grpc.unary_stream_rpc_method_handler),
             ("stream_unary", grpc.stream_unary_rpc_method_handler),
             ("stream_stream", grpc.stream_stream_rpc_method_handler)]
    for attr, make in kinds:
        if getattr(handler, attr):
            return make(_refuse, request_deserializer=None, response_serializer=None)
    return None


# ----- tokens -------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_tokens(text: str, source: str) -> dict[str, Principal]:
    """The principals of a token file (module docstring); ValueError naming the line."""
    lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise ValueError(f"--token-file: {source} is empty")
    if len(lines) == 1 and len(lines[0][1].split()) == 1 and ":" not in lines[0][1]:
        token = lines[0][1]
        if not _TOKEN.match(token):
            raise ValueError(f"--token-file: {source}: the token must be printable ASCII without spaces")
        return {token: OWNER}
    out: dict[str, Principal] = {}
    names: set[str] = set()
    for n, line in lines:
        fields = line.split() if len(line.split()) > 1 else line.split(":")
        if len(fields) not in (2, 3):
            raise ValueError(f"--token-file: {source} line {n}: expected 'NAME TOKEN [ROLE]' or 'NAME:TOKEN[:ROLE]'")
        name, token, role = fields[0], fields[1], fields[2] if len(fields) == 3 else "user"
        if not _NAME.match(name):
            raise ValueError(f"--token-file: {source} line {n}: name {name!r}: letters, digits, '.', '_', '-' "
                             "(at most 64)")
        if not _TOKEN.match(token) or len(token) < 16:
            raise ValueError(f"--token-file: {source} line {n}: the token of {name} must be at least 16 printable "
                             "ASCII characters without spaces")
        if role not in ROLES:
            raise ValueError(f"--token-file: {source} line {n}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if name in names or token in out:
            raise ValueError(f"--token-file: {source} line {n}: {'name ' + name if name in names else 'token'} "
                             "appears twice")
        names.add(name)
        out[token] = Principal(name, admin=role == "admin")
    return out


def resolve_tokens(host: str, token_file: str | None, data_dir: Path) -> Authenticator:
    """The server's principals: from ``token_file``, else ``$ESGD_TOKEN``; a server reachable
    from outside loopback without one gets a generated token, printed once and saved (0600)."""
    if token_file:
        return Authenticator(parse_tokens(Path(token_file).read_text(), token_file))
    if os.environ.get("ESGD_TOKEN", "").strip():
        return Authenticator(parse_tokens(os.environ["ESGD_TOKEN"].strip(), "$ESGD_TOKEN"))
    if is_loopback(host):
        return Authenticator()
    token = secrets.token_urlsafe(32)
    path = data_dir / "token"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    print(f"esgd: {host} is not loopback, so auth is on. Generated token (also in {path}):\n{token}",
          file=sys.stderr, flush=True)
    return Authenticator({token: OWNER})
