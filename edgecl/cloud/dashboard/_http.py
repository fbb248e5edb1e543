"""The dashboard's HTTP side: a WSGI app with login, roles, CSRF checks and its pages.

``GET /`` is the page (static HTML, script and styles shipped in the package; the plots
use the vendored uPlot); ``/api/*`` answers JSON. Every ``/api`` call but ``login`` needs
a session cookie from ``POST /api/login`` (or ``Authorization: Bearer <operator token>``,
for scripts): none, forged, expired or revoked -> 401. Mutations also need the ``operator``
role (403 otherwise) and, with a cookie, the session's CSRF token in ``X-Edgecl-Csrf``
(403 otherwise); every POST must be ``application/json`` (415), at most 16 KiB (413).
Responses carry a content security policy that allows only the page's own files: no
inline script runs, whatever a device put into its labels.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from edgecl._exceptions import InvalidInput
from edgecl._proto import admin_pb2
from edgecl.cloud._admin_auth import Operator
from edgecl.cloud._auth import TokenBucket
from edgecl.cloud._errors import PermissionDenied, Unauthenticated
from edgecl.cloud.dashboard._sessions import COOKIE, Session, SessionSigner
from edgecl.cloud.dashboard._views import AdminCallError, FleetViews, plain

MAX_BODY_BYTES = 16 * 1024
CSRF_HEADER = "HTTP_X_EDGECL_CSRF"
#: Static files served, by URL name (nothing else under the package is reachable).
STATIC = {"app.js": "application/javascript", "app.css": "text/css",
          "vendor/uPlot.iife.min.js": "application/javascript",
          "vendor/uPlot.min.css": "text/css", "vendor/uPlot.LICENSE": "text/plain"}
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; "
                                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store")]
#: Rollout actions a page may take, by URL name -> FleetAdmin method.
ACTIONS = {"pause": "PauseRollout", "resume": "ResumeRollout", "abort": "AbortRollout"}
HTTP_OF_GRPC = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "FAILED_PRECONDITION": 409,
                "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
                "UNAVAILABLE": 503}
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}
log = logging.getLogger("edgecl.cloud.dashboard")


class HttpError(Exception):
    """An HTTP error status with a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _asset(name: str) -> bytes:
    return resources.files("edgecl.cloud.dashboard").joinpath("static", name).read_bytes()


class DashboardApp:
    """The WSGI app of the dashboard of ``views`` (its service's data). ``identify(token)``
    is the operator of an operator token (:class:`Unauthenticated` otherwise);
    ``secure``: the page is served over HTTPS (cookies get ``Secure``)."""

    def __init__(self, views: FleetViews, sessions: SessionSigner,
                 identify: Callable[[str], Operator], *, refresh_s: float,
                 secure: bool = False) -> None:
        self.views, self.sessions, self.identify = views, sessions, identify
        self.refresh_s, self.secure = refresh_s, secure
        self.logins = TokenBucket(0.2, 10.0)  # per address: 10 tries, then one per 5 s
        self._index = _asset("index.html")

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers: list[tuple[str, str]] = []
        try:
            status, body, content_type = self._route(environ, headers)
        except HttpError as exc:
            status, body, content_type = exc.status, _json({"error": str(exc)}), "json"
        except AdminCallError as exc:
            status = HTTP_OF_GRPC.get(exc.code.name, 500)
            body, content_type = _json({"error": exc.message}), "json"
        except (Unauthenticated, PermissionDenied, InvalidInput) as exc:
            status = {Unauthenticated: 401, PermissionDenied: 403}.get(type(exc), 400)
            body, content_type = _json({"error": str(exc)}), "json"
        except Exception:
            log.exception("dashboard request failed", extra={
                "path": environ.get("PATH_INFO", "")})
            status, body = 500, _json({"error": "internal error; the service logged it"})
            content_type = "json"
        mime = {"json": "application/json", "html": "text/html; charset=utf-8"}.get(
            content_type, content_type)
        start_response(f"{status} {REASONS.get(status, 'Error')}",
                       [("Content-Type", mime), ("Content-Length", str(len(body))),
                        *SECURITY_HEADERS, *headers])
        return [body]

    # -- routing -------------------------------------------------------------------------
    def _route(self, environ: dict[str, Any],
               headers: list[tuple[str, str]]) -> tuple[int, bytes, str]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if path == "/" or path == "/index.html":
            _allow(method, "GET")
            return 200, self._index, "html"
        if path.startswith("/static/") and path[len("/static/"):] in STATIC:
            _allow(method, "GET")
            name = path[len("/static/"):]
            return 200, _asset(name), STATIC[name]
        if not path.startswith("/api/"):
            raise HttpError(404, f"no page {path[:100]!r}")
        name = path[len("/api/"):]
        if name == "login":
            _allow(method, "POST")
            return 200, self._login(environ, _body(environ), headers), "json"
        session, operator = self._who(environ)
        if name == "logout":
            _allow(method, "POST")
            if session is not None:
                self.sessions.revoke(session)
            headers.append(("Set-Cookie", self._cookie("", 0)))
            return 200, _json({"ok": True}), "json"
        if method == "POST":
            self._check_csrf(environ, session)
            return 200, _json(self._mutate(name, operator, _body(environ))), "json"
        _allow(method, "GET")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        return 200, _json(self._read(name, operator, session, query)), "json"

    def _read(self, name: str, operator: Operator, session: Session | None,
              query: dict[str, str]) -> dict[str, Any]:
        if name == "me":
            return {"name": operator.name, "role": operator.role,
                    "csrf": session.csrf if session else "", "refresh_s": self.refresh_s}
        if name == "overview":
            return self.views.overview(operator)
        if name == "device":
            return self.views.device(operator, query.get("id", ""))
        if name == "rollouts":
            return self.views.rollouts(operator, query.get("q", "")[:200])
        if name == "service":
            return self.views.service()
        raise HttpError(404, f"no API {name[:100]!r}")

    def _mutate(self, name: str, operator: Operator, body: dict[str, Any]) -> dict[str, Any]:
        target, reason = _text(body, "target"), _text(body, "reason", 300)
        if name in ("rollout/" + a for a in ACTIONS):
            action = name.split("/", 1)[1]
            request = admin_pb2.RolloutAction(target=target, reason=reason,
                                              revert=bool(body.get("revert", False)))
            return plain(self.views.call(operator, ACTIONS[action], request))
        if name == "rollout/rollback":
            version = body.get("to_version")
            if not isinstance(version, int) or isinstance(version, bool):
                raise InvalidInput("to_version must be a whole number")
            request = admin_pb2.RollbackRequest(target=target, to_version=version,
                                                reason=reason)
            return plain(self.views.call(operator, "Rollback", request))
        raise HttpError(404 if not name.startswith("rollout/") else 400,
                        f"no action {name[:100]!r}")

    # -- authentication ------------------------------------------------------------------
    def _login(self, environ: dict[str, Any], body: dict[str, Any],
               headers: list[tuple[str, str]]) -> bytes:
        address = str(environ.get("REMOTE_ADDR", ""))
        if not self.logins.take("login:" + address):
            raise HttpError(429, "too many login attempts from this address; wait a minute")
        operator = self.identify(_text(body, "token", 512))
        cookie, session = self.sessions.issue(operator.name, operator.role)
        headers.append(("Set-Cookie", self._cookie(cookie, int(self.sessions.ttl_s))))
        log.info("dashboard login", extra={"operator": operator.name, "role": operator.role,
                                           "address": address})
        return _json({"name": operator.name, "role": operator.role, "csrf": session.csrf,
                      "refresh_s": self.refresh_s})

    def _cookie(self, value: str, max_age: int) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"

    def _who(self, environ: dict[str, Any]) -> tuple[Session | None, Operator]:
        bearer = str(environ.get("HTTP_AUTHORIZATION", ""))
        if bearer.startswith("Bearer "):
            return None, self.identify(bearer[len("Bearer "):].strip())
        cookies = SimpleCookie()
        try:
            cookies.load(str(environ.get("HTTP_COOKIE", "")))
        except CookieError:
            pass
        morsel = cookies.get(COOKIE)
        session = self.sessions.verify(morsel.value if morsel else "")
        return session, Operator(session.name, session.role)

    @staticmethod
    def _check_csrf(environ: dict[str, Any], session: Session | None) -> None:
        if session is None:  # a bearer token: browsers never send one on their own
            return
        given = str(environ.get(CSRF_HEADER, ""))
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise HttpError(403, "missing or wrong X-Edgecl-Csrf header (reload the page)")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, f"use {allowed}")


def _body(environ: dict[str, Any]) -> dict[str, Any]:
    if environ.get("REQUEST_METHOD") != "POST":
        raise HttpError(405, "use POST")
    if not str(environ.get("CONTENT_TYPE", "")).startswith("application/json"):
        raise HttpError(415, "send application/json")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise HttpError(400, "bad Content-Length") from exc
    if length < 0:
        raise HttpError(400, "bad Content-Length")
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"bodies are at most {MAX_BODY_BYTES} bytes")
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "the body is not JSON") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, limit: int = 256) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{key} must be text of at most {limit} characters")
    return value


def _json(data: Any) -> bytes:
    return json.dumps(_finite(data), allow_nan=False).encode()


def _finite(data: Any) -> Any:
    """``data`` with NaN and infinities as null (JSON has no such numbers; a page's
    parser would refuse the whole answer)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data

