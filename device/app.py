"""Example device app: embed the edgecl runtime, classify a stream of camera frames.

From the checkout, after ``./run zoo build`` (which prints the student bundle's path):

    .venv/bin/python device/app.py --bundle "$(./run zoo build --student-path)" --frames 200

Without ``--bundle`` (and no ``[runtime].bundle`` in the config) it uses the zoo student
cached under ``$EDGECL_HOME`` (default ``~/.cache/edgecl``) when there is one. It uses only
the device extra (numpy + onnxruntime): no torch is imported.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from edgecl import InvalidInput, default_home
from edgecl.device import AdaptationWorker, DeviceRuntime


def camera_frames(shape: tuple[int, ...], n: int, seed: int = 0):
    """Stand-in for a camera: random frames in the bundle's declared value range."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.random(shape, dtype=np.float32)


def cached_zoo_student() -> Path | None:
    """The newest zoo student bundle under the cache root (the full recipe first)."""
    for variant in ("full", "tiny"):
        found = sorted(default_home().glob(f"zoo/{variant}-*/student/manifest.json"),
                       key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1].parent
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(Path(__file__).with_name("device.toml")),
                   help="device TOML config (default: device/device.toml)")
    p.add_argument("--bundle", help="bundle directory (overrides the config; default: the "
                   "zoo student cached under $EDGECL_HOME)")
    p.add_argument("--frames", type=int, default=100, help="camera frames to classify")
    args = p.parse_args(argv)
    config = tomllib.loads(Path(args.config).read_text())
    runtime_cfg = config.get("runtime", {})
    bundle = args.bundle or runtime_cfg.get("bundle") or cached_zoo_student()
    if not bundle:
        print("no bundle: give --bundle DIR (or [runtime].bundle in the config), e.g. the "
              "zoo student: ./run zoo build, then .venv/bin/python device/app.py --bundle "
              "\"$(./run zoo build --student-path)\"", file=sys.stderr)
        return 2
    print(f"bundle: {bundle}")
    rt = DeviceRuntime.open(Path(bundle).expanduser(), threads=runtime_cfg.get("threads", 1),
                            max_batch=runtime_cfg.get("max_batch", 1024))
    adapt_cfg = config.get("adaptation", {})
    worker = None
    if adapt_cfg.get("method") and rt.source_stats is not None:
        # adapts beside predict and swaps in new states; predict never waits for it
        worker = AdaptationWorker(rt, adapt_cfg["method"],
                                  state_dir=adapt_cfg.get("state_dir") or None)
    predict = worker.predict if worker is not None else rt.predict
    counts = np.zeros(len(rt.class_names), dtype=int)
    start = time.perf_counter()
    for frame in camera_frames(rt.bundle.input_spec.shape, args.frames):
        pred = predict(frame)
        counts[pred.labels[0]] += 1
    elapsed = time.perf_counter() - start
    if worker is not None:
        worker.close()
        print(f"adaptation ({adapt_cfg['method']}): {worker.stats.published} states published, "
              f"{worker.stats.skipped_batches} batches skipped")
    try:  # a broken frame is refused with a typed error; the runtime keeps serving
        rt.predict(np.full(rt.bundle.input_spec.shape, np.nan, np.float32))
    except InvalidInput as exc:
        print(f"refused a bad frame: {exc}")
    print(f"{args.frames} frames in {elapsed * 1e3:.1f} ms "
          f"({elapsed / args.frames * 1e6:.0f} us/frame), state v{rt.state.version}")
    print("predicted classes:", dict(zip(rt.class_names, counts.tolist())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
