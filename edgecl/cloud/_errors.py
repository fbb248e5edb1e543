"""The one mapping from edgecl errors to gRPC status codes."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from edgecl._exceptions import ConfigError, EdgeclError, InvalidInput, StorageError

log = logging.getLogger("edgecl.cloud")
F = TypeVar("F", bound=Callable[..., Any])


class Unauthenticated(EdgeclError):
    """Missing, malformed or unknown credentials."""


class PermissionDenied(EdgeclError):
    """A device touching data that is not its own."""


class RateLimited(EdgeclError):
    """A device over its request rate."""


class Overloaded(EdgeclError):
    """The service is at a capacity limit (e.g. open update streams); retry later."""


class QuotaExceeded(Overloaded):
    """A device is at its storage bound with nothing it may free yet; retry later."""


class NotFound(EdgeclError):
    """Something asked for does not exist."""


class FailedPrecondition(EdgeclError):
    """A valid request the server cannot serve in its configuration."""


def status_of(exc: BaseException) -> Any:
    """The gRPC status code for ``exc``."""
    import grpc

    table: list[tuple[type[BaseException], Any]] = [
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
        (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
        (StorageError, grpc.StatusCode.UNAVAILABLE),
    ]
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


#: What a client learns of an unexpected failure (the traceback goes to the log only).
INTERNAL_MESSAGE = "internal error; the service logged the details"
#: What a client learns of a storage failure (the path and cause go to the log only).
STORAGE_MESSAGE = "storage unavailable; retry later"
#: Longest detail of an edgecl error sent to a client.
MAX_DETAIL_CHARS = 200


class Undecodable:
    """Stands in for a request whose bytes are not a valid message (see :func:`tolerant`)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so undecodable bytes become an :class:`Undecodable`
    (which :func:`grpc_errors` answers INVALID_ARGUMENT) instead of grpc's INTERNAL."""
    if deserializer is None:
        return None
    kind = getattr(getattr(deserializer, "__self__", None), "__name__", "request")

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, RecursionError, ... all mean bad bytes
            return Undecodable(kind)

    return decode


def client_status(exc: BaseException, method: str = "") -> tuple[Any, str]:
    """``(code, message)`` a client gets for ``exc``; logs what it does not get."""
    code = status_of(exc)
    if isinstance(exc, StorageError):
        log.error("storage error", extra={"method": method, "error": str(exc)})
        return code, STORAGE_MESSAGE
    if isinstance(exc, EdgeclError):
        detail = str(exc)
        log.info("request refused", extra={"method": method, "code": code.name,
                                           "reason": detail[:1000]})
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[:MAX_DETAIL_CHARS - 3] + "..."
        return code, detail
    log.error("unexpected error", exc_info=exc, extra={"method": method})
    return code, INTERNAL_MESSAGE


def _checked(request: Any) -> Any:
    """``request``, or InvalidInput when it (or, for a stream, an item) is undecodable."""
    if isinstance(request, Undecodable):
        raise InvalidInput(f"request is not a valid {request.kind} message")
    if hasattr(request, "__next__"):  # client streaming: check every item as it comes
        return (_checked(item) for item in request)
    return request


def grpc_errors(fn: F) -> F:
    """Turn errors raised by a servicer method into gRPC statuses (abort): edgecl errors
    get their code and a short message, anything else INTERNAL with a generic message and
    a logged traceback (never the exception text)."""

    if inspect.isasyncgenfunction(fn):  # an asyncio stream (Subscribe): same mapping
        return _async_stream(fn)  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            result = fn(self, _checked(request), context)
            if hasattr(result, "__next__"):  # server streaming: map errors while iterating
                return _stream(result, context, fn.__name__)
            return result
        except Exception as exc:
            if _is_abort(exc, context):
                raise
            failure = client_status(exc, fn.__name__)
        context.abort(*failure)

    return wrapper  # type: ignore[return-value]


def _async_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            async for item in fn(self, _checked(request), context):
                yield item
        except Exception as exc:
            if _is_abort(exc, context):
                raise
            failure = client_status(exc, fn.__name__)
        else:
            return
        await context.abort(*failure)

    return wrapper


def _is_abort(exc: Exception, context: Any) -> bool:
    """Whether ``exc`` is grpc's own abort (already carrying a status): let it through."""
    import grpc

    if isinstance(exc, grpc.aio.AbortError):  # the asyncio server's, sync handlers too
        return True
    code = getattr(context, "code", None)
    return type(exc) is Exception and not exc.args and callable(code) and code() is not None


def _stream(gen: Any, context: Any, method: str) -> Any:
    try:
        yield from gen
    except Exception as exc:
        if _is_abort(exc, context):
            raise
        failure = client_status(exc, method)
    else:
        return
    context.abort(*failure)
