"""``edgecl bench soak``: many devices upload at a steady pace for minutes to a real
``edgecl serve`` subprocess; acknowledged vs stored samples, server RSS over time, the error
codes the clients saw, and the acknowledged and labelled rates."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.bench.results import SoakBenchResult
from edgecl.device import Outbox, SyncClient
from edgecl.device._transport import GrpcTransport, TransportError


class _CountingTransport:
    """A :class:`GrpcTransport` that counts the status code of every failed call."""

    def __init__(self, target: str, codes: Counter[str], lock: threading.Lock) -> None:
        self.inner = GrpcTransport(target)
        self._codes, self._lock = codes, lock

    def _counted(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TransportError as exc:
            with self._lock:
                self._codes[exc.code] += 1
            raise

    def register(self, *args: Any, **kwargs: Any) -> Any:
        return self._counted(self.inner.register, *args, **kwargs)

    def upload(self, *args: Any, **kwargs: Any) -> Any:
        return self._counted(self.inner.upload, *args, **kwargs)

    def close(self) -> None:
        self.inner.close()


class _RssSampler:
    """Samples VmRSS of ``pid`` every ``every_s`` seconds in a daemon thread."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.series: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def start(self) -> _RssSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def sample(self) -> None:
        mb = rss_mb(self.pid)
        if mb is not None:
            self.series.append((round(time.monotonic() - self._t0, 1), mb))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB from ``/proc/<pid>/status`` (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def bench_soak(*, devices: int = 100, minutes: float = 10.0, variant: str = "tiny",
               home: str | None = None, rate: float = 1.0, rss_every_s: float = 5.0,
               drain_timeout_s: float = 120.0) -> SoakBenchResult:
    """Run ``devices`` devices against ``edgecl serve`` (labelling on, learning off) for
    ``minutes``; each puts ``rate`` samples/s (zoo student input shape, random values)
    into its own SQLite outbox and a :class:`SyncClient` uploads them. After the run each
    outbox is drained, the server is stopped gracefully and its registry is read:
    ``lost`` = acknowledged - stored must be 0."""
    from edgecl.bench.cloud import _machine
    from edgecl.bundle import load_bundle
    from edgecl.fleet._cloud import CloudProcess
    from edgecl.zoo import build_zoo

    bundle = load_bundle(build_zoo(variant, home=home, progress=False).student_bundle)
    shape, sha = tuple(bundle.manifest.input.shape), bundle.manifest.encoder_sha256
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="edgecl-soak-") as tmp:
        service = CloudProcess(Path(tmp) / "cloud", variant=variant, home=home,
                               settings={"learning_enabled": "false",
                                         "server_max_workers": str(devices + 8)})
        sampler = _RssSampler(service.proc.pid, rss_every_s).start()
        try:
            boxes, clients = _devices(devices, Path(tmp), service.target, sha, codes, lock)
            put, wall = _produce(boxes, shape, rate, minutes * 60.0)
            drained = all(c.flush(drain_timeout_s) for c in clients)
            acked = sum(c.stats().uploaded + c.stats().duplicates for c in clients)
            for c in clients:
                c.stop()
            for b in boxes:
                b.close()
        finally:
            sampler.stop()
            service.close()
        stored, labelled = _registry_counts(Path(tmp) / "cloud" / "data" / "registry.sqlite")
    return _result(devices, minutes, variant, rate, rss_every_s, put, acked, stored, labelled,
                   drained, wall, sampler.series, codes, _machine())


def _devices(n: int, root: Path, target: str, sha: str, codes: Counter[str],
             lock: threading.Lock) -> tuple[list[Outbox], list[SyncClient]]:
    """``n`` outboxes and started upload clients (no update subscription)."""
    from edgecl.fleet._cloud import ENROLLMENT_KEY

    boxes, clients = [], []
    for d in range(n):
        box = Outbox(root / f"outbox-{d}.db", store=("image",))
        client = SyncClient(box, _CountingTransport(target, codes, lock),
                            device_id=f"soak-{d}", enrollment_key=ENROLLMENT_KEY,
                            encoder_sha256=sha, subscribe=False, poll_s=1.0)
        boxes.append(box)
        clients.append(client.start())
    return boxes, clients


def _produce(boxes: list[Outbox], shape: tuple[int, ...], rate: float, seconds: float
             ) -> tuple[int, float]:
    """Put one sample into every outbox each ``1/rate`` s for ``seconds``; returns the
    samples accepted by the outboxes and the wall time."""
    rng = np.random.default_rng(0)
    pool = rng.random((64, *shape), dtype=np.float32)
    put, tick, t0 = 0, 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        for d, box in enumerate(boxes):
            x = pool[(tick + d) % len(pool)]
            put += box.put(f"s{tick}", {"image": x}, priority=float(rng.random()))
        tick += 1
        time.sleep(max(0.0, t0 + tick / rate - time.monotonic()))
    for box in boxes:
        box.flush()
    return put, time.monotonic() - t0


def _registry_counts(path: Path) -> tuple[int, int]:
    """Stored and labelled samples, read from the stopped server's registry (read-only)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        stored, labelled = con.execute(
            "SELECT COUNT(*), COUNT(labelled_ms) FROM samples").fetchone()
    finally:
        con.close()
    return int(stored), int(labelled)


def _result(devices: int, minutes: float, variant: str, rate: float, every: float, put: int,
            acked: int, stored: int, labelled: int, drained: bool, wall: float,
            series: list[tuple[float, float]], codes: Counter[str],
            machine: Any) -> SoakBenchResult:
    """The typed result; RSS after the first minute is the last sample taken before 60 s
    (the last sample at all in a shorter run)."""
    mbs = [mb for _, mb in series] or [0.0]
    first = [mb for t, mb in series if t <= 60.0] or mbs
    first_mb, final_mb = first[-1], mbs[-1]
    growth = 100.0 * (final_mb - first_mb) / first_mb if first_mb else 0.0
    return SoakBenchResult(
        devices=devices, minutes=minutes, variant=variant, rate_per_device=rate,
        rss_every_s=every, run_s=round(wall, 1), samples_put=put, acked=acked,
        stored=stored, lost=acked - stored, drained=drained, labelled=labelled,
        acked_per_s=round(acked / wall, 1), labelled_per_s=round(labelled / wall, 1),
        rss_first_minute_mb=first_mb, rss_final_mb=final_mb, rss_peak_mb=max(mbs),
        rss_growth_pct=round(growth, 2), rss_mb=[[t, mb] for t, mb in series],
        errors=dict(sorted(codes.items())), machine=machine)
