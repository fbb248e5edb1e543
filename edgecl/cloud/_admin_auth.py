"""Operator authentication of the ``FleetAdmin`` service: tokens with roles.

``[admin] operators`` lists ``"name:role:token"`` entries; ``role`` is ``read`` (the
List/Get RPCs) or ``operator`` (also the mutating ones). Tokens are compared by their
sha256 in constant time; a device token is never an operator token. The interceptor
handles only ``/edgecl.v1.FleetAdmin/`` methods and leaves every other method to the
device interceptor.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import grpc

from edgecl._exceptions import ConfigError
from edgecl.cloud._auth import TokenBucket, hint_retry, presented_token
from edgecl.cloud._errors import (
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    client_status,
    tolerant,
)

ADMIN_SERVICE = "/edgecl.v1.FleetAdmin/"
#: Methods that only read: the ``read`` role may call these; every other method (all
#: that change the fleet, and any added later) needs the ``operator`` role.
READ_ONLY = {ADMIN_SERVICE + m for m in ("ListDevices", "GetDevice", "ListUpdates",
                                         "GetRollout")}
ROLES = ("read", "operator")
MIN_TOKEN_CHARS = 24
log = logging.getLogger("edgecl.cloud.admin")


class Operator(NamedTuple):
    """Who called: the name and role of an operator token."""

    name: str
    role: str


current_operator: contextvars.ContextVar[Operator | None] = contextvars.ContextVar(
    "edgecl_operator", default=None)


def new_operator_token() -> str:
    """A fresh random operator token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def parse_operators(entries: Sequence[str]) -> dict[str, Operator]:
    """``{sha256(token): Operator}`` of ``"name:role:token"`` entries (:class:`ConfigError`
    for a bad entry, an unknown role, a short token, or a name or token used twice)."""
    out: dict[str, Operator] = {}
    names: set[str] = set()
    for entry in entries:
        name, _, rest = str(entry).partition(":")
        role, _, token = rest.partition(":")
        if not name or not token or role not in ROLES:
            raise ConfigError(f"admin.operators entries are 'name:role:token' with role one "
                              f"of {ROLES}; got an entry for {name or '?'!r}")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"admin.operators: the token of {name!r} is shorter than "
                              f"{MIN_TOKEN_CHARS} characters (`edgecl fleet token` makes one)")
        digest = _digest(token)
        if name in names or digest in out:
            raise ConfigError(f"admin.operators: {name!r} or its token appears twice")
        names.add(name)
        out[digest] = Operator(name, role)
    return out


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(context: Any) -> str:
    token = presented_token(context)
    if not token:
        raise Unauthenticated("missing 'authorization: Bearer <operator token>' metadata")
    return token


class AdminInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and rate-limits every FleetAdmin RPC by operator token and role."""

    def __init__(self, operators: dict[str, Operator], limiter: TokenBucket) -> None:
        self.operators, self.limiter = operators, limiter

    def identify(self, token: str) -> Operator:
        """The operator of ``token``; :class:`Unauthenticated` otherwise."""
        digest = _digest(token)
        found = None
        for known, operator in self.operators.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                found = operator
        if found is None:
            raise Unauthenticated("not an operator token" if self.operators else
                                  "no operators are configured ([admin] operators)")
        return found

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any
                                ) -> Any:
        return self.wrap(await continuation(details), details)

    def wrap(self, handler: Any, details: Any) -> Any:
        """``handler`` (a FleetAdmin method) behind the operator check."""
        method = details.method
        if handler is None or not method.startswith(ADMIN_SERVICE) or not handler.unary_unary:
            return handler
        inner, name = handler.unary_unary, method[len(ADMIN_SERVICE):]

        def unary(request: Any, context: Any) -> Any:
            try:
                operator = self.identify(_bearer(context))
                if method not in READ_ONLY and operator.role != "operator":
                    raise PermissionDenied(f"{operator.name} has the {operator.role!r} role; "
                                           f"{name} needs 'operator'")
                if not self.limiter.take("operator:" + operator.name):
                    hint_retry(context, self.limiter.wait_s("operator:" + operator.name))
                    raise RateLimited(f"operator {operator.name} is over the rate limit")
            except Exception as exc:
                status, message = client_status(exc, name)
                context.abort(status, message)
            token = current_operator.set(operator)
            try:
                return inner(request, context)
            finally:
                current_operator.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer)
