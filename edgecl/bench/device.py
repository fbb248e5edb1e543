"""``edgecl bench device``: SDK predict vs bare onnxruntime vs torch eager, and peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.bench._timing import interleaved, summary_ms
from edgecl.bench.ood import bench_ood_overhead
from edgecl.bench.results import DeviceBenchResult, DeviceMachine, ModelBench, TorchReference


def bench_device(*, calls: int = 200, warmup: int = 20, threads: int = 1,
                 zoo_variant: str = "full", home: str | None = None,
                 progress: bool = True) -> DeviceBenchResult:
    """Measure the ``tiny`` (zoo student) and ``edge`` encoders; see README for the keys
    (``edgecl/schemas/bench-device.schema.json``)."""
    import torch

    from edgecl.zoo import build_zoo, edge_bundle
    from edgecl.zoo.edge import edge_modules

    torch.set_num_threads(threads)
    zoo = build_zoo(zoo_variant, home=home, progress=progress)
    edge_path = edge_bundle(home)
    student_program = torch.export.load(str(zoo.student_bundle / "encoder.pt2")).module()
    student_head = _torch_head(torch, zoo.student_bundle)
    encoder, head = edge_modules()
    models: dict[str, ModelBench] = {}
    for name, path, eager in (
        ("tiny", zoo.student_bundle, lambda x: student_head(student_program(x))),
        ("edge", edge_path, lambda x: head(encoder(x))),
    ):
        if progress:
            print(f"bench device: {name} ...", file=sys.stderr, flush=True)
        figures = _bench_model(path, eager, calls=calls, warmup=warmup, threads=threads)
        models[name] = ModelBench(**figures, ood=bench_ood_overhead(
            path, calls=calls, warmup=warmup, threads=threads))
    return DeviceBenchResult(
        threads=threads, calls=calls, warmup=warmup, machine=_machine(),
        torch_reference=TorchReference(
            tiny="the bundle's torch.export mirror (encoder.pt2) + torch Linear head",
            edge="the EdgeEncoder nn.Module + torch Linear head, eval mode"),
        tiny=models["tiny"], edge=models["edge"],
        rss_mb=peak_rss_mb(edge_path, threads=threads),
        rss_mb_b32=peak_rss_mb(edge_path, threads=threads, batches=(1, 32)),
        rss_mb_with_ood=peak_rss_mb(edge_path, threads=threads, ood="default"),
        rss_note=(
            "peak RSS (VmHWM) of a fresh device-only process serving edge at batch 1 without "
            "OOD scoring; rss_mb_b32 also runs batch 32; rss_mb_with_ood loads the bundle's "
            "detectors and scores with the default one"))


def _torch_head(torch: Any, bundle: Path) -> Any:
    from edgecl.bundle import load_bundle

    b = load_bundle(bundle)
    arrays = b.head.arrays()
    lin = torch.nn.Linear(b.head.feature_dim, b.head.num_classes)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.array(arrays["weight"])))
        lin.bias.copy_(torch.from_numpy(np.array(arrays["bias"])))
    return lin.eval()


def _bench_model(path: Path, eager: Any, *, calls: int, warmup: int,
                 threads: int) -> dict[str, float]:
    import torch

    from edgecl.device import DeviceRuntime

    rt = DeviceRuntime.open(path, threads=threads, ood=None)  # detectors: see bench_ood
    # "Bare" is session.run on the very session the SDK wraps: same weights in the same
    # memory, so the ratio isolates the SDK's own work (two sessions of one model differ
    # by a few percent on their own).
    bare = rt.onnx_session
    in_name = bare.get_inputs()[0].name
    lo, hi = rt.bundle.input_spec.value_range
    out: dict[str, float] = {}
    for batch in (1, 32):
        rng = np.random.default_rng(batch)
        x = (lo + (hi - lo) * rng.random((batch, *rt.bundle.input_spec.shape))).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch(xt: Any = xt) -> Any:
            with torch.inference_mode():
                return eager(xt)

        # SDK and bare onnxruntime interleaved with each other; torch eager in a second
        # interleaved phase against onnxruntime, so eager torch's cache footprint does not
        # inflate the SDK-vs-bare overhead we report.
        times = interleaved({
            "sdk": lambda x=x: rt.predict(x),
            "ort": lambda x=x: bare.run(None, {in_name: x}),
        }, calls=calls, warmup=warmup)
        versus = interleaved({
            "torch": run_torch,
            "ort": lambda x=x: bare.run(None, {in_name: x}),
        }, calls=calls, warmup=warmup)
        times["torch"] = versus["torch"]
        for key, samples in times.items():
            med, p99 = summary_ms(samples)
            out[f"{key}_ms_b{batch}"] = round(med, 4)
            out[f"{key}_p99_ms_b{batch}"] = round(p99, 4)
        out[f"overhead_b{batch}"] = round(out[f"sdk_ms_b{batch}"] / out[f"ort_ms_b{batch}"], 4)
        out[f"torch_over_ort_b{batch}"] = round(
            float(np.median(versus["torch"]) / np.median(versus["ort"])), 4)
    out["added_us_b1"] = round((out["sdk_ms_b1"] - out["ort_ms_b1"]) * 1e3, 2)
    return out


_RSS_CHILD = """
import json, resource, sys
import numpy as np
from edgecl.device import DeviceRuntime
rt = DeviceRuntime.open(sys.argv[1], threads=int(sys.argv[2]),
                        ood=None if sys.argv[4] == "none" else "default")
shape = rt.bundle.input_spec.shape
rng = np.random.default_rng(0)
for batch in (int(b) for b in sys.argv[3].split(",")):
    x = rng.random((batch, *shape), dtype=np.float32)
    for _ in range(20):
        rt.predict(x)
heavy = [m for m in ("torch", "onnxscript") if m in sys.modules]
# VmHWM is this process's own peak; ru_maxrss would include the parent's at fork/exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_kb": kb, "heavy": heavy}))
"""


def peak_rss_mb(bundle: Path, *, threads: int = 1, batches: tuple[int, ...] = (1,),
                ood: str = "none") -> float:
    """Peak RSS (MB) of a fresh device-only process that opens ``bundle`` and predicts."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(bundle), str(threads),
                           ",".join(str(b) for b in batches), ood],
                          capture_output=True, text=True, check=True, env=env)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if info["heavy"]:
        raise RuntimeError(f"device process imported {info['heavy']}")
    return round(info["rss_kb"] / 1024.0, 1)


def _machine() -> DeviceMachine:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return DeviceMachine(cpus=os.cpu_count(), cpu_model=model,
                         onnxruntime=onnxruntime.__version__, torch=torch.__version__,
                         numpy=np.__version__)
