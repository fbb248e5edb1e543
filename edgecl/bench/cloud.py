"""``edgecl bench cloud``: upload throughput and RPC latency at 1/10/100 concurrent devices,
and the teacher's labelling rate through the service vs a raw torch forward."""

from __future__ import annotations

import tempfile
import threading
import time
from typing import Any

import numpy as np

from edgecl.bench._timing import summary_ms
from edgecl.bench.results import CloudBenchResult, CloudMachine

#: Enrollment key of the throwaway service the benchmark starts.
BENCH_KEY = "bench-enrollment-key"


def bench_cloud(*, variant: str = "tiny", home: str | None = None,
                concurrency: tuple[int, ...] = (1, 10, 100), uploads_per_device: int = 20,
                batch: int = 8, teacher_rounds: int = 5, teacher_samples: int = 512,
                threads: int = 1) -> CloudBenchResult:
    """Run the real service in-process on an ephemeral loopback port and measure it.

    Uploads: ``c`` threads, each a device with its own channel and token, send
    ``uploads_per_device`` Upload RPCs of ``batch`` samples each; ``uploads_per_s`` counts
    samples acknowledged (durably stored) per second of wall time, ``rpc_p50_ms`` /
    ``rpc_p99_ms`` the Upload RPC latency. Labelling runs separately so it does not steal
    the CPU from the RPC path.
    Teacher: ``teacher_samples`` stored samples labelled by the service's teacher pool
    (read from the registry, forward, labels written back) vs the raw forward of the
    same teacher on the same batches; which path runs first alternates by round (A B, B A,
    ...), ``teacher_ratio`` is the ratio of median throughputs.
    """
    import grpc
    import torch

    from edgecl._proto import edgecl_pb2 as pb
    from edgecl._proto import edgecl_pb2_grpc as pb_grpc
    from edgecl.cloud import create_server, load_config
    from edgecl.wire import WireSample, batch_to_proto

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    pool = rng.random((256, 1, 28, 28), dtype=np.float32)
    rates: dict[str, float] = {}
    p50s: dict[str, float] = {}
    p99s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": BENCH_KEY, "EDGECL_CLOUD_TEACHER_ZOO": variant,
               "EDGECL_CLOUD_STORAGE_DIR": tmp, "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
               "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_CLOUD_LEARNING_ENABLED": "false",
               "EDGECL_CLOUD_LIMITS_REQUESTS_PER_S": "1000000",
               "EDGECL_CLOUD_LIMITS_BURST": "1000000",
               # throughput, not flow control, is measured: no per-sample or backlog bound
               "EDGECL_CLOUD_LIMITS_SAMPLES_PER_S": "1e9",
               "EDGECL_CLOUD_LIMITS_SAMPLE_BURST": "1e9",
               "EDGECL_CLOUD_LIMITS_MAX_BACKLOG": "1000000000",
               "EDGECL_CLOUD_SERVER_MAX_WORKERS": str(max(concurrency) + 4),
               "EDGECL_CLOUD_TEACHER_THREADS": str(threads)}
        server = create_server(load_config(None, env=env), home=home).start(labelling=False)
        sha = next(iter(server.bundles))
        try:
            for c in concurrency:
                lat, total, wall = _uploads(server.target, sha, c, uploads_per_device, batch,
                                            pool, pb, pb_grpc, grpc, WireSample,
                                            batch_to_proto)
                p50, p99 = summary_ms(lat)
                rates[f"c{c}"] = round(total / wall, 1)
                p50s[f"c{c}"] = round(p50, 3)
                p99s[f"c{c}"] = round(p99, 3)
            teacher = _teacher_ratio(server, pool, teacher_rounds, teacher_samples, WireSample)
        finally:
            server.stop(grace=1.0)
    return CloudBenchResult(uploads_per_s=rates, rpc_p50_ms=p50s, rpc_p99_ms=p99s,
                            batch_samples=batch, uploads_per_device=uploads_per_device,
                            torch_threads=threads, variant=variant, machine=_machine(),
                            torch=torch.__version__, **teacher)


def _uploads(target: str, sha: str, c: int, n: int, batch: int, pool: np.ndarray, pb: Any,
             pb_grpc: Any, grpc: Any, WireSample: Any, batch_to_proto: Any
             ) -> tuple[np.ndarray, int, float]:
    clients = []
    for d in range(c):
        stub = pb_grpc.EdgeCloudStub(grpc.insecure_channel(target))
        resp = stub.Register(pb.RegisterRequest(device_id=f"bench-c{c}-{d}",
                                                enrollment_key=BENCH_KEY, encoder_sha256=sha),
                             timeout=30)
        clients.append((stub, (("authorization", f"Bearer {resp.token}"),)))
    latencies: list[list[float]] = [[] for _ in range(c)]
    acked = [0] * c
    start = threading.Barrier(c + 1)

    def device(d: int) -> None:
        stub, md = clients[d]
        msgs = [batch_to_proto([WireSample(f"u{k}-{i}", input=pool[(k * batch + i) % len(pool)])
                                for i in range(batch)]) for k in range(n)]
        start.wait()
        for msg in msgs:
            t0 = time.perf_counter()
            ack = stub.Upload(iter([msg]), metadata=md, timeout=60)
            latencies[d].append(time.perf_counter() - t0)
            acked[d] += len(ack.acked_ids)

    workers = [threading.Thread(target=device, args=(d,)) for d in range(c)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    return np.array([x for lst in latencies for x in lst]), sum(acked), wall


def _teacher_ratio(server: Any, pool: np.ndarray, rounds: int, samples: int,
                   WireSample: Any) -> dict[str, Any]:
    """The ``teacher_*`` fields of :class:`CloudBenchResult`."""
    teacher, tp = server.teacher, server.teacher_pool
    bs = tp.batch_size
    device = "bench-teacher"
    server.registry.register(device, "bench-teacher-token", next(iter(server.bundles)), "", {})
    inputs = np.concatenate([pool] * (-(-samples // len(pool))))[:samples]
    def through_service() -> float:
        t0 = time.perf_counter()
        while tp.step():
            pass
        return time.perf_counter() - t0

    def raw_forward() -> float:
        t0 = time.perf_counter()
        for i in range(0, samples, bs):
            teacher.probabilities(inputs[i:i + bs])
        return time.perf_counter() - t0

    service, raw = [], []
    for r in range(rounds + 1):  # round 0 warms both paths up (and labels older uploads)
        server.registry.add_samples(device, [WireSample(f"t{r}-{i}", input=x)
                                             for i, x in enumerate(inputs)])
        if r % 2:  # alternate which path goes first: A B, B A, ...
            t_raw, t_service = raw_forward(), through_service()
        else:
            t_service, t_raw = through_service(), raw_forward()
        if r:
            service.append(samples / t_service)
            raw.append(samples / t_raw)
    s, w = float(np.median(service)), float(np.median(raw))
    return {"teacher_ratio": round(s / w, 3), "teacher_samples_per_s_service": round(s, 1),
            "teacher_samples_per_s_raw": round(w, 1), "teacher_batch": bs,
            "teacher_rounds": rounds}


def _machine() -> CloudMachine:
    """Cores and CPU model (from /proc/cpuinfo where there is one)."""
    import os

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return CloudMachine(cores=os.cpu_count(), cpu=model)
