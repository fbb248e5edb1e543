"""Run one simulated device for one strategy, at its pace, and report what happened."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl.fleet._plans import DevicePlan

STRATEGIES = ("source", "device", "cloud", "cloud+device", "cloud+memory")
#: What ``simulate`` and ``edgecl demo`` run unless told otherwise.
DEFAULT_STRATEGIES = ("source", "device", "cloud", "cloud+device")
# Streams are built one at a time per process: the first build loads and caches the data
# set, and concurrent first builds would each hold a copy (hundreds of MB per device).
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class DeviceTask:
    """Everything a worker (thread or process) needs to run one device: picklable."""

    plan: DevicePlan
    strategy: str
    bundle: str
    target: str | None = None
    public_key: bytes | None = None
    enrollment_key: str = ""
    fraction: float = 0.1
    batch: int = 10
    adapt: str = "align"
    id_prefix: str = ""
    #: Sampling policy ("uncertainty" or "random"); with ``input_drift`` the device watches
    #: its raw inputs for domain changes (and, with ``revert_on_shift``, serves the bundle
    #: state after one until the cloud's update for the new domain arrives).
    policy: str = "uncertainty"
    input_drift: bool = False
    revert_on_shift: bool = False


def uses_cloud(strategy: str) -> bool:
    """Whether a strategy talks to the cloud service."""
    return strategy in ("cloud", "cloud+device", "cloud+memory")


def run_device(task: DeviceTask) -> dict[str, Any]:
    """Run ``task``: predict the device's stream batch by batch (at its pace when the
    strategy uses the cloud, since then wall-clock time matters; as fast as possible
    otherwise), with test-time adaptation for ``device`` strategies; returns arrays and
    counters for :func:`edgecl.fleet.summarise`."""
    from edgecl.fleet._device import SimDevice

    plan = task.plan
    with _BUILD_LOCK:
        stream = plan.build_stream()
        images, labels, domains = stream.arrays()
    cloud = uses_cloud(task.strategy)
    adapt = task.adapt if task.strategy in ("device", "cloud+device") else None
    with tempfile.TemporaryDirectory() as tmp:
        dev = SimDevice(task.bundle, task.target if cloud else None,
                        device_id=f"{task.id_prefix}{plan.device_id}",
                        enrollment_key=task.enrollment_key, public_key=task.public_key,
                        fraction=task.fraction, drift=None,
                        revert_on_shift=task.revert_on_shift, input_drift=task.input_drift,
                        seed=plan.seed, workdir=tmp, group=plan.group, adapt=adapt,
                        network=plan.network if cloud else None)
        wall0, started = time.time(), time.monotonic()
        times = []
        try:
            for i in range(0, len(labels), task.batch):
                if cloud:  # hold the device's pace: the cloud works in real time
                    wait = started + plan.start_s + i / plan.pace - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                dev.step(images[i:i + task.batch], labels[i:i + task.batch])
                times.append(time.monotonic() - started)
            if dev.client is not None:
                dev.client.flush(10.0)  # best effort: a device still offline keeps its outbox
            seconds = time.monotonic() - started
            counts = dev.manager.counts() if dev.manager is not None else {}
            transport = getattr(dev, "transport", None)
        finally:
            dev.close()
    log = dev.log
    return {
        "device_id": plan.device_id, "group": plan.group, "strategy": task.strategy,
        "correct": np.array(log.correct, dtype=bool), "domains": domains.astype(np.int32),
        "domain_names": [d.name for d in stream.domains],
        "domain_shifted": [d.corruption is not None for d in stream.domains],
        "novel": np.asarray(stream.is_novel(labels), dtype=bool),
        "ood_scores": np.array(log.ood_scores, dtype=np.float32),
        "batch_times": np.array(times), "batch": task.batch, "uploads": log.uploads,
        "bytes_up": int(getattr(transport, "bytes_up", 0)),
        "bytes_down": int(getattr(transport, "bytes_down", 0)),
        "failed_calls": int(getattr(transport, "failed_calls", 0)),
        "updates_applied": int(counts.get("applied", 0)),
        "updates_rejected": int(counts.get("rejected", 0)),
        "rolled_back": int(counts.get("rolled_back", 0)),
        "update_latency_s": list(log.update_latency_s),
        "update_times": [t - wall0 for t in log.update_times],
        "states_adapted": int(dev.worker.stats.published) if dev.worker is not None else 0,
        "offline_s": plan.network.offline_s if cloud else 0.0, "pace": plan.pace,
        "slow": plan.slow, "seconds": seconds, "start_s": plan.start_s,
    }
