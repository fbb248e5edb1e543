"""The teacher: a large torch model that labels uploads in batches, off the RPC threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError

log = logging.getLogger("edgecl.cloud")
_CHUNK = 1024  # exported programs guard their batch dimension


class Teacher:
    """A torch module mapping inputs ``(N, C, H, W)`` to logits over ``classes``."""

    def __init__(self, module: Any, classes: Sequence[str], *, threads: int = 1) -> None:
        import torch

        self._torch = torch
        self.module = module
        self.classes = tuple(classes)
        self.threads = int(threads)

    @classmethod
    def from_config(cls, zoo: str, program: str, classes: Sequence[str], threads: int,
                    home: str | None = None) -> Teacher:
        """The zoo's teacher (``zoo = "full"|"tiny"``) or a torch.export ``program``."""
        import torch

        if program:
            if not classes:
                raise ConfigError("teacher.classes is required with teacher.program")
            try:
                module = torch.export.load(program).module()
            except Exception as exc:  # torch raises many types for a bad file
                raise ConfigError(f"cannot load teacher program {program}: {exc}") from exc
            return cls(module, classes, threads=threads)
        from edgecl.cloud._zoo import zoo_teacher

        module, names = zoo_teacher(zoo, home)
        return cls(module, classes or names, threads=threads)

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(N, len(classes))``."""
        torch = self._torch
        torch.set_num_threads(self.threads)
        out = []
        with torch.no_grad():
            for i in range(0, len(inputs), _CHUNK):
                logits = self.module(torch.from_numpy(np.ascontiguousarray(
                    inputs[i:i + _CHUNK], np.float32)))
                out.append(torch.softmax(logits, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


def label_and_uncertainty(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels and uncertainty = entropy / ln C (0 sure ... 1 uniform)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    return probs.argmax(axis=1), -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])


class TeacherPool:
    """``workers`` threads that label every stored, unlabelled sample exactly once.

    Each claims the oldest unclaimed unlabelled samples from the registry in batches, runs
    the teacher and writes label + uncertainty back (only for rows still unlabelled, so a
    sample is never labelled twice, even across restarts or by another replica);
    ``on_labelled(device_id, n)`` is called afterwards (learning triggers). Several
    workers pay off where the teacher serves several batches at once (Ray actors).
    """

    def __init__(self, registry: Any, teacher: Teacher, input_shape: tuple[int, ...], *,
                 batch_size: int = 256,
                 on_labelled: Callable[[dict[str, int]], None] | None = None,
                 metrics: Any = None, claim_s: float = 120.0, workers: int = 1) -> None:
        self.registry, self.teacher, self.shape = registry, teacher, tuple(input_shape)
        self.batch_size, self.on_labelled, self.metrics = batch_size, on_labelled, metrics
        self.claim_s = claim_s  # how long a batch stays claimed (replicas skip it)
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"edgecl-teacher-{i}",
                                          daemon=True) for i in range(max(1, workers))]
        self._count_lock = threading.Lock()
        self.labelled = 0
        self.rate = 0.0  # samples/s of recent batches (EMA); 0 before the first

    def start(self) -> None:
        """Start the workers."""
        for t in self._threads:
            t.start()

    def stop(self, drain: bool = True, timeout: float = 60.0) -> bool:
        """Stop; with ``drain``, label what is already stored first (at most ``timeout``).
        Without, the batch being labelled finishes and the rest waits for the next start.
        Whether the worker ended within ``timeout``."""
        if not any(t.is_alive() for t in self._threads):
            return True
        deadline = time.monotonic() + timeout
        if drain:
            self.wait_idle(timeout)
        self._stop.set()
        self.registry_wake()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def registry_wake(self) -> None:
        with self.registry._changed:
            self.registry._changed.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until every stored sample is labelled (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.registry.unlabelled_count() == 0:
                return True
            self.registry_wake()
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():  # checked between batches: a stop waits for one
            try:
                done = self.step()
            except Exception:  # keep labelling after a bad batch; logged with traceback
                log.exception("teacher batch failed")
                done = 0
            if not done:
                self.registry.wait_unlabelled(0.5)

    def step(self) -> int:
        """Label one batch; the number of samples labelled."""
        started = time.monotonic()
        keys, x = self.registry.unlabelled(self.batch_size, self.shape, claim_s=self.claim_s)
        if not keys:
            return 0
        try:
            labels, unc = label_and_uncertainty(self.teacher.probabilities(x))
        except Exception:
            self.registry.release(keys)  # for the next batch, not after the claim ends
            raise
        per_device = self.registry.set_labels(keys, labels, unc)
        n = sum(per_device.values())
        with self._count_lock:
            self.labelled += n
        if self.metrics is not None:
            self.metrics.labelled.inc(n)
        if per_device and self.on_labelled is not None:
            self.on_labelled(per_device)
        self._measure(len(keys), time.monotonic() - started)
        return len(keys)

    def _measure(self, n: int, seconds: float) -> None:
        """Fold one batch into :attr:`rate` (the hint for refused uploads)."""
        now = n / max(seconds, 1e-6) * len(self._threads)
        with self._count_lock:
            self.rate = now if self.rate == 0.0 else 0.8 * self.rate + 0.2 * now
