"""Applying cloud updates on a device: verify, canary, hot swap, keep history, roll back.

An update is verified (signature, key, payload), checked (encoder sha256, newer than the
last applied cloud version, shapes), tried on the device's recent inputs (the canary:
prediction disagreement with the current state and mean entropy), and only then swapped
in atomically. The last ``keep`` states stay in memory for :meth:`UpdateManager.rollback`;
after a swap, the mean confidence of the next ``monitor_window`` predictions is watched
and a collapse rolls the update back automatically. Do no harm: an update is served only
on inputs like those it was applied on (an :class:`~edgecl.ood.InputGuard` armed with the
newest inputs before the swap reverts to the bundle's state when they move away), and
at a detected change of environment (:meth:`UpdateManager.domain_changed`) the device
serves the bundle's state and refuses updates learned before the change. The applied
signed updates and the active version are persisted (write temp, fsync, rename), so a
restart restores them.

The cloud version of a state lives in ``ModelState.metadata["cloud_version"]``; the state's
own ``version`` is the device's local counter (local adaptation also creates versions).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from edgecl._exceptions import ConfigError, EdgeclError, InvalidInput, UpdateRejected
from edgecl.bundle._files import atomic_write_bytes
from edgecl.device._runtime import DeviceRuntime
from edgecl.device._state import ModelState
from edgecl.device._verify import UpdateVerifier
from edgecl.heads import FeatureNorm, LinearHead, LowRankAdapter
from edgecl.ood import InputGuard
from edgecl.wire import REVERT_METRIC, SignedUpdate, UpdatePayload

CLOUD_VERSION = "cloud_version"
#: ``ModelState.metadata`` key: True while the state serves a cloud update's parts (False
#: after ``revert`` to the bundle's parts).
SERVING_CLOUD = "serving_cloud"
_ACTIVE = "active.json"
_GUARD_REFERENCE = 64  # the newest inputs before an apply: what the update may be served on


@dataclass(frozen=True)
class CanaryPolicy:
    """Limits a candidate must respect on the recent-input buffer before it is swapped in.

    ``max_disagreement``: largest share of recent inputs whose label may change (a
    teacher-validated update for a new domain legitimately changes many).
    ``max_entropy_increase`` and ``max_entropy``: the candidate is refused when its mean
    normalised entropy both rises by more than ``max_entropy_increase`` and exceeds
    ``max_entropy`` (a good update for a new domain often *raises* entropy, because the
    old state was confidently wrong there; a broken one approaches 1, uniform).
    ``max_class_share``: largest share of one class among the candidate's predictions
    when the current state stays under it (a degenerate candidate predicts one class for
    everything).
    ``min_samples``: below this many buffered inputs the canary is skipped.
    """

    max_disagreement: float = 0.8
    max_entropy_increase: float = 0.15
    max_entropy: float = 0.75
    max_class_share: float = 0.9
    min_samples: int = 16


@dataclass(frozen=True)
class UpdateEvent:
    """One entry of the update history: what happened to which cloud version, and why."""

    cloud_version: int
    action: str  # "applied", "rejected", "rolled_back", "restored", "reverted"
    reason: str
    at: float


def _norm_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0)
    return -(q * np.log(q)).sum(axis=1) / np.log(p.shape[1])


class UpdateManager:
    """Receives signed updates for one :class:`DeviceRuntime` and applies them safely.

    Use it as the ``on_update`` callback of the sync client (calling it returns whether
    the update was applied) and feed it what the app predicts with :meth:`observe`.

    Examples
    --------
    >>> manager = UpdateManager(runtime, UpdateVerifier(cloud_public_key),
    ...                         state_dir="state/")                    # doctest: +SKIP
    >>> pred = runtime.predict(frame); manager.observe(frame, pred)    # doctest: +SKIP
    >>> manager.apply(signed_update).metadata["cloud_version"]         # doctest: +SKIP
    """

    def __init__(self, runtime: DeviceRuntime, verifier: UpdateVerifier, *,
                 state_dir: str | os.PathLike[str] | None = None, keep: int = 5,
                 canary: CanaryPolicy | None = None, buffer_size: int = 128,
                 monitor_window: int = 256, collapse_ratio: float = 0.6,
                 input_guard: InputGuard | bool = True) -> None:
        if keep < 1 or buffer_size < 1 or monitor_window < 1 or not 0 < collapse_ratio < 1:
            raise ConfigError("keep, buffer_size and monitor_window must be >= 1 and "
                              "collapse_ratio in (0, 1)")
        self.runtime, self.verifier = runtime, verifier
        self.canary = canary or CanaryPolicy()
        self.keep, self.monitor_window, self.collapse_ratio = keep, monitor_window, collapse_ratio
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.events: list[UpdateEvent] = []
        self._lock = threading.RLock()
        self._buffer: deque[np.ndarray] = deque(maxlen=buffer_size)
        self._history: deque[ModelState] = deque(maxlen=keep)
        self._confidence: deque[float] = deque(maxlen=monitor_window)
        self._monitor: tuple[float, list[float]] | None = None  # (baseline, post-swap)
        self._blocked: set[int] = set()  # cloud versions rolled back: never re-applied
        self._base = runtime.state  # the bundle as shipped: what revert() goes back to
        self.guard = (InputGuard() if input_guard is True else
                      input_guard if isinstance(input_guard, InputGuard) else None)
        self._min_segment = 0  # updates learned on an earlier drift segment are refused
        self._since_change = 0  # inputs observed since the last detected change
        self._guard_pending = False  # an update is in service, its guard not yet armed
        if self.state_dir is not None:
            (self.state_dir / "updates").mkdir(parents=True, exist_ok=True)
            self._restore()

    # -- public API --------------------------------------------------------------------
    @property
    def cloud_version(self) -> int:
        """Cloud version of the state being served (0: the bundle as shipped)."""
        return int(self.runtime.state.metadata.get(CLOUD_VERSION, 0))

    def counts(self) -> dict[str, int]:
        """How many updates were applied, rejected and rolled back."""
        out = {"applied": 0, "rejected": 0, "rolled_back": 0, "restored": 0, "reverted": 0}
        for e in self.events:
            out[e.action] += 1
        return out

    def __call__(self, update: SignedUpdate) -> bool:
        """Sync-client callback: apply ``update``; False (and an event) if rejected."""
        try:
            self.apply(update)
        except UpdateRejected:
            return False
        return True

    def observe(self, images: np.ndarray, prediction: Any) -> None:
        """Remember recent inputs for canaries and watch confidence after a swap."""
        batch = images if images.ndim == 4 else images[None]
        conf = np.asarray(prediction.confidence, dtype=np.float64)
        rollback = False
        moved = False
        with self._lock:
            self._buffer.extend(np.array(batch, dtype=np.float32, copy=True))
            self._confidence.extend(conf.tolist())
            self._since_change += len(batch)
            if self._guard_pending and self._since_change >= self.guard.min_reference:
                self._arm_guard()
            elif self.guard is not None and self.guard.armed and \
                    self.runtime.state.metadata.get(SERVING_CLOUD):
                try:
                    moved = self.guard.update(batch) is not None
                except InvalidInput:  # not images the guard can read: nothing to compare
                    self.guard.clear()
            if self._monitor is not None:
                baseline, seen = self._monitor
                seen.extend(conf.tolist())
                if len(seen) >= self.monitor_window:
                    self._monitor = None
                    rollback = float(np.mean(seen)) < self.collapse_ratio * baseline
        if moved:  # do no harm: the update was not learned for these inputs
            self.revert("inputs moved away from those the update was applied on")
            with self._lock:
                self._since_change = 0
        elif rollback:
            self.rollback(f"confidence collapsed after the swap (mean below "
                          f"{self.collapse_ratio:.2f} x the pre-swap mean)")

    def apply(self, update: SignedUpdate) -> ModelState:
        """Verify, check, canary and swap in ``update``; :class:`UpdateRejected` otherwise."""
        try:
            payload = self.verifier.verify(update)
            time.sleep(0)  # let predict threads run between the stages of a swap (GIL)
            with self._lock:
                state = self._accept(payload)
        except UpdateRejected as exc:
            self._event(exc.version or 0, "rejected", exc.reason)
            raise
        self._persist(update, payload.version)
        self._event(payload.version, "applied", "ok")
        return state

    def rollback(self, reason: str = "requested") -> ModelState:
        """Swap back to the previous kept state; :class:`ConfigError` if there is none."""
        with self._lock:
            if not self._history:
                raise ConfigError("no earlier state to roll back to")
            previous = self._history.pop()
            current = self.runtime.state
            self._blocked.add(int(current.metadata.get(CLOUD_VERSION, 0)))
            restored = previous.evolve(version=current.version + 1)
            self.runtime.swap_state(restored)
            self._monitor = None
        version = int(restored.metadata.get(CLOUD_VERSION, 0))
        self._write_active(version)
        self._event(int(current.metadata.get(CLOUD_VERSION, 0)), "rolled_back", reason)
        return restored

    def revert(self, reason: str = "domain shift") -> ModelState:
        """Serve the bundle's own prompt/filter/adapter/head again (e.g. when the drift
        detector reports a new domain, for which the current update was not learned).
        The applied cloud version is kept, so older updates stay refused; the next update
        for the new domain replaces this state, and :meth:`rollback` undoes it."""
        with self._lock:
            current, base = self.runtime.state, self._base
            state = current.evolve(head=base.head, adapter=base.adapter, prompt=base.prompt,
                                   input_filter=base.input_filter,
                                   feature_norm=base.feature_norm,
                                   metadata={**current.metadata, SERVING_CLOUD: False})
            self._history.append(current)
            self.runtime.swap_state(state)
            self._monitor = None
            if self.guard is not None:
                self.guard.clear()
            self._guard_pending = False
        self._event(self.cloud_version, "reverted", reason)
        return state

    def domain_changed(self, reason: str = "domain shift", segment: int | None = None
                       ) -> ModelState:
        """A detector saw the inputs change: serve the bundle's own state (:meth:`revert`)
        and, given the device's new drift ``segment`` (the number its uploads now carry),
        refuse every update learned on an earlier segment (``metrics["segment"]``), which
        the cloud may still publish from uploads it had before the change. Use it as the
        ``on_shift`` callback of a :class:`SampleCollector`."""
        with self._lock:
            self._since_change = 0
            if segment is not None:
                self._min_segment = max(self._min_segment, int(segment))
        return self.revert(reason)

    # -- internals -----------------------------------------------------------------------
    def _accept(self, payload: UpdatePayload, *, canary: bool = True) -> ModelState:
        current = self.runtime.state
        v = payload.version
        if payload.encoder_sha256 != self.runtime.bundle.encoder_sha256:
            raise UpdateRejected("made for another encoder "
                                 f"({payload.encoder_sha256[:12]} != "
                                 f"{self.runtime.bundle.encoder_sha256[:12]})", version=v)
        if v in self._blocked:
            raise UpdateRejected(f"version {v} was rolled back on this device", version=v)
        if v <= self.cloud_version:
            raise UpdateRejected(f"replayed or stale: version {v} is not newer than the "
                                 f"applied {self.cloud_version}", version=v)
        learned_on = payload.metrics.get("segment")
        if learned_on is not None and learned_on < self._min_segment:
            raise UpdateRejected(f"learned for an earlier domain (segment {learned_on:g}; "
                                 f"the inputs changed since, segment {self._min_segment})",
                                 version=v)
        candidate = self._build(current, payload)
        time.sleep(0)
        if canary:
            self._canary(current, candidate, v)
            time.sleep(0)
        self._history.append(current)
        self.runtime.swap_state(candidate)
        if self._confidence:
            self._monitor = (float(np.mean(self._confidence)), [])
        self._arm_guard()
        return candidate

    def _arm_guard(self) -> None:
        """Watch that the inputs stay like the newest ones seen since the last change (at
        least ``guard.min_reference`` of them; until there are, arm later)."""
        self._guard_pending = False
        if self.guard is None:
            return
        n = min(_GUARD_REFERENCE, self._since_change, len(self._buffer))
        if n < self.guard.min_reference:
            self.guard.clear()
            self._guard_pending = True
            return
        self.guard.set_reference(np.stack(list(self._buffer)[-n:]))

    def _build(self, current: ModelState, payload: UpdatePayload) -> ModelState:
        """The state ``payload`` describes: its parts on top of the bundle's own state (a
        part the update does not carry is the bundle's, never a leftover of an earlier
        update), keeping the current detector and metadata."""
        parts, v = payload.parts, payload.version
        base = self._base
        try:
            head = base.head
            if "head.weight" in parts or "head.bias" in parts:
                arrays = head.arrays()
                head = LinearHead(parts.get("head.weight", arrays.get("weight")),
                                  parts.get("head.bias", arrays.get("bias")))
            adapter = base.adapter
            if ("adapter.down" in parts) != ("adapter.up" in parts):
                raise UpdateRejected("adapter.down and adapter.up must come together",
                                     version=v)
            if "adapter.down" in parts:
                adapter = LowRankAdapter(parts["adapter.down"], parts["adapter.up"])
            prompt = parts.get("prompt", base.prompt)
            input_filter = parts.get("filter", base.input_filter)
            if ("norm.scale" in parts) != ("norm.shift" in parts):
                raise UpdateRejected("norm.scale and norm.shift must come together",
                                     version=v)
            # the cloud's own feature norm, if it sent one; a local alignment never stays
            # (the cloud learned the other parts without it)
            norm = (FeatureNorm(parts["norm.scale"], parts["norm.shift"])
                    if "norm.scale" in parts else None)
            candidate = current.evolve(
                head=head, adapter=adapter, prompt=prompt, input_filter=input_filter,
                feature_norm=norm, metadata={**current.metadata, CLOUD_VERSION: v,
                                             SERVING_CLOUD: not payload.metrics.get(
                                                 REVERT_METRIC, 0.0)})
            spec = self.runtime.bundle.input_spec
            candidate.check_compatible(spec.shape, self.runtime.bundle.manifest.feature_dim,
                                       self.runtime.bundle.encoder_sha256)
            if head.num_classes != current.head.num_classes:
                raise UpdateRejected(f"head has {head.num_classes} classes, the device "
                                     f"{current.head.num_classes}", version=v)
        except UpdateRejected:
            raise
        except (EdgeclError, TypeError, ValueError) as exc:
            raise UpdateRejected(f"does not fit this device: {exc}", version=v) from exc
        return candidate

    def _canary(self, current: ModelState, candidate: ModelState, v: int) -> None:
        if len(self._buffer) < self.canary.min_samples:
            return
        recent = np.stack(list(self._buffer))
        old = self.runtime.predict_with(current, recent)
        new = self.runtime.predict_with(candidate, recent)
        disagreement = float(np.mean(old.labels != new.labels))
        h_new = float(_norm_entropy(new.probabilities).mean())
        d_entropy = h_new - float(_norm_entropy(old.probabilities).mean())
        share = float(np.bincount(new.labels).max() / len(new.labels))
        share_before = float(np.bincount(old.labels).max() / len(old.labels))
        c = self.canary
        if disagreement > c.max_disagreement:
            raise UpdateRejected(f"canary: changes {disagreement:.2f} of recent predictions "
                                 f"(limit {c.max_disagreement:.2f})", version=v)
        if d_entropy > c.max_entropy_increase and h_new > c.max_entropy:
            raise UpdateRejected(f"canary: mean entropy rises by {d_entropy:.3f} to "
                                 f"{h_new:.3f} (limits {c.max_entropy_increase:.3f}, "
                                 f"{c.max_entropy:.3f})", version=v)
        if share > c.max_class_share >= share_before:
            raise UpdateRejected(f"canary: one class takes {share:.2f} of recent "
                                 f"predictions (limit {c.max_class_share:.2f})", version=v)

    def _event(self, version: int, action: str, reason: str) -> None:
        with self._lock:
            self.events.append(UpdateEvent(version, action, reason, time.time()))

    # -- persistence -----------------------------------------------------------------------
    def _persist(self, update: SignedUpdate, version: int) -> None:
        if self.state_dir is None:
            return
        from edgecl.wire import update_to_proto

        data = update_to_proto(update).SerializeToString()
        atomic_write_bytes(self.state_dir / "updates" / f"v{version:012d}.bin", data)
        self._write_active(version)
        kept = sorted((self.state_dir / "updates").glob("v*.bin"))
        for old in kept[:-(self.keep + 1)]:
            old.unlink(missing_ok=True)

    def _write_active(self, version: int) -> None:
        if self.state_dir is not None:
            record = {"cloud_version": version, "blocked": sorted(self._blocked)}
            atomic_write_bytes(self.state_dir / _ACTIVE, json.dumps(record).encode())

    def _restore(self) -> None:
        """Re-verify and re-apply the persisted updates up to the active version."""
        from edgecl._proto import edgecl_pb2
        from edgecl.wire import update_from_proto

        assert self.state_dir is not None
        try:
            record = json.loads((self.state_dir / _ACTIVE).read_bytes())
            active = int(record["cloud_version"])
            self._blocked = {int(v) for v in record.get("blocked", [])}
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as exc:
            self._event(0, "rejected", f"unreadable {_ACTIVE}: {exc}; serving the bundle")
            return
        for path in sorted((self.state_dir / "updates").glob("v*.bin")):
            version = int(path.stem[1:])
            if version > active or version in self._blocked:
                continue
            try:
                msg = edgecl_pb2.Update.FromString(path.read_bytes())
                payload = self.verifier.verify(update_from_proto(msg))
                with self._lock:
                    self._accept(payload, canary=False)
                self._monitor = None
                self._event(version, "restored", str(path.name))
            except (EdgeclError, DecodeError, ValueError, OSError) as exc:
                reason = getattr(exc, "reason", str(exc))
                self._event(version, "rejected", f"cannot restore {path.name}: {reason}")
