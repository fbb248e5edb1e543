"""The ``edgecl`` command line: the reference zoo, bundles, benchmarks, evaluations, the
fleet simulator, the demo and the cloud service (``edgecl --help`` lists them)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecl._exceptions import ConfigError, EdgeclError

_DESCRIPTION = "edgecl: continual adaptation of vision models on edge devices."

_EPILOG = "Run 'edgecl COMMAND --help' for a command's options."

# the extra that brings each optional third-party module
_EXTRAS = {"onnxruntime": "device", "grpc": "device", "google": "device",
           "cryptography": "device", "torch": "cloud", "onnx": "cloud", "onnxscript": "cloud",
           "prometheus_client": "cloud", "grpc_health": "cloud", "grpc_reflection": "cloud",
           "mlxtend": "zoo", "scipy": "zoo", "PIL": "zoo", "tqdm": "zoo", "matplotlib": "sim",
           "ray": "ray"}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None/False or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from edgecl.zoo import build_zoo

    quiet = args.json or args.student_path
    zoo = build_zoo(args.variant, home=args.home, force=args.force, progress=not quiet)
    if args.student_path:
        print(zoo.student_bundle.resolve())
        return 0
    if args.json:
        print(json.dumps(zoo.report, indent=2, sort_keys=True))
        return 0
    from edgecl.zoo.report import format_zoo_report

    print(format_zoo_report(zoo))
    print(f"student bundle: {zoo.student_bundle.resolve()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export ``module:factory`` (returning an encoder, or (encoder, head)) as a bundle."""
    import numpy as np

    from edgecl.bundle import export_bundle

    module_name, _, attr = args.model.partition(":")
    if not attr:
        raise ConfigError("MODEL must look like 'package.module:factory'")
    factory = getattr(importlib.import_module(module_name), attr)
    built = factory()
    encoder, head = built if isinstance(built, tuple) else (built, None)
    if head is None:
        raise ConfigError("the factory must return (encoder, head)")
    shape = _ints(args.input_shape)
    lo, hi = _floats(args.value_range)
    example = np.random.default_rng(0).uniform(lo, hi, size=shape).astype(np.float32)
    real = np.load(args.real_inputs) if args.real_inputs else None
    bundle = export_bundle(
        encoder, head, example, args.out,
        class_names=args.classes.split(",") if args.classes else None,
        value_range=(lo, hi), mean=_floats(args.mean) if args.mean else None,
        std=_floats(args.std) if args.std else None, real_inputs=real,
        tolerance=args.tolerance, overwrite=args.overwrite)
    print(json.dumps({"bundle": str(bundle.path), "encoder_sha256": bundle.encoder_sha256,
                      "export_check": bundle.manifest.export_check}, indent=2))
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from edgecl.bundle import load_bundle

    bundle = load_bundle(args.path)
    m = bundle.manifest
    print(json.dumps({"ok": True, "name": m.name, "encoder_sha256": m.encoder_sha256,
                      "input": m.input.to_dict(), "classes": list(m.class_names),
                      "head": m.head, "files": m.files}, indent=2))
    return 0


def cmd_bench_device(args: argparse.Namespace) -> int:
    from edgecl.bench.device import bench_device

    result = bench_device(calls=args.calls, warmup=args.warmup, threads=args.threads,
                          zoo_variant=args.variant, home=args.home, progress=not args.json)
    return _emit(result, args.json)


def _zoo_for(args: argparse.Namespace) -> Any:
    from edgecl.zoo import build_zoo

    return build_zoo(args.variant, home=args.home, progress=not args.json)


def _emit(result: Any, as_json: bool) -> int:
    """Print a typed result (an ``edgecl._result.JsonResult``) as JSON, keys sorted."""
    print(result.to_json(indent=None if as_json else 2))
    return 0


def cmd_eval_drift(args: argparse.Namespace) -> int:
    from edgecl.eval.drift import evaluate_drift

    result = evaluate_drift(_zoo_for(args), severities=tuple(_ints(args.severities)),
                            clean_samples=args.clean_samples, score=args.score, seed=args.seed)
    return _emit(result, args.json)


def cmd_eval_ood(args: argparse.Namespace) -> int:
    from edgecl.eval.ood import evaluate_ood

    result = evaluate_ood(_zoo_for(args), detectors=args.detectors.split(",") if args.detectors
                          else None, severity=args.severity, seed=args.seed)
    return _emit(result, args.json)


def cmd_eval_sampling(args: argparse.Namespace) -> int:
    from edgecl.eval.sampling import evaluate_sampling

    result = evaluate_sampling(_zoo_for(args), budget=args.budget, seed=args.seed)
    return _emit(result, args.json)


def cmd_eval_adapt(args: argparse.Namespace) -> int:
    from edgecl.eval.adapt import evaluate_adapt

    result = evaluate_adapt(_zoo_for(args), scenario=args.scenario,
                            methods=tuple(args.methods.split(",")), batch=args.batch,
                            samples=args.samples, seed=args.seed, progress=not args.json)
    return _emit(result, args.json)


def cmd_eval_loop(args: argparse.Namespace) -> int:
    from edgecl.eval.loop import evaluate_loop
    from edgecl.fleet._virtual import CloudCostModel

    zoo = _zoo_for(args)
    kwargs: dict[str, Any] = {}
    if args.corruptions:
        kwargs["corruptions"] = tuple(args.corruptions.split(","))
    result = evaluate_loop(zoo, scenario=args.scenario,
                           samples_per_domain=args.samples_per_domain,
                           fraction=args.budget, seed=args.seed, variant=args.variant,
                           home=args.home, strategies=tuple(args.strategies.split(",")),
                           progress=not args.json,
                           cloud_cost=CloudCostModel(args.cloud_job_s, args.cloud_label_per_s),
                           **kwargs)
    return _emit(result, args.json)


def cmd_simulate(args: argparse.Namespace) -> int:
    from edgecl.fleet import Impairments, simulate, summary_table
    from edgecl.fleet._virtual import CloudCostModel

    impairments = Impairments(latency_ms=args.latency_ms, bandwidth_kbps=args.bandwidth_kbps,
                              offline_fraction=args.offline_fraction, offline_s=args.offline_s,
                              slow_fraction=args.slow_fraction)
    public_key = Path(args.public_key).read_bytes() if args.public_key else None
    rollout = None
    if args.rollout:
        from edgecl._cli_fleet import key_values

        rollout = {"mode": args.rollout}
        for key, value in key_values(args.rollout_option, "--rollout-option").items():
            try:
                rollout[key] = (value.lower() == "true" if value.lower() in ("true", "false")
                                else int(value) if key == "max_errors" else float(value))
            except ValueError:
                raise ConfigError(f"--rollout-option {key} takes a number, got {value!r}"
                                  ) from None
    result = simulate(devices=args.devices, scenario=args.scenario,
                      strategies=tuple(args.strategies.split(",")), steps=args.steps,
                      batch=args.batch, seed=args.seed, pace=args.pace, fraction=args.budget,
                      variant=args.variant, home=args.home, cloud=args.cloud,
                      public_key=public_key, enrollment_key=args.enrollment_key,
                      impairments=impairments,
                      backend=args.backend or ("processes" if args.light else "threads"),
                      processes=args.processes, ray_address=args.ray_address,
                      report_dir=args.report_dir,
                      domains=args.domains, groups=args.groups, progress=not args.quiet,
                      clock="real" if args.real_time or args.cloud else "virtual",
                      sync_s=args.sync_s,
                      cloud_cost=CloudCostModel(args.cloud_job_s, args.cloud_label_per_s,
                                                 args.cloud_workers), rollout=rollout,
                      watch_inputs=args.watch_inputs, **_watching(args))
    if args.json:
        Path(args.json).write_text(result.to_json(indent=2))
    print(summary_table(result))
    if result.report is not None:
        print(f"report: {result.report.html}")
    return 0


def _watching(args: argparse.Namespace) -> dict[str, Any]:
    """simulate()'s dashboard settings of ``--dashboard`` and ``--keep-cloud``."""
    if args.dashboard is None and not args.keep_cloud:
        return {}
    from edgecl.cloud import new_operator_token

    token = os.environ.get("EDGECL_ADMIN_TOKEN") or new_operator_token()
    print(f"dashboard login (operator token): {token}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"dashboard": 0 if args.dashboard is None else args.dashboard,
                           "operator_token": token}
    if args.keep_cloud:
        out["on_cloud"] = _keep_cloud
    return out


def _keep_cloud(strategy: str, dashboard: str | None, target: str) -> None:
    """Wait for Ctrl-C with ``strategy``'s service still up."""
    import threading

    print(f"[{strategy}] devices done; the service stays up until Ctrl-C: dashboard "
          f"{dashboard}, admin API {target} (edgecl fleet devices --server {target})",
          file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print(f"[{strategy}] stopping the service", file=sys.stderr, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from edgecl.demo import run_demo

    overrides = {k: v for k, v in (("devices", args.devices), ("steps", args.steps))
                 if v is not None}
    return run_demo(variant=args.variant, home=args.home, report_dir=args.report_dir,
                    **overrides)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``edgecl`` command."""
    from edgecl import __version__

    fmt = _HelpFormatter
    p = argparse.ArgumentParser(prog="edgecl", description=_DESCRIPTION, epilog=_EPILOG)
    p.add_argument("--version", action="version", version=f"edgecl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help_text, description=help_text,
                                 formatter_class=fmt)

    def common(sp: argparse.ArgumentParser, *, with_json: bool = False) -> None:
        sp.add_argument("--home", default=None, help="cache root (default: $EDGECL_HOME or "
                        "~/.cache/edgecl)")
        sp.add_argument("--variant", default="full", choices=["full", "tiny"],
                        help="zoo recipe (tiny: a fast variant for tests)")
        if with_json:
            sp.add_argument("--json", action="store_true", help="one JSON object on stdout")

    zoo = add(sub, "zoo", "zoo build: train, export and evaluate the reference models "
              "(MNIST-5k student and teacher)").add_subparsers(
        dest="zoo_command", required=True, metavar="COMMAND")
    zb = add(zoo, "build", "train, export and evaluate the reference models (cached under "
             "the cache root); prints the report, then the student bundle's path")
    common(zb)
    zb.add_argument("--force", action="store_true", help="rebuild even if cached")
    zb.add_argument("--json", action="store_true", help="print the report as JSON")
    zb.add_argument("--student-path", action="store_true", help="print only the student "
                    "bundle's path (for scripts: --bundle \"$(edgecl zoo build "
                    "--student-path)\")")
    zb.set_defaults(func=cmd_zoo_build)

    ex = add(sub, "export", "export a torch encoder and head as a model bundle (dynamo "
             "ONNX export, parity-checked)")
    ex.add_argument("model", help="'package.module:factory'; the factory returns "
                    "(encoder, head) torch modules")
    ex.add_argument("--out", required=True, help="bundle directory to create")
    ex.add_argument("--input-shape", required=True, help="per-sample shape, e.g. 3,224,224")
    ex.add_argument("--value-range", default="0,1", help="raw input range, e.g. 0,1")
    ex.add_argument("--mean", help="per-channel mean baked into the graph, e.g. 0.5,0.5,0.5")
    ex.add_argument("--std", help="per-channel std baked into the graph")
    ex.add_argument("--classes", help="comma-separated class names (default: class0, ...)")
    ex.add_argument("--real-inputs", help=".npy file of real samples for the parity check")
    ex.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest ONNX vs torch difference the parity check accepts")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    ex.set_defaults(func=cmd_export)

    bun = add(sub, "bundle", "bundle verify: check a model bundle's schema and "
                "hashes").add_subparsers(
        dest="bundle_command", required=True, metavar="COMMAND")
    bv = add(bun, "verify", "verify a bundle's manifest schema and file hashes; print "
             "its summary as JSON")
    bv.add_argument("path", help="bundle directory")
    bv.set_defaults(func=cmd_bundle_verify)

    bench = add(sub, "bench", "benchmarks of speed and memory: device, cloud, swap, "
                  "adapt, soak").add_subparsers(
        dest="bench_command", required=True, metavar="COMMAND")
    bd = add(bench, "device", "predict latency and memory: SDK vs bare onnxruntime vs "
             "torch eager")
    common(bd, with_json=True)
    bd.add_argument("--calls", type=int, default=200, help="timed calls per measurement")
    bd.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    bd.add_argument("--threads", type=int, default=1, help="intra-op threads (ORT and torch)")
    bd.set_defaults(func=cmd_bench_device)
    bc = add(bench, "cloud", "upload throughput and RPC latency at 1, 10, 100 devices; "
             "teacher throughput vs raw torch (output is always JSON)")
    common(bc)
    bc.add_argument("--devices", "--concurrency", dest="concurrency", default="1,10,100",
                    help="comma-separated device counts")
    bc.add_argument("--registry", default="", help="registry URL (default: a new SQLite file; "
                    "postgresql://... measures PostgreSQL)")
    bc.add_argument("--replicas", type=int, default=1, help="edgecl serve processes on the "
                    "registry (> 1 needs PostgreSQL); devices balance over them")
    bc.add_argument("--subscribers", type=int, default=0, help="idle Subscribe streams held "
                    "open against one replica, in turn with none, while the largest device "
                    "count uploads")
    bc.add_argument("--uploads", type=int, default=20, help="Upload RPCs per device")
    bc.add_argument("--batch", type=int, default=8, help="samples per Upload")
    bc.add_argument("--teacher-rounds", type=int, default=5, help="timed teacher rounds")
    bc.add_argument("--samples", type=int, default=512,
                    help="samples labelled per teacher round (service and raw torch)")
    bc.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    bc.add_argument("--json", action="store_true", help="accepted for symmetry; output is "
                    "always JSON")
    bc.set_defaults(func=cmd_bench_cloud)
    bs = add(bench, "swap", "hot-swap latency and predict p50/p99 while states are swapped")
    common(bs, with_json=True)
    bs.add_argument("--calls", type=int, default=4000, help="timed predict calls")
    bs.add_argument("--swaps-per-s", type=float, default=10.0, help="swap rate during them")
    bs.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    bs.add_argument("--edge", action="store_true", help="the 224x224 edge encoder instead of "
                    "the zoo student")
    bs.set_defaults(func=cmd_bench_swap)
    bad = add(bench, "adapt", "predict p50/p99 with the adaptation worker on vs off")
    common(bad, with_json=True)
    bad.add_argument("--method", default="align", help="test-time adaptation method "
                     "(see edgecl.adapt.list_adapters)")
    bad.add_argument("--calls", type=int, default=4000, help="timed predict calls")
    bad.add_argument("--batch", type=int, default=1, help="images per predict call")
    bad.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    bad.add_argument("--edge", action="store_true", help="the 224x224 edge encoder (random "
                     "inputs) instead of the zoo student (corrupted digits)")
    bad.set_defaults(func=cmd_bench_adapt)
    bk = add(bench, "soak", "many devices upload for minutes to an edgecl serve subprocess: "
             "lost samples, server RSS growth, client errors (exit 1 if any acked is lost)")
    common(bk, with_json=True)
    bk.add_argument("--devices", type=int, default=100, help="simulated devices, each with "
                    "its own outbox and sync client")
    bk.add_argument("--minutes", type=float, default=10.0, help="how long the devices upload")
    bk.add_argument("--rate", type=float, default=1.0, help="samples per second per device")
    bk.add_argument("--rss-every", type=float, default=5.0, help="seconds between samples "
                    "of the server's RSS")
    bk.set_defaults(func=cmd_bench_soak)

    ev = add(sub, "eval", "evaluations on the reference zoo: ood, drift, sampling, "
               "adapt, loop").add_subparsers(
        dest="eval_command", required=True, metavar="COMMAND")
    ed = add(ev, "drift", "drift detection delay and false alarms on zoo streams")
    common(ed, with_json=True)
    ed.add_argument("--severities", default="3,5", help="comma-separated corruption "
                    "severities (1..5)")
    ed.add_argument("--clean-samples", type=int, default=10_000,
                    help="clean samples to count false alarms on")
    ed.add_argument("--score", default="energy",
                    help="energy, msp, or an OOD detector of the bundle (vim, mahalanobis, ...)")
    ed.add_argument("--seed", type=int, default=0, help="stream seed")
    ed.set_defaults(func=cmd_eval_drift)
    eo = add(ev, "ood", "AUROC and FPR@95TPR of every OOD detector on the zoo student")
    common(eo, with_json=True)
    eo.add_argument("--detectors", help="comma-separated subset (default: all registered)")
    eo.add_argument("--severity", type=int, default=5, help="corruption severity (1..5)")
    eo.add_argument("--seed", type=int, default=0, help="corruption seed")
    eo.set_defaults(func=cmd_eval_ood)
    es = add(ev, "sampling", "uncertainty-guided sampling vs random on a gradual stream")
    common(es, with_json=True)
    es.add_argument("--budget", type=float, default=0.05, help="fraction of samples to send")
    es.add_argument("--seed", type=int, default=0, help="stream seed")
    es.set_defaults(func=cmd_eval_sampling)
    ea = add(ev, "adapt", "prequential test-time adaptation (device only, no labels) vs "
             "source on a zoo stream")
    common(ea, with_json=True)
    ea.add_argument("--scenario", default="continual",
                    choices=["continual", "gradual", "recurring", "label-shift"],
                    help="the zoo stream")
    ea.add_argument("--methods", default="source,lame,adanpc,tent,eata,cotta,align,"
                    "align+lame,align+tent,align+eata,align+cotta",
                    help="comma-separated methods; a+b chains feature alignment and a method")
    ea.add_argument("--batch", type=int, default=64, help="images per predict/adapt batch")
    ea.add_argument("--samples", type=int, default=None,
                    help="samples per domain (default: the scenario's)")
    ea.add_argument("--seed", type=int, default=0, help="stream seed")
    ea.set_defaults(func=cmd_eval_adapt)
    el = add(ev, "loop", "the cloud-device loop on a drifting stream vs source and "
             "teacher (one device, the real service on loopback)")
    common(el, with_json=True)
    el.add_argument("--scenario", default="continual",
                    choices=["continual", "returning", "recurring", "gradual"],
                    help="the stream: continual (10 severe corruptions), returning (clean "
                    "and mild domains between severe ones), recurring (5 corruptions, 3 "
                    "visits), gradual (severity 1..5..1)")
    el.add_argument("--samples-per-domain", type=int, default=None,
                    help="samples per visit (per severity step for gradual); default: "
                    "the scenario's (2000, 800, 400, 200)")
    el.add_argument("--corruptions", default="", help="comma-separated domains (default: "
                    "the scenario's; 'clean' allowed for returning)")
    el.add_argument("--budget", type=float, default=0.1, help="upload fraction")
    el.add_argument("--strategies", default="source,device,cloud,cloud+device,cloud_random,"
                    "teacher", help="comma-separated strategies to run")
    el.add_argument("--seed", type=int, default=0, help="stream seed")
    el.add_argument("--cloud-job-s", type=float, default=0.0,
                    help="virtual clock: simulated seconds one learning job takes (default "
                    "0 with instant labelling: lockstep, the update is on the device before "
                    "its next sample); the device sees 10 samples per simulated second")
    el.add_argument("--cloud-label-per-s", type=float, default=float("inf"),
                    help="virtual clock: samples the teacher labels per simulated second")
    el.set_defaults(func=cmd_eval_loop)

    sm = add(sub, "simulate", "a fleet of real devices against the real cloud service, per "
             "strategy, with a JSON result and an HTML report")
    common(sm)
    sm.add_argument("--devices", type=int, default=4, help="simulated devices")
    sm.add_argument("--scenario", default="continual",
                    choices=["continual", "gradual", "recurring", "label-shift", "open-set",
                             "mixed", "late-joiner"],
                    help="what the devices' streams do (late-joiner: half the devices join "
                    "after the others went through the same domains)")
    sm.add_argument("--strategies", default="source,device,cloud,cloud+device",
                    help="comma-separated strategies, each a separate run of the fleet "
                    "(also cloud+memory: the cloud with fleet memory)")
    sm.add_argument("--steps", type=int, default=100, help="predict batches per device")
    sm.add_argument("--groups", type=int, default=2, help="device groups (mixed scenario)")
    sm.add_argument("--batch", type=int, default=10, help="samples per predict batch")
    sm.add_argument("--domains", type=int, default=4,
                    help="shifted domains per device (after a clean start, where it applies)")
    sm.add_argument("--pace", type=float, default=20.0,
                    help="samples per second per device (cloud strategies run in real time)")
    sm.add_argument("--budget", type=float, default=0.1, help="upload fraction")
    sm.add_argument("--seed", type=int, default=0, help="fleet seed")
    sm.add_argument("--report-dir", default=None, help="write plots and the HTML report here")
    sm.add_argument("--json", default=None, help="write the result JSON to this file")
    sm.add_argument("--cloud", default=None, help="host:port of a running service "
                    "(default: start edgecl serve in a subprocess per cloud strategy)")
    sm.add_argument("--public-key", default=None, help="the external service's update "
                    "public key (signing_key.pem.pub)")
    sm.add_argument("--enrollment-key", default=None,
                    help="the external service's enrollment key")
    sm.add_argument("--latency-ms", type=float, default=0.0, help="added network latency")
    sm.add_argument("--bandwidth-kbps", type=float, default=0.0,
                    help="network bandwidth per device; 0 = unlimited")
    sm.add_argument("--offline-fraction", type=float, default=0.0,
                    help="share of devices that drop off once, mid-run")
    sm.add_argument("--offline-s", type=float, default=10.0, help="how long they stay off")
    sm.add_argument("--slow-fraction", type=float, default=0.0,
                    help="share of devices at half pace")
    sm.add_argument("--light", action="store_true", help="light mode: devices batched into "
                    "worker processes (for 100 devices on 2 cores)")
    sm.add_argument("--processes", type=int, default=None,
                    help="worker processes in light mode (default: one per core)")
    sm.add_argument("--quiet", action="store_true", help="no progress bar")
    sm.add_argument("--backend", default=None, choices=["threads", "processes", "ray"],
                    help="where devices run (default: threads; --light: processes; ray: "
                    "Ray tasks and actors, needs edgecl[ray])")
    sm.add_argument("--ray-address", default=None, help="address of a running Ray cluster "
                    "(with --backend ray; default: start a local one)")
    sm.add_argument("--real-time", action="store_true", help="pace cloud strategies by the "
                    "wall clock against an edgecl serve subprocess (soak tests; results then "
                    "depend on machine load); default: the virtual clock (reproducible)")
    sm.add_argument("--sync-s", type=float, default=2.5,
                    help="virtual clock: simulated seconds between sync rounds")
    sm.add_argument("--cloud-job-s", type=float, default=5.0,
                    help="virtual clock: simulated seconds one learning job takes")
    sm.add_argument("--cloud-label-per-s", type=float, default=500.0,
                    help="virtual clock: samples the teacher labels per simulated second")
    sm.add_argument("--cloud-workers", type=int, default=1,
                    help="virtual clock: learning jobs the service runs at a time")
    sm.add_argument("--rollout", choices=("auto", "staged", "manual"), default=None,
                    help="the service's rollout policy (virtual clock; default auto: every "
                    "version to every device at once)")
    sm.add_argument("--rollout-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a RolloutPolicy field, e.g. canary_share=0.25 (repeatable)")
    sm.add_argument("--watch-inputs", action=argparse.BooleanOptionalAction, default=None,
                    help="devices watch their raw inputs for domain changes as the device "
                    "agent does (a new drift segment, 40%% of the budget while the input is "
                    "new, the bundle state until the cloud's update for it arrives); "
                    "default: on for late-joiner, off otherwise")
    sm.add_argument("--dashboard", type=int, default=None, metavar="PORT",
                    help="each cloud strategy's service serves its web dashboard on this "
                    "port (0: any free one) to watch the fleet live; log in with the "
                    "operator token printed at the start (or $EDGECL_ADMIN_TOKEN)")
    sm.add_argument("--keep-cloud", action="store_true",
                    help="when a cloud strategy's devices are done, keep its service (the "
                    "dashboard and the admin API) running until Ctrl-C")
    sm.set_defaults(func=cmd_simulate)

    sv = add(sub, "serve", "run the cloud teacher service (gRPC) until SIGTERM/SIGINT")
    sv.add_argument("--config", default=None,
                    help="TOML file (see cloud/edgecl-cloud.toml); env overrides "
                    "EDGECL_CLOUD_<SECTION>_<KEY> apply")
    sv.add_argument("--home", default=None, help="cache root for the zoo teacher/bundle and "
                    "the default storage dir (default: $EDGECL_HOME or ~/.cache/edgecl)")
    sv.set_defaults(func=cmd_serve)

    keys = add(sub, "keys", "keys rotate: manage the service's update signing key"
               ).add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    kr = add(keys, "rotate", "make a new signing key current, endorsed by the old one (devices "
             "that trust the old key follow the rotation); restart the service after it")
    kr.add_argument("--key", default=None, help="the service's signing key (PEM; default: "
                    "cloud/signing_key.pem under the cache root, the default of "
                    "[learning] signing_key)")
    kr.add_argument("--home", default=None, help="cache root (default: $EDGECL_HOME or "
                    "~/.cache/edgecl)")
    kr.set_defaults(func=cmd_keys_rotate)

    dv = add(sub, "device", "device run: the long-running agent of a real device (runtime, "
             "sampling, outbox, sync, updates, reports)").add_subparsers(
        dest="device_command", required=True, metavar="COMMAND")
    dr = add(dv, "run", "run the device agent until its frame source ends or SIGTERM/SIGINT "
             "(the outbox is flushed first); prints a JSON summary")
    dr.add_argument("--config", required=True, help="device TOML (see device/device.toml)")
    dr.set_defaults(func=cmd_device_run)

    from edgecl._cli_fleet import add_fleet_commands

    add_fleet_commands(sub, add)

    dm = add(sub, "demo", "a small fleet under drift against the real cloud service: every "
             "strategy, a summary and an HTML report (~6 min on 2 cores)")
    common(dm)
    dm.add_argument("--devices", type=int, default=None, help="simulated devices (default 6)")
    dm.add_argument("--steps", type=int, default=None, help="predict batches per device "
                    "(default 80)")
    dm.add_argument("--report-dir", default=None,
                    help="where the report goes (default: <cache root>/demo-report)")
    dm.set_defaults(func=cmd_demo)
    return p


def cmd_bench_cloud(args: argparse.Namespace) -> int:
    from edgecl.bench.cloud import bench_cloud

    result = bench_cloud(variant=args.variant, home=args.home,
                         concurrency=tuple(_ints(args.concurrency)),
                         uploads_per_device=args.uploads, batch=args.batch,
                         teacher_rounds=args.teacher_rounds, teacher_samples=args.samples,
                         threads=args.threads, registry=args.registry,
                         replicas=args.replicas, subscribers=args.subscribers)
    print(result.to_json(indent=2))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from edgecl.bench.soak import bench_soak

    result = bench_soak(devices=args.devices, minutes=args.minutes, variant=args.variant,
                        home=args.home, rate=args.rate, rss_every_s=args.rss_every)
    _emit(result, args.json)
    return 1 if result.lost else 0


def cmd_bench_swap(args: argparse.Namespace) -> int:
    import dataclasses

    from edgecl.bench.swap import bench_swap

    if args.edge:
        from edgecl.zoo.edge import edge_bundle

        bundle = edge_bundle(args.home)
    else:
        bundle = _zoo_for(args).student_bundle
    result = bench_swap(bundle, calls=args.calls, swaps_per_s=args.swaps_per_s,
                        threads=args.threads)
    return _emit(dataclasses.replace(result, bundle="edge" if args.edge else "zoo student"),
                 args.json)


def cmd_bench_adapt(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from edgecl.bench.adapt import bench_adapt
    from edgecl.zoo.streams import continual_stream

    zoo = _zoo_for(args)
    if args.edge:
        from edgecl.zoo.edge import edge_bundle

        bundle = edge_bundle(args.home)
        frames = np.random.default_rng(0).random((256, 3, 224, 224), dtype=np.float32)
    else:
        bundle = zoo.student_bundle
        frames = continual_stream(["gaussian_noise", "fog"], samples_per_domain=500).arrays()[0]
    result = bench_adapt(bundle, frames, method=args.method, calls=args.calls,
                         batch=args.batch, threads=args.threads)
    return _emit(dataclasses.replace(result, bundle="edge" if args.edge else "zoo student"),
                 args.json)


def cmd_serve(args: argparse.Namespace) -> int:
    from edgecl.cloud import load_config, serve

    return serve(load_config(args.config), home=args.home)


def cmd_device_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edgecl.device import DeviceAgent, load_agent_config

    agent = DeviceAgent(load_agent_config(args.config)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    print(json.dumps({"device_id": agent.config.name, "server": agent.config.server,
                      "source": agent.config.source, "state_dir": str(agent.state_dir)}),
          flush=True)
    try:
        agent.run(stop)
    finally:
        summary = agent.close()
    print(json.dumps(summary), flush=True)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from edgecl import default_home
    from edgecl.cloud import rotate_signing_key

    key = Path(args.key) if args.key else default_home(args.home) / "cloud" / "signing_key.pem"
    old, new = rotate_signing_key(key)
    print(json.dumps({"signing_key": str(key.resolve()), "old_key_id": old,
                      "new_key_id": new, "public_key": str(key.resolve()) + ".pub"}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgecl`` console command."""
    args = build_parser().parse_args(argv)
    try:
        result: Any = args.func(args)
    except EdgeclError as exc:
        print(f"edgecl: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra that is not installed
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRAS:
            raise
        print(f"edgecl: error: this command needs {top!r}, which is not installed: "
              f"pip install 'edgecl[{_EXTRAS[top]}]'", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
