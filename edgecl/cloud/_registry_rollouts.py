"""Rollouts, what devices report of updates, and operators' desired config, stored in the
registry (mixed into :class:`~edgecl.cloud._registry.Registry`).

Every published version has a rollout row. A version is *released* (every device of its
target may be served it) or rolls out to the devices admitted to it wave by wave; a device
is served the newest version that is released or that it was admitted to. Which state a
new version starts in follows the target's rollout policy (its own, else the fleet's
default); rollbacks and reverts are released at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgecl.cloud._database import Connection
from edgecl.cloud._identity import now_ms

#: States in which a rollout still moves (or waits for an operator).
ACTIVE = ("rolling", "paused", "halted", "awaiting")
#: Every state a version's rollout can be in.
ROLLOUT_STATES = ("released", *ACTIVE, "aborted", "superseded")
#: Report stats a health gate compares before and after a device applied a version.
GATE_STATS = ("confidence", "ood_rate")
#: Reports before its admission that a device's "before" figures average over.
BEFORE_REPORTS = 3
_ROLLOUT_SELECT = ("SELECT target, version, state, reason, policy_json, wave, "
                   "wave_started_s, approved_wave FROM rollouts ")


@dataclass(frozen=True)
class RolloutRow:
    """One version's rollout."""

    target: str
    version: int
    state: str
    reason: str
    policy: dict[str, Any]
    wave: int
    wave_started_s: float
    approved_wave: int


@dataclass(frozen=True)
class DeviceHealth:
    """What one device admitted to a version reported since its admission:
    ``outcome`` "" (nothing yet), "applied" or "refused" (rejected or rolled back);
    mean ``before`` / ``after`` figures of :data:`GATE_STATS`; ``errors`` summed after."""

    device_id: str
    wave: int
    outcome: str
    before: dict[str, float]
    after: dict[str, float]
    errors: float


@dataclass(frozen=True)
class WaveCounts:
    """One wave of a rollout: devices admitted (at ``started_s``, by the controller's
    clock) and how many of them reported on the version, applied it, refused it."""

    wave: int
    devices: int
    started_s: float
    reported: int
    applied: int
    refused: int


def _row(r: Any) -> RolloutRow:
    return RolloutRow(r[0], int(r[1]), r[2], r[3], json.loads(r[4] or "{}"), int(r[5]),
                      float(r[6]), int(r[7]))


def _mean(reports: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in GATE_STATS:
        values = [s[key] for s in reports if key in s]
        if values:
            out[key] = sum(values) / len(values)
    return out


class RolloutStore:
    """Rollout rows, admitted devices, update events and desired config."""

    #: Policy (a :class:`~edgecl.cloud.RolloutPolicy` dict) of targets without their own
    #: and without a stored fleet default: the service's ``[rollout]`` config.
    default_rollout_policy: dict[str, Any] | None = None

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:  # provided by the registry
        raise NotImplementedError

    def _execute(self, sql: str, args: Any) -> None:  # provided by the registry
        raise NotImplementedError

    def _transaction(self, statements: list[tuple[str, Any]], *,
                     guarded: bool = False, read: str = "") -> Any:  # the registry's
        raise NotImplementedError

    # -- policies ------------------------------------------------------------------------
    def set_rollout_policy(self, target: str, policy: dict[str, Any] | None,
                           operator: str) -> None:
        """Store ``target``'s policy ("" : the fleet's default); None removes it."""
        if policy is None:
            self._execute("DELETE FROM rollout_policies WHERE target = ?", (target,))
        else:
            self._execute("INSERT INTO rollout_policies VALUES (?, ?, ?, ?) ON CONFLICT "
                          "(target) DO UPDATE SET policy_json = excluded.policy_json, "
                          "operator = excluded.operator, created_ms = excluded.created_ms",
                          (target, json.dumps(policy, sort_keys=True), operator, now_ms()))

    def stored_rollout_policy(self, target: str) -> dict[str, Any] | None:
        """The policy stored for exactly ``target`` (None: none)."""
        rows = self._rows("SELECT policy_json FROM rollout_policies WHERE target = ?",
                          (target,))
        return json.loads(rows[0][0]) if rows else None

    def rollout_policy(self, target: str) -> dict[str, Any] | None:
        """The policy ``target`` follows: its own, else the fleet's, else the config's
        default (None: ``auto``)."""
        for name in (target, ""):
            policy = self.stored_rollout_policy(name)
            if policy is not None:
                return policy
        return self.default_rollout_policy

    # -- rollouts ------------------------------------------------------------------------
    def _start_rollout(self, conn: Connection, target: str, version: int,
                       release: bool, reason: str = "") -> None:
        """Add ``version``'s rollout row inside the publishing transaction; a newer
        version supersedes an active rollout (a paused or halted target stays so)."""
        policy = None if release else self.rollout_policy(target)
        mode = (policy or {}).get("mode", "auto")
        state = {"auto": "released", "manual": "awaiting"}.get(mode, "rolling")
        if release:
            reason = reason or "published for every device (a rollback)"
        prev = conn.execute(_ROLLOUT_SELECT + "WHERE target = ? AND state IN (?, ?, ?, ?) "
                            "ORDER BY version DESC LIMIT 1", (target, *ACTIVE)).fetchone()
        if prev is not None and state != "released" and prev[2] in ("paused", "halted"):
            state, reason = prev[2], f"v{prev[1]} was {prev[2]}: resume to continue"
        conn.execute("UPDATE rollouts SET state = 'superseded', reason = ?, updated_ms = ? "
                     "WHERE target = ? AND state IN (?, ?, ?, ?)",
                     (f"superseded by v{version}", now_ms(), target, *ACTIVE))
        conn.execute("INSERT INTO rollouts (target, version, state, reason, policy_json, "
                     "updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
                     (target, version, state, reason,
                      json.dumps(policy or {}, sort_keys=True), now_ms()))

    def rollout(self, target: str, version: int | None = None) -> RolloutRow | None:
        """``version``'s rollout (default: the target's newest version's), or None."""
        if version is None:
            rows = self._rows(_ROLLOUT_SELECT + "WHERE target = ? ORDER BY version DESC "
                              "LIMIT 1", (target,))
        else:
            rows = self._rows(_ROLLOUT_SELECT + "WHERE target = ? AND version = ?",
                              (target, version))
        return _row(rows[0]) if rows else None

    def rollouts_in(self, *states: str) -> list[RolloutRow]:
        """Rollouts in any of ``states``, by target."""
        marks = ", ".join("?" * len(states))
        return [_row(r) for r in self._rows(
            _ROLLOUT_SELECT + f"WHERE state IN ({marks}) ORDER BY target, version", states)]

    def set_rollout_state(self, target: str, version: int, expected: tuple[str, ...],
                          state: str, reason: str, *, approved_wave: int | None = None
                          ) -> bool:
        """Move a rollout from one of ``expected`` to ``state`` (False: it was not in
        one of them, nothing changed)."""
        marks = ", ".join("?" * len(expected))
        before = self.rollout(target, version)
        if before is None or before.state not in expected:
            return False
        approved = before.approved_wave if approved_wave is None else approved_wave
        self._execute(f"UPDATE rollouts SET state = ?, reason = ?, approved_wave = ?, "
                      f"updated_ms = ? WHERE target = ? AND version = ? AND state IN "
                      f"({marks})", (state, reason[:1000], approved, now_ms(), target,
                                     version, *expected))
        after = self.rollout(target, version)
        return after is not None and after.state == state

    def admit(self, target: str, version: int, device_ids: list[str], wave: int,
              now_s: float) -> bool:
        """Admit ``device_ids`` to ``version`` as wave ``wave`` (started at ``now_s``), if
        its rollout is still rolling (False: an operator paused or ended it meanwhile)."""
        mark = int(self._rows("SELECT COALESCE(MAX(rowid), 0) FROM reports")[0][0])
        return self._transaction(
            [("UPDATE rollouts SET wave = ?, wave_started_s = ?, updated_ms = ? "
              "WHERE target = ? AND version = ? AND state = 'rolling'",
              (wave, now_s, now_ms(), target, version))]
            + [("INSERT INTO rollout_devices VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (target, version, d, wave, now_s, mark)) for d in device_ids], guarded=True)

    def admitted(self, target: str, version: int) -> list[tuple[str, int, float, int]]:
        """Devices admitted to ``version``: ``(device_id, wave, started_s, report_mark)``."""
        return [(r[0], int(r[1]), float(r[2]), int(r[3])) for r in self._rows(
            "SELECT device_id, wave, started_s, report_mark FROM rollout_devices WHERE "
            "target = ? AND version = ? ORDER BY wave, device_id", (target, version))]

    def released_version(self, target: str) -> int:
        """The newest version of ``target`` every device may be served (0: none)."""
        rows = self._rows("SELECT COALESCE(MAX(version), 0) FROM rollouts WHERE target = ? "
                          "AND state = 'released'", (target,))
        return int(rows[0][0])

    def rollout_cap(self, device_id: str, target: str) -> int:
        """The newest version the rollouts let ``device_id`` be served: the released one,
        or a newer one it was admitted to."""
        rows = self._rows("SELECT COALESCE(MAX(version), 0) FROM rollout_devices WHERE "
                          "target = ? AND device_id = ?", (target, device_id))
        return max(self.released_version(target), int(rows[0][0]))

    def health_of(self, target: str, version: int) -> list[DeviceHealth]:
        """What each device admitted to ``version`` reported on it since admission."""
        out = []
        for device_id, wave, _, mark in self.admitted(target, version):
            actions = {r[0] for r in self._rows(
                "SELECT action FROM update_events WHERE device_id = ? AND version = ?",
                (device_id, version))}
            after = [(int(r[0]), json.loads(r[1])) for r in self._rows(
                "SELECT state_version, stats_json FROM reports WHERE device_id = ? AND "
                "rowid > ? ORDER BY rowid", (device_id, mark))]
            before = [json.loads(r[0]) for r in self._rows(
                "SELECT stats_json FROM reports WHERE device_id = ? AND rowid <= ? "
                "ORDER BY rowid DESC LIMIT ?", (device_id, mark, BEFORE_REPORTS))]
            running = [s for v, s in after if v == version]
            if actions & {"rejected", "rolled_back"}:
                outcome = "refused"
            elif "applied" in actions or any(v >= version for v, _ in after):
                outcome = "applied"
            else:
                outcome = ""
            out.append(DeviceHealth(device_id, wave, outcome, _mean(before), _mean(running),
                                    sum(float(s.get("errors", 0.0)) for s in running)))
        return out

    def control_stats(self, target: str, version: int, device_ids: list[str]
                      ) -> tuple[int, dict[str, float]]:
        """The control group of ``version``'s gate: of ``device_ids`` (the target's), those
        not admitted to it, over their reports since its rollout began; how many reported
        and their mean :data:`GATE_STATS`."""
        admitted = self.admitted(target, version)
        if not admitted:
            return 0, {}
        mark = min(m for *_, m in admitted)
        inside = {d for d, *_ in admitted}
        reports, devices = [], 0
        for device_id in device_ids:
            if device_id in inside:
                continue
            rows = [json.loads(r[0]) for r in self._rows(
                "SELECT stats_json FROM reports WHERE device_id = ? AND rowid > ? AND "
                "state_version < ?", (device_id, mark, version))]
            devices += bool(rows)
            reports.extend(rows)
        return devices, _mean(reports)

    def waves_of(self, target: str, version: int) -> list[WaveCounts]:
        """``version``'s waves: devices admitted in each, and how many reported on it,
        applied it, refused it."""
        outcome = {h.device_id: h.outcome for h in self.health_of(target, version)}
        waves: dict[int, list[Any]] = {}
        for device_id, wave, started, _ in self.admitted(target, version):
            w = waves.setdefault(wave, [wave, 0, started, 0, 0, 0])
            result = outcome.get(device_id, "")
            w[1] += 1
            w[3] += bool(result)
            w[4] += result == "applied"
            w[5] += result == "refused"
        return [WaveCounts(*waves[k]) for k in sorted(waves)]

    def events_of(self, device_id: str, limit: int) -> list[tuple[int, str, str, int]]:
        """The update events ``device_id`` reported, newest first: ``(version, action,
        reason, time_ms)``."""
        return [(int(r[0]), r[1], r[2], int(r[3])) for r in self._rows(
            "SELECT version, action, reason, time_ms FROM update_events WHERE device_id = ? "
            "ORDER BY report_id DESC, rowid DESC LIMIT ?", (device_id, limit))]

    # -- desired config ------------------------------------------------------------------
    def set_desired_config(self, kind: str, name: str, values: dict[str, str] | None,
                           operator: str) -> int:
        """Set (None: clear) the desired config of a device or group; its revision, which
        increases with every change over the whole fleet."""
        revision = ("(SELECT CAST(value AS INTEGER) FROM meta WHERE key = "
                    "'config_revision')")
        statements: list[tuple[str, Any]] = [(
            "INSERT INTO meta VALUES ('config_revision', '1') ON CONFLICT (key) DO UPDATE "
            "SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)", ())]
        if values is None:
            statements.append(("DELETE FROM desired_config WHERE kind = ? AND name = ?",
                               (kind, name)))
        else:
            statements.append((f"INSERT INTO desired_config VALUES (?, ?, ?, {revision}, ?, "
                               f"?) ON CONFLICT (kind, name) DO UPDATE SET values_json = "
                               f"excluded.values_json, revision = excluded.revision, "
                               f"operator = excluded.operator, created_ms = "
                               f"excluded.created_ms", (kind, name,
                                                      json.dumps(values, sort_keys=True),
                                                      operator, now_ms())))
        return int(self._transaction(statements, read="SELECT CAST(value AS INTEGER) FROM "
                                     "meta WHERE key = 'config_revision'"))

    def desired_config(self, kind: str, name: str) -> tuple[int, dict[str, str]] | None:
        """``(revision, values)`` set for exactly this device or group (None: none)."""
        rows = self._rows("SELECT revision, values_json FROM desired_config WHERE kind = ? "
                          "AND name = ?", (kind, name))
        return (int(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def desired_for(self, device_id: str, group: str) -> tuple[int, dict[str, str]]:
        """What ``device_id`` should run: its group's values overridden by its own, and
        the newer of the two revisions (0, {}: nothing set)."""
        revision, values = 0, {}
        for found in (group and self.desired_config("group", group),
                      self.desired_config("device", device_id)):
            if found:
                revision = max(revision, found[0])
                values.update(found[1])
        return revision, values

    def reported_config(self, device_id: str) -> tuple[int, dict[str, str]]:
        """The desired-config revision the device last reported applying, and its values
        (0, {}: none)."""
        rows = self._rows("SELECT revision, values_json FROM reported_config WHERE "
                          "device_id = ?", (device_id,))
        return (int(rows[0][0]), json.loads(rows[0][1])) if rows else (0, {})
