"""Where the service's heavy work runs (``[compute] backend``): in this process
("local"), or on a Ray cluster ("ray"): teacher labelling by a pool of Ray actors that each
hold the teacher, and the training of every learning job as a Ray task.

Labelling stays exactly once and learning one job per target whatever runs them: the
labellers claim their batches in the registry, and a job holds its target's lease, before
any work is sent to the cluster. Workers read the served bundles and the teacher from the
same paths as the service (a local cluster, or a volume every node mounts).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Learners built in a Ray worker, by bundle and config (built once per worker process).
_LEARNERS: dict[Any, Any] = {}


class _TeacherHost:
    """A Ray actor holding one teacher (built where the actor runs)."""

    def __init__(self, spec: tuple[Any, ...]) -> None:
        from edgecl.cloud._teacher import Teacher

        self.teacher = Teacher.from_config(*spec[:4], home=spec[4])
        self.batches = 0

    def classes(self) -> tuple[str, ...]:
        return self.teacher.classes

    def probabilities(self, inputs: np.ndarray) -> tuple[np.ndarray, int]:
        self.batches += 1
        return self.teacher.probabilities(inputs), os.getpid()


class RayTeacher:
    """The teacher on ``actors`` Ray actors (one CPU each). :meth:`probabilities` may be
    called from several threads at once: each thread is served by an actor of its own,
    so ``actors`` labelling threads label ``actors`` batches at a time."""

    def __init__(self, ray: Any, spec: tuple[Any, ...], actors: int) -> None:
        self.ray = ray
        host = ray.remote(num_cpus=1)(_TeacherHost)
        self.actors = [host.remote(spec) for _ in range(actors)]
        # every actor has loaded its teacher before the service labels
        self.classes: tuple[str, ...] = tuple(ray.get([a.classes.remote()
                                                       for a in self.actors])[0])
        self.threads = 1
        self._next = itertools.count()
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Batches labelled per worker process (pid), as the actors answered.
        self.batches_by_pid: dict[int, int] = {}

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(N, len(classes))`` from this thread's actor."""
        actor = getattr(self._local, "actor", None)
        if actor is None:
            actor = self._local.actor = self.actors[next(self._next) % len(self.actors)]
        probs, pid = self.ray.get(actor.probabilities.remote(
            np.ascontiguousarray(inputs, np.float32)))
        with self._lock:
            self.batches_by_pid[pid] = self.batches_by_pid.get(pid, 0) + 1
        return np.asarray(probs)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def _learn_task(bundle_dir: str, config: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[Any, int]:
    """A learning job's training, run as a Ray task; the result and the worker's pid."""
    from edgecl.cloud._learner import UpdateLearner

    key = (bundle_dir, repr(config))
    learner = _LEARNERS.get(key)
    if learner is None:
        learner = _LEARNERS[key] = UpdateLearner(bundle_dir, config)
    return learner.learn(*args, **kwargs), os.getpid()


class RayLearning:
    """Runs :meth:`UpdateLearner.learn` of learning jobs as Ray tasks (one CPU each)."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self._task = ray.remote(num_cpus=1)(_learn_task)
        self._lock = threading.Lock()
        #: Learning tasks run per worker process (pid).
        self.tasks_by_pid: dict[int, int] = {}

    def learn(self, learner: Any, *args: Any, **kwargs: Any) -> Any:
        """``learner.learn(*args, **kwargs)`` on the cluster."""
        result, pid = self.ray.get(self._task.remote(str(learner.bundle.path),
                                                     learner.config, args, kwargs))
        with self._lock:
            self.tasks_by_pid[pid] = self.tasks_by_pid.get(pid, 0) + 1
        return result


class RayCompute:
    """The service's work on a Ray cluster: :attr:`teacher` (``actors`` actors) and
    :attr:`learning`. ``address``: a running cluster ("" : start a local one, or use the
    one this process is connected to)."""

    def __init__(self, address: str, actors: int, teacher_spec: Sequence[Any]) -> None:
        from edgecl._raycluster import connect

        self.ray = connect(address or None)
        self.teacher = RayTeacher(self.ray, tuple(teacher_spec), actors)
        self.learning = RayLearning(self.ray)

    def close(self) -> None:
        self.teacher.close()
