"""``edgecl eval loop``: the cloud-device loop on the zoo's continual stream, one device,
the real service on loopback, compared with source, device-only and the teacher."""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import numpy as np

from edgecl.zoo.streams import DEFAULT_CORRUPTIONS

LOOP_CORRUPTIONS = DEFAULT_CORRUPTIONS[:10]
ENROLL = "eval-loop"


def _per_domain(correct: np.ndarray, domains: np.ndarray, names: list[str]) -> dict[str, float]:
    return {names[d]: round(float(correct[domains == d].mean()), 4)
            for d in np.unique(domains)}


def _server(variant: str, home: str | None, storage: str, learning: dict[str, str]) -> Any:
    from edgecl.cloud import create_server, load_config

    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": ENROLL, "EDGECL_CLOUD_TEACHER_ZOO": variant,
           "EDGECL_CLOUD_STORAGE_DIR": storage, "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
           "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_CLOUD_LIMITS_REQUESTS_PER_S": "100000",
           "EDGECL_CLOUD_LIMITS_BURST": "100000",
           **{f"EDGECL_CLOUD_LEARNING_{k.upper()}": v for k, v in learning.items()}}
    # labelling from the device's sync, not in the background: reproducible learning jobs
    return create_server(load_config(None, env=env), home=home).start(labelling=False)


def run_cloud(zoo: Any, images: np.ndarray, labels: np.ndarray, *, policy: str,
              fraction: float, batch: int, sync_every: int, variant: str,
              home: str | None, learning: dict[str, str], seed: int,
              drift: str | None = None, adapt: str | None = None) -> dict[str, Any]:
    """One device with the cloud loop over the stream (lockstep: every ``sync_every``
    samples the device uploads, the service labels and learns, the update is applied).
    The device watches its input statistics for domain changes; an uncertainty policy
    holds part of its budget back for them (``SHIFT_BUDGET``), a random one ignores them."""
    from edgecl.fleet._device import SimDevice

    with tempfile.TemporaryDirectory() as tmp:
        server = _server(variant, home, tmp + "/cloud", learning)
        device = SimDevice(zoo.student_bundle, server.target, device_id="loop-0",
                           enrollment_key=ENROLL, public_key=server.signer.public_key,
                           policy=policy, fraction=fraction, seed=seed, workdir=tmp,
                           drift=drift, revert_on_shift=drift is not None, adapt=adapt,
                           lockstep=True, input_drift=True)
        started = time.perf_counter()
        try:
            for i in range(0, len(images), batch):
                device.step(images[i:i + batch], labels[i:i + batch])
                if (i + batch) % sync_every < batch:
                    device.sync(server)
            device.sync(server)
            rejected = server.registry.rejections()
        finally:
            device.close()
            server.stop(grace=1.0)
        assert device.manager is not None
        return {"correct": np.array(device.log.correct), "uploads": device.log.uploads,
                "updates_applied": device.manager.counts()["applied"],
                "updates_rejected_cloud": len(rejected),
                "updates_rejected_device": device.manager.counts()["rejected"],
                "rolled_back": device.manager.counts()["rolled_back"],
                "shifts_detected": len(device.log.shifts),
                "update_bytes": device.log.update_bytes,
                "update_latency_s": device.log.update_latency_s,
                "seconds": time.perf_counter() - started}


def evaluate_loop(zoo: Any, *, corruptions: tuple[str, ...] = LOOP_CORRUPTIONS,
                  samples_per_domain: int = 1000, severity: int = 5, fraction: float = 0.1,
                  batch: int = 10, sync_every: int = 50, seed: int = 0,
                  variant: str = "full", home: str | None = None,
                  strategies: tuple[str, ...] = ("source", "cloud", "cloud_random", "teacher"),
                  learning: dict[str, str] | None = None, adapt: str = "align",
                  progress: bool = False) -> dict[str, Any]:
    """Mean online accuracy (prequential) of each strategy on the continual stream.

    Returns ``{"strategies": {name: {"mean_online_acc", "per_domain", ...}},
    "upload_fraction", "update_bytes", "update_latency_s", ...}``; ``update_*`` are
    medians over the updates the ``cloud`` strategy applied. ``device`` runs the test-time
    adaptation method ``adapt`` alone; ``cloud+device`` runs it beside the cloud loop.
    """
    import torch

    from edgecl.device import DeviceRuntime
    from edgecl.zoo.streams import continual_stream

    stream = continual_stream(list(corruptions), severity=severity,
                              samples_per_domain=samples_per_domain, seed=seed)
    images, labels, domains = stream.arrays()
    names = [d.name for d in stream.domains]
    learning = {"trigger_samples": "24", "steps": "100", **(learning or {})}
    out: dict[str, Any] = {"strategies": {}, "samples": len(labels),
                           "domains": names, "severity": severity, "budget": fraction,
                           "sync_every": sync_every, "seed": seed}

    def record(name: str, correct: np.ndarray, **extra: Any) -> None:
        out["strategies"][name] = {"mean_online_acc": round(float(correct.mean()), 4),
                                   "per_domain": _per_domain(correct, domains, names), **extra}

    if "source" in strategies:
        rt = DeviceRuntime.open(zoo.student_bundle, ood=None)
        pred = np.concatenate([rt.predict(images[i:i + 512]).labels
                               for i in range(0, len(images), 512)])
        record("source", pred == labels)
    if "teacher" in strategies:
        teacher = zoo.load_teacher()
        with torch.no_grad():
            pred = np.concatenate([teacher(torch.from_numpy(images[i:i + 512])).argmax(1)
                                   .numpy() for i in range(0, len(images), 512)])
        record("teacher", pred == labels)
    if "device" in strategies:  # the device alone: test-time adaptation, no cloud
        from edgecl.fleet._device import SimDevice

        device = SimDevice(zoo.student_bundle, None, device_id="loop-device", adapt=adapt,
                           drift=None, seed=seed)
        started = time.perf_counter()
        try:
            for i in range(0, len(images), batch):
                device.step(images[i:i + batch], labels[i:i + batch])
        finally:
            device.close()
        assert device.worker is not None
        record("device", np.array(device.log.correct), method=adapt,
               states_published=device.worker.stats.published,
               seconds=round(time.perf_counter() - started, 1))
    for name, policy, method in (("cloud", "uncertainty", None),
                                 ("cloud_random", "random", None),
                                 ("cloud+device", "uncertainty", adapt)):
        if name not in strategies:
            continue
        if progress:
            import sys

            print(f"running {name} over {len(labels)} samples ...", file=sys.stderr, flush=True)
        res = run_cloud(zoo, images, labels, policy=policy, fraction=fraction, batch=batch,
                        sync_every=sync_every, variant=variant, home=home, learning=learning,
                        seed=seed, adapt=method)
        record(name, res["correct"], upload_fraction=round(res["uploads"] / len(labels), 4),
               updates_applied=res["updates_applied"],
               updates_rejected_cloud=res["updates_rejected_cloud"],
               updates_rejected_device=res["updates_rejected_device"],
               rolled_back=res["rolled_back"], shifts_detected=res["shifts_detected"],
               seconds=round(res["seconds"], 1))
        if name == "cloud":
            out["upload_fraction"] = round(res["uploads"] / len(labels), 4)
            out["update_bytes"] = (int(statistics.median(res["update_bytes"]))
                                   if res["update_bytes"] else None)
            out["update_latency_s"] = (round(statistics.median(res["update_latency_s"]), 3)
                                       if res["update_latency_s"] else None)
    s = out["strategies"]
    if {"source", "teacher", "cloud"} <= set(s):
        gap = s["teacher"]["mean_online_acc"] - s["source"]["mean_online_acc"]
        out["gap_closed"] = round((s["cloud"]["mean_online_acc"]
                                   - s["source"]["mean_online_acc"]) / gap, 4) if gap else None
    return out
