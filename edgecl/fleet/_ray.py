"""Simulated devices on Ray: the engine users outgrow one machine with (``edgecl[ray]``).

:class:`RayBackend` runs device tasks as Ray tasks (clock-free strategies, and cloud
strategies in real time) and, on the virtual clock, hosts the fleet's
:class:`~edgecl.fleet._virtual.DeviceDriver` objects in a few Ray actors (one per worker
CPU, many devices each; the round loop stays in the simulating process with the service).
Workers share no files with the simulating process: the bundle travels through Ray's
object store as a tar archive and streams are rebuilt from their recipe (the plan) where
they run. Results are identical to the thread backend for the same seed.

The service listens on the address of ``service_settings["server_address"]`` (default
loopback): on a cluster of several machines, set it to an address the workers reach.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from edgecl._raycluster import connect, import_ray
from edgecl.fleet._run import DeviceTask, run_device
from edgecl.fleet._virtual import DeviceDriver, bundle_archive, unpack_bundle


def _ray() -> Any:
    return import_ray()


def _run_remote(task: DeviceTask, archive: bytes) -> dict[str, Any]:
    """``run_device`` on a worker, with the bundle unpacked from ``archive``."""
    import dataclasses

    bundle = unpack_bundle(archive)
    return run_device(dataclasses.replace(task, bundle=bundle))


class _DeviceHost:
    """A Ray actor holding many devices of a virtual-clock fleet."""

    def __init__(self, threads: int = 1) -> None:
        self.drivers: dict[int, DeviceDriver] = {}
        self.tmp = tempfile.mkdtemp(prefix="edgecl-ray-")
        self.threads = threads

    def add(self, items: list[tuple[int, DeviceTask]], target: str, archive: bytes) -> int:
        for i, task in items:
            self.drivers[i] = DeviceDriver(task, target, self.tmp, bundle_archive=archive)
        return len(self.drivers)

    def all(self, method: str, indices: list[int], *args: Any) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda i: getattr(self.drivers[i], method)(*args), indices))

    def one(self, method: str, i: int, *args: Any) -> Any:
        return getattr(self.drivers[i], method)(*args)

    def close(self) -> None:
        for d in self.drivers.values():
            d.close()


class _RayHosts:
    """The drivers of one fleet, spread over ``actors`` Ray actors."""

    def __init__(self, ray: Any, tasks: Sequence[DeviceTask], target: str, actors: int) -> None:
        self.ray = ray
        archives = {t.bundle: ray.put(bundle_archive(t.bundle)) for t in tasks}
        host = ray.remote(num_cpus=1)(_DeviceHost)
        k = max(1, min(actors, len(tasks)))
        self.actors = [host.remote() for _ in range(k)]
        self.where = {i: (i % k) for i in range(len(tasks))}
        pending = []
        for a, actor in enumerate(self.actors):
            for bundle, ref in archives.items():
                items = [(i, t) for i, t in enumerate(tasks)
                         if self.where[i] == a and t.bundle == bundle]
                if items:
                    pending.append(actor.add.remote(items, target, ref))
        ray.get(pending)

    def all(self, method: str, indices: list[int], *args: Any) -> list[Any]:
        by_actor: dict[int, list[int]] = {}
        for i in indices:
            by_actor.setdefault(self.where[i], []).append(i)
        refs = {a: self.actors[a].all.remote(method, idx, *args) for a, idx in by_actor.items()}
        got = {a: dict(zip(by_actor[a], self.ray.get(ref))) for a, ref in refs.items()}
        return [got[self.where[i]][i] for i in indices]

    def one(self, method: str, i: int, *args: Any) -> Any:
        return self.ray.get(self.actors[self.where[i]].one.remote(method, i, *args))

    def close(self) -> None:
        self.ray.get([a.close.remote() for a in self.actors])
        for a in self.actors:
            self.ray.kill(a)


class RayBackend:
    """Devices on a Ray cluster: ``address`` of a running cluster (``ray start --head``;
    None: start a local one, or use the one this process is connected to); ``actors``
    device hosts for the virtual clock (default: the cluster's CPUs)."""

    name = "ray"

    def __init__(self, address: str | None = None, actors: int | None = None) -> None:
        ray = connect(address)
        self.ray = ray
        self.actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(self, tasks: Sequence[DeviceTask],
            on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Run ``tasks`` as Ray tasks; results in task order."""
        if not tasks:
            return []
        remote = self.ray.remote(num_cpus=1)(_run_remote)
        archives = {t.bundle: self.ray.put(bundle_archive(t.bundle)) for t in tasks}
        refs = [remote.remote(t, archives[t.bundle]) for t in tasks]
        waiting, index = list(refs), {r: i for i, r in enumerate(refs)}
        results: list[dict[str, Any] | None] = [None] * len(refs)
        while waiting:
            ready, waiting = self.ray.wait(waiting, num_returns=1)
            for r in ready:
                results[index[r]] = self.ray.get(r)
                if on_done is not None:
                    on_done()
        return [r for r in results if r is not None]

    def hosts(self, tasks: Sequence[DeviceTask], target: str, tmp: str) -> _RayHosts:
        """Host a virtual-clock fleet's drivers on the cluster (see :func:`run_virtual`)."""
        return _RayHosts(self.ray, tasks, target, self.actors)


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


