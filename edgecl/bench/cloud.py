"""``edgecl bench cloud``: upload throughput and RPC latency at 1/10/100 concurrent devices
(on SQLite or PostgreSQL, one process or several replicas), Upload latency with many idle
Subscribe streams open, and the teacher's labelling rate through the service vs a raw
torch forward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import numpy as np

from edgecl.bench._timing import summary_ms
from edgecl.bench.results import CloudBenchResult, CloudMachine

#: Enrollment key of the throwaway service the benchmark starts.
BENCH_KEY = "bench-enrollment-key"


def bench_cloud(*, variant: str = "tiny", home: str | None = None,
                concurrency: tuple[int, ...] = (1, 10, 100), uploads_per_device: int = 20,
                batch: int = 8, teacher_rounds: int = 5, teacher_samples: int = 512,
                threads: int = 1, registry: str = "", replicas: int = 1,
                subscribers: int = 0, subscriber_rounds: int = 4) -> CloudBenchResult:
    """Run the real service on ephemeral loopback ports and measure it.

    One replica: the service runs in this process. ``replicas`` > 1 (a PostgreSQL
    ``registry`` only) or ``subscribers``: that many ``edgecl serve`` processes on the
    registry, the devices' calls balanced over them, and ``replica_rss_mb`` the first
    one's resident memory (else this process's). ``subscribers``: that many idle
    Subscribe streams, held by a helper process against the first replica, open and
    closed in turn (``subscriber_rounds`` each) while the largest device count uploads.

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
    if replicas < 1 or (replicas > 1 and not registry.startswith(("postgresql:", "postgres:"))):
        from edgecl._exceptions import ConfigError

        raise ConfigError("several replicas need a shared registry: --registry "
                          "postgresql://...")
    run = uuid.uuid4().hex[:6]  # device ids of this run (a reused database keeps others)
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
               "EDGECL_CLOUD_TEACHER_THREADS": str(threads),
               "EDGECL_CLOUD_STORAGE_REGISTRY": registry}
        server = create_server(load_config(None, env=env), home=home).start(labelling=False)
        sha = next(iter(server.bundles))
        procs: list[subprocess.Popen[str]] = []
        subs: dict[str, Any] | None = None
        try:
            targets = [server.target]
            if replicas > 1 or subscribers:
                started = [_replica(env, f"{tmp}/replica{i}", home) for i in range(replicas)]
                procs, targets = [p for p, _ in started], [t for _, t in started]
            target = ",".join(targets)

            def measure(c: int, tag: str) -> tuple[float, float, float]:
                lat, total, wall = _uploads(target, sha, c, uploads_per_device, batch, pool,
                                            pb, pb_grpc, grpc, WireSample, batch_to_proto,
                                            f"{run}-{tag}")
                p50, p99 = summary_ms(lat)
                return total / wall, p50, p99

            for c in concurrency:
                rate, p50, p99 = measure(c, f"c{c}")
                rates[f"c{c}"] = round(rate, 1)
                p50s[f"c{c}"] = round(p50, 3)
                p99s[f"c{c}"] = round(p99, 3)
            if subscribers:
                subs = _with_subscribers(targets[0], sha, subscribers, subscriber_rounds,
                                         max(concurrency), measure)
            rss = _rss_mb(procs[0].pid if procs else os.getpid())
            teacher = _teacher_ratio(server, pool, teacher_rounds, teacher_samples, WireSample,
                                     f"bench-teacher-{run}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            server.stop(grace=1.0)
    from edgecl.cloud._database import parse_registry_url

    return CloudBenchResult(uploads_per_s=rates, rpc_p50_ms=p50s, rpc_p99_ms=p99s,
                            batch_samples=batch, uploads_per_device=uploads_per_device,
                            torch_threads=threads, variant=variant, machine=_machine(),
                            torch=torch.__version__, replicas=replicas,
                            registry=("postgresql" if registry else "sqlite") + (
                                f" ({parse_registry_url(registry, tmp).redacted()})"
                                if registry else ""),
                            replica_rss_mb=rss, subscribers=subs, **teacher)


def _replica(env: dict[str, str], storage: str, home: str | None
             ) -> tuple[subprocess.Popen[str], str]:
    """An ``edgecl serve`` process on the bench's registry (labelling off, as in process);
    its address."""
    cmd = [sys.executable, "-m", "edgecl", "serve"] + (["--home", home] if home else [])
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "EDGECL_CLOUD_STORAGE_DIR": storage,
                                      "EDGECL_CLOUD_TEACHER_LABELLING": "false",
                                      "EDGECL_CLOUD_LEARNING_ENABLED": "false"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise RuntimeError(f"edgecl serve did not start (exit {proc.wait()})")
    return proc, json.loads(line)["serving"]


def _with_subscribers(target: str, sha: str, n: int, rounds: int, c: int,
                      measure: Any) -> dict[str, Any]:
    """Upload p99 at ``c`` devices without and with ``n`` idle Subscribe streams open,
    ``rounds`` each, in the order without-with, with-without, ... (so a trend over the run,
    such as the growing registry, falls on both alike); the medians and the streams
    held."""
    helper = subprocess.Popen([sys.executable, "-m", "edgecl.bench._subscribers", target,
                               BENCH_KEY, sha, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert helper.stdin is not None and helper.stdout is not None

    def ask(command: str) -> dict[str, Any]:
        helper.stdin.write(command + "\n")  # type: ignore[union-attr]
        helper.stdin.flush()  # type: ignore[union-attr]
        return json.loads(helper.stdout.readline())  # type: ignore[union-attr]

    try:
        json.loads(helper.stdout.readline())  # registered
        without, with_, held, codes = [], [], [], {}
        for r in range(rounds):
            for streams in ((False, True) if r % 2 == 0 else (True, False)):
                if streams:
                    opened = ask("open")
                    held.append(int(opened["held"]))
                    codes.update(opened["codes"])
                    with_.append(measure(c, f"s{r}-1")[2])
                    ask("close")
                else:
                    without.append(measure(c, f"s{r}-0")[2])
    finally:
        if helper.stdin:
            helper.stdin.close()
        helper.wait(60)
    return {"held": min(held), "opened": n, "devices": c, "rounds": rounds,
            "upload_p99_ms_with": round(float(np.median(with_)), 3),
            "upload_p99_ms_without": round(float(np.median(without)), 3),
            "refused": codes}


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (0 where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return round(kb / 1024, 1)


def _uploads(target: str, sha: str, c: int, n: int, batch: int, pool: np.ndarray, pb: Any,
             pb_grpc: Any, grpc: Any, WireSample: Any, batch_to_proto: Any, tag: str
             ) -> tuple[np.ndarray, int, float]:
    from edgecl.device._transport import channel_target

    address, balanced = channel_target(target)
    options = [("grpc.lb_policy_name", "round_robin")] if balanced else []
    clients = []
    for d in range(c):
        stub = pb_grpc.EdgeCloudStub(grpc.insecure_channel(address, options))
        resp = stub.Register(pb.RegisterRequest(device_id=f"bench-{tag}-{d}",
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
                   WireSample: Any, device: str) -> dict[str, Any]:
    """The ``teacher_*`` fields of :class:`CloudBenchResult`."""
    teacher, tp = server.teacher, server.teacher_pool
    bs = tp.batch_size
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
