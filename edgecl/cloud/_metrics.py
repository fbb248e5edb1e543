"""Prometheus metrics of one service (its own registry, so several can share a process)."""

from __future__ import annotations

import hmac
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server


class Metrics:
    """RPC counts and latencies, teacher queue depth, samples labelled, update outcomes."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.rpcs = Counter("edgecl_rpc_total", "RPCs handled", ["method", "code"],
                            registry=self.registry)
        self.latency = Histogram("edgecl_rpc_seconds", "RPC latency", ["method"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1.0, 2.5, 5.0, 10.0))
        self.queue_depth = Gauge("edgecl_teacher_queue_depth", "samples waiting for a label",
                                 registry=self.registry)
        self.in_flight = Gauge("edgecl_rpc_in_flight", "RPCs being handled", ["method"],
                               registry=self.registry)
        self.streams = Gauge("edgecl_subscribe_streams", "open Subscribe streams",
                             registry=self.registry)
        self.labelled = Counter("edgecl_samples_labelled_total", "samples labelled by the "
                                "teacher", registry=self.registry)
        self.uploaded = Counter("edgecl_samples_uploaded_total", "new samples stored",
                                registry=self.registry)
        self.duplicates = Counter("edgecl_samples_duplicate_total", "re-sent samples "
                                  "acknowledged again", registry=self.registry)
        self.updates = Counter("edgecl_updates_total", "learned candidates by outcome",
                               ["outcome"], registry=self.registry)
        self.refused = Counter("edgecl_refused_total", "requests refused for load (reason: "
                               "backlog, sample_rate, request_rate, streams, quota)", ["reason"],
                               registry=self.registry)
        self.open_streams = Gauge("edgecl_streams_open", "open Upload and Subscribe streams",
                                  registry=self.registry)
        self.label_rate = Gauge("edgecl_teacher_samples_per_s", "recent labelling "
                                "throughput", registry=self.registry)
        self.devices = Gauge("edgecl_devices_registered", "registered devices",
                             registry=self.registry)
        self._server: Any = None

    def track(self, *, queue_depth: Any, streams: Any, open_streams: Any = None,
              label_rate: Any = None) -> None:
        """Read the teacher queue depth, the open Subscribe streams, all open streams and
        the labelling rate from these callables at each scrape (exact values, no
        bookkeeping on the hot path)."""
        self.queue_depth.set_function(_safe(queue_depth))
        self.streams.set_function(_safe(streams))
        if open_streams is not None:
            self.open_streams.set_function(_safe(open_streams))
        if label_rate is not None:
            self.label_rate.set_function(_safe(label_rate))

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Count one RPC and its latency."""
        self.rpcs.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def serve(self, port: int, address: str = "127.0.0.1", token: str = "") -> int:
        """Expose ``/metrics`` over HTTP on ``address``:``port`` (0: any free port); returns
        the port. With ``token`` every request needs ``Authorization: Bearer <token>``
        (401 otherwise)."""
        from prometheus_client import make_wsgi_app

        app = make_wsgi_app(self.registry)
        self._server = _http_server(address, port, bearer_auth(app, token) if token else app)
        threading.Thread(target=self._server.serve_forever, name="edgecl-metrics",
                         daemon=True).start()
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint and release its port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def text(self) -> str:
        """The metrics in Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def _safe(fn: Any) -> Any:
    def read() -> float:
        try:
            return float(fn())
        except Exception:  # a scrape during shutdown (registry closed) reads 0
            return 0.0

    return read


def bearer_auth(app: Callable[..., Iterable[bytes]], token: str) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: ``app`` for requests with ``Authorization: Bearer <token>``, 401
    for all others (constant-time comparison)."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"401 Unauthorized: send Authorization: Bearer <[metrics] token>\n"]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    timeout = 30.0  # a client that connects and sends nothing gives its thread back

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


def _http_server(address: str, port: int, app: Callable[..., Iterable[bytes]]) -> Any:
    """A thread-per-request WSGI server bound to ``address``:``port`` (IPv4 or IPv6)."""
    from prometheus_client.exposition import ThreadingWSGIServer

    host = address.strip("[]")
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family

        def handle_error(self, request: Any, client_address: Any) -> None:
            """A broken connection (a reset, plain HTTP to HTTPS, a timeout) is the
            client's business: logged at DEBUG, not printed."""
            logging.getLogger("edgecl.cloud.http").debug(
                "HTTP connection failed", exc_info=True, extra={"client": str(client_address)})

    return make_server(host, port, app, Server, handler_class=_QuietHandler)
