"""Server-side guards around every handler: the stream cap and malformed request bodies; and
the wrapping helper the interceptors share (services.observability uses it too).

**Stream cap.** Every call whose response or request is a stream (WatchJob, the downloads,
health Watch, reflection) holds one of ``max_streams`` slots while it lives; a stream over the
cap is refused at once with RESOURCE_EXHAUSTED naming the cap, before its handler runs.
Streams are cheap here (WatchJob and health Watch are coroutines on the server's event loop,
not threads), so the cap bounds memory and file descriptors, not threads.

**Malformed bodies.** A request whose bytes do not parse as its message gets INVALID_ARGUMENT
naming the message type: the deserializer's error is caught, never logged as a traceback.

**Wrapping keeps a handler's nature.** The asyncio server runs ``async def`` handlers (and
async generators) on its event loop and plain functions and generators in its thread pool; a
wrapper that turned a coroutine into a function would put a health Watch back on a thread.
:func:`wrap` makes a wrapper of the same nature as what it wraps, whatever interceptors are
stacked.
"""
from __future__ import annotations

import inspect
import threading

import grpc

KINDS = {"unary_unary": grpc.unary_unary_rpc_method_handler, "unary_stream": grpc.unary_stream_rpc_method_handler,
         "stream_unary": grpc.stream_unary_rpc_method_handler,
         "stream_stream": grpc.stream_stream_rpc_method_handler}
_MALFORMED = object()


def kind_of(handler) -> str:
    return next(k for k in KINDS if getattr(handler, k))


def rebuild(handler, behavior, request_deserializer="keep"):
    """``handler`` with ``behavior`` (and, if given, another request deserializer)."""
    kind = kind_of(handler)
    deser = handler.request_deserializer if request_deserializer == "keep" else request_deserializer
    return KINDS[kind](behavior, request_deserializer=deser, response_serializer=handler.response_serializer)


class Recorder:
    """A servicer context that remembers the status code a handler set or aborted with."""

    def __init__(self, context):
        self._ctx, self.code, self.note = context, None, {}

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def set_code(self, code) -> None:
        self.code = code
        self._ctx.set_code(code)

    def abort(self, code, details="", trailing_metadata=()):
        self.code = code
        return self._ctx.abort(code, details, trailing_metadata)

    def final_code(self, exc: BaseException | None) -> str:
        if self.code is not None:
            return self.code.name
        if exc is None:
            return "OK"
        return "CANCELLED" if isinstance(exc, (GeneratorExit, _cancelled())) else "UNKNOWN"


class AsyncRecorder(Recorder):
    async def abort(self, code, details="", trailing_metadata=()):
        self.code = code
        await self._ctx.abort(code, details, trailing_metadata)


def _cancelled():
    import asyncio

    return asyncio.CancelledError


def wrap(behavior, before, after, stream_response: bool):
    """A wrapper of ``behavior``'s own nature (function, generator, coroutine, async
    generator; a plain function answering a response stream becomes a generator).
    ``before(request, rec)`` returns None to go on or ``(code, details)`` to refuse;
    ``after(rec, exc)`` runs once the call ends (``rec``: the :class:`Recorder` the behavior got)."""
    if inspect.isasyncgenfunction(behavior):
        async def agen(request, context):
            rec, exc = AsyncRecorder(context), None
            try:
                refusal = before(request, rec)
                if refusal:
                    await rec.abort(*refusal)
                async for item in behavior(request, rec):
                    yield item
            except BaseException as e:
                exc = e
                raise
            finally:
                after(rec, exc)
        return agen
    if inspect.iscoroutinefunction(behavior):
        async def coro(request, context):
            rec, exc = AsyncRecorder(context), None
            try:
                refusal = before(request, rec)
                if refusal:
                    await rec.abort(*refusal)
                return await behavior(request, rec)
            except BaseException as e:
                exc = e
                raise
            finally:
                after(rec, exc)
        return coro
    if stream_response:
        def gen(request, context):
            rec, exc = Recorder(context), None
            try:
                refusal = before(request, rec)
                if refusal:
                    rec.abort(*refusal)
                yield from behavior(request, rec)
            except BaseException as e:
                exc = e
                raise
            finally:
                after(rec, exc)
        return gen

    def func(request, context):
        rec, exc = Recorder(context), None
        try:
            refusal = before(request, rec)
            if refusal:
                rec.abort(*refusal)
            return behavior(request, rec)
        except BaseException as e:
            exc = e
            raise
        finally:
            after(rec, exc)
    return func


def _behavior(handler):
    return getattr(handler, kind_of(handler))


class StreamGate:
    """Counts live streams; ``enter`` is False when ``limit`` are open (thread-safe: sync
    streams start in the thread pool, async ones on the loop)."""

    def __init__(self, limit: int):
        self.limit, self.open, self.refused = limit, 0, 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                self.refused += 1
                return False
            self.open += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.open -= 1


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """The stream cap and malformed-body handling (module docstring); after authentication,
    so a refused stranger holds no slot and has no body parsed."""

    def __init__(self, max_streams: int):
        self.gate = StreamGate(max_streams)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        kind = kind_of(handler)
        streaming = kind != "unary_unary"
        gate = self.gate
        type_name = details.method.rsplit("/", 1)[-1]

        def before(request, rec):
            if request is _MALFORMED:
                return (grpc.StatusCode.INVALID_ARGUMENT,
                        f"request: the body is not a valid {type_name} request message")
            if streaming:
                if not gate.enter():
                    return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"streams: {gate.limit} streams are open, the server's cap (--max-streams {gate.limit}); "
                            "retry later")
                rec.note["slot"] = True
            return None

        def after(rec, exc):
            if rec.note.pop("slot", False):
                gate.leave()

        deser = handler.request_deserializer
        if deser is not None and kind.startswith("unary_"):
            deser = _safe(deser)
        return rebuild(handler, wrap(_behavior(handler), before, after, kind.endswith("_stream")),
                       request_deserializer=deser)


def _safe(deserializer):
    def parse(data):
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - any undecodable body is the client's error
            return _MALFORMED
    return parse
