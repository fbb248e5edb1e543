"""The one mapping from edgecl errors to gRPC status codes."""

from __future__ import annotations

import functools
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


def grpc_errors(fn: F) -> F:
    """Turn edgecl errors raised by a servicer method into gRPC statuses (abort)."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            result = fn(self, request, context)
        except EdgeclError as exc:
            context.abort(status_of(exc), str(exc))
        if hasattr(result, "__next__"):  # server streaming: map errors while iterating
            return _stream(result, context)
        return result

    return wrapper  # type: ignore[return-value]


def _stream(gen: Any, context: Any) -> Any:
    try:
        yield from gen
    except EdgeclError as exc:
        context.abort(status_of(exc), str(exc))
