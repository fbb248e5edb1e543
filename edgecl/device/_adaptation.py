"""AdaptationWorker: label-free test-time adaptation beside predict, published as states.

``predict`` never adapts. The worker receives each prediction's raw encoder features
(a non-blocking hand-off; when its queue is full the batch is skipped and counted), runs a
parametric method (:class:`edgecl.adapt.ParametricAdapter`, default ``"align"``) in its own
thread, and every ``publish_every`` samples swaps in a new :class:`ModelState` with the
adapted parts (compare-and-swap: a cloud update that landed meanwhile wins, and the worker
starts over from it). Published states are kept (``rollback``), the latest is persisted
atomically (``state_dir``) and restored on restart when it still fits. A collapse guard
resets the method and publishes the reset state. While the runtime serves a cloud update
(``defer_to_cloud``, the default) the worker stands down: the cloud learned that update
for the current domain against un-normalised features; local adaptation resumes when the
device reverts to the bundle's parts (e.g. at a detected domain shift).
"""

from __future__ import annotations

import io
import json
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import BundleError, ConfigError
from edgecl.bundle import atomic_write_bytes
from edgecl.device._prediction import Prediction
from edgecl.device._runtime import DeviceRuntime, StateConflict
from edgecl.device._state import ModelState
from edgecl.device._updates import SERVING_CLOUD
from edgecl.heads import FeatureNorm, LinearHead, LowRankAdapter

STATE_FILE = "adapted_state.npz"
ORIGIN = "adapted_by"


@dataclass
class AdaptationStats:
    """Counters of an :class:`AdaptationWorker`."""

    batches: int = 0
    samples: int = 0
    skipped_batches: int = 0
    published: int = 0
    conflicts: int = 0
    rebases: int = 0
    collapse_resets: int = 0
    rollbacks: int = 0
    deferred_batches: int = 0
    errors: int = 0
    last_error: str = ""
    restored: str = ""
    last_version: int = 0


def _parts_to_arrays(changes: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for part, obj in changes.items():
        if obj is None:
            continue
        if part == "head" and not isinstance(obj, LinearHead):
            raise ConfigError(f"cannot persist a {obj.kind!r} head")
        arrays.update({f"{part}.{k}": np.asarray(v) for k, v in obj.arrays().items()})
    return arrays


def _arrays_to_parts(arrays: dict[str, np.ndarray], parts: list[str]) -> dict[str, Any]:
    built: dict[str, Any] = {}
    for part in parts:
        if part == "feature_norm":
            built[part] = (FeatureNorm(arrays["feature_norm.scale"], arrays["feature_norm.shift"])
                           if "feature_norm.scale" in arrays else None)
        elif part == "head":
            built[part] = LinearHead(arrays["head.weight"], arrays["head.bias"])
        elif part == "adapter":
            built[part] = (LowRankAdapter(arrays["adapter.down"], arrays["adapter.up"])
                           if "adapter.down" in arrays else None)
        else:
            raise BundleError(f"unknown state part {part!r}")
    return built


class AdaptationWorker:
    """Adapts a runtime's state in the background, off the predict path.

    Examples
    --------
    >>> worker = AdaptationWorker(runtime, "align", state_dir="state/")  # doctest: +SKIP
    >>> pred = worker.predict(images)     # predict + hand the batch to the worker
    >>> worker.close()
    """

    def __init__(self, runtime: DeviceRuntime, method: Any = "align", *,
                 publish_every: int = 64, batch_samples: int = 64,
                 queue_batches: int = 64, keep: int = 5,
                 state_dir: str | os.PathLike[str] | None = None, guard: bool = True,
                 start: bool = True, defer_to_cloud: bool = True,
                 **hyperparameters: Any) -> None:
        from edgecl.adapt import ParametricAdapter, adapter_for

        if min(publish_every, batch_samples, queue_batches, keep) < 1:
            raise ConfigError("publish_every, batch_samples, queue_batches and keep must be "
                              ">= 1")
        self.runtime = runtime
        self._factory = (lambda: adapter_for(runtime, method, guard=guard, **hyperparameters)
                         ) if isinstance(method, str) else None
        if self._factory is None:
            inner = getattr(method, "inner", method)
            if not isinstance(inner, ParametricAdapter) and \
                    not callable(getattr(method, "state_changes", None)):
                raise ConfigError("the worker needs a parametric method (align, tent, eata, "
                                  "cotta or align+one of them)")
            self.method = method
        else:
            self.method = self._factory()
            if not callable(getattr(self.method, "state_changes", None)):
                raise ConfigError(f"{method!r} adapts outputs only; the worker publishes "
                                  "model states (use align, tent, eata, cotta, align+...)")
        self.publish_every, self.batch_samples, self.keep = publish_every, batch_samples, keep
        self.defer_to_cloud = defer_to_cloud
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.stats = AdaptationStats()
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray, np.ndarray | None] | None] = \
            queue.Queue(maxsize=queue_batches)
        self._lock = threading.RLock()
        self._history: deque[ModelState] = deque(maxlen=keep)
        self._base = runtime.state          # the state the method adapts from
        self._published: int | None = None  # version of the last state this worker swapped
        self._since_publish = 0
        self._idle = threading.Condition()
        self._pending = 0
        self._gather_lock = threading.Lock()
        self._gathered: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._gathered_n = 0
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._restore()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- the predict side ----------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Prediction:
        """``runtime.predict`` (with features) and :meth:`offer` of the batch."""
        pred = self.runtime.predict(images, return_features=True)
        self.offer(pred, images)
        return pred

    def offer(self, prediction: Prediction, images: np.ndarray | None = None) -> bool:
        """Hand a prediction (made with ``return_features=True``) to the worker without
        blocking. Batches are gathered on the caller's side and queued every
        ``batch_samples`` samples (one wake-up of the worker per chunk); False when the
        queue is full (the chunk is skipped and counted)."""
        if prediction.encoder_features is None:
            raise ConfigError("offer needs a prediction made with return_features=True")
        keep_images = getattr(self.method, "uses_images", False)
        with self._gather_lock:
            self._gathered.append((prediction.encoder_features, prediction.logits,
                                   images if keep_images else None))
            self._gathered_n += len(prediction.encoder_features)
            if self._gathered_n < self.batch_samples:
                return True
            return self._flush()

    def _flush(self) -> bool:
        """Queue what was gathered (caller holds ``_gather_lock``)."""
        if not self._gathered:
            return True
        work, self._gathered, self._gathered_n = self._gathered, [], 0
        images = ([w[2] for w in work] if all(w[2] is not None for w in work) else None)
        item = (np.concatenate([w[0] for w in work]), np.concatenate([w[1] for w in work]),
                None if images is None else np.concatenate(images))
        with self._idle:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.stats.skipped_batches += len(work)
                return False
            self._pending += 1
        return True

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="edgecl-adapt", daemon=True)
            self._thread.start()

    def flush(self) -> None:
        """Queue the batches gathered so far, even if fewer than ``batch_samples``."""
        with self._gather_lock:
            self._flush()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Flush, then block until every offered batch was processed; False on timeout."""
        self.flush()
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Process what is queued, publish it, and stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> AdaptationWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state control ---------------------------------------------------------------------
    def rollback(self) -> ModelState:
        """Serve the previously published state again (as a new version)."""
        with self._lock:
            if not self._history:
                raise ConfigError("no earlier adapted state to roll back to")
            previous = self._history.pop()
            current = self.runtime.state
            state = previous.evolve(version=current.version + 1)
            self.runtime.swap_state(state, if_version=current.version)
            self._published = state.version
            self.stats.rollbacks += 1
            self._persist(state)
            return state

    def revert(self) -> ModelState:
        """Forget the adaptation: reset the method and serve the state it started from."""
        with self._lock:
            self.method.reset()
            self._since_publish = 0
            return self._publish()

    # -- worker thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                with self._lock:
                    if self._since_publish:
                        self._publish()
                return
            try:
                self._process(*item)
            except Exception as exc:  # keep serving; the error is counted and kept
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _process(self, feats: np.ndarray, logits: np.ndarray,
                 images: np.ndarray | None) -> None:
        with self._lock:
            current = self.runtime.state
            expected = self._base.version if self._published is None else self._published
            if current.version != expected:
                self._rebase(current)
            if self.defer_to_cloud and current.metadata.get(SERVING_CLOUD):
                self.stats.deferred_batches += 1  # the cloud's update for this domain
                return                            # serves; local adaptation stands down
            events = len(getattr(self.method, "events", ()))
            self.method.adapt(feats, logits, images=images)
            self.stats.batches += 1
            self.stats.samples += len(feats)
            self._since_publish += len(feats)
            if len(getattr(self.method, "events", ())) > events:
                self.stats.collapse_resets += 1
                self._publish()
            elif self._since_publish >= self.publish_every:
                self._publish()

    def _rebase(self, current: ModelState) -> None:
        """Someone else (a cloud update, a rollback) changed the state: adapt from it."""
        self._base = current
        self._history.clear()
        if self._factory is not None:
            self.method = self._factory()
        else:
            self.method.reset()
        self._published = None
        self._since_publish = 0
        self.stats.rebases += 1

    def _publish(self) -> ModelState:
        current = self.runtime.state
        changes = self.method.state_changes()
        state = self._base.evolve(version=current.version + 1,
                                  metadata={**self._base.metadata,
                                            ORIGIN: getattr(self.method, "name", "?")},
                                  **changes)
        try:
            self.runtime.swap_state(state, if_version=current.version)
        except StateConflict:
            self.stats.conflicts += 1
            self._rebase(self.runtime.state)
            return self.runtime.state
        self._history.append(current)
        self._published = state.version
        self._since_publish = 0
        self.stats.published += 1
        self.stats.last_version = state.version
        self._persist(state, changes)
        return state

    # -- persistence -----------------------------------------------------------------------
    def _persist(self, state: ModelState, changes: dict[str, Any] | None = None) -> None:
        if self.state_dir is None:
            return
        parts = {"feature_norm": state.feature_norm, "head": state.head,
                 "adapter": state.adapter} if changes is None else changes
        meta = {"format": "edgecl.adapted_state", "version": 1,
                "encoder_sha256": self.runtime.bundle.encoder_sha256,
                "base_metadata": {k: v for k, v in self._base.metadata.items()
                                  if isinstance(v, (int, float, str))},
                "parts": sorted(parts), "method": getattr(self.method, "name", "?")}
        buffer = io.BytesIO()
        np.savez(buffer, **_parts_to_arrays(parts), meta=np.array(json.dumps(meta)))
        atomic_write_bytes(self.state_dir / STATE_FILE, buffer.getvalue())

    def _restore(self) -> None:
        assert self.state_dir is not None
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"][()]))
                arrays = {k: data[k] for k in data.files if k != "meta"}
            if meta.get("format") != "edgecl.adapted_state":
                raise BundleError("not an adapted state file")
            if meta.get("encoder_sha256") != self.runtime.bundle.encoder_sha256:
                raise BundleError("made for another encoder")
            base_meta = {k: v for k, v in self._base.metadata.items()
                         if isinstance(v, (int, float, str))}
            if meta.get("base_metadata") != base_meta:
                raise BundleError("the state it adapted from is no longer served")
            parts = _arrays_to_parts(arrays, list(meta["parts"]))
            current = self.runtime.state
            state = self._base.evolve(version=current.version + 1,
                                      metadata={**self._base.metadata,
                                                ORIGIN: meta.get("method", "?")}, **parts)
            self.runtime.swap_state(state, if_version=current.version)
        except Exception as exc:  # a bad file never stops the device: start from the base
            self.stats.restored = f"skipped: {exc}"
            return
        self._published = state.version
        self.stats.restored = f"restored version {state.version} ({meta.get('method')})"
