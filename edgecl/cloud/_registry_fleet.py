"""Read queries of the fleet view (the ``FleetAdmin`` service) over the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgecl.cloud._identity import now_ms


@dataclass(frozen=True)
class DeviceRecord:
    """A registered device as the fleet view shows it."""

    device_id: str
    group: str
    labels: dict[str, str]
    encoder_sha256: str
    registered_ms: int


@dataclass(frozen=True)
class UpdateRecord:
    """A published update's stored figures (``artifact``: its payload's key)."""

    target: str
    version: int
    base_version: int
    created_ms: int
    metrics: dict[str, float]
    encoder_sha256: str
    artifact: str


_UPDATE_SELECT = ("SELECT version, base_version, created_ms, metrics_json, encoder_sha256, "
                  "artifact FROM updates WHERE target = ? ")


def _update_record(target: str, row: Any) -> UpdateRecord:
    return UpdateRecord(target, int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]),
                        row[4], row[5])


#: Kinds of pin: one device, or every device of a target (a group).
PIN_KINDS = ("device", "target")


class FleetQueries:
    """Mixed into :class:`~edgecl.cloud._registry.Registry`: reads for operators, and
    operators' pins (a pinned device is served no version above its pin)."""

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:  # provided by the registry
        raise NotImplementedError

    def _execute(self, sql: str, args: Any) -> None:  # provided by the registry
        raise NotImplementedError

    def set_pin(self, kind: str, name: str, version: int | None, operator: str) -> None:
        """Pin ``name`` (a device id or a target) to ``version``; None removes the pin."""
        if kind not in PIN_KINDS:
            raise ValueError(f"pin kind must be one of {PIN_KINDS}")
        if version is None:
            self._execute("DELETE FROM pins WHERE kind = ? AND name = ?", (kind, name))
        else:
            self._execute("INSERT INTO pins VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, name) "
                          "DO UPDATE SET version = excluded.version, operator = "
                          "excluded.operator, created_ms = excluded.created_ms",
                          (kind, name, int(version), operator, now_ms()))

    def pin_of(self, kind: str, name: str) -> int | None:
        """The version ``name`` is pinned to (None: not pinned)."""
        rows = self._rows("SELECT version FROM pins WHERE kind = ? AND name = ?", (kind, name))
        return int(rows[0][0]) if rows else None

    def served_cap(self, device_id: str, target: str) -> int | None:
        """The highest version a device may be served (None: no pin): the lower of its
        own pin and its target's."""
        pins = [p for p in (self.pin_of("device", device_id), self.pin_of("target", target))
                if p is not None]
        return min(pins) if pins else None

    def device_records(self, group: str = "", device_id: str = "") -> list[DeviceRecord]:
        """Every registered device (of ``group``, or the one ``device_id``, when given),
        by id."""
        sql = ("SELECT device_id, grp, labels_json, encoder_sha256, registered_ms "
               "FROM devices")
        if group:
            sql, args = sql + " WHERE grp = ?", (group,)
        elif device_id:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        else:
            args = ()
        return [DeviceRecord(r[0], r[1], json.loads(r[2] or "{}"), r[3], int(r[4]))
                for r in self._rows(sql + " ORDER BY device_id", args)]

    def last_seen_ms(self, device_id: str) -> int:
        """Time of the device's newest stored upload or report (0: never)."""
        up = self._rows("SELECT received_ms FROM samples WHERE device_id = ? "
                        "ORDER BY seq DESC LIMIT 1", (device_id,))
        rep = self._rows("SELECT MAX(received_ms) FROM reports WHERE device_id = ?",
                         (device_id,))
        return max(int(up[0][0]) if up else 0, int(rep[0][0] or 0))

    def reports_of(self, device_id: str, limit: int) -> list[tuple[int, int, dict[str, float]]]:
        """The device's newest reports ``(received_ms, state_version, stats)``."""
        rows = self._rows("SELECT received_ms, state_version, stats_json FROM reports "
                          "WHERE device_id = ? ORDER BY received_ms DESC, rowid DESC LIMIT ?",
                          (device_id, limit))
        return [(int(r[0]), int(r[1]), json.loads(r[2])) for r in rows]

    def update_records(self, target: str, limit: int) -> list[UpdateRecord]:
        """The target's published updates, newest first."""
        rows = self._rows(_UPDATE_SELECT + "ORDER BY version DESC LIMIT ?", (target, limit))
        return [_update_record(target, r) for r in rows]

    def update_record(self, target: str, version: int) -> UpdateRecord | None:
        """One published version of the target (None: there is no such version)."""
        rows = self._rows(_UPDATE_SELECT + "AND version = ?", (target, version))
        return _update_record(target, rows[0]) if rows else None

    def rejection_records(self, target: str, limit: int) -> list[tuple[int, str, int]]:
        """The target's rejected candidates ``(version, reason, created_ms)``, newest
        first."""
        rows = self._rows("SELECT version, reason, created_ms FROM rejections WHERE "
                          "target = ? ORDER BY created_ms DESC, rowid DESC LIMIT ?",
                          (target, limit))
        return [(int(r[0]), r[1], int(r[2])) for r in rows]

    def upload_timeline(self, device_id: str, buckets: int = 60, newest: int = 5000
                        ) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """The device's ``newest`` stored uploads over time: ``(bucket_ms, [(bucket start,
        count)], [(first upload time, segment)])``, their span cut into at most
        ``buckets`` buckets; the second list marks where each drift segment (a domain
        change the device reported) begins. Reads only those uploads, by the device's
        index."""
        rows = self._rows("SELECT received_ms, segment FROM samples WHERE device_id = ? "
                          "ORDER BY seq DESC LIMIT ?", (device_id, newest))
        if not rows:
            return 1000, [], []
        times = [int(r[0]) for r in reversed(rows)]
        first, last = min(times), max(times)
        bucket = max(1000, -(-(last - first + 1) // max(1, buckets)))
        counts: dict[int, int] = {}
        starts: dict[int, int] = {}
        for t, (_, segment) in zip(times, reversed(rows)):
            start = first + (t - first) // bucket * bucket
            counts[start] = counts.get(start, 0) + 1
            starts.setdefault(int(segment or 0), t)
        return (bucket, sorted(counts.items()),
                sorted((t, s) for s, t in starts.items()))
