"""SampleCollector: drift detection, sampling and the outbox, beside predict, not inside it."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
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
    detector and the outbox. The worker feeds each batch's OOD scores to the optional drift
    detector, asks the policy which samples to send, and puts those into the outbox with
    their uncertainty score as priority.

    Examples
    --------
    >>> collector = SampleCollector(outbox, create_policy("uncertainty"))  # doctest: +SKIP
    >>> pred = runtime.predict(frames, return_features=True)              # doctest: +SKIP
    >>> collector.offer(frames, pred)                                      # doctest: +SKIP
    """

    def __init__(self, outbox: Outbox, policy: SamplingPolicy, *, drift: object | None = None,
                 store: tuple[str, ...] = ("image", "features"), queue_size: int = 256,
                 device_id: str = "device") -> None:
        unknown = set(store) - {"image", "features"}
        if unknown or not store:
            raise ConfigError(f"store must name 'image' and/or 'features', got {store!r}")
        self.outbox = outbox
        self.policy = policy
        self.drift = drift
        self.store = tuple(store)
        self.device_id = device_id
        self.shifts: list[object] = []
        self._queue: queue.Queue[tuple[np.ndarray, Prediction, float] | None] = queue.Queue(
            maxsize=queue_size)
        self._lock = threading.Lock()
        self._counts = dict(offered=0, skipped=0, processed=0, selected=0, stored=0)
        self._seq = 0
        self._worker = threading.Thread(target=self._run, name="edgecl-collector", daemon=True)
        self._worker.start()

    def offer(self, images: np.ndarray, prediction: Prediction) -> bool:
        """Hand a predicted batch to the worker; False (counted) if the queue is full."""
        if "features" in self.store and prediction.features is None:
            raise ConfigError("predict with return_features=True to store features")
        batch = images if images.ndim == 4 else images[None]
        try:
            self._queue.put_nowait((batch, prediction, time.time()))
        except queue.Full:
            with self._lock:
                self._counts["offered"] += 1
                self._counts["skipped"] += 1
            return False
        with self._lock:
            self._counts["offered"] += 1
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every offered batch has been processed and handed to the outbox."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                raise TimeoutError("collector did not drain in time")
            time.sleep(0.001)

    def stats(self) -> CollectorStats:
        """Current counters."""
        with self._lock:
            return CollectorStats(shifts=len(self.shifts), **self._counts)

    def close(self) -> None:
        """Process what is queued, then stop the worker (the outbox stays open)."""
        self._queue.put(None)
        self._worker.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._process(*item)
            except Exception:  # the worker must survive any one bad batch
                logger.exception("sample collector: batch failed")
            finally:
                self._queue.task_done()

    def _process(self, images: np.ndarray, pred: Prediction, now: float) -> None:
        if self.drift is not None and pred.ood_score is not None:
            self.shifts.extend(self.drift.update_many(pred.ood_score))  # type: ignore[attr-defined]
        sel = self.policy.select(entropy=pred.entropy(), ood_score=pred.ood_score,
                                 features=pred.features, timestamp=now)
        stored = 0
        for i in sel.indices:
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
                "confidence": float(pred.confidence[i]), "state_version": pred.state_version}
            if pred.ood_score is not None:
                meta["ood_score"] = float(pred.ood_score[i])
            sample_id = f"{self.device_id}-{uuid.uuid4().hex}"
            stored += bool(self.outbox.put(sample_id, arrays, priority=float(sel.scores[i]),
                                           meta=meta, created_at=now))
        with self._lock:
            self._counts["processed"] += 1
            self._counts["selected"] += len(sel.indices)
            self._counts["stored"] += stored
