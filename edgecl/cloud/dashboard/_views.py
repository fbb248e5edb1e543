"""What the dashboard's pages show, as JSON-ready dicts, read from a running service.

Fleet data comes from the ``FleetAdmin`` service itself, called in process with the
logged-in operator (so roles, validation and the audit log are the admin API's own); the
time series the admin API does not carry (a device's reports and uploads over time, the
service's own rates) are read from the registry and the service's metrics.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from edgecl._proto import admin_pb2
from edgecl.cloud._admin_auth import ADMIN_SERVICE, READ_ONLY, Operator, current_operator
from edgecl.cloud._errors import PermissionDenied
from edgecl.cloud._identity import Device

#: Reports a device page plots (its newest).
MAX_REPORTS = 500
#: A device is "silent" after this many report intervals without a report or upload.
SILENT_INTERVALS = 3.0
DEFAULT_REPORT_INTERVAL_S = 60.0
#: Rollout states of a rollout under way (shown in full on the rollouts page).
ACTIVE = ("rolling", "paused", "halted", "awaiting")
#: Up to this many targets, the rollouts page shows every one in full.
ALL_IN_FULL = 20
MAX_IN_FULL = 50
MAX_SUMMARY = 2000


class AdminCallError(Exception):
    """A FleetAdmin method refused a dashboard call: its gRPC ``code`` and message."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _InProcessCall:
    """The part of a gRPC context a FleetAdmin method uses, for in-process calls."""

    def abort(self, code: Any, details: str) -> None:
        raise AdminCallError(code, details)

    def code(self) -> None:
        return None


def plain(message: Any) -> dict[str, Any]:
    """A protobuf message as a dict of plain values (int64 stay numbers, maps dicts,
    every field present)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.message_type is not None:
            out[field.name] = ([plain(v) for v in value] if _repeated(field)
                               else plain(value))
        else:
            out[field.name] = list(value) if _repeated(field) else value
    return out


def _repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def health(device: dict[str, Any], events: list[dict[str, Any]], now_ms: int) -> str:
    """``new`` (never seen), ``silent`` (nothing for 3 report intervals), ``errors`` (its
    newest report counts failed predictions), ``refused`` (its newest update event is a
    refusal or rollback) or ``ok``."""
    if not device["last_seen_ms"]:
        return "new"
    interval = _float(device["reported_config"].get("report_interval_s"),
                      DEFAULT_REPORT_INTERVAL_S)
    if now_ms - device["last_seen_ms"] > SILENT_INTERVALS * interval * 1000:
        return "silent"
    if device["stats"].get("errors", 0) > 0:
        return "errors"
    if events and events[0]["action"] in ("rejected", "rolled_back"):
        return "refused"
    return "ok"


def _float(text: Any, default: float) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default


class ServiceHistory:
    """The service's rates over the last hour, sampled every ``period_s`` on a thread."""

    def __init__(self, sample: Any, period_s: float, points: int = 720) -> None:
        self.sample, self.period_s = sample, max(0.5, float(period_s))
        self.points: collections.deque[dict[str, float]] = collections.deque(maxlen=points)
        self._last: dict[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgecl-dashboard-history",
                                        daemon=True)

    def start(self) -> ServiceHistory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                self.record()
            except Exception:  # a registry closing under us: the next stop ends the loop
                pass
            if self._stop.wait(self.period_s):
                return

    def record(self) -> None:
        """Take one sample: totals now, rates since the previous sample."""
        now = dict(self.sample(), t_ms=time.time() * 1000)
        last, self._last = self._last, now
        if last is None:
            return
        dt = max(1e-3, (now["t_ms"] - last["t_ms"]) / 1000)
        self.points.append({
            "t_ms": now["t_ms"], "backlog": now["backlog"],
            "rpc_ok_per_s": max(0.0, now["rpc_ok"] - last["rpc_ok"]) / dt,
            "rpc_errors_per_s": max(0.0, now["rpc_errors"] - last["rpc_errors"]) / dt,
            "uploads_per_s": max(0.0, now["uploaded"] - last["uploaded"]) / dt,
            "labelled_per_s": max(0.0, now["labelled"] - last["labelled"]) / dt})


class FleetViews:
    """The dashboard's data of ``server`` (a started :class:`~edgecl.cloud.CloudServer`)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.history = ServiceHistory(self._totals, server.config.dashboard.refresh_s)

    # -- the admin API, in process --------------------------------------------------------
    def call(self, operator: Operator, method: str, request: Any) -> Any:
        """FleetAdmin ``method`` as ``operator`` (:class:`PermissionDenied` when the role
        may not call it; :class:`AdminCallError` when the method refuses)."""
        if ADMIN_SERVICE + method not in READ_ONLY and operator.role != "operator":
            raise PermissionDenied(f"{operator.name} has the {operator.role!r} role; "
                                   f"{method} needs 'operator'")
        token = current_operator.set(operator)
        try:
            return getattr(self.server.admin, method)(request, _InProcessCall())
        finally:
            current_operator.reset(token)

    # -- pages ---------------------------------------------------------------------------
    def overview(self, operator: Operator) -> dict[str, Any]:
        """Every device with its state, health and newest report, grouped by group."""
        listed = self.call(operator, "ListDevices", admin_pb2.ListDevicesRequest())
        now = int(time.time() * 1000)
        devices = []
        for info in listed.devices:
            device = plain(info)
            events = [{"action": a} for _, a, _, _ in
                      self.server.registry.events_of(info.device_id, 1)]
            device["health"] = health(device, events, now)
            devices.append(device)
        devices.sort(key=lambda d: (d["group"], d["device_id"]))
        counts = collections.Counter(d["health"] for d in devices)
        return {"now_ms": now, "devices": devices, "health": dict(counts),
                "groups": sorted({d["group"] for d in devices})}

    def device(self, operator: Operator, device_id: str) -> dict[str, Any]:
        """One device: its state, updates, events, reports and uploads over time."""
        detail = plain(self.call(operator, "GetDevice",
                                 admin_pb2.GetDeviceRequest(device_id=device_id)))
        registry = self.server.registry
        reports = [{"t_ms": t, "version": v, **stats}
                   for t, v, stats in reversed(registry.reports_of(device_id, MAX_REPORTS))]
        bucket_ms, uploads, segments = registry.upload_timeline(device_id)
        now = int(time.time() * 1000)
        detail["device"]["health"] = health(detail["device"], detail["events"], now)
        return {"now_ms": now, **detail, "series": reports,
                "uploads": {"bucket_ms": bucket_ms,
                            "buckets": [{"t_ms": t, "count": n} for t, n in uploads],
                            "segments": [{"t_ms": t, "segment": s} for t, s in segments]}}

    def rollouts(self, operator: Operator, query: str = "") -> dict[str, Any]:
        """Every target's rollout state in one line each; in full (waves, gates, who acted,
        newest updates) the targets whose name contains ``query``, or without one those
        with a rollout under way (every target when there are few)."""
        registry, admin = self.server.registry, self.server.admin
        devices = collections.Counter(
            admin.target_of(Device(r.device_id, r.encoder_sha256, r.group))
            for r in registry.device_records())
        summary = []
        for target in sorted(devices):
            row = registry.rollout(target)
            summary.append({"target": target, "devices": devices[target],
                            "state": row.state if row else "released",
                            "version": row.version if row else 0})
        summary.sort(key=lambda r: (r["state"] not in ACTIVE, r["target"]))
        if query:
            chosen = [r for r in summary if query in r["target"]]
        elif len(summary) <= ALL_IN_FULL:
            chosen = summary
        else:
            chosen = [r for r in summary if r["state"] in ACTIVE]
        return {"now_ms": int(time.time() * 1000), "query": query,
                "summary": summary[:MAX_SUMMARY],
                "targets": [self._rollout(operator, r["target"])
                            for r in chosen[:MAX_IN_FULL]]}

    def _rollout(self, operator: Operator, target: str) -> dict[str, Any]:
        status = plain(self.call(operator, "GetRollout",
                                 admin_pb2.GetRolloutRequest(target=target)))
        updates = plain(self.call(operator, "ListUpdates",
                                  admin_pb2.ListUpdatesRequest(target=target, limit=10)))
        return {**status, "updates": updates["updates"], "rejections": updates["rejections"]}

    def service(self) -> dict[str, Any]:
        """The service itself: backlog, labelling, learning jobs, RPCs by method."""
        server = self.server
        learning: dict[str, Any] = {"enabled": bool(server.learning),
                                    "counts": collections.Counter(), "running": [],
                                    "pending": {}}
        for coordinator in server.learning.values():
            snap = coordinator.snapshot()
            learning["counts"].update(snap["counts"])
            learning["running"] += snap["running"]
            learning["pending"].update(snap["pending"])
        learning["counts"] = dict(learning["counts"])
        return {"now_ms": int(time.time() * 1000), "backlog": server.registry.unlabelled_count(),
                "labelled": server.registry.labelled_count(),
                "label_rate": float(server.teacher_pool.rate),
                "devices": len(server.registry.device_records()),
                "streams_open": int(server.stream_caps.open),
                "learning": learning, "rpcs": self._rpcs(),
                "history": list(self.history.points)}

    # -- metrics -------------------------------------------------------------------------
    def _rpcs(self) -> list[dict[str, Any]]:
        by_method: dict[str, dict[str, float]] = {}
        for metric in self.server.metrics.rpcs.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                row = by_method.setdefault(sample.labels["method"], {"ok": 0.0, "errors": 0.0})
                row["ok" if sample.labels["code"] == "OK" else "errors"] += sample.value
        return [{"method": m, "ok": int(r["ok"]), "errors": int(r["errors"])}
                for m, r in sorted(by_method.items())]

    def _totals(self) -> dict[str, float]:
        rpcs = self._rpcs()
        metrics = self.server.metrics
        return {"rpc_ok": sum(r["ok"] for r in rpcs),
                "rpc_errors": sum(r["errors"] for r in rpcs),
                "uploaded": _counter(metrics.uploaded), "labelled": _counter(metrics.labelled),
                "backlog": float(self.server.registry.unlabelled_count())}


def _counter(counter: Any) -> float:
    return float(sum(s.value for m in counter.collect() for s in m.samples
                     if s.name.endswith("_total")))
