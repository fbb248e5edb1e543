"""Prometheus metrics of one service (its own registry, so several can share a process)."""

from __future__ import annotations

from typing import Any


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
                               "backlog, sample_rate, request_rate, streams)", ["reason"],
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

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` over HTTP on ``port`` (0: any free port); returns the port."""
        from prometheus_client import start_http_server

        self._server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
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
