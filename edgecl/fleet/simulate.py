"""``edgecl simulate``: a fleet of real device runtimes against the real cloud service.

Each strategy runs the whole fleet once: ``source`` (the bundle as shipped), ``device``
(on-device test-time adaptation only), ``cloud`` (uploads, teacher labels, signed updates)
and ``cloud+device`` (both); ``cloud+memory`` (the cloud with fleet memory, ``[learning]
memory``) when asked. By default (``clock="virtual"``) cloud strategies run on a
virtual clock (:mod:`edgecl.fleet._virtual`) against a fresh service in this process (real
gRPC on loopback, registry, teacher, learning): the result does not depend on how busy
the machine is. ``clock="real"`` keeps wall-clock pacing: a fresh ``edgecl serve``
subprocess per strategy (or the service at ``cloud=host:port``), devices at their pace in
real time through their impaired network (soak tests). The other strategies need no clock
and run as fast as the machine allows.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.fleet._backend import BACKENDS, Backend, create_backend
from edgecl.fleet._cloud import ENROLLMENT_KEY, CloudProcess
from edgecl.fleet._metrics import summarise
from edgecl.fleet._plans import FLEET_SCENARIOS, Impairments, fleet_plans
from edgecl.fleet._result import CloudCost, SimulationReport, SimulationResult, StrategySummary
from edgecl.fleet._run import DEFAULT_STRATEGIES, STRATEGIES, DeviceTask, uses_cloud
from edgecl.fleet._virtual import (
    CloudCostModel,
    VirtualClock,
    learning_threads,
    rollout_records,
    run_virtual,
)

CLOCKS = ("virtual", "real")

#: Learning settings of the simulated service: learn after 16 new labelled uploads (or
#: 10 s), from the target's last 100, with 100 Adam steps.
SIM_LEARNING = {"learning_trigger_samples": 16, "learning_trigger_seconds": 10.0,
                "learning_window": 256, "learning_steps": 100,
                "limits_requests_per_s": 100000, "limits_burst": 100000,
                "limits_samples_per_s": 1000000, "limits_sample_burst": 1000000}


def simulate(*, devices: int = 4, scenario: str = "continual",
             strategies: Sequence[str] = DEFAULT_STRATEGIES, steps: int = 100, batch: int = 10,
             seed: int = 0, pace: float = 20.0, fraction: float = 0.1,
             variant: str = "full", home: str | None = None, cloud: str | None = None,
             public_key: bytes | None = None, enrollment_key: str | None = None,
             impairments: Impairments | None = None, backend: str | Backend = "threads",
             processes: int | None = None, ray_address: str | None = None,
             report_dir: str | Path | None = None,
             adapt: str = "align", domains: int = 4, groups: int = 2,
             service_settings: dict[str, Any] | None = None,
             progress: bool = True, clock: str = "virtual", sync_s: float = 2.5,
             cloud_cost: CloudCostModel | None = None,
             rollout: Any = None, dashboard: int | None = None,
             operator_token: str | None = None,
             on_cloud: Callable[[str, str | None, str], None] | None = None,
             watch_inputs: bool | None = None) -> SimulationResult:
    """Simulate ``devices`` devices for ``steps`` predict batches of ``batch`` samples each.

    ``backend``: "threads", "processes" (light mode), "ray" (``ray_address``: a running
    cluster; None: a local one) or a backend instance (anything with ``run``; with
    ``hosts`` too it also hosts virtual-clock fleets, as :class:`RayBackend` does).
    ``clock``: "virtual" (default; reproducible: cloud strategies advance in rounds of
    ``sync_s`` simulated seconds, the service's compute costs simulated time from
    ``cloud_cost``) or "real" (wall-clock pacing; needed for an external ``cloud``).

    ``service_settings`` override the subprocess service's configuration
    (``EDGECL_CLOUD_<SECTION>_<KEY>`` names in lower case, e.g. ``learning_window``).
    ``rollout``: a :class:`~edgecl.cloud.RolloutPolicy` the service rolls every version
    out by (virtual clock only: devices report after every round, the rollout moves
    once per round); each strategy's ``rollouts`` then lists every version's waves.
    ``watch_inputs``: devices watch their raw inputs for domain changes, as the device
    agent does: at a change they start a new drift segment (the service sees the new domain
    at once), spend 40% of their budget while the input is new, and serve the bundle state
    until the cloud's update for the new domain arrives. None (default): on for the
    ``late-joiner`` scenario, whose devices enter domains long enough to be seen and which
    measures what a device entering a domain gets; off for the others (devices sample at an
    even rate and keep their state: the demo's domains are too short for the monitor).
    ``dashboard``: each cloud strategy's service also serves its web dashboard on this port
    (0: any free one; its address is printed when it starts), to watch the fleet live; log
    in with ``operator_token`` (default: a new one, printed). ``on_cloud(strategy,
    dashboard_url, target)`` is called when a cloud strategy's devices are done, while its
    service still runs (``edgecl simulate --keep-cloud`` waits there for Ctrl-C).
    Returns a :class:`~edgecl.fleet.SimulationResult` (figures: :mod:`edgecl.fleet._metrics`,
    JSON: ``edgecl/schemas/simulate.schema.json``); with ``report_dir`` also writes plots and
    ``index.html`` there (``result.report``).
    """
    from tqdm.auto import tqdm

    from edgecl.zoo import build_zoo

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(f"strategies must be from {STRATEGIES}, got {list(strategies)}")
    if scenario not in FLEET_SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; use one of {FLEET_SCENARIOS}")
    if steps < 1 or batch < 1 or not 0 < fraction <= 1:
        raise ConfigError("steps and batch must be >= 1, fraction in (0, 1]")
    if cloud is not None and public_key is None:
        raise ConfigError("an external cloud needs its update public key (public_key)")
    if clock not in CLOCKS:
        raise ConfigError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if devices < 1 or not pace > 0 or not math.isfinite(pace):
        raise ConfigError(f"devices must be >= 1 and pace a number > 0, got {devices} and "
                          f"{pace}")
    if clock == "virtual" and cloud is not None:
        raise ConfigError("an external service (cloud=...) runs in real time: use "
                          "clock='real' (--real-time)")
    if clock == "virtual" and not (sync_s > 0 and math.isfinite(sync_s)):
        raise ConfigError(f"sync_s must be a number of seconds > 0, got {sync_s}")
    if isinstance(backend, str) and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if ray_address is not None and backend != "ray":
        raise ConfigError("ray_address needs backend='ray'")
    rollout_settings = _rollout_settings(rollout, clock)
    if watch_inputs is None:
        watch_inputs = scenario == "late-joiner"
    dashboard_settings = ({} if dashboard is None else
                          _dashboard_settings(dashboard, operator_token))
    cost = cloud_cost or CloudCostModel()
    started = time.perf_counter()
    simulated = 0.0
    runner = backend if not isinstance(backend, str) else create_backend(
        backend, **({"processes": processes} if backend == "processes" else
                    {"address": ray_address} if backend == "ray" else {}))
    engine = getattr(runner, "hosts", None)  # hosts virtual-clock drivers elsewhere
    zoo = build_zoo(variant, home=home, progress=progress)
    plans = fleet_plans(scenario, devices, samples=steps * batch, seed=seed, pace=pace,
                        domains=domains, groups=groups, impairments=impairments)
    summaries: dict[str, StrategySummary] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    settings = {**SIM_LEARNING, "learning_group_by": "group" if scenario == "mixed"
                else "device", "server_max_workers": max(64, 4 * devices + 16),
                "server_max_streams": 2 * devices + 8, **rollout_settings, **dashboard_settings,
                **(service_settings or {})}
    with tqdm(total=devices * len(strategies), desc="simulate", unit="device",
              disable=not progress) as bar, tempfile.TemporaryDirectory() as tmp:
        for name in strategies:
            bar.set_postfix_str(name)
            own = {**settings, "learning_memory": str(name == "cloud+memory").lower()}
            if clock == "virtual" and uses_cloud(name):
                tasks = [DeviceTask(p, name, str(zoo.student_bundle), None, None,
                                    ENROLLMENT_KEY, fraction, batch, adapt, "",
                                    input_drift=watch_inputs, revert_on_shift=watch_inputs)
                         for p in plans]
                raw[name], rollouts = _run_virtual(tasks, name, Path(tmp), variant, home, own,
                                                   sync_s, cost, bar, engine, on_cloud)
                simulated = max([simulated] + [r["seconds"] for r in raw[name]])
                summaries[name] = dataclasses.replace(summarise(raw[name]),
                                                      rollouts=rollouts)
                continue
            service = None
            target, key, pk = None, enrollment_key or ENROLLMENT_KEY, public_key
            if uses_cloud(name) and cloud is None:
                service = CloudProcess(Path(tmp) / name.replace("+", "-"), variant=variant,
                                       home=home, settings=own)
                target, pk = service.target, service.public_key
                _announce(bar, name, service.dashboard)
            elif uses_cloud(name):
                target = cloud
            tag = f"{name.replace('+', '-')}-s{seed}-" if cloud else ""
            tasks = [DeviceTask(p, name, str(zoo.student_bundle), target, pk, key, fraction,
                                batch, adapt, tag, input_drift=watch_inputs,
                                revert_on_shift=watch_inputs) for p in plans]
            try:
                raw[name] = runner.run(tasks, on_done=lambda: bar.update(1))
                if service is not None and on_cloud is not None:
                    on_cloud(name, service.dashboard, service.target)
            finally:
                if service is not None:
                    service.close()
            if clock == "virtual" and not uses_cloud(name):  # no cloud: time is the stream's
                raw[name] = [_on_stream_time(r) for r in raw[name]]
            summaries[name] = summarise(raw[name])
    result = SimulationResult(
        scenario=scenario, devices=devices, samples_per_device=steps * batch, steps=steps,
        batch=batch, seed=seed, pace=pace, budget=fraction, domains_per_device=domains,
        backend=runner.name, cloud_mode="external" if cloud else "subprocess",
        groups=(f"declared: device i registers with group-<i % {groups}> (its site); the "
                "cloud learns one update per group" if scenario == "mixed" else "none: one "
                "update stream per device"),
        impairments=impairments or Impairments(), strategies=summaries,
        seconds=round(time.perf_counter() - started, 1), clock=clock,
        watch_inputs=watch_inputs,
        simulated_seconds=round(simulated, 3),
        wall_seconds=round(time.perf_counter() - started, 1), peak_rss_mb=peak_rss_mb(),
        cloud_cost=(CloudCost(cost.job_s, cost.label_per_s, cost.workers, sync_s)
                    if clock == "virtual" else None))
    if report_dir is not None:
        written = write_report(result, raw, report_dir)
        result = dataclasses.replace(result, report=SimulationReport(
            html=written["html"], plots=list(written["plots"]), json=written.get("json")))
    return result


def _run_virtual(tasks: list[DeviceTask], name: str, tmp: Path, variant: str,
                 home: str | None, settings: dict[str, Any], sync_s: float,
                 cost: CloudCostModel, bar: Any, engine: Any = None,
                 on_cloud: Callable[[str, str | None, str], None] | None = None
                 ) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The cloud strategy ``name`` on the virtual clock, against a fresh service here;
    the devices' results, and every version's rollout when the policy was not auto."""
    from edgecl.cloud import create_server, load_config

    env = {f"EDGECL_CLOUD_{k.upper()}": str(v) for k, v in {
        **settings, "auth_enrollment_key": ENROLLMENT_KEY, "teacher_zoo": variant,
        "storage_dir": str(tmp / f"{name.replace('+', '-')}-virtual"),
        "server_address": "127.0.0.1:0", "metrics_port": "-1",
        "learning_workers": learning_threads(
            cost, str(settings.get("learning_memory", "false")).lower() == "true")}.items()}
    sim_clock = VirtualClock()
    server = create_server(load_config(None, env=env), home=home, clock=sim_clock)
    server.start(labelling=False)
    _announce(bar, name, server.dashboard and server.dashboard.url)
    key = server.signer.public_key
    tasks = [dataclasses.replace(t, target=server.target, public_key=key) for t in tasks]

    shown = [0.0]

    def on_round(now: float, published: int) -> None:
        bar.set_postfix_str(f"{name} t={now:.0f}s updates={published}", refresh=False)
        if time.monotonic() - shown[0] >= 0.5:  # at most twice a second
            shown[0] = time.monotonic()
            bar.refresh()

    try:
        results = run_virtual(tasks, server, sim_clock, sync_s=sync_s, cost=cost,
                              on_done=lambda: bar.update(1), on_round=on_round,
                              engine=engine)
        staged = server.registry.rollout_policy("") is not None
        if on_cloud is not None:
            on_cloud(name, server.dashboard and server.dashboard.url, server.target)
        return results, rollout_records(server.registry) if staged else None
    finally:
        server.stop(grace=1.0)


def _dashboard_settings(port: int, token: str | None) -> dict[str, Any]:
    """The service settings of a dashboard on ``port`` with one operator, ``token``."""
    from edgecl.cloud import new_operator_token

    if not 0 <= port < 65536:
        raise ConfigError(f"dashboard must be a port (0: any free one), got {port}")
    return {"dashboard_port": port,
            "admin_operators": f"simulation:operator:{token or new_operator_token()}"}


def _announce(bar: Any, strategy: str, url: str | None) -> None:
    if url:
        bar.write(f"[{strategy}] dashboard: {url}", file=sys.stderr)


def _rollout_settings(rollout: Any, clock: str) -> dict[str, Any]:
    """The service settings of a rollout policy (``rollout_<field>``)."""
    if rollout is None:
        return {}
    from edgecl._exceptions import InvalidInput
    from edgecl.cloud import RolloutPolicy

    try:
        policy = (rollout if isinstance(rollout, RolloutPolicy)
                  else RolloutPolicy.from_dict(dict(rollout))).validate()
    except InvalidInput as exc:
        raise ConfigError(f"rollout: {exc}") from exc
    if policy.mode != "auto" and clock != "virtual":
        raise ConfigError("a staged or manual rollout is simulated on the virtual clock only")
    return {f"rollout_{k}": str(v).lower() if isinstance(v, bool) else v
            for k, v in policy.to_dict().items()}


def _on_stream_time(r: dict[str, Any]) -> dict[str, Any]:
    """A device run without the cloud, timed by its stream (samples / pace), not the wall."""
    n, b = len(r["correct"]), r["batch"]
    ends = np.minimum(np.arange(1, len(r["batch_times"]) + 1) * b, n) / r["pace"]
    return {**r, "batch_times": ends, "seconds": float(n / r["pace"])}


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, MiB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024.0, 1)  # Linux: KiB


def write_report(result: SimulationResult | dict[str, Any],
                 raw: dict[str, list[dict[str, Any]]], out: str | Path) -> dict[str, Any]:
    """Plots and ``index.html`` for a simulation (see :mod:`edgecl.fleet._report`)."""
    from edgecl.fleet._report import write_report as _write

    return _write(_as_dict(result), raw, out)


def _as_dict(result: SimulationResult | dict[str, Any]) -> dict[str, Any]:
    return result.to_dict() if isinstance(result, SimulationResult) else result


def summary_table(result: SimulationResult | dict[str, Any]) -> str:
    """A plain-text table of the strategies (what ``edgecl simulate`` prints)."""
    result = _as_dict(result)
    rows = [f"{'strategy':<14}{'online acc':>11}{'kB up/dev':>11}{'kB down/dev':>12}"
            f"{'uploads':>9}{'updates':>9}{'latency s':>10}{'OOD AUROC':>10}"]
    for name, s in result["strategies"].items():
        lat = "n/a" if s["update_latency_s"] is None else f"{s['update_latency_s']:.2f}"
        auc = "n/a" if s["ood_auroc"] is None else f"{s['ood_auroc']:.3f}"
        rows.append(f"{name:<14}{s['mean_online_acc']:>11.3f}"
                    f"{s['bytes_up_per_device'] / 1e3:>11.1f}"
                    f"{s['bytes_down_per_device'] / 1e3:>12.1f}{s['upload_fraction']:>9.3f}"
                    f"{s['updates']['applied']:>9}{lat:>10}{auc:>10}")
    for name, s in result["strategies"].items():
        if s.get("rollouts"):
            rows.append(f"rollouts ({name}):")
            rows += [f"  {line}" for line in rollout_lines(s["rollouts"])]
    return "\n".join(rows)


def rollout_lines(rollouts: list[dict[str, Any]]) -> list[str]:
    """One line per rollout: target, version, state, and its waves (devices@seconds)."""
    out = []
    for r in rollouts:
        waves = ", ".join(f"{w['devices']}@{w['started_s']:g}s" for w in r["waves"]) or "-"
        refused = sum(w["refused"] for w in r["waves"])
        out.append(f"{r['target']} v{r['version']}: {r['state']}; waves {waves}"
                   + (f"; {refused} refused" if refused else ""))
    return out
