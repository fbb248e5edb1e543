"""A fleet on a virtual clock: simulated time moves in sync rounds, never with the wall.

Every device sees its samples at its own simulated pace. Every ``sync_s`` simulated
seconds a round runs, in a fixed order, against the real service (real gRPC, registry,
teacher and learning, in this process, started with ``labelling=False``):

1. every device predicts the batches that start before the round's time ``S`` (devices
   in parallel threads: each touches only its own state), applying first the updates
   that have become visible to it;
2. every device online at ``S`` uploads its outbox, one device after another in id order
   (so the registry stores uploads in the same order on every run);
3. the service labels everything uploaded, then runs every learning job that is due
   (sample triggers, and time triggers on the virtual clock);
4. every online device fetches its newest update, which becomes visible to it at
   ``R + latency + bytes / bandwidth``, where the round ends at
   ``R = S + slowest upload (latency + bytes / bandwidth) + labelled / label_per_s +
   ceil(jobs / workers) * job_s`` (:class:`CloudCostModel`).

Nothing depends on how long any of this takes on the machine, so the same seed and
settings give the same result on any machine under any load; only wall-clock fields
(``wall_seconds``, ``peak_rss_mb``) differ.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.fleet._run import DeviceTask, uses_cloud


@dataclass(frozen=True)
class CloudCostModel:
    """Simulated time the service takes per round: ``job_s`` per learning job (jobs run
    ``workers`` at a time) and ``label_per_s`` samples per second for the teacher."""

    job_s: float = 5.0
    label_per_s: float = 500.0
    workers: int = 1

    def __post_init__(self) -> None:
        if not (self.job_s >= 0 and self.label_per_s > 0 and self.workers >= 1
                and math.isfinite(self.job_s) and math.isfinite(self.label_per_s)):
            raise ConfigError("cloud cost model: job_s >= 0, label_per_s > 0, workers >= 1")

    def round_s(self, labelled: int, jobs: int) -> float:
        """Simulated seconds of one round's labelling and learning."""
        return labelled / self.label_per_s + math.ceil(jobs / self.workers) * self.job_s


class VirtualClock:
    """Simulated seconds since the simulation started; callable (a clock for the
    service's learning time trigger)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _Device:
    """One device of the fleet and where it is in its stream."""

    task: DeviceTask
    sim: Any
    images: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    stream: Any
    next_batch: int = 0
    known_version: int = 0
    pending: list[tuple[float, float, Any]] = field(default_factory=list)  # visible, sent
    batch_times: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    update_times: list[float] = field(default_factory=list)
    done: bool = False
    offline_rounds: int = 0  # sync rounds missed offline (the calls that would have failed)

    @property
    def plan(self) -> Any:
        return self.task.plan

    def batch_start(self, k: int) -> float:
        return k * self.task.batch / self.plan.pace

    def batches(self) -> int:
        return math.ceil(len(self.labels) / self.task.batch)

    def transfer_s(self, n: int) -> float:
        net = self.plan.network
        return net.latency_s + (n / net.bandwidth_bps if net.bandwidth_bps else 0.0)

    def advance(self, until: float) -> None:
        """Predict every batch starting before ``until``; updates visible by a batch's
        start are applied before it."""
        b = self.task.batch
        while self.next_batch < self.batches() and self.batch_start(self.next_batch) < until:
            t = self.batch_start(self.next_batch)
            while self.pending and self.pending[0][0] <= t:
                _, sent, update = self.pending.pop(0)
                applied = self.sim.manager.counts()["applied"]
                self.sim.client.deliver(update)
                if self.sim.manager.counts()["applied"] > applied:
                    self.latency_s.append(t - sent)
                    self.update_times.append(t)
            i = self.next_batch * b
            self.sim.step(self.images[i:i + b], self.labels[i:i + b])
            self.next_batch += 1
            self.batch_times.append(min(t + b / self.plan.pace,
                                        len(self.labels) / self.plan.pace))
        self.done = self.next_batch >= self.batches()


def run_virtual(tasks: Sequence[DeviceTask], server: Any, clock: VirtualClock, *,
                sync_s: float, cost: CloudCostModel, threads: int | None = None,
                on_done: Callable[[], None] | None = None,
                on_round: Callable[[float, int], None] | None = None) -> list[dict[str, Any]]:
    """Run the cloud-strategy ``tasks`` against the in-process ``server`` (started with
    ``labelling=False`` and ``clock``) in rounds of ``sync_s`` simulated seconds; one
    result dict per task, like :func:`~edgecl.fleet._run.run_device`."""
    from edgecl.device import GrpcTransport
    from edgecl.fleet._device import SimDevice
    from edgecl.fleet._network import ImpairedTransport, NetworkProfile
    from edgecl.fleet._run import _BUILD_LOCK

    if not tasks:
        return []
    if not sync_s > 0 or not math.isfinite(sync_s):
        raise ConfigError(f"sync_s must be a positive number of seconds, got {sync_s}")
    if any(not uses_cloud(t.strategy) for t in tasks):
        raise ConfigError("the virtual clock runs cloud strategies only")
    with tempfile.TemporaryDirectory() as tmp:
        fleet: list[_Device] = []
        try:
            for task in tasks:
                with _BUILD_LOCK:
                    stream = task.plan.build_stream()
                    images, labels, domains = stream.arrays()
                adapt = task.adapt if task.strategy == "cloud+device" else None
                # bytes are counted, nothing is delayed: delays are simulated time here
                transport = ImpairedTransport(GrpcTransport(server.target), NetworkProfile())
                sim = SimDevice(task.bundle, transport, device_id=task.id_prefix
                                + task.plan.device_id, enrollment_key=task.enrollment_key,
                                public_key=task.public_key, fraction=task.fraction,
                                drift=None, revert_on_shift=False, seed=task.plan.seed,
                                workdir=_workdir(tmp, task.plan.device_id),
                                group=task.plan.group, adapt=adapt, lockstep=True,
                                subscribe=False)
                sim.transport = transport
                fleet.append(_Device(task, sim, images, labels, domains, stream))
            _rounds(fleet, server, clock, sync_s, cost, threads, on_done, on_round)
            return [_result(d) for d in fleet]
        finally:
            for d in fleet:
                d.sim.close()


def _rounds(fleet: list[_Device], server: Any, clock: VirtualClock, sync_s: float,
            cost: CloudCostModel, threads: int | None,
            on_done: Callable[[], None] | None,
            on_round: Callable[[float, int], None] | None) -> None:
    order = sorted(range(len(fleet)), key=lambda i: fleet[i].sim.device_id)
    workers = threads or min(len(fleet), os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="edgecl-vsim") as pool:
        now = sync_s
        while not all(d.done for d in fleet):
            active = [d for d in fleet if not d.done]
            list(pool.map(_Device.advance, active, [now] * len(active)))
            for d in active:
                if d.done and on_done is not None:
                    on_done()
            clock.now = now
            online = [fleet[i] for i in order if not fleet[i].plan.network.is_offline(now)]
            for d in active:
                d.offline_rounds += d not in online
            slowest = 0.0
            for d in online:  # id order: the registry sees the same sequence every run
                before = d.sim.transport.bytes_up
                d.sim.client.upload_now(timeout=600.0)
                slowest = max(slowest, d.transfer_s(d.sim.transport.bytes_up - before))
            jobs = _jobs(server)  # before labelling: its notifications start jobs
            labelled = server.label_pending()
            if not server.wait_idle(timeout=3600.0):
                raise ConfigError("the service did not finish its learning jobs in an hour")
            ends = now + slowest + cost.round_s(labelled, _jobs(server) - jobs)
            for d in online:
                newest = server.registry.latest_version(
                    server.servicer.target_of(server.registry.device(d.sim.device_id)))
                if newest <= d.known_version:
                    continue
                before = d.sim.transport.bytes_down
                update = d.sim.client.fetch_update()
                if update is None:
                    continue
                size = d.sim.transport.bytes_down - before
                d.pending.append((ends + d.transfer_s(size), now, update))
                d.known_version = newest
            if on_round is not None:
                on_round(now, sum(c.counts["published"] for c in server.learning.values()))
            now += sync_s


def _jobs(server: Any) -> int:
    return sum(c.counts["jobs"] for c in server.learning.values())


def _result(d: _Device) -> dict[str, Any]:
    """The device's figures, in the form of :func:`~edgecl.fleet._run.run_device`."""
    sim, plan, stream = d.sim, d.plan, d.stream
    counts = sim.manager.counts() if sim.manager is not None else {}
    transport = sim.transport
    return {
        "device_id": plan.device_id, "group": plan.group, "strategy": d.task.strategy,
        "correct": np.array(sim.log.correct, dtype=bool), "domains": d.domains.astype(np.int32),
        "domain_names": [x.name for x in stream.domains],
        "domain_shifted": [x.corruption is not None for x in stream.domains],
        "novel": np.asarray(stream.is_novel(d.labels), dtype=bool),
        "ood_scores": np.array(sim.log.ood_scores, dtype=np.float32),
        "batch_times": np.array(d.batch_times), "batch": d.task.batch,
        "uploads": sim.log.uploads, "bytes_up": int(transport.bytes_up),
        "bytes_down": int(transport.bytes_down), "failed_calls": d.offline_rounds,
        "updates_applied": int(counts.get("applied", 0)),
        "updates_rejected": int(counts.get("rejected", 0)),
        "rolled_back": int(counts.get("rolled_back", 0)),
        "update_latency_s": [round(x, 6) for x in d.latency_s],
        "update_times": list(d.update_times),
        "states_adapted": int(sim.worker.stats.published) if sim.worker is not None else 0,
        "offline_s": plan.network.offline_s, "pace": plan.pace, "slow": plan.slow,
        "seconds": float(d.batch_times[-1]) if d.batch_times else 0.0,
    }


def _workdir(tmp: str, device_id: str) -> str:
    path = os.path.join(tmp, device_id)
    os.makedirs(path, exist_ok=True)
    return path
