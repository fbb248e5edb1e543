"""Three ``edgecl serve`` processes on one PostgreSQL database serve one fleet. 50 devices
upload through all three (calls balanced over the replicas, failing over) while one
replica at a time is SIGKILLed at random moments and started again: no acknowledged
sample is lost, every sample is labelled exactly once, each target's versions increase
with no duplicates, and no target's learning job ever runs twice at once."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecl.cloud import Registry
from edgecl.cloud._signing import UpdateSigner
from edgecl.device._transport import GrpcTransport, TransportError
from edgecl.wire import WireSample
from tests.cloud.conftest import KEY, cloud_env

DEVICES, GROUPS, KILLS, LEASE_S = 50, 5, 5, 6.0


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Replica:
    """One ``edgecl serve`` process on a fixed port (started again on the same one)."""

    def __init__(self, tiny_zoo, storage: Path, url: str, port: int, key: Path) -> None:
        self.port = port
        self.env = {**os.environ, **cloud_env(
            storage, server_address=f"127.0.0.1:{port}", storage_registry=url,
            log_format="json", learning_enabled="true", learning_group_by="group",
            learning_trigger_samples="40", learning_trigger_seconds="2",
            learning_steps="20", learning_signing_key=str(key), teacher_claim_s="3",
            learning_lease_s=str(LEASE_S), teacher_batch_size="64")}
        self.home = str(tiny_zoo.path.parent.parent)
        self.proc: subprocess.Popen | None = None
        self.up = threading.Event()

    def start(self, after_s: float = 0.0) -> None:
        time.sleep(after_s)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecl", "serve", "--home", self.home], env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line and json.loads(line)["serving"].endswith(f":{self.port}"), line
        self.up.set()

    def kill(self) -> None:
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _device(i: int, addresses: list[str], sha: str, stop: threading.Event,
            acked: dict[str, set[str]], failures: list[str]) -> None:
    device_id = f"cam-{i:02d}"
    transport = GrpcTransport(addresses, deadline_s=10.0)
    rng = np.random.default_rng(i)
    mine = acked.setdefault(device_id, set())

    def retrying(call):
        deadline = time.monotonic() + 60
        while True:
            try:
                return call()
            except TransportError as exc:  # a replica died under the call: another one
                failures.append(exc.code)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    try:
        token = retrying(lambda: transport.register(device_id, KEY, sha,
                                                    f"group-{i % GROUPS}").token)
        k = 0
        while not stop.is_set():
            batch = [WireSample(f"{device_id}-{k}-{j}",
                                input=rng.random((1, 28, 28), dtype=np.float32))
                     for j in range(2)]
            result = retrying(lambda b=batch: transport.upload(token, [b]))
            mine.update(result.acked_ids)
            k += 1
            time.sleep(0.25)
    finally:
        transport.close()


@pytest.mark.slow
def test_replicas_survive_sigkill_and_keep_every_guarantee(tiny_zoo, postgres_url, tmp_path):
    from edgecl.bundle import load_bundle

    sha = load_bundle(tiny_zoo.student_bundle).encoder_sha256
    key = tmp_path / "signing_key.pem"
    UpdateSigner.load_or_create(key)  # one key for every replica
    replicas = [Replica(tiny_zoo, tmp_path / f"replica{n}", postgres_url, port, key)
                for n, port in enumerate(_free_ports(3))]
    starters = [threading.Thread(target=r.start) for r in replicas]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    addresses = [f"127.0.0.1:{r.port}" for r in replicas]
    stop = threading.Event()
    acked: dict[str, set[str]] = {}
    failures: list[str] = []
    devices = [threading.Thread(target=_device, args=(i, addresses, sha, stop, acked,
                                                      failures)) for i in range(DEVICES)]
    rng = random.Random(7)
    kills = 0
    try:
        for t in devices:
            t.start()
        time.sleep(3.0)
        restarts: list[threading.Thread] = []
        while kills < KILLS:  # at random moments, while at least one other replica is up
            time.sleep(rng.uniform(0.5, 2.0))
            up = [r for r in replicas if r.up.is_set()]
            if len(up) < 2:
                continue
            victim = rng.choice(up)
            victim.kill()
            kills += 1
            restarts.append(threading.Thread(target=victim.start, args=(rng.uniform(0.2, 1),)))
            restarts[-1].start()
        for t in restarts:
            t.join(120)
        time.sleep(2.0)
        stop.set()
        for t in devices:
            t.join(120)
        assert not any(t.is_alive() for t in devices)
        probe = Registry(tmp_path / "probe", url=postgres_url)
        try:
            deadline = time.monotonic() + 120
            while probe.unlabelled_count() and time.monotonic() < deadline:
                time.sleep(0.5)  # a killed replica's claims end after teacher.claim_s
            time.sleep(LEASE_S)  # learning jobs triggered by the last labels
            stats = probe.sample_stats()
            total_acked = sum(len(v) for v in acked.values())
            lost = {d: ids - probe.sample_ids(d) for d, ids in acked.items()}
            runs = probe.learning_runs()
            versions = {}
            for target in {r[0] for r in runs}:
                rows = probe._rows("SELECT version, created_ms FROM updates WHERE target = ? "
                                   "ORDER BY created_ms, version", (target,))
                versions[target] = [int(v) for v, _ in rows]
        finally:
            probe.close()
    finally:
        stop.set()
        for r in replicas:
            r.stop()
    assert kills == KILLS and failures  # the devices did see replicas die
    assert total_acked >= DEVICES * 20, total_acked
    assert all(not ids for ids in lost.values()), "acknowledged samples lost"
    assert stats["unlabelled"] == 0 and stats["labelled"] == stats["samples"]
    assert stats["max_label_count"] == 1  # exactly once, though labellers died mid-batch
    assert len(runs) >= GROUPS and sum(len(v) for v in versions.values()) >= 1  # learning
    for target, seq in versions.items():
        assert seq == sorted(set(seq)), (target, seq)  # strictly increasing, no duplicate
    by_target: dict[str, list[tuple[int, int | None]]] = {}
    for target, _, started, ended, _ in runs:
        by_target.setdefault(target, []).append((started, ended))
    for target, spans in by_target.items():
        for (s1, e1), (s2, _) in itertools.pairwise(spans):
            # the next job began after this one ended, or (a replica killed mid-job)
            # after its lease ran out
            assert s2 >= (e1 if e1 is not None else s1 + LEASE_S * 1000), (target, spans)
