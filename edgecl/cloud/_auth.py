"""Bearer-token authentication, per-device rate limits, stream caps and RPC metrics, in one
interceptor.

Every RPC except ``Register`` (which checks the enrollment key itself), the health service
and reflection must carry ``authorization: Bearer <token>``. The interceptor resolves the
token to a device, applies the device's token bucket and its cap on open streams, and runs
the handler with the device in :data:`current_device`; handlers read it to enforce that a
device only touches its own data. Tokens expire (``[auth] token_ttl_s``) and an operator
can revoke one (:meth:`Registry.revoke_device`); both answer UNAUTHENTICATED. Refusals
for load (RESOURCE_EXHAUSTED) carry a ``retry-after-ms`` hint in the trailing metadata
(:func:`hint_retry`).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from edgecl.cloud._errors import (
    Overloaded,
    RateLimited,
    Unauthenticated,
    client_status,
    tolerant,
)
from edgecl.cloud._identity import Device
from edgecl.cloud._registry import Registry

SERVICE = "/edgecl.v1.EdgeCloud/"
OPEN_METHODS = {SERVICE + "Register"}
STREAM_METHODS = {SERVICE + "Upload", SERVICE + "Subscribe"}
#: Trailing metadata key of the retry hint sent with RESOURCE_EXHAUSTED (milliseconds).
RETRY_AFTER_KEY = "retry-after-ms"
current_device: contextvars.ContextVar[Device | None] = contextvars.ContextVar(
    "edgecl_device", default=None)


def hint_retry(context: Any, seconds: float) -> None:
    """Tell the client, in the trailing metadata, to retry after ``seconds``."""
    context.set_trailing_metadata(((RETRY_AFTER_KEY, str(max(1, round(seconds * 1000)))),))


class TokenBucket:
    """``rate`` requests per second with bursts of ``burst``, per key."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> float:
        """Tokens ``key`` has now (without spending one)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            return min(self.burst, tokens + (now - last) * self.rate)

    def take(self, key: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``; False (nothing spent) when it has fewer."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= cost
            self._state[key] = (tokens - cost if ok else tokens, now)
            return ok

    def wait_s(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key`` has ``cost`` tokens (0 when it has them now)."""
        return max(0.0, (min(cost, self.burst) - self.peek(key)) / self.rate)


class StreamCaps:
    """Open Upload and Subscribe streams: at most ``per_device`` per device and ``total``
    in all, so streams never hold every RPC thread of the synchronous server."""

    def __init__(self, per_device: int, total: int) -> None:
        self.per_device, self.total = int(per_device), int(total)
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()
        self.open = 0
        self.threaded = 0  # of them, streams that hold an RPC thread (Upload)

    def acquire(self, device_id: str, *, holds_thread: bool = True) -> Callable[[], None]:
        """Count one stream of ``device_id`` (``holds_thread``: it runs on an RPC thread,
        as Upload does; Subscribe runs on the event loop and counts only toward the
        device's own cap); an idempotent release, or :class:`Overloaded`."""
        with self._lock:
            mine = self._open.get(device_id, 0)
            if mine >= self.per_device:
                raise Overloaded(f"device {device_id} already has {mine} open streams (the "
                                 f"limit per device); close one or retry later")
            if holds_thread and self.threaded >= self.total:
                raise Overloaded(f"all {self.total} stream slots of the service are taken; "
                                 f"retry later (with backoff)")
            self._open[device_id] = mine + 1
            self.open += 1
            self.threaded += holds_thread
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self.open -= 1
                self.threaded -= holds_thread
                left = self._open[device_id] - 1
                if left:
                    self._open[device_id] = left
                else:
                    del self._open[device_id]

        return release

    def of(self, device_id: str) -> int:
        """Streams ``device_id`` holds now."""
        with self._lock:
            return self._open.get(device_id, 0)


#: Retry hint for a stream refused at a cap (streams end within seconds or stream_max_s).
STREAM_RETRY_S = 1.0


def _noop() -> None:
    pass


def _token(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    raise Unauthenticated("missing authorization metadata (Register first, then send "
                          "'authorization: Bearer <token>')")


def presented_token(context: Any) -> str:
    """The bearer token a caller of ``Register`` sent to prove it is the device it
    re-registers ("" when none or malformed)."""
    try:
        return _token(context)
    except Unauthenticated:
        return ""


def identify(registry: Registry, token: str) -> Device:
    """The device of a valid ``token``; :class:`Unauthenticated` when it is unknown,
    revoked or expired (the message says how to recover)."""
    found = registry.identify(token)
    if found is None:
        raise Unauthenticated("unknown or revoked token")
    if found.expired():
        raise Unauthenticated("token expired (auth.token_ttl_s); register again with the "
                              "enrollment key, presenting this token")
    return found.device


def _code(context: Any) -> str:
    """The status a call ended with, where the context tells (UNKNOWN where not)."""
    code = getattr(context, "code", None)
    found = code() if callable(code) else None
    return found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, rate-limits and measures every EdgeCloud RPC (synchronous handlers
    on the RPC threads, the asynchronous Subscribe on the event loop)."""

    def __init__(self, registry: Registry, limiter: TokenBucket, metrics: Any,
                 streams: StreamCaps | None = None) -> None:
        self.registry, self.limiter, self.metrics = registry, limiter, metrics
        self.streams = streams

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any
                                ) -> Any:
        return self.wrap(await continuation(details), details)

    def wrap(self, handler: Any, details: Any) -> Any:
        """``handler`` with authentication, rate limits, stream caps and metrics."""
        method = details.method
        if handler is None or not method.startswith(SERVICE):
            return handler  # health, reflection: open
        name = method[len(SERVICE):]
        open_method = method in OPEN_METHODS
        stream_method = method in STREAM_METHODS and self.streams is not None
        kind = ("unary_unary" if handler.unary_unary else "stream_unary"
                if handler.stream_unary else "unary_stream" if handler.unary_stream
                else "stream_stream")
        inner = getattr(handler, kind)

        def authenticate(context: Any) -> Device | None:
            if open_method:
                return None
            return limit(identify(self.registry, _token(context)), context)

        def limit(device: Device, context: Any) -> Device:
            if not self.limiter.take(device.device_id):
                hint_retry(context, self.limiter.wait_s(device.device_id))
                self.metrics.refused.labels("request_rate").inc()
                raise RateLimited(f"device {device.device_id} is over its rate limit "
                                  f"({self.limiter.rate:g}/s)")
            return device

        def admit(device: Device | None, context: Any, threaded: bool = True
                  ) -> Callable[[], None]:
            """A stream slot of ``device`` (its release), or Overloaded with a hint."""
            if not stream_method or device is None or self.streams is None:
                return _noop
            try:
                release = self.streams.acquire(device.device_id, holds_thread=threaded)
            except Overloaded:
                hint_retry(context, STREAM_RETRY_S)
                self.metrics.refused.labels("streams").inc()
                raise
            if threaded:
                context.add_callback(release)  # on cancel and deadline too
            else:
                context.add_done_callback(lambda _: release())
            return release

        def enter(context: Any) -> tuple[Device | None, Callable[[], None]]:
            device = authenticate(context)
            return device, admit(device, context)

        def unary(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            self.metrics.in_flight.labels(name).inc()
            release = _noop
            try:
                try:
                    device, release = enter(context)
                except Exception as exc:
                    status, message = client_status(exc, name)
                    code = status.name
                    context.abort(status, message)
                token = current_device.set(device)
                try:
                    return inner(request, context)
                finally:
                    current_device.reset(token)
                    release()
            except BaseException:
                if code == "OK":
                    code = _code(context)
                raise
            finally:
                self.metrics.in_flight.labels(name).dec()
                self.metrics.observe(name, code, time.perf_counter() - started)

        async def streaming_async(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            self.metrics.in_flight.labels(name).inc()
            release = _noop
            try:
                try:  # the token lookup reads the database: off the event loop
                    device = None if open_method else limit(
                        await asyncio.get_running_loop().run_in_executor(
                            None, identify, self.registry, _token(context)), context)
                    release = admit(device, context, threaded=False)
                except Exception as exc:
                    status, message = client_status(exc, name)
                    code = status.name
                    await context.abort(status, message)
                token = current_device.set(device)
                try:
                    async for item in inner(request, context):
                        yield item
                finally:
                    current_device.reset(token)
                    release()
                if context.cancelled():
                    code = "CANCELLED"
            except (GeneratorExit, asyncio.CancelledError):
                code = "CANCELLED"
                raise
            except BaseException:
                if code == "OK":
                    code = _code(context)
                raise
            finally:
                self.metrics.in_flight.labels(name).dec()
                self.metrics.observe(name, code, time.perf_counter() - started)

        if kind == "unary_stream" and not inspect.isasyncgenfunction(inner):
            raise TypeError(f"{name}: server streams run on the event loop (async def)")
        behaviour = streaming_async if kind == "unary_stream" else unary
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(behaviour, request_deserializer=tolerant(handler.request_deserializer),
                       response_serializer=handler.response_serializer)
