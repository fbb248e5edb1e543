"""DeviceReporter: reports a device's health and update outcomes to the cloud, without the
app calling anything, and applies the config an operator wants it to run.

Reports go out every ``interval_s`` and soon after every update the device handled (the
:class:`SyncClient` tells the reporter), so a staged rollout's health gate hears from a
device that applied (or refused, or rolled back) a version within seconds. Each report
carries what the app's predictions looked like since the previous one (``confidence``:
mean top-class probability, ``ood_rate``: share flagged out of distribution, ``errors``:
predictions that failed), the update events since then, and the desired-config revision
the device applied with the values it runs. The reply's desired config is applied through
``apply_config`` when its revision differs from the applied one (an empty config means
"the device's own defaults"); the next report says what was applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgecl._retry import Backoff
from edgecl.device._transport import TransportError
from edgecl.device._updates import CLOUD_VERSION
from edgecl.wire import DeviceStatus, ReportReply

log = logging.getLogger("edgecl.device")
#: Rejection kinds that say something about a version's health (a check on the device's
#: own inputs or bounds refused it); a bad signature or a wrong addressee says nothing.
HEALTH_REJECTIONS = frozenset({"probe", "canary", "bounds", "shape", "parts", "error"})
#: Actions of the manager's events that a report carries.
REPORTED_ACTIONS = frozenset({"applied", "rejected", "rolled_back", "reverted"})
#: Most update events in one report (the service's bound); older ones wait for the next.
MAX_EVENTS = 64
#: Smallest and largest report interval (seconds) a desired config may set.
MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 86400.0


class HealthCounters:
    """What predictions looked like since the last report (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = self._ood = self._errors = 0
        self._confidence = 0.0

    def observe(self, prediction: Any) -> None:
        """Count a batch of predictions (a :class:`~edgecl.device.Prediction`)."""
        n = len(prediction)
        with self._lock:
            self._n += n
            self._confidence += float(prediction.confidence.sum())
            if prediction.is_ood is not None:
                self._ood += int(prediction.is_ood.sum())

    def error(self, n: int = 1) -> None:
        """Count predictions that failed."""
        with self._lock:
            self._errors += n

    def snapshot(self) -> dict[str, float]:
        """``predictions``, ``confidence``, ``ood_rate``, ``errors`` so far (the means only
        when there were predictions)."""
        with self._lock:
            out = {"predictions": float(self._n), "errors": float(self._errors)}
            if self._n:
                out["confidence"] = self._confidence / self._n
                out["ood_rate"] = self._ood / self._n
            return out

    def subtract(self, taken: dict[str, float]) -> None:
        """Forget what a sent report covered (what arrived meanwhile stays)."""
        with self._lock:
            n = int(taken["predictions"])
            self._confidence -= taken.get("confidence", 0.0) * n
            self._ood -= round(taken.get("ood_rate", 0.0) * n)
            self._n -= n
            self._errors -= int(taken["errors"])


class DeviceReporter:
    """Reports ``runtime``'s health through ``client`` every ``interval_s`` and after each
    update; applies the desired config with ``apply_config(values) -> applied values``
    (default: only ``report_interval_s``, which the reporter applies itself).

    Feed it predictions with :meth:`observe` (and failures with :meth:`error`);
    :meth:`report_now` reports from the calling thread (a simulation's rounds).

    Examples
    --------
    >>> reporter = DeviceReporter(client, runtime, manager=manager).start()  # doctest: +SKIP
    >>> pred = runtime.predict(frame); reporter.observe(pred)            # doctest: +SKIP
    """

    def __init__(self, client: Any, runtime: Any, *, manager: Any = None, outbox: Any = None,
                 interval_s: float = 60.0,
                 apply_config: Callable[[dict[str, str]], dict[str, str]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.runtime, self.manager, self.outbox = client, runtime, manager, outbox
        self.default_interval_s = self.interval_s = float(interval_s)
        self.apply_config = apply_config
        self.clock = clock
        self.health = HealthCounters()
        self.config_revision = 0
        self.config: dict[str, str] = {"report_interval_s": f"{self.interval_s:g}"}
        self.sent = self.failed = 0
        self._event_cursor = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        client.update_listeners.append(self.trigger)

    # -- feeding -------------------------------------------------------------------------
    def observe(self, prediction: Any) -> None:
        """Count a batch of predictions; a rollback by the manager's guard is reported
        soon."""
        self.health.observe(prediction)
        if self.manager is not None and len(self.manager.events) > self._event_cursor:
            self.trigger()

    def error(self, n: int = 1) -> None:
        """Count predictions that failed."""
        self.health.error(n)

    def trigger(self) -> None:
        """Report soon (after an update was handled)."""
        self._wake.set()

    # -- reporting -----------------------------------------------------------------------
    def _events(self) -> tuple[list[tuple[int, str, str, int]], int]:
        if self.manager is None:
            return [], 0
        events = list(self.manager.events)
        out = []
        cursor = self._event_cursor
        for e in events[cursor:]:
            if len(out) == MAX_EVENTS:
                break
            cursor += 1
            if e.action not in REPORTED_ACTIONS or e.cloud_version <= 0:
                continue
            if e.action == "rejected" and e.kind not in HEALTH_REJECTIONS:
                continue
            out.append((int(e.cloud_version), e.action, e.reason[:500], int(e.at * 1000)))
        return out, cursor

    def status(self) -> tuple[DeviceStatus, int, dict[str, float]]:
        """The report to send now, the event cursor after it, and the health it covers."""
        health = self.health.snapshot()
        stats = dict(health)
        version = int(self.manager.cloud_version if self.manager is not None
                      else self.runtime.state.metadata.get(CLOUD_VERSION, 0))
        if self.manager is not None:
            stats.update({f"updates_{k}": float(v) for k, v in self.manager.counts().items()})
        if self.outbox is not None:
            stats["outbox_pending"] = float(self.outbox.stats().count)
        events, cursor = self._events()
        return (DeviceStatus(version, stats, tuple(events), self.config_revision,
                             dict(self.config)), cursor, health)

    def report_now(self) -> ReportReply | None:
        """Send one report from the calling thread and apply a changed desired config;
        the reply, or None when the report failed (it is retried next time)."""
        with self._lock:
            status, cursor, health = self.status()
            try:
                reply = self.client.send_report(status)
            except (TransportError, OSError) as exc:
                self.failed += 1
                log.info("report failed; retried later", extra={"error": str(exc)})
                return None
            self._event_cursor = cursor
            self.health.subtract(health)
            self.sent += 1
            if reply.desired_revision != self.config_revision:
                self._apply(reply.desired_revision, reply.desired)
            return reply

    def _apply(self, revision: int, values: dict[str, str]) -> None:
        applied: dict[str, str] = {}
        if self.apply_config is not None:
            try:
                applied = dict(self.apply_config(dict(values)))
            except Exception:
                log.exception("applying the desired config failed; keeping the current one")
                return
        interval = values.get("report_interval_s")
        try:
            self.interval_s = (min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, float(interval)))
                               if interval is not None else self.default_interval_s)
        except ValueError:
            log.warning("ignoring a desired report_interval_s that is not a number")
        applied["report_interval_s"] = f"{self.interval_s:g}"
        self.config_revision, self.config = revision, applied
        log.info("desired config applied", extra={"revision": revision, "config": applied})
        self._wake.set()  # tell the service what was applied

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> DeviceReporter:
        """Report in a background thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="edgecl-reports",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        backoff = Backoff(1.0, 2.0, 60.0)
        self._wake.set()  # a first report at start: the service learns the device's state
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            if self.report_now() is None:
                self._stop.wait(min(backoff.next(), self.interval_s))
                self._wake.set()
            else:
                backoff.reset()

    def stop(self, *, final_report: bool = True, timeout: float = 5.0) -> None:
        """Stop the background thread (after one last report, by default)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if final_report:
            self.report_now()
