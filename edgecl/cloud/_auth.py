"""Bearer-token authentication, per-device rate limits and RPC metrics, in one interceptor.

Every RPC except ``Register`` (which checks the enrollment key itself), the health service
and reflection must carry ``authorization: Bearer <token>``. The interceptor resolves the
token to a device, applies the device's token bucket, and runs the handler with the
device in :data:`current_device`; handlers read it to enforce that a device only touches
its own data.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from edgecl.cloud._errors import RateLimited, Unauthenticated, status_of
from edgecl.cloud._registry import Device, Registry

SERVICE = "/edgecl.v1.EdgeCloud/"
OPEN_METHODS = {SERVICE + "Register"}
current_device: contextvars.ContextVar[Device | None] = contextvars.ContextVar(
    "edgecl_device", default=None)


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

    def take(self, key: str) -> bool:
        """Spend one token of ``key``; False when empty."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            self._state[key] = (tokens - 1.0 if ok else tokens, now)
            return ok


def _token(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    raise Unauthenticated("missing authorization metadata (Register first, then send "
                          "'authorization: Bearer <token>')")


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates, rate-limits and measures every EdgeCloud RPC."""

    def __init__(self, registry: Registry, limiter: TokenBucket, metrics: Any) -> None:
        self.registry, self.limiter, self.metrics = registry, limiter, metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or not method.startswith(SERVICE):
            return handler  # health, reflection: open
        name = method[len(SERVICE):]
        open_method = method in OPEN_METHODS
        kind = ("unary_unary" if handler.unary_unary else "stream_unary"
                if handler.stream_unary else "unary_stream" if handler.unary_stream
                else "stream_stream")
        inner = getattr(handler, kind)

        def authenticate(context: Any) -> Device | None:
            if open_method:
                return None
            token = _token(context)
            device = self.registry.device_for_token(token)
            if device is None:
                raise Unauthenticated("unknown or revoked token")
            if not self.limiter.take(device.device_id):
                raise RateLimited(f"device {device.device_id} is over its rate limit "
                                  f"({self.limiter.rate:g}/s)")
            return device

        def unary(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            self.metrics.in_flight.labels(name).inc()
            try:
                try:
                    device = authenticate(context)
                except Exception as exc:
                    code = status_of(exc).name
                    context.abort(status_of(exc), str(exc))
                token = current_device.set(device)
                try:
                    return inner(request, context)
                finally:
                    current_device.reset(token)
            except BaseException:
                if code == "OK":
                    code = context.code().name if context.code() else "UNKNOWN"
                raise
            finally:
                self.metrics.in_flight.labels(name).dec()
                self.metrics.observe(name, code, time.perf_counter() - started)

        def streaming(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "OK"
            self.metrics.in_flight.labels(name).inc()
            try:
                try:
                    device = authenticate(context)
                except Exception as exc:
                    code = status_of(exc).name
                    context.abort(status_of(exc), str(exc))
                token = current_device.set(device)
                try:
                    yield from inner(request, context)
                finally:
                    current_device.reset(token)
                if not context.is_active():
                    code = "CANCELLED"  # the client went away; the stream noticed and ended
            except GeneratorExit:
                code = "CANCELLED"
                raise
            except BaseException:
                if code == "OK":
                    code = context.code().name if context.code() else "UNKNOWN"
                raise
            finally:
                self.metrics.in_flight.labels(name).dec()
                self.metrics.observe(name, code, time.perf_counter() - started)

        behaviour = streaming if kind == "unary_stream" else unary
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(behaviour, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
