"""Teacher labelling throughput through the service's labelling pool (claims, teacher,
labels written back to the registry): the local pool (the teacher in this process, one
thread) against Ray actors (1, 2, ...) on a local Ray cluster, beside the raw torch forward
of the same teacher on the same batches.

    .venv/bin/python tools/bench_ray_labelling.py --actors 1,2 --samples 2048 --rounds 3

Prints JSON: samples/s per mode (median of ``rounds``, the modes' order rotating by round)
and each mode's ratio to the raw forward and to the local pool.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def _label_all(registry, teacher, shape, n: int, tag: str, workers: int) -> float:
    from edgecl.cloud._teacher import TeacherPool
    from edgecl.wire import WireSample

    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype=np.float32)
    registry.add_samples("bench", [WireSample(f"{tag}-{i}", input=x[i]) for i in range(n)])
    pool = TeacherPool(registry, teacher, shape, batch_size=256, workers=workers)
    t0 = time.perf_counter()
    pool.start()
    while registry.unlabelled_count():
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    pool.stop(drain=False)
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="full", help="zoo teacher (full or tiny)")
    ap.add_argument("--home", default=None)
    ap.add_argument("--actors", default="1,2", help="comma-separated actor counts")
    ap.add_argument("--samples", type=int, default=2048, help="samples labelled per run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from edgecl._raycluster import connect
    from edgecl.cloud import Registry
    from edgecl.cloud._compute import RayTeacher
    from edgecl.cloud._teacher import Teacher

    spec = (args.variant, "", [], 1, args.home)
    local = Teacher.from_config(*spec[:4], home=args.home)
    shape = (1, 28, 28)
    counts = [int(a) for a in args.actors.split(",")]
    ray = connect(None)  # a local cluster with this machine's CPUs
    modes = ["raw", "local", *(f"ray{k}" for k in counts)]
    rates: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(tmp)
        registry.register("bench", "bench-token", "sha", "", {})
        batches = np.random.default_rng(1).random((args.samples, *shape), dtype=np.float32)
        for r in range(args.rounds + 1):  # round 0 warms every path up
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for mode in order:
                if mode == "raw":
                    t0 = time.perf_counter()
                    for i in range(0, args.samples, 256):
                        local.probabilities(batches[i:i + 256])
                    rate = args.samples / (time.perf_counter() - t0)
                elif mode == "local":
                    rate = _label_all(registry, local, shape, args.samples, f"l{r}", 1)
                else:  # actors start (and load the teacher) before the clock starts
                    k = int(mode[3:])
                    teacher = RayTeacher(ray, spec, k)
                    rate = _label_all(registry, teacher, shape, args.samples, f"{mode}-{r}", k)
                    teacher.close()
                if r:
                    rates[mode].append(rate)
        registry.close()
    med = {m: float(np.median(v)) for m, v in rates.items()}
    print(json.dumps({
        "samples_per_s": {m: round(v, 1) for m, v in med.items()},
        "ratio_to_raw": {m: round(v / med["raw"], 3) for m, v in med.items()},
        "ratio_to_local": {m: round(v / med["local"], 3) for m, v in med.items()},
        "samples": args.samples, "rounds": args.rounds, "batch": 256,
        "variant": args.variant, "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
