"""Where simulated devices execute: a pluggable backend.

A backend takes :class:`DeviceTask` objects and returns one result dict per task, in
order. :class:`ThreadBackend` runs every device in a thread of this process;
:class:`ProcessBackend` (light mode) spreads devices over worker processes, each running
its share in threads, so a 2-core machine can carry 100 devices. Another engine (Ray, a
cluster scheduler) only needs the same ``run`` method: tasks are picklable and rebuild
their streams and runtimes where they run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Protocol

from edgecl._exceptions import ConfigError
from edgecl.fleet._run import DeviceTask, run_device


class Backend(Protocol):
    """Runs device tasks; ``on_done`` is called once per finished task."""

    name: str

    def run(self, tasks: Sequence[DeviceTask],
            on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]: ...


class ThreadBackend:
    """Every device in its own thread of this process."""

    name = "threads"

    def __init__(self, max_threads: int | None = None) -> None:
        self.max_threads = max_threads

    def run(self, tasks: Sequence[DeviceTask],
            on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        if not tasks:
            return []
        with ThreadPoolExecutor(self.max_threads or len(tasks),
                                thread_name_prefix="edgecl-sim") as pool:
            futures = [pool.submit(run_device, t) for t in tasks]
            if on_done is not None:
                for f in futures:
                    f.add_done_callback(lambda _f: on_done())
            return [f.result() for f in futures]


def _run_share(tasks: list[DeviceTask]) -> list[dict[str, Any]]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return ThreadBackend().run(tasks)


class ProcessBackend:
    """Devices batched into ``processes`` worker processes (spawned), threads inside."""

    name = "processes"

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or max(os.cpu_count() or 1, 1)
        if self.processes < 1:
            raise ConfigError("processes must be >= 1")

    def run(self, tasks: Sequence[DeviceTask],
            on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        if not tasks:
            return []
        k = min(self.processes, len(tasks))
        shares = [list(range(i, len(tasks), k)) for i in range(k)]
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(k, mp_context=ctx) as pool:
            futures = {pool.submit(_run_share, [tasks[i] for i in share]): share
                       for share in shares}
            for future, share in futures.items():
                for i, res in zip(share, future.result()):
                    results[i] = res
                    if on_done is not None:
                        on_done()
        return [r for r in results if r is not None]


BACKENDS = ("threads", "processes", "ray")


def create_backend(name: str, **kwargs: Any) -> Backend:
    """``"threads"``, ``"processes"`` (light mode) or ``"ray"`` (``address=``, needs
    ``edgecl[ray]``)."""
    if name == "threads":
        return ThreadBackend(**kwargs)
    if name == "processes":
        return ProcessBackend(**kwargs)
    if name == "ray":
        from edgecl.fleet._ray import RayBackend

        return RayBackend(**kwargs)
    raise ConfigError(f"unknown backend {name!r}; use one of {BACKENDS}")
