"""The device sync client against the real service: drain, restart, resume, poison, re-register."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from edgecl._retry import Backoff
from edgecl.bundle import load_bundle
from edgecl.device import DeviceRuntime, Outbox, SyncClient, TransportError
from edgecl.wire import UpdatePayload
from tests.cloud.conftest import KEY, cloud_env, start_server
from tests.conftest import images

FAST = Backoff(initial_s=0.02, factor=2.0, max_s=0.5, seed=0)


def _client(outbox, target, sha, device_id, **kw):
    kw.setdefault("backoff", Backoff(initial_s=0.02, factor=2.0, max_s=0.5, seed=1))
    return SyncClient(outbox, target, device_id=device_id, enrollment_key=KEY,
                      encoder_sha256=sha, deadline_s=5, **kw)


def _fill(outbox, n, start=0, seed=0):
    x = images(n, seed=seed)
    for i in range(n):
        outbox.put_sync(f"s{start + i}", {"image": x[i]}, priority=float(i % 7),
                        meta={"label": 1, "ood_score": 0.5, "state_version": 0})


def test_backoff_schedule_is_bounded_jittered_and_resets():
    b = Backoff(initial_s=0.1, factor=2.0, max_s=1.0, seed=3)
    caps, delays = [], []
    for _ in range(8):
        caps.append(b.cap())
        delays.append(b.next())
    assert caps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(0.0 <= d <= c for d, c in zip(delays, caps))
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.cap() == 0.1
    again = Backoff(initial_s=0.1, factor=2.0, max_s=1.0, seed=3)
    assert [again.next() for _ in range(8)] == delays  # seedable


@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("sync"))
    yield srv
    srv.stop(grace=1.0)


def test_client_drains_the_outbox_and_each_sample_is_labelled_once(server, tmp_path):
    sha = next(iter(server.bundles))
    with Outbox(tmp_path / "o.db") as box:
        _fill(box, 70)
        with _client(box, server.target, sha, "drain-1", batch_size=32, chunk_size=10) as c:
            assert c.flush(30)
            stats = c.stats()
        assert box.stats().count == 0
    assert stats.uploaded == 70 and stats.connected and stats.registrations == 1
    assert server.registry.sample_ids("drain-1") == {f"s{i}" for i in range(70)}
    assert server.wait_idle(60)
    assert server.registry.sample_stats()["max_label_count"] == 1


def test_upload_now_drains_from_the_calling_thread_without_the_upload_worker(server,
                                                                              tmp_path):
    sha = next(iter(server.bundles))
    with Outbox(tmp_path / "o.db") as box:
        client = _client(box, server.target, sha, "now-1", batch_size=8, subscribe=False)
        client.start(uploads=False)
        try:
            _fill(box, 20)
            time.sleep(0.3)  # no worker: nothing leaves until the app says so
            assert box.stats().count == 20 and client.stats().uploaded == 0
            assert client.upload_now(30) == 20
            assert box.stats().count == 0 and client.upload_now(30) == 0
        finally:
            client.stop()
    assert server.registry.sample_ids("now-1") == {f"s{i}" for i in range(20)}
    with Outbox(tmp_path / "dead.db") as box:  # nobody listening: a typed error, kept
        _fill(box, 3)
        dead = _client(box, f"127.0.0.1:{_free_port()}", sha, "now-2")
        with pytest.raises(TransportError):
            dead.upload_now(timeout=0.5)
        dead.stop()
        assert box.stats().count == 3


def test_poison_sample_is_dropped_and_the_rest_flows(server, tmp_path):
    sha = next(iter(server.bundles))
    with Outbox(tmp_path / "o.db") as box:
        _fill(box, 9)
        box.put_sync("bad", {"image": np.full((1, 28, 28), 5.0, np.float32)}, priority=3.0)
        with _client(box, server.target, sha, "poison-1", batch_size=10) as c:
            assert c.flush(30)
            stats = c.stats()
    assert stats.poison_dropped == 1 and stats.uploaded == 9
    assert server.registry.sample_ids("poison-1") == {f"s{i}" for i in range(9)}


def test_revoked_token_leads_to_re_registration(server, tmp_path):
    sha = next(iter(server.bundles))
    with Outbox(tmp_path / "o.db") as box, \
            _client(box, server.target, sha, "rereg-1", subscribe=False) as c:
        _fill(box, 5)
        assert c.flush(30)
        server.registry.release_device("rereg-1")  # the operator resets the id: our
        # token stops working, and the client registers again
        _fill(box, 5, start=5)
        assert c.flush(30)
        stats = c.stats()
    assert stats.registrations == 2 and stats.uploaded == 10
    assert "UNAUTHENTICATED" in stats.last_error


def test_updates_are_delivered_and_resume_from_the_persisted_version(server, tmp_path):
    sha = next(iter(server.bundles))
    signer = server.signer

    def publish(v):
        p = UpdatePayload(v, v - 1, sha, parts={"prompt": np.full((1, 28, 28), 0.01 * v)})
        server.registry.publish("upd-1", signer.sign(p), p)

    seen: list[int] = []

    def on_update(u):
        from edgecl.wire import payload_from_bytes

        seen.append(payload_from_bytes(u.payload).version)
        return True

    state = tmp_path / "sync.json"
    for v in (1, 2, 3):
        publish(v)
    with Outbox(tmp_path / "o.db") as box:
        with _client(box, server.target, sha, "upd-1", on_update=on_update,
                     state_path=state) as c:
            _wait(lambda: c.stats().last_version == 3)
        assert seen == [1, 2, 3] and json.loads(state.read_text())["last_version"] == 3
        publish(4)
        with _client(box, server.target, sha, "upd-1", on_update=on_update,
                     state_path=state) as c:
            assert c.last_version == 3
            _wait(lambda: c.stats().last_version == 4)
            assert c.fetch_update() is None
            assert c.report(4, {"predictions": 1.0}) == 4
    assert seen == [1, 2, 3, 4]


def _wait(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tiny_zoo, data, port):
    env = {**os.environ, **cloud_env(data, server_address=f"127.0.0.1:{port}")}
    proc = subprocess.Popen([sys.executable, "-m", "edgecl", "serve", "--home",
                             str(tiny_zoo.path.parent.parent)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert json.loads(proc.stdout.readline())["serving"] == f"127.0.0.1:{port}"
    return proc


def test_server_killed_and_restarted_mid_stream_nothing_acknowledged_is_lost(tiny_zoo,
                                                                             tmp_path):
    data, port = tmp_path / "cloud", _free_port()
    sha = load_bundle(tiny_zoo.student_bundle).encoder_sha256
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    proc = _spawn(tiny_zoo, data, port)
    n = 0
    with Outbox(tmp_path / "o.db") as box, \
            _client(box, f"127.0.0.1:{port}", sha, "restart-1", batch_size=8,
                    subscribe=False) as client:
        try:
            for step in range(60):
                x = images(4, seed=step)
                pred = rt.predict(x)  # predicting never depends on the cloud
                assert len(pred.labels) == 4
                for i in range(4):
                    box.put(f"r{n}", {"image": x[i]}, priority=float(pred.confidence[i]))
                    n += 1
                if step == 20:
                    proc.send_signal(signal.SIGKILL)  # the cloud dies mid-stream
                    proc.wait(10)
                if step == 40:
                    proc = _spawn(tiny_zoo, data, port)  # and comes back on the same data
                time.sleep(0.01)
            assert client.flush(60)
            stats = client.stats()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        assert box.stats().count == 0
    assert stats.retries > 0
    from edgecl.cloud import Registry

    reg = Registry(data)
    assert reg.sample_ids("restart-1") == {f"r{i}" for i in range(n)}
    s = reg.sample_stats()
    assert s["unlabelled"] == 0 and s["max_label_count"] == 1
