"""How fast the dashboard's pages answer for a fleet of N devices.

Starts the service (tiny zoo, learning off) with its dashboard, registers ``--devices``
devices over gRPC, has each send two health reports with an update event, then times each
JSON API behind a page (``--rounds`` requests each, one at a time, bearer-authenticated,
as a page's refresh makes them).

    .venv/bin/python tools/bench_dashboard.py --devices 100,1000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request

TOKEN = "bench-operator-token-0123456789abcdef"
KEY = "bench-enrollment-key-0123456789"


def _fleet(server, n: int, start: int) -> None:
    import grpc

    from edgecl._proto import edgecl_pb2 as pb
    from edgecl._proto import edgecl_pb2_grpc as pb_grpc

    stub = pb_grpc.EdgeCloudStub(grpc.insecure_channel(server.target))
    sha = next(iter(server.bundles))
    for i in range(start, n):
        reply = stub.Register(pb.RegisterRequest(
            device_id=f"cam-{i:05d}", enrollment_key=KEY, encoder_sha256=sha,
            group=f"site-{i % 10}", labels={"model": "m1", "floor": str(i % 4)}), timeout=30)
        md = (("authorization", f"Bearer {reply.token}"),)
        for k in range(2):
            stub.Report(pb.DeviceReport(
                timestamp_ms=int(time.time() * 1000), device_id=f"cam-{i:05d}",
                stats={"predictions": 100.0, "confidence": 0.8, "ood_rate": 0.05,
                       "errors": 0.0},
                events=[pb.UpdateEvent(version=k, action="applied", reason="ok")]),
                metadata=md, timeout=30)


def _time(url: str, path: str, rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        request = urllib.request.Request(url.rstrip("/") + path,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            body = response.read()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "max_ms": round(times[-1], 1), "bytes": len(body)}


def main() -> int:
    from edgecl.cloud import create_server, load_config
    from edgecl.zoo import build_zoo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="100,1000", help="fleet sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--home", default=None, help="the zoo cache ($EDGECL_HOME)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    zoo = build_zoo("tiny", home=args.home)
    sizes = sorted(int(s) for s in args.devices.split(","))
    out: dict[str, object] = {"rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY, "EDGECL_CLOUD_TEACHER_ZOO": "tiny",
               "EDGECL_CLOUD_STORAGE_DIR": tmp, "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
               "EDGECL_CLOUD_LEARNING_ENABLED": "false", "EDGECL_CLOUD_DASHBOARD_PORT": "0",
               "EDGECL_CLOUD_ADMIN_OPERATORS": f"bench:operator:{TOKEN}",
               "EDGECL_CLOUD_LIMITS_REQUESTS_PER_S": "100000",
               "EDGECL_CLOUD_LIMITS_BURST": "100000"}
        server = create_server(load_config(None, env=env),
                               home=str(zoo.path.parent.parent)).start()
        try:
            done = 0
            for n in sizes:
                _fleet(server, n, done)
                done = n
                url = server.dashboard.url
                out[f"d{n}"] = {
                    "overview": _time(url, "/api/overview", args.rounds),
                    "rollouts": _time(url, "/api/rollouts", args.rounds),
                    "device": _time(url, "/api/device?id=cam-00000", args.rounds),
                    "service": _time(url, "/api/service", args.rounds)}
        finally:
            server.stop(grace=1.0)
    print(json.dumps(out, indent=2) if args.json else out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
