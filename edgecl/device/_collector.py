"""SampleCollector: drift detection, sampling and the outbox, beside predict, not inside it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.device._outbox import Outbox
from edgecl.device._prediction import Prediction
from edgecl.device._sampling import SamplingPolicy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectorStats:
    """Counters of a :class:`SampleCollector`."""

    offered: int
    skipped: int
    processed: int
    selected: int
    stored: int
    shifts: int


class SampleCollector:
    """Chooses which predicted samples go to the cloud, on a worker thread.

    :meth:`offer` only enqueues (it never waits: when the queue is full the batch is
    skipped and counted), so predict latency is unaffected by the policy, the drift
    detector and the outbox. The worker gathers offered batches into micro-batches (up to
    ``min_batch`` samples or ``linger_seconds``, so a batch-1 caller does not pay the
    policy's fixed cost per frame), feeds their OOD scores to the optional ``drift``
    detector and their images to the optional ``input_drift`` monitor
    (:class:`~edgecl.ood.InputDriftMonitor`), tells the policy when either saw a shift
    (:meth:`~SamplingPolicy.notify_shift`), asks it which samples to send, and puts those
    into the outbox with their uncertainty score as priority.

    Every detected shift starts a new *segment*; each stored sample carries the segment
    it was seen in, so the cloud learns from the newest domain only. ``on_shift(reason,
    segment)`` is called at every shift, on the worker thread, before the samples of that
    batch are selected: wire it to :meth:`UpdateManager.domain_changed` so that an update
    learned for the old inputs is not served on the new ones (do no harm; the cloud then
    sends one learned on the new segment, or restores the bundle's state).

    Examples
    --------
    >>> collector = SampleCollector(outbox, create_policy("uncertainty"),
    ...                             input_drift=InputDriftMonitor(),
    ...                             on_shift=manager.domain_changed)       # doctest: +SKIP
    >>> pred = runtime.predict(frames, return_features=True)              # doctest: +SKIP
    >>> collector.offer(frames, pred)                                      # doctest: +SKIP
    """

    def __init__(self, outbox: Outbox, policy: SamplingPolicy, *, drift: object | None = None,
                 input_drift: object | None = None,
                 store: tuple[str, ...] = ("image", "features"), queue_size: int = 4096,
                 device_id: str = "device", min_batch: int = 32,
                 linger_seconds: float = 0.05,
                 on_shift: Callable[[str, int], object] | None = None) -> None:
        unknown = set(store) - {"image", "features"}
        if unknown or not store:
            raise ConfigError(f"store must name 'image' and/or 'features', got {store!r}")
        self.outbox = outbox
        self.policy = policy
        self.drift = drift
        self.input_drift = input_drift
        self.store = tuple(store)
        self.device_id = device_id
        self.min_batch = int(min_batch)
        self.linger_seconds = float(linger_seconds)
        self.shifts: list[object] = []
        self.on_shift = on_shift
        self.segment = 0
        self.queue_size = int(queue_size)
        self._pending: list[tuple[np.ndarray, Prediction, float]] = []
        self._pending_samples = 0
        self._in_flight = 0
        self._stop = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._counts = dict(offered=0, skipped=0, processed=0, selected=0, stored=0)
        self._seq = 0
        self._worker = threading.Thread(target=self._run, name="edgecl-collector", daemon=True)
        self._worker.start()

    def offer(self, images: np.ndarray, prediction: Prediction) -> bool:
        """Hand a predicted batch to the worker; False (counted) if its backlog is full.

        Costs an append under a lock: the worker is woken only once ``min_batch`` samples
        are waiting (or by its ``linger_seconds`` timer), not on every frame.
        """
        if "features" in self.store and prediction.features is None:
            raise ConfigError("predict with return_features=True to store features")
        batch = images if images.ndim == 4 else images[None]
        with self._lock:
            self._counts["offered"] += 1
            if self._stop or self._pending_samples + len(batch) > self.queue_size:
                self._counts["skipped"] += 1
                return False
            self._pending.append((batch, prediction, time.time()))
            self._pending_samples += len(batch)
            full = self._pending_samples >= self.min_batch
        if full:
            self._wake.set()
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every offered batch has been processed and handed to the outbox."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._pending and not self._in_flight:
                    return
            self._wake.set()
            if time.monotonic() > deadline:
                raise TimeoutError("collector did not drain in time")
            time.sleep(0.0005)

    def stats(self) -> CollectorStats:
        """Current counters."""
        with self._lock:
            return CollectorStats(shifts=len(self.shifts), **self._counts)

    def close(self) -> None:
        """Process what is pending, then stop the worker (the outbox stays open)."""
        with self._lock:
            self._stop = True
        self._wake.set()
        self._worker.join()

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=self.linger_seconds)
            self._wake.clear()
            with self._lock:
                items, self._pending = self._pending, []
                self._pending_samples = 0
                self._in_flight = len(items)
                stop = self._stop
            if items:
                try:
                    self._process(*_merge(items))
                except Exception:  # the worker must survive any one bad batch
                    logger.exception("sample collector: batch failed")
                finally:
                    with self._lock:
                        self._in_flight = 0
            if stop:
                return

    def _process(self, images: np.ndarray, pred: Prediction, now: float, batches: int) -> None:
        shifts: list[object] = []
        if self.input_drift is not None:
            shifts.extend(self.input_drift.update(images))  # type: ignore[attr-defined]
        if self.drift is not None and pred.ood_score is not None:
            shifts.extend(self.drift.update_many(pred.ood_score))  # type: ignore[attr-defined]
        if shifts:
            self.shifts.extend(shifts)
            self.segment += len(shifts)
            self.policy.notify_shift()
            if self.on_shift is not None:
                try:
                    self.on_shift(f"domain shift ({getattr(shifts[0], 'detector', 'drift')})",
                                  self.segment)
                except Exception:  # the app's callback must not stop sampling
                    logger.exception("sample collector: on_shift failed")
        sel = self.policy.select(entropy=pred.entropy(), ood_score=pred.ood_score,
                                 features=pred.features, timestamp=now)
        stored = 0
        versions = np.broadcast_to(pred.state_version, (len(pred),))
        explored = sel.explored_mask()
        for k, i in enumerate(sel.indices):
            arrays = {}
            if "image" in self.store:
                arrays["image"] = images[i]
            if "features" in self.store:
                arrays["features"] = pred.features[i]  # type: ignore[index]
            with self._lock:
                self._seq += 1
                seq = self._seq
            meta: dict[str, str | int | float] = {
                "device": self.device_id, "seq": seq, "label": int(pred.labels[i]),
                "confidence": float(pred.confidence[i]),
                "state_version": int(versions[i]), "explored": int(explored[k]),
                "segment": self.segment}
            if pred.ood_score is not None:
                meta["ood_score"] = float(pred.ood_score[i])
            sample_id = f"{self.device_id}-{uuid.uuid4().hex}"
            stored += bool(self.outbox.put(sample_id, arrays, priority=float(sel.scores[i]),
                                           meta=meta, created_at=now))
        with self._lock:
            self._counts["processed"] += batches
            self._counts["selected"] += len(sel.indices)
            self._counts["stored"] += stored


def _merge(items: list[tuple[np.ndarray, Prediction, float]]
           ) -> tuple[np.ndarray, Prediction, float, int]:
    """One (images, prediction, latest time, number of batches) from several offers."""
    if len(items) == 1:
        images, pred, now = items[0]
        return images, pred, now, 1
    preds = [p for _, p, _ in items]

    def cat(field: str) -> np.ndarray | None:
        parts = [getattr(p, field) for p in preds]
        return None if any(v is None for v in parts) else np.concatenate(parts)

    versions = np.concatenate([np.full(len(p), p.state_version) for p in preds])
    merged = Prediction(labels=cat("labels"), probabilities=cat("probabilities"),
                        confidence=cat("confidence"), logits=cat("logits"),
                        state_version=versions,  # type: ignore[arg-type]
                        features=cat("features"), ood_score=cat("ood_score"),
                        is_ood=cat("is_ood"))
    return (np.concatenate([im for im, _, _ in items]), merged, items[-1][2], len(items))
