"""Example device app: embed the edgecl runtime, classify a stream of camera frames.

Run it against any bundle (the zoo student by default):

    python device/app.py --bundle ~/.cache/edgecl/zoo/full-<digest>/student --frames 200

It uses only the device extra (numpy + onnxruntime): no torch is imported.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from edgecl import InvalidInput
from edgecl.device import AdaptationWorker, DeviceRuntime


def camera_frames(shape: tuple[int, ...], n: int, seed: int = 0):
    """Stand-in for a camera: random frames in the bundle's declared value range."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.random(shape, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(Path(__file__).with_name("device.toml")))
    p.add_argument("--bundle", help="bundle directory (overrides the config)")
    p.add_argument("--frames", type=int, default=100)
    args = p.parse_args(argv)
    config = tomllib.loads(Path(args.config).read_text())
    runtime_cfg = config.get("runtime", {})
    bundle = args.bundle or runtime_cfg.get("bundle")
    if not bundle:
        print("no bundle given (--bundle or [runtime].bundle in the config)", file=sys.stderr)
        return 2
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
