"""``edgecl eval loop``: the cloud-device loop on one of the zoo's drifting streams, one
device, the real service on loopback, compared with source, device-only and the teacher.

Scenarios (:data:`LOOP_SCENARIOS`): ``continual`` (ten severe corruptions, 2,000 samples
each), ``returning`` (domains the source handles, clean first of all, alternating with
severe ones, 800 samples each), ``recurring`` (five severe corruptions visited three
times, 400 samples a visit) and ``gradual`` (four corruptions whose severity ramps
1..5..1, 200 samples a step). Every strategy is reported per domain beside its mean, with
``worst_domain_delta`` (the lowest per-domain accuracy minus the source's) and
``first_200_worst_delta`` (the same over the first 200 samples of every visit of a domain).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.eval.results import (
    LoopClock,
    LoopCloudFigures,
    LoopCloudRun,
    LoopDeltas,
    LoopDeviceRun,
    LoopGap,
    LoopResult,
    LoopStrategyResult,
)
from edgecl.fleet._virtual import CloudCostModel, learning_threads
from edgecl.zoo.streams import DEFAULT_CORRUPTIONS, RETURNING_DOMAINS

LOOP_CORRUPTIONS = DEFAULT_CORRUPTIONS[:10]
#: The scenarios of ``edgecl eval loop`` and their default stream settings.
LOOP_SCENARIOS: dict[str, dict[str, Any]] = {
    "continual": {"domains": LOOP_CORRUPTIONS, "samples_per_domain": 2000},
    "returning": {"domains": RETURNING_DOMAINS, "samples_per_domain": 800},
    "recurring": {"domains": ("gaussian_noise", "contrast", "impulse_noise", "brightness",
                              "motion_blur"), "samples_per_domain": 400, "cycles": 3},
    "gradual": {"domains": ("gaussian_noise", "fog", "contrast", "defocus_blur"),
                "samples_per_domain": 200},
}
#: Accuracy over the first this many samples of every visit: ``first_200_worst_delta``.
FIRST_SAMPLES = 200
#: Samples per simulated second on the loop's device (a camera at 10 frames a second):
#: with ``sync_every`` it sets the simulated time between syncs, which the service's time
#: trigger and a cloud cost model act on.
LOOP_PACE = 10.0
ENROLL = "eval-loop-enrollment-key"


def _per_domain(correct: np.ndarray, domains: np.ndarray, names: list[str]) -> dict[str, float]:
    return {names[d]: round(float(correct[domains == d].mean()), 4)
            for d in np.unique(domains)}


def _visits(domains: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of every visit: every run of one domain in the stream."""
    starts = np.flatnonzero(np.r_[True, domains[1:] != domains[:-1]])
    return [(int(a), int(b)) for a, b in zip(starts, np.r_[starts[1:], len(domains)])]


def _first_per_domain(correct: np.ndarray, domains: np.ndarray, names: list[str],
                      first: int = FIRST_SAMPLES) -> dict[str, float]:
    """Accuracy over the first ``first`` samples of every visit, pooled per domain."""
    mask = np.zeros(len(domains), bool)
    for a, b in _visits(domains):
        mask[a:min(b, a + first)] = True
    return _per_domain(correct[mask], domains[mask], names)


def _per_visit(correct: np.ndarray, domains: np.ndarray, names: list[str]) -> dict[str, float]:
    """Accuracy of every visit, named ``domain#k`` for the k-th visit of a domain."""
    seen: dict[int, int] = {}
    out: dict[str, float] = {}
    for a, b in _visits(domains):
        d = int(domains[a])
        seen[d] = seen.get(d, 0) + 1
        out[f"{names[d]}#{seen[d]}"] = round(float(correct[a:b].mean()), 4)
    return out


def loop_stream_spec(scenario: str, *, domains: tuple[str, ...] | None = None,
                     samples_per_domain: int | None = None, severity: int = 5,
                     seed: int = 0) -> tuple[str, dict[str, Any]]:
    """The :func:`~edgecl.zoo.streams.create_stream` scenario and arguments of the loop's
    ``scenario`` (see :func:`build_loop_stream`)."""
    if scenario not in LOOP_SCENARIOS:
        raise ConfigError(f"unknown loop scenario {scenario!r}; use one of "
                          f"{sorted(LOOP_SCENARIOS)}")
    spec = LOOP_SCENARIOS[scenario]
    names = list(domains or spec["domains"])
    n = int(samples_per_domain or spec["samples_per_domain"])
    if scenario == "continual":
        return scenario, {"corruptions": names, "severity": severity,
                          "samples_per_domain": n, "seed": seed}
    if scenario == "returning":
        return scenario, {"domains": names, "severity": severity, "samples_per_domain": n,
                          "seed": seed}
    if scenario == "recurring":
        return scenario, {"corruptions": names, "cycles": spec["cycles"],
                          "severity": severity, "samples_per_domain": n, "seed": seed}
    return scenario, {"corruptions": names, "samples_per_severity": n, "seed": seed}


def _revisits(correct: np.ndarray, domains: np.ndarray,
              n: int = FIRST_SAMPLES) -> tuple[float | None, float | None]:
    """Mean accuracy over the first ``n`` samples of every second and later visit of a
    domain, and over the last ``n`` of the first visits of the domains visited again."""
    visits: dict[int, list[tuple[int, int]]] = {}
    for a, b in _visits(domains):
        visits.setdefault(int(domains[a]), []).append((a, b))
    again = [v for v in visits.values() if len(v) > 1]
    if not again:
        return None, None
    later = np.concatenate([correct[a:min(b, a + n)] for v in again for a, b in v[1:]])
    first = np.concatenate([correct[max(v[0][0], v[0][1] - n):v[0][1]] for v in again])
    return round(float(later.mean()), 4), round(float(first.mean()), 4)


def build_loop_stream(scenario: str, *, domains: tuple[str, ...] | None = None,
                      samples_per_domain: int | None = None, severity: int = 5,
                      seed: int = 0) -> Any:
    """The stream of ``scenario`` (see :data:`LOOP_SCENARIOS`); ``domains`` are
    corruption names (``"clean"`` too for ``returning``), ``samples_per_domain`` the
    samples of one visit (of one severity step for ``gradual``)."""
    from edgecl.zoo.streams import create_stream

    name, args = loop_stream_spec(scenario, domains=domains,
                                  samples_per_domain=samples_per_domain, severity=severity,
                                  seed=seed)
    return create_stream(name, **args)


def _server(variant: str, home: str | None, storage: str, learning: dict[str, str],
            clock: Any) -> Any:
    from edgecl.cloud import create_server, load_config

    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": ENROLL, "EDGECL_CLOUD_TEACHER_ZOO": variant,
           "EDGECL_CLOUD_STORAGE_DIR": storage, "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
           "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_CLOUD_LIMITS_REQUESTS_PER_S": "100000",
           "EDGECL_CLOUD_LIMITS_BURST": "100000", "EDGECL_CLOUD_LIMITS_SAMPLES_PER_S": "1000000",
           "EDGECL_CLOUD_LIMITS_SAMPLE_BURST": "1000000",
           **{f"EDGECL_CLOUD_LEARNING_{k.upper()}": v for k, v in learning.items()}}
    # labelling in the virtual clock's rounds, not in the background: reproducible jobs
    return create_server(load_config(None, env=env), home=home,
                         clock=clock).start(labelling=False)


def run_cloud(zoo: Any, stream: tuple[str, dict[str, Any]], samples: int, *, policy: str,
              fraction: float, batch: int, sync_every: int, variant: str,
              home: str | None, learning: dict[str, str], seed: int,
              adapt: str | None = None, revert_on_shift: bool = True,
              pace: float = LOOP_PACE, cost: Any = None) -> dict[str, Any]:
    """One device with the cloud loop over ``stream`` (a :func:`loop_stream_spec`): the
    fleet's virtual clock (:func:`~edgecl.fleet.run_virtual`) with one device at ``pace``
    samples per simulated second that syncs every ``sync_every`` samples, against a
    service whose compute costs ``cost`` (default :meth:`CloudCostModel.lockstep
    <edgecl.fleet.CloudCostModel.lockstep>`: labelled, learned and applied before the
    device's next sample). The device watches its input statistics for domain changes; an
    uncertainty policy holds part of its budget back for them (``SHIFT_BUDGET``), a random
    one ignores them."""
    from edgecl.fleet import DevicePlan, DeviceTask, VirtualClock, run_virtual

    cost = cost or CloudCostModel.lockstep()
    name, args = stream
    plan = DevicePlan("loop-0", "", name, args, samples, pace, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        clock = VirtualClock()
        server = _server(variant, home, tmp + "/cloud",
                         {**learning, "workers": str(learning_threads(
                             cost, learning.get("memory", "false") == "true"))}, clock)
        task = DeviceTask(plan, "cloud+device" if adapt else "cloud", zoo.student_bundle,
                          target=server.target, public_key=server.signer.public_key,
                          enrollment_key=ENROLL, fraction=fraction, batch=batch,
                          adapt=adapt or "align", policy=policy, input_drift=True,
                          revert_on_shift=revert_on_shift)
        started = time.perf_counter()
        try:
            (res,) = run_virtual([task], server, clock, sync_s=sync_every / pace, cost=cost)
            rejected = server.registry.rejections()
            recalled = sum(c.counts["recalled"] for c in server.learning.values())
        finally:
            server.stop(grace=1.0)
        return {**res, "updates_rejected_cloud": len(rejected), "updates_recalled": recalled,
                "seconds": time.perf_counter() - started}


def evaluate_loop(zoo: Any, *, scenario: str = "continual",
                  corruptions: tuple[str, ...] | None = None,
                  samples_per_domain: int | None = None, severity: int = 5,
                  fraction: float = 0.1,
                  batch: int = 10, sync_every: int = 50, seed: int = 0,
                  variant: str = "full", home: str | None = None,
                  strategies: tuple[str, ...] = ("source", "cloud", "cloud_random", "teacher"),
                  learning: dict[str, str] | None = None, adapt: str = "align",
                  progress: bool = False, pace: float = LOOP_PACE,
                  cloud_cost: CloudCostModel | None = None) -> LoopResult:
    """Mean online accuracy (prequential) of each strategy on the stream of ``scenario``
    (:func:`build_loop_stream`; ``corruptions`` and ``samples_per_domain`` override its
    defaults).

    Returns a :class:`~edgecl.eval.results.LoopResult`, as JSON ``{"scenario",
    "strategies": {name: {"mean_online_acc", "per_domain", "first_200",
    "worst_domain_delta", "first_200_worst_delta", ...}}, "upload_fraction",
    "update_bytes", "update_latency_s", ...}`` (``edgecl/schemas/eval-loop.schema.json``);
    ``update_*`` are
    medians over the updates the ``cloud`` strategy applied; the deltas are against
    ``source`` (present when it runs). ``device`` runs the test-time adaptation method
    ``adapt`` alone; ``cloud+device`` runs it beside the cloud loop. Cloud strategies run
    on the fleet's virtual clock (:func:`run_cloud`): the device sees ``pace`` samples per
    simulated second, the service's compute costs ``cloud_cost`` (default: lockstep, no
    simulated time), so a run is reproducible on any machine.
    """
    import torch

    from edgecl.device import DeviceRuntime
    from edgecl.zoo.streams import create_stream

    spec = loop_stream_spec(scenario, domains=corruptions,
                            samples_per_domain=samples_per_domain, severity=severity, seed=seed)
    stream = create_stream(spec[0], **spec[1])
    images, labels, domains = stream.arrays()
    names = [d.name for d in stream.domains]
    learning = {"trigger_samples": "24", "steps": "100", **(learning or {})}
    if not (pace > 0 and math.isfinite(pace)) or sync_every < 1 or batch < 1:
        raise ConfigError("pace must be a positive number; sync_every and batch >= 1")
    cost = cloud_cost or CloudCostModel.lockstep()
    runs: dict[str, dict[str, Any]] = {}  # name -> LoopStrategyResult fields but deltas
    cloud: LoopCloudFigures | None = None

    def record(name: str, correct: np.ndarray, device: LoopDeviceRun | None = None,
               cloud_run: LoopCloudRun | None = None) -> None:
        runs[name] = {"mean_online_acc": round(float(correct.mean()), 4),
                      "per_domain": _per_domain(correct, domains, names),
                      "first_200": _first_per_domain(correct, domains, names),
                      "per_visit": _per_visit(correct, domains, names),
                      **dict(zip(("revisit_acc_first_200", "first_visit_acc_last_200"),
                                 _revisits(correct, domains))),
                      "device": device, "cloud": cloud_run}

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
        from edgecl.fleet import SimDevice

        device = SimDevice(zoo.student_bundle, None, device_id="loop-device", adapt=adapt,
                           drift=None, seed=seed)
        started = time.perf_counter()
        try:
            for i in range(0, len(images), batch):
                device.step(images[i:i + batch], labels[i:i + batch])
        finally:
            device.close()
        assert device.worker is not None
        record("device", np.array(device.log.correct),
               device=LoopDeviceRun(method=adapt,
                                    states_published=device.worker.stats.published,
                                    seconds=round(time.perf_counter() - started, 1)))
    for name, policy, method in (("cloud", "uncertainty", None),
                                 ("cloud+memory", "uncertainty", None),
                                 ("cloud_random", "random", None),
                                 ("cloud+device", "uncertainty", adapt)):
        if name not in strategies:
            continue
        if progress:
            import sys

            print(f"running {name} over {len(labels)} samples ...", file=sys.stderr, flush=True)
        res = run_cloud(zoo, spec, len(labels), policy=policy, fraction=fraction,
                        batch=batch, sync_every=sync_every, variant=variant, home=home,
                        learning={**learning, "memory": str(name == "cloud+memory").lower()},
                        seed=seed, adapt=method, pace=pace, cost=cost)
        record(name, res["correct"], cloud_run=LoopCloudRun(
            upload_fraction=round(res["uploads"] / len(labels), 4),
            updates_applied=res["updates_applied"],
            updates_rejected_cloud=res["updates_rejected_cloud"],
            updates_rejected_device=res["updates_rejected"],
            rolled_back=res["rolled_back"], reverted=res["reverted"],
            shifts_detected=res["shifts_detected"],
            seconds=round(res["seconds"], 1), updates_recalled=res["updates_recalled"]))
        if name == "cloud":
            cloud = LoopCloudFigures(
                upload_fraction=round(res["uploads"] / len(labels), 4),
                update_bytes=(int(statistics.median(res["update_bytes"]))
                              if res["update_bytes"] else None),
                update_latency_s=(round(statistics.median(res["update_latency_s"]), 3)
                                  if res["update_latency_s"] else None))
    src = runs.get("source")
    results = {name: LoopStrategyResult(**rec, deltas=None if src is None else _deltas(rec, src))
               for name, rec in runs.items()}
    gap: LoopGap | None = None
    if {"source", "teacher", "cloud"} <= set(results):
        acc = {k: results[k].mean_online_acc for k in ("source", "teacher", "cloud")}
        diff = acc["teacher"] - acc["source"]
        gap = LoopGap(round((acc["cloud"] - acc["source"]) / diff, 4) if diff else None)
    return LoopResult(scenario=scenario, strategies=results, samples=len(labels),
                      domains=names, severity=severity, budget=fraction,
                      sync_every=sync_every, seed=seed, cloud=cloud, gap=gap,
                      clock=LoopClock(pace=pace, sync_s=sync_every / pace, job_s=cost.job_s,
                                      label_per_s=(cost.label_per_s
                                                   if math.isfinite(cost.label_per_s)
                                                   else None),
                                      workers=cost.workers))


def _deltas(rec: dict[str, Any], src: dict[str, Any]) -> LoopDeltas:
    """Worst per-domain, first-200 and per-visit accuracy of ``rec`` minus the source's."""
    def worst(table: str) -> float:
        return round(min(rec[table][d] - src[table][d] for d in rec[table]), 4)

    return LoopDeltas(worst_domain_delta=worst("per_domain"),
                      first_200_worst_delta=worst("first_200"),
                      worst_visit_delta=worst("per_visit"))
