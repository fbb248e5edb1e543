"""What the fleet memory costs: bytes per stored domain and the time to match a query.

Fills a domain library with ``--entries`` updates of the reference student's real part
shapes (prompt, 5x5 filter, rank-8 adapter, head) and signatures of its encoder's feature
dimension, then times ``match`` (the lookup a learning job makes) and ``store``.

    .venv/bin/python tools/bench_library.py --entries 64 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    from edgecl.bundle import load_bundle
    from edgecl.cloud._library import DomainLibrary, DomainSignature
    from edgecl.zoo import build_zoo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--variant", default="full")
    ap.add_argument("--home", default=None, help="the zoo cache ($EDGECL_HOME)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    bundle = load_bundle(build_zoo(args.variant, home=args.home).student_bundle)
    weight = np.asarray(bundle.head.arrays()["weight"], np.float32)
    classes, dim = weight.shape
    shape = tuple(bundle.input_spec.shape)
    rng = np.random.default_rng(0)
    parts = {"prompt": rng.normal(0, 0.01, shape).astype(np.float32),
             "filter": rng.normal(0, 0.1, (shape[0], 5, 5)).astype(np.float32),
             "adapter.down": rng.normal(0, 0.1, (8, dim)).astype(np.float32),
             "adapter.up": rng.normal(0, 0.1, (dim, 8)).astype(np.float32),
             "head.weight": weight, "head.bias": np.zeros(classes, np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "library.db"
        lib = DomainLibrary(path, encoders=[bundle.encoder_sha256],
                            capacity=max(args.entries, 1))
        store_ms = []
        for k in range(args.entries):  # domains far apart: every store is a new entry
            sig = DomainSignature.of(rng.normal(10.0 * k, 1.0, (256, dim)))
            t = time.perf_counter()
            lib.store("fleet", bundle.encoder_sha256, f"d{k}", sig, parts, {"k": float(k)})
            store_ms.append(1e3 * (time.perf_counter() - t))
        lib.entries("fleet", bundle.encoder_sha256)  # load once, as a running service has
        match_ms = []
        for q in range(args.queries):
            query = DomainSignature.of(rng.normal(10.0 * (q % args.entries), 1.0, (24, dim)))
            t = time.perf_counter()
            found = lib.match("fleet", bundle.encoder_sha256, query)
            match_ms.append(1e3 * (time.perf_counter() - t))
            assert found and found[0].entry.origin == f"d{q % args.entries}"
        lib.close()
        size = sum(p.stat().st_size for p in Path(tmp).glob("library.db*"))
    out = {"entries": args.entries, "feature_dim": dim,
           "parts_bytes": int(sum(v.nbytes for v in parts.values())),
           "signature_bytes": 2 * dim * 8,
           "file_bytes_per_entry": round(size / max(args.entries, 1)),
           "match_ms_p50": round(statistics.median(match_ms), 3),
           "match_ms_p99": round(float(np.percentile(match_ms, 99)), 3),
           "store_ms_p50": round(statistics.median(store_ms), 3)}
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
