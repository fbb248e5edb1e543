"""Applying cloud updates on a device: verify, canary, hot swap, keep history, roll back.

An update is verified (signature and key before anything of it is decoded; then the
encoder sha256, the addressee: this device, or its group; a version at most
``max_version_step`` above the applied one), checked (newer than the last applied cloud
version, at least one part unless it is an explicit revert, shapes, every part finite and
within the bundle's value bounds), tried on the bundle's fixed probe inputs (finite
outputs, no collapse onto one class: an empty canary buffer is no excuse) and on the
device's recent inputs (the canary: prediction disagreement with the current state and
mean entropy), and only then swapped in atomically. Every refusal is an
:class:`UpdateRejected` with a reason, logged, and counted (:meth:`UpdateManager.counts`,
:meth:`UpdateManager.rejections`); the device keeps serving its current state. The last
``keep`` states stay in memory for :meth:`UpdateManager.rollback`;
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
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from edgecl._exceptions import ConfigError, EdgeclError, InvalidInput, UpdateRejected
from edgecl.bundle import bound_of
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
#: Default largest step of a cloud version above the applied one (``max_version_step``).
DEFAULT_MAX_VERSION_STEP = 1_000_000
_REVERT_PARTS = {"head.weight": "weight", "head.bias": "bias"}
log = logging.getLogger("edgecl.device")


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
    ``min_samples``: below this many buffered inputs the recent-input canary is skipped.
    ``probe``: also try every candidate on the bundle's fixed probe inputs (whatever the
    buffer holds, so an empty buffer is no excuse): its outputs must be finite.
    ``probe_max_class_share``: when set, also the largest share of one class among the
    candidate's probe predictions (unless the bundle's own state puts more there). Off by
    default: the probe inputs are the bundle's own (clean) domain, and an update learned
    for a severe shift legitimately maps them to few classes (measured: a validated
    contrast update put all clean probe inputs on one class).
    """

    max_disagreement: float = 0.8
    max_entropy_increase: float = 0.15
    max_entropy: float = 0.75
    max_class_share: float = 0.9
    min_samples: int = 16
    probe: bool = True
    probe_max_class_share: float | None = None


@dataclass(frozen=True)
class UpdateOutcome:
    """What :class:`UpdateManager` did with one update (truthy iff it was applied).

    ``verified``: the update is genuine and meant for this device (signature, encoder,
    addressee, version within the allowed step), so a sync client may move its cursor to
    ``version`` even when a later check refused it; an unverified update moves nothing.
    """

    applied: bool
    verified: bool
    version: int
    reason: str = "ok"

    def __bool__(self) -> bool:
        return self.applied


@dataclass(frozen=True)
class UpdateEvent:
    """One entry of the update history: what happened to which cloud version, and why."""

    cloud_version: int
    action: str  # "applied", "rejected", "rolled_back", "restored", "reverted"
    reason: str
    at: float
    kind: str = ""  # a rejection's kind (signature, canary, probe...)


def _norm_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0)
    return -(q * np.log(q)).sum(axis=1) / np.log(p.shape[1])


class UpdateManager:
    """Receives signed updates for one :class:`DeviceRuntime` and applies them safely.

    Use it as the ``on_update`` callback of the sync client (calling it returns an
    :class:`UpdateOutcome`, truthy iff applied) and feed it what the app predicts with
    :meth:`observe`. ``device_id`` and ``group`` name the device: it accepts only updates
    addressed to its own id, or to no id and its group (a :class:`SyncClient` fills them
    in with :meth:`bind_device`; a manager that knows no id cannot check the addressee).
    ``max_version_step``: largest accepted step of a cloud version above the applied one
    (a version far ahead would make every later genuine update stale).

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
                 input_guard: InputGuard | bool = True, device_id: str | None = None,
                 group: str = "", max_version_step: int = DEFAULT_MAX_VERSION_STEP) -> None:
        if keep < 1 or buffer_size < 1 or monitor_window < 1 or not 0 < collapse_ratio < 1:
            raise ConfigError("keep, buffer_size and monitor_window must be >= 1 and "
                              "collapse_ratio in (0, 1)")
        if max_version_step < 1:
            raise ConfigError("max_version_step must be >= 1")
        self.runtime, self.verifier = runtime, verifier
        self.device_id, self.group = device_id, group
        self.max_version_step = int(max_version_step)
        self._rejections: Counter[str] = Counter()
        self._bounds = runtime.bundle.update_bounds()
        self._probe: tuple[np.ndarray, float] | None = None  # inputs, bundle's top share
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

    def rejections(self) -> dict[str, int]:
        """Rejected updates by kind (signature, malformed, encoder, addressee, version, stale,
        segment, parts, bounds, shape, probe, canary, error)."""
        with self._lock:
            return dict(self._rejections)

    def bind_device(self, device_id: str, group: str = "") -> None:
        """Name the device whose updates this manager accepts (its id and group)."""
        with self._lock:
            self.device_id, self.group = device_id, group

    def __call__(self, update: SignedUpdate) -> UpdateOutcome:
        """Sync-client callback: apply ``update``; a falsy outcome (and an event, a log
        line and a count) if rejected. Never raises for anything an update contains."""
        return self._process(update)[0]

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
        outcome, state, error = self._process(update)
        if error is not None:
            raise error
        assert state is not None and outcome.applied
        return state

    def _process(self, update: SignedUpdate
                 ) -> tuple[UpdateOutcome, ModelState | None, UpdateRejected | None]:
        """Apply ``update`` if it passes every check; any failure is a rejection."""
        verified, version = False, 0
        try:
            payload = self.verifier.verify(update)
            version = payload.version
            with self._lock:
                self._admit(payload)
            verified = True
            time.sleep(0)  # let predict threads run between the stages of a swap (GIL)
            with self._lock:
                state = self._accept(payload)
        except UpdateRejected as exc:
            return self._rejected(exc, verified, version), None, exc
        except Exception as exc:  # a check that broke: refuse, never stop the update path
            log.exception("checking an update failed")
            err = _rejection("error", f"could not be checked: {exc!r}", version)
            return self._rejected(err, verified, version), None, err
        self._persist(update, payload.version)
        self._event(payload.version, "applied", "ok")
        return UpdateOutcome(True, True, payload.version), state, None

    def _rejected(self, exc: UpdateRejected, verified: bool, version: int) -> UpdateOutcome:
        """Record, log and count one rejection."""
        kind = getattr(exc, "kind", None) or ("signature" if not verified else "other")
        with self._lock:
            self._rejections[kind] += 1
        self._event(exc.version or 0, "rejected", exc.reason, kind)
        log.warning("update rejected", extra={"kind": kind, "version": exc.version,
                                              "reason": exc.reason})
        return UpdateOutcome(False, verified, version, exc.reason)

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
    def _admit(self, payload: UpdatePayload) -> None:
        """Is this signed update meant for this device, at a plausible version? (What
        lets a sync client move its cursor past it.)"""
        v = payload.version
        if payload.encoder_sha256 != self.runtime.bundle.encoder_sha256:
            raise _rejection("encoder", "made for another encoder "
                             f"({payload.encoder_sha256[:12]!r} != "
                             f"{self.runtime.bundle.encoder_sha256[:12]})", v)
        if not self._addressed_to_me(payload):
            raise _rejection("addressee", f"addressed to device {payload.device_id[:40]!r}, "
                             f"group {payload.group[:40]!r}; this is device "
                             f"{self.device_id!r}, group {self.group!r}", v)
        if v > self.cloud_version + self.max_version_step:
            raise _rejection("version", f"version {v} is more than {self.max_version_step} "
                             f"above the applied {self.cloud_version}", v)

    def _addressed_to_me(self, payload: UpdatePayload) -> bool:
        """Its device id is this device's, or it names no device and this device's group.
        A manager that knows no device id (none given, no sync client bound) cannot tell."""
        if self.device_id is None:
            return True
        if payload.device_id:
            return payload.device_id == self.device_id
        return payload.group == self.group

    def _check_parts(self, payload: UpdatePayload) -> None:
        """At least one part unless it is a revert; every part within its value bound."""
        v = payload.version
        if not payload.parts and not _is_revert(payload):
            raise _rejection("parts", "carries no parts (and is not a revert)", v)
        for name, arr in payload.parts.items():
            bound = bound_of(self._bounds, name)
            top = float(np.max(np.abs(arr))) if arr.size else 0.0
            if not np.isfinite(top) or top > bound:
                raise _rejection("bounds", f"part {name} has values up to {top:.3g} "
                                 f"(bound {bound:.3g})", v)
        if _is_revert(payload):
            self._check_revert(payload)

    def _check_revert(self, payload: UpdatePayload) -> None:
        """A revert may carry only the bundle's own head (as the cloud sends it, fp16)."""
        arrays = self._base.head.arrays()
        for name, arr in payload.parts.items():
            key = _REVERT_PARTS.get(name)
            own = None if key is None else arrays.get(key)
            if own is None or own.shape != arr.shape or not np.allclose(
                    arr, own, rtol=2e-3, atol=1e-6):
                raise _rejection("parts", f"a revert must carry the bundle's own head; "
                                 f"its {name} is not", payload.version)

    def _accept(self, payload: UpdatePayload, *, canary: bool = True) -> ModelState:
        current = self.runtime.state
        v = payload.version
        self._admit(payload)
        if v in self._blocked:
            raise _rejection("stale", f"version {v} was rolled back on this device", v)
        if v <= self.cloud_version:
            raise _rejection("stale", f"replayed or stale: version {v} is not newer than "
                             f"the applied {self.cloud_version}", v)
        learned_on = payload.metrics.get("segment")
        if learned_on is not None and learned_on < self._min_segment:
            raise _rejection("segment", f"learned for an earlier domain (segment "
                             f"{learned_on:g}; the inputs changed since, segment "
                             f"{self._min_segment})", v)
        self._check_parts(payload)
        candidate = self._build(current, payload)
        time.sleep(0)
        if canary:
            self._canary(current, candidate, v)
            self._probe_check(candidate, v)
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
        if _is_revert(payload):  # the bundle's own state, exactly (checked in _check_revert)
            parts = {}
        try:
            head = base.head
            if "head.weight" in parts or "head.bias" in parts:
                arrays = head.arrays()
                head = LinearHead(parts.get("head.weight", arrays.get("weight")),
                                  parts.get("head.bias", arrays.get("bias")))
            adapter = base.adapter
            if ("adapter.down" in parts) != ("adapter.up" in parts):
                raise _rejection("shape", "adapter.down and adapter.up must come together", v)
            if "adapter.down" in parts:
                adapter = LowRankAdapter(parts["adapter.down"], parts["adapter.up"])
            prompt = parts.get("prompt", base.prompt)
            input_filter = parts.get("filter", base.input_filter)
            if ("norm.scale" in parts) != ("norm.shift" in parts):
                raise _rejection("shape", "norm.scale and norm.shift must come together", v)
            # the cloud's own feature norm, if it sent one; a local alignment never stays
            # (the cloud learned the other parts without it)
            norm = (FeatureNorm(parts["norm.scale"], parts["norm.shift"])
                    if "norm.scale" in parts else None)
            candidate = current.evolve(
                head=head, adapter=adapter, prompt=prompt, input_filter=input_filter,
                feature_norm=norm, metadata={**current.metadata, CLOUD_VERSION: v,
                                             SERVING_CLOUD: not _is_revert(payload)})
            spec = self.runtime.bundle.input_spec
            candidate.check_compatible(spec.shape, self.runtime.bundle.manifest.feature_dim,
                                       self.runtime.bundle.encoder_sha256)
            if head.num_classes != current.head.num_classes:
                raise _rejection("shape", f"head has {head.num_classes} classes, the device "
                                 f"{current.head.num_classes}", v)
        except UpdateRejected:
            raise
        except (EdgeclError, TypeError, ValueError) as exc:
            raise _rejection("shape", f"does not fit this device: {exc}", v) from exc
        return candidate

    def _probe_inputs(self) -> tuple[np.ndarray, float]:
        """The bundle's probe inputs and the largest class share of its own state there."""
        if self._probe is None:
            x = self.runtime.bundle.probe_inputs()
            labels = self.runtime.predict_with(self._base, x).labels
            self._probe = (x, _top_share(labels))
        return self._probe

    def _probe_check(self, candidate: ModelState, v: int) -> None:
        """Finite outputs on the probe and, when configured, no collapse onto one class
        that the bundle's own state does not show there."""
        if not self.canary.probe:
            return
        x, base_share = self._probe_inputs()
        pred = self.runtime.predict_with(candidate, x)
        if not (np.isfinite(pred.probabilities).all() and np.isfinite(pred.logits).all()):
            raise _rejection("probe", "probe: non-finite outputs", v)
        if self.canary.probe_max_class_share is None:
            return
        share = _top_share(pred.labels)
        limit = max(self.canary.probe_max_class_share, base_share)
        if share > limit:
            raise _rejection("probe", f"probe: one class takes {share:.2f} of the probe "
                             f"inputs (limit {limit:.2f}; the bundle's own state "
                             f"{base_share:.2f})", v)

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
        if not np.isfinite(new.probabilities).all():
            raise _rejection("canary", "canary: non-finite outputs on recent inputs", v)
        if disagreement > c.max_disagreement:
            raise _rejection("canary", f"canary: changes {disagreement:.2f} of recent "
                             f"predictions (limit {c.max_disagreement:.2f})", v)
        if d_entropy > c.max_entropy_increase and h_new > c.max_entropy:
            raise _rejection("canary", f"canary: mean entropy rises by {d_entropy:.3f} to "
                             f"{h_new:.3f} (limits {c.max_entropy_increase:.3f}, "
                             f"{c.max_entropy:.3f})", v)
        if share > c.max_class_share >= share_before:
            raise _rejection("canary", f"canary: one class takes {share:.2f} of recent "
                             f"predictions (limit {c.max_class_share:.2f})", v)

    def _event(self, version: int, action: str, reason: str, kind: str = "") -> None:
        with self._lock:
            self.events.append(UpdateEvent(version, action, reason, time.time(), kind))

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
            record = {"cloud_version": version, "blocked": sorted(self._blocked),
                      "device_id": self.device_id, "group": self.group}
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
            if self.device_id is None and record.get("device_id") is not None:
                # the identity the updates were accepted under (a sync client binds it)
                self.device_id = str(record["device_id"])
                self.group = str(record.get("group") or "")
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
            except (EdgeclError, DecodeError, ValueError, TypeError, OSError) as exc:
                reason = getattr(exc, "reason", str(exc))
                self._event(version, "rejected", f"cannot restore {path.name}: {reason}")


def _rejection(kind: str, reason: str, version: int | None) -> UpdateRejected:
    """An :class:`UpdateRejected` that carries its ``kind`` (for the counts)."""
    exc = UpdateRejected(reason, version=version)
    exc.kind = kind  # type: ignore[attr-defined]
    return exc


def _is_revert(payload: UpdatePayload) -> bool:
    """Whether the cloud marked ``payload`` as restoring the bundle's own state."""
    return bool(payload.metrics.get(REVERT_METRIC, 0.0))


def _top_share(labels: np.ndarray) -> float:
    """Share of the most frequent label."""
    return float(np.bincount(np.asarray(labels)).max() / max(len(labels), 1))
