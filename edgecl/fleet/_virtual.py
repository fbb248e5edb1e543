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
   ``R + latency + bytes / bandwidth``: the round's labelling is done at
   ``L = max(S + slowest upload (latency + bytes / bandwidth), end of the labelling of
   earlier rounds) + labelled / label_per_s``; each job the round started takes the
   learning worker that is free first and ends, with its target's update, at
   ``R = max(L, worker free) + job_s`` (:class:`CloudCostModel`). A target's job starts
   only once its previous job has ended in simulated time, and only while one of the
   ``workers`` is idle (uploads wait for the next job, as on a busy service that runs
   one job per target at a time).

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
from dataclasses import dataclass
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
                and math.isfinite(self.job_s)):
            raise ConfigError("cloud cost model: job_s >= 0, label_per_s > 0 (inf: "
                              "instant), workers >= 1")

    @classmethod
    def lockstep(cls) -> CloudCostModel:
        """A service that takes no simulated time: every round's uploads are labelled and
        learned from, and the update is on the device, before its next sample (``edgecl
        eval loop``: learning quality apart from cloud speed)."""
        return cls(job_s=0.0, label_per_s=math.inf, workers=1)


def learning_threads(cost: CloudCostModel, memory: bool) -> int:
    """Learning threads of a virtual-clock service. With fleet memory its jobs share the
    domain library and each other's domains, so they run one at a time, in the order they
    started (the same every run); without, jobs of different targets share nothing and
    run ``cost.workers`` at a time. Simulated time follows ``cost`` either way."""
    return 1 if memory else cost.workers


class ServiceSchedule:
    """When the modelled service (:class:`CloudCostModel`) is busy, in simulated seconds.

    Its teacher labels uploads in arrival order (one queue); its ``workers`` learning
    workers run one job each at a time. A target's job may start only once the target's
    previous job has ended and while a worker is idle; the jobs that start together queue
    for the workers, each on the one free first."""

    def __init__(self, cost: CloudCostModel) -> None:
        self.cost = cost
        self.labelled_at = 0.0  # when the teacher is done with everything so far
        self.free = [0.0] * cost.workers  # when each worker is done with its jobs
        self.ends: dict[str, float] = {}  # target -> when its newest job ends

    def may_start(self, target: str, now: float) -> bool:
        """Whether a job for ``target`` may start at ``now``."""
        return self.ends.get(target, 0.0) <= now and any(f <= now for f in self.free)

    def label(self, arrived: float, count: int) -> float:
        """``count`` uploads arrived at ``arrived``: when their labels are ready."""
        self.labelled_at = max(arrived, self.labelled_at) + count / self.cost.label_per_s
        return self.labelled_at

    def run(self, targets: Sequence[str], ready: float) -> dict[str, float]:
        """Jobs for ``targets`` (in start order) whose data are ready at ``ready``: when
        each target's newest update is out."""
        out: dict[str, float] = {}
        for target in targets:
            w = min(range(len(self.free)), key=self.free.__getitem__)
            self.free[w] = max(ready, self.free[w]) + self.cost.job_s
            out[target] = self.ends[target] = self.free[w]
        return out


class VirtualClock:
    """Simulated seconds since the simulation started; callable (a clock for the
    service's learning time trigger)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DeviceDriver:
    """One device of a virtual-clock fleet and where it is in its stream: builds its stream
    and its :class:`~edgecl.fleet.SimDevice` (connected to the service at ``target``) where
    it runs, so it can live in a thread of this process or in a Ray actor."""

    def __init__(self, task: DeviceTask, target: str, workdir: str,
                 bundle_archive: bytes | None = None) -> None:
        from edgecl.device import GrpcTransport
        from edgecl.fleet._device import SimDevice
        from edgecl.fleet._network import ImpairedTransport, NetworkProfile
        from edgecl.fleet._run import _BUILD_LOCK

        self.task, self.plan = task, task.plan
        bundle = task.bundle if bundle_archive is None else unpack_bundle(bundle_archive)
        with _BUILD_LOCK:
            self.stream = self.plan.build_stream()
            self.images, self.labels, self.domains = self.stream.arrays()
        adapt = task.adapt if task.strategy == "cloud+device" else None
        # bytes are counted, nothing is delayed: delays are simulated time here
        self.transport = ImpairedTransport(GrpcTransport(target), NetworkProfile())
        self.sim = SimDevice(bundle, self.transport,
                             device_id=task.id_prefix + self.plan.device_id,
                             enrollment_key=task.enrollment_key, public_key=task.public_key,
                             policy=task.policy, fraction=task.fraction, drift=None,
                             revert_on_shift=task.revert_on_shift,
                             input_drift=task.input_drift, seed=self.plan.seed,
                             workdir=_workdir(workdir, self.plan.device_id),
                             group=self.plan.group, adapt=adapt, lockstep=True,
                             subscribe=False)
        self.next_batch = self.known_version = self.offline_rounds = 0
        self.pending: list[tuple[float, float, Any]] = []  # (visible at, sent at, update)
        self.batch_times: list[float] = []
        self.latency_s: list[float] = []
        self.update_times: list[float] = []

    def _batches(self) -> int:
        return math.ceil(len(self.labels) / self.task.batch)

    def _transfer_s(self, n: int) -> float:
        net = self.plan.network
        return net.latency_s + (n / net.bandwidth_bps if net.bandwidth_bps else 0.0)

    def advance(self, until: float) -> bool:
        """Predict every batch starting before ``until`` (updates visible by a batch's start
        are applied before it); whether the stream is done."""
        b, pace = self.task.batch, self.plan.pace
        start = self.plan.start_s
        while self.next_batch < self._batches() and start + self.next_batch * b / pace < until:
            t = start + self.next_batch * b / pace
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
            self.batch_times.append(min(t + b / pace, start + len(self.labels) / pace))
        return self.next_batch >= self._batches()

    def upload(self) -> float:
        """Upload the outbox now; simulated seconds the upload took (latency + bytes /
        bandwidth)."""
        before = self.transport.bytes_up
        self.sim.client.upload_now(timeout=600.0)
        return self._transfer_s(self.transport.bytes_up - before)

    def offer(self, newest: int, ends: float, sent: float) -> None:
        """Fetch the newest update if it is newer than what this device knows; it becomes
        visible at ``ends`` plus its transfer time."""
        if newest <= self.known_version:
            return
        before = self.transport.bytes_down
        update = self.sim.client.fetch_update()
        if update is not None:
            self.pending.append((ends + self._transfer_s(self.transport.bytes_down - before),
                                 sent, update))
            self.known_version = newest

    def report(self) -> None:
        """Report health and update outcomes to the service (staged rollouts' gates)."""
        self.sim.report()

    def missed_round(self) -> None:
        """Count a sync round missed offline (the calls that would have failed)."""
        self.offline_rounds += 1

    def result(self) -> dict[str, Any]:
        """The device's figures, in the form of :func:`~edgecl.fleet._run.run_device`."""
        sim, plan, stream = self.sim, self.plan, self.stream
        counts = sim.manager.counts() if sim.manager is not None else {}
        return {
            "device_id": plan.device_id, "group": plan.group, "strategy": self.task.strategy,
            "correct": np.array(sim.log.correct, dtype=bool),
            "domains": self.domains.astype(np.int32),
            "domain_names": [x.name for x in stream.domains],
            "domain_shifted": [x.corruption is not None for x in stream.domains],
            "novel": np.asarray(stream.is_novel(self.labels), dtype=bool),
            "ood_scores": np.array(sim.log.ood_scores, dtype=np.float32),
            "batch_times": np.array(self.batch_times), "batch": self.task.batch,
            "uploads": sim.log.uploads, "bytes_up": int(self.transport.bytes_up),
            "bytes_down": int(self.transport.bytes_down), "failed_calls": self.offline_rounds,
            "updates_applied": int(counts.get("applied", 0)),
            "updates_rejected": int(counts.get("rejected", 0)),
            "rolled_back": int(counts.get("rolled_back", 0)),
            "reverted": int(counts.get("reverted", 0)),
            "shifts_detected": len(sim.log.shifts),
            "update_bytes": list(sim.log.update_bytes),
            "update_latency_s": [round(x, 6) for x in self.latency_s],
            "update_times": list(self.update_times),
            "states_adapted": int(sim.worker.stats.published) if sim.worker is not None else 0,
            "offline_s": plan.network.offline_s, "pace": plan.pace, "slow": plan.slow,
            "start_s": plan.start_s,
            "seconds": float(self.batch_times[-1]) if self.batch_times else 0.0,
        }

    def close(self) -> None:
        """Stop the device's workers and close its outbox."""
        self.sim.close()


class _Local:
    """Drivers in this process; ``advance`` runs on a thread pool."""

    def __init__(self, tasks: Sequence[DeviceTask], target: str, tmp: str,
                 threads: int | None) -> None:
        self.drivers: list[DeviceDriver] = []
        for task in tasks:
            self.drivers.append(DeviceDriver(task, target, tmp))
        self.pool = ThreadPoolExecutor(threads or min(len(tasks), os.cpu_count() or 1),
                                       thread_name_prefix="edgecl-vsim")

    def all(self, method: str, indices: list[int], *args: Any) -> list[Any]:
        return list(self.pool.map(lambda i: getattr(self.drivers[i], method)(*args), indices))

    def one(self, method: str, i: int, *args: Any) -> Any:
        return getattr(self.drivers[i], method)(*args)

    def close(self) -> None:
        self.pool.shutdown()
        for d in self.drivers:
            d.close()


def run_virtual(tasks: Sequence[DeviceTask], server: Any, clock: VirtualClock, *,
                sync_s: float, cost: CloudCostModel, threads: int | None = None,
                on_done: Callable[[], None] | None = None,
                on_round: Callable[[float, int], None] | None = None,
                engine: Callable[[Sequence[DeviceTask], str, str], Any] | None = None
                ) -> list[dict[str, Any]]:
    """Run the cloud-strategy ``tasks`` against the in-process ``server`` (started with
    ``labelling=False`` and ``clock``) in rounds of ``sync_s`` simulated seconds; one
    result dict per task, like :func:`~edgecl.fleet._run.run_device`. ``engine(tasks,
    target, tmp)`` hosts the drivers elsewhere (e.g. Ray actors); default: this process."""
    if not tasks:
        return []
    if not sync_s > 0 or not math.isfinite(sync_s):
        raise ConfigError(f"sync_s must be a positive number of seconds, got {sync_s}")
    if any(not uses_cloud(t.strategy) for t in tasks):
        raise ConfigError("the virtual clock runs cloud strategies only")
    with tempfile.TemporaryDirectory() as tmp:
        hosts = (engine or (lambda t, target, d: _Local(t, target, d, threads)))(
            tasks, server.target, tmp)
        try:
            _rounds(tasks, hosts, server, clock, sync_s, cost, on_done, on_round)
            return hosts.all("result", list(range(len(tasks))))
        finally:
            hosts.close()


def _rounds(tasks: Sequence[DeviceTask], hosts: Any, server: Any, clock: VirtualClock,
            sync_s: float, cost: CloudCostModel, on_done: Callable[[], None] | None,
            on_round: Callable[[float, int], None] | None) -> None:
    ids = [t.id_prefix + t.plan.device_id for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: ids[i])
    done = [False] * len(tasks)
    now = sync_s
    service = ServiceSchedule(cost)
    staged = server.registry.rollout_policy("") is not None  # a staged or manual policy
    for coordinator in server.learning.values():
        coordinator.gate = lambda target: service.may_start(target, clock.now)
    while not all(done):
        active = [i for i in range(len(tasks)) if not done[i]]
        for i, finished in zip(active, hosts.all("advance", active, now)):
            done[i] = finished
            if finished and on_done is not None:
                on_done()
        clock.now = now
        online = [i for i in order if not tasks[i].plan.network.is_offline(now)]
        for i in active:
            if i not in online:
                hosts.one("missed_round", i)
        slowest = 0.0
        for i in online:  # id order: the registry sees the same sequence every run
            slowest = max(slowest, hosts.one("upload", i))
        round_start = len(_started(server))  # before labelling: it notifies, jobs start
        labelled = server.label_pending()
        if not server.wait_idle(timeout=3600.0):
            raise ConfigError("the service did not finish its learning jobs in an hour")
        ready = service.label(now + slowest, labelled)
        finish = service.run(_started(server)[round_start:], ready)
        if staged:  # devices report what they did; the rollouts move (in id order)
            for i in online:
                hosts.one("report", i)
            server.rollouts.tick()
        for i in online:
            device = server.registry.device(ids[i])
            if device is not None:
                target = server.servicer.target_of(device)
                newest = server.servicer.servable(device, target)  # rollouts and pins
                hosts.one("offer", i, newest, finish.get(target, ready), now)
        if on_round is not None:
            on_round(now, sum(c.counts["published"] for c in server.learning.values()))
        now += sync_s


def _started(server: Any) -> list[str]:
    """Targets whose learning jobs started so far, in order, over every bundle served."""
    return [t for c in server.learning.values() for t in c.started]


def _workdir(tmp: str, device_id: str) -> str:
    path = os.path.join(tmp, device_id)
    os.makedirs(path, exist_ok=True)
    return path


def unpack_bundle(archive: bytes) -> str:
    """Unpack a bundle archive (:func:`bundle_archive`) once per process; its directory."""
    import hashlib
    import io
    import tarfile

    target = os.path.join(tempfile.gettempdir(), "edgecl-bundles",
                          hashlib.sha256(archive).hexdigest()[:16])
    if not os.path.isdir(target):
        tmp = f"{target}.{os.getpid()}"
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.replace(tmp, target)
        except OSError:  # another worker unpacked it meanwhile
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target


def bundle_archive(bundle_dir: str) -> bytes:
    """A bundle directory as tar bytes, to ship to workers that share no files with us."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(bundle_dir, arcname=".")
    return buf.getvalue()


def rollout_records(registry: Any) -> list[Any]:
    """Every version's rollout in ``registry`` with its waves (the simulation's report)."""
    from edgecl.cloud._registry_rollouts import ROLLOUT_STATES
    from edgecl.fleet._result import RolloutRecord, RolloutWaveRecord

    return [RolloutRecord(row.target, row.version, row.state, row.reason, [
        RolloutWaveRecord(w.wave, w.devices, round(w.started_s, 3), w.applied, w.refused)
        for w in registry.waves_of(row.target, row.version)])
        for row in registry.rollouts_in(*ROLLOUT_STATES)]
