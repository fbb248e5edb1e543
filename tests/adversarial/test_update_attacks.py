"""The red team's attacks on the update path, each written as the attack.

Every attack: the update is refused with a typed reason, logged and counted, the device's
predictions are unchanged, and a genuine update afterwards is still applied.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecl import UpdateRejected
from edgecl._proto import edgecl_pb2 as pb
from edgecl.bundle import PROBE_FILE, load_bundle, synthetic_probe
from edgecl.bundle._manifest import MANIFEST
from edgecl.cloud._signing import UpdateSigner
from edgecl.device import (
    CanaryPolicy,
    DeviceRuntime,
    Outbox,
    SyncClient,
    UpdateManager,
    UpdateVerifier,
)
from edgecl.device._transport import GrpcTransport
from edgecl.wire import (
    UPDATE_PARTS,
    Registration,
    SignedUpdate,
    UpdatePayload,
    UploadResult,
    payload_to_bytes,
)
from tests.cloud.conftest import KEY, start_server
from tests.conftest import images

INT64 = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture(scope="module")
def signer() -> UpdateSigner:
    return UpdateSigner.generate()


@pytest.fixture()
def rt(small_bundle):
    return DeviceRuntime.open(small_bundle, threads=1, ood=None)


def _manager(rt, signer, **kw) -> UpdateManager:
    return UpdateManager(rt, UpdateVerifier(signer.public_key), **kw)


def _genuine(rt, version: int, **kw) -> UpdatePayload:
    """A small, sane update: a faint prompt and a slightly moved head."""
    w = rt.state.head.arrays()
    parts = kw.pop("parts", None) or {
        "prompt": np.full(rt.bundle.input_spec.shape, 0.002 * (version % 10 + 1), np.float32),
        "head.weight": (w["weight"] * 1.05).astype(np.float32),
        "head.bias": w["bias"].astype(np.float32)}
    return UpdatePayload(version=version, base_version=version - 1,
                         encoder_sha256=rt.bundle.encoder_sha256, parts=parts, **kw)


def _forged(payload: bytes, key_id: str) -> SignedUpdate:
    """What an attacker without the key can send: any bytes, any signature."""
    return SignedUpdate(payload, bytes(range(64)), key_id)


def _huge_shape_payload(version: int, sha: str) -> bytes:
    msg = pb.UpdatePayload(version=version, base_version=0, encoder_sha256=sha)
    part = msg.parts.add(name="head.weight")
    part.tensor.dtype = 1
    part.tensor.shape.extend([2**32, 2**32])
    return msg.SerializeToString()


def _assert_refused(m, rt, update, x, want, kind: str | None = None) -> None:
    """``update`` is refused (typed, counted, logged as an event); predictions unchanged."""
    before, n = rt.state, m.counts()["rejected"]
    with pytest.raises(UpdateRejected) as info:
        m.apply(update)
    assert info.value.reason
    if kind is not None:
        assert m.rejections().get(kind, 0) >= 1, (kind, m.rejections(), info.value.reason)
    assert rt.state is before and m.counts()["rejected"] == n + 1
    assert m.events[-1].action == "rejected"
    np.testing.assert_array_equal(rt.predict(x).probabilities, want)


# -- a transport the test controls ------------------------------------------------------
class QueueTransport:
    """An in-memory transport: ``subscribe`` yields what the test pushes."""

    def __init__(self) -> None:
        self.updates: queue.Queue[SignedUpdate] = queue.Queue()
        self.closed = threading.Event()

    def register(self, device_id, enrollment_key, encoder_sha256, group=""):
        return Registration("t", (1, 28, 28), 16, 0, 1 << 20, 64)

    def upload(self, token, batches):
        return UploadResult(0, 0, ())

    def subscribe(self, token, after_version) -> Iterator[SignedUpdate]:
        while not self.closed.is_set():
            try:
                yield self.updates.get(timeout=0.05)
            except queue.Empty:
                return

    def fetch(self, token, after_version):
        return None

    def report(self, token, state_version, stats):
        return 0

    def close(self) -> None:
        self.closed.set()


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def _update_thread(client: SyncClient) -> threading.Thread:
    return next(t for t in client._threads if t.name == "edgecl-updates")


# -- 1: an unsigned message must not move the cursor -----------------------------------
@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("attacks"))
    yield srv
    srv.stop(grace=1.0)


class InjectingTransport(GrpcTransport):
    """The real gRPC transport with forged messages slipped in ahead of the stream."""

    def __init__(self, target: str, forged: list[SignedUpdate]) -> None:
        super().__init__(target, deadline_s=5)
        self.forged = list(forged)

    def subscribe(self, token, after_version):
        while self.forged:
            yield self.forged.pop(0)
        yield from super().subscribe(token, after_version)


def test_unsigned_huge_version_does_not_move_the_cursor_on_loopback(server, tiny_zoo,
                                                                    tmp_path):
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1, ood=None)
    sha = rt.bundle.encoder_sha256
    x = images(16, seed=1)
    want = rt.predict(x).probabilities
    manager = _manager(rt, server.signer)
    for v in (1, 2):
        p = _genuine(rt, v, device_id="atk-1")
        server.publish_update("atk-1", server.signer.sign(p))
    kid = server.signer.sign(_genuine(rt, 1)).key_id
    forged = [_forged(payload_to_bytes(_genuine(rt, 10**12, device_id="atk-1")), kid),
              _forged(_huge_shape_payload(10**12 + 1, sha), kid),
              _forged(b"\xff" * 40, kid)]
    state = tmp_path / "sync.json"
    transport = InjectingTransport(server.target, forged)
    with Outbox(tmp_path / "o.db") as box:
        client = SyncClient(box, transport, device_id="atk-1", enrollment_key=KEY,
                            encoder_sha256=sha, on_update=manager, state_path=state)
        assert manager.device_id == "atk-1"  # the client told the manager who it is
        with client:
            _wait(lambda: manager.cloud_version == 2)
            stats = client.stats()
            assert _update_thread(client).is_alive()
    assert stats.last_version == 2 and json.loads(state.read_text())["last_version"] == 2
    assert stats.updates_rejected == 3 and stats.updates_applied == 2
    assert manager.rejections()["signature"] == 3
    assert not np.array_equal(rt.predict(x).probabilities, want)  # the genuine ones applied


# -- 2: no message can stop the update path ------------------------------------------------
def _client(tmp_path: Path, manager, transport) -> tuple[SyncClient, Outbox]:
    box = Outbox(tmp_path / "o.db")
    client = SyncClient(box, transport, device_id="fuzz-1", enrollment_key=KEY,
                        encoder_sha256=manager.runtime.bundle.encoder_sha256,
                        on_update=manager, state_path=tmp_path / "sync.json",
                        poll_s=0.01).start(uploads=False)
    return client, box


def test_huge_tensor_shape_does_not_kill_the_update_thread(rt, signer, tmp_path):
    m = _manager(rt, signer)
    transport = QueueTransport()
    client, box = _client(tmp_path, m, transport)
    x = images(4)
    want = rt.predict(x).probabilities
    try:
        sha = rt.bundle.encoder_sha256
        transport.updates.put(_forged(_huge_shape_payload(7, sha), m.verifier.key_id))
        transport.updates.put(signer.sign_bytes(_huge_shape_payload(8, sha)))  # signed, broken
        _wait(lambda: client.stats().updates_received == 2)
        assert _update_thread(client).is_alive()
        np.testing.assert_array_equal(rt.predict(x).probabilities, want)
        assert client.stats().last_version == 0
        assert m.rejections() == {"signature": 1, "malformed": 1}  # signed, still refused
        transport.updates.put(signer.sign(_genuine(rt, 1)))
        _wait(lambda: m.cloud_version == 1)
        assert client.stats().last_version == 1
    finally:
        client.stop()
        box.close()


def _tensor_fields(draw) -> dict:
    shape = draw(st.lists(st.one_of(st.integers(-3, 40), st.sampled_from(
        [2**31, 2**32, 2**40, 2**62])), max_size=9))
    return {"dtype": draw(st.integers(0, 8)), "shape": shape,
            "data": draw(st.binary(max_size=256)), "compression": draw(st.integers(0, 3))}


@st.composite
def _random_payload(draw, sha: str) -> bytes:
    msg = pb.UpdatePayload(version=draw(INT64), base_version=draw(INT64),
                           encoder_sha256=draw(st.sampled_from([sha, "", "0" * 64])),
                           device_id=draw(st.sampled_from(["", "fuzz-1", "x"])),
                           group=draw(st.sampled_from(["", "g"])))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.one_of(st.sampled_from(UPDATE_PARTS), st.text(max_size=8)))
        part = msg.parts.add(name=name)
        t = _tensor_fields(draw)
        part.tensor.dtype, part.tensor.compression = t["dtype"], t["compression"]
        part.tensor.shape.extend(t["shape"])
        part.tensor.data = t["data"]
    for key in draw(st.lists(st.sampled_from(["revert", "segment", "x"]), max_size=3)):
        msg.metrics[key] = draw(st.floats(allow_nan=True, allow_infinity=True))
    return msg.SerializeToString()


def test_fuzzed_update_messages_never_stop_the_update_path(rt, signer, tmp_path):
    m = _manager(rt, signer)
    transport = QueueTransport()
    client, box = _client(tmp_path, m, transport)
    x = images(4)
    want = rt.predict(x).probabilities
    sha, kid = rt.bundle.encoder_sha256, m.verifier.key_id
    messages = st.one_of(
        st.builds(SignedUpdate, st.binary(max_size=300), st.binary(max_size=80),
                  st.one_of(st.just(kid), st.text(max_size=20))),
        _random_payload(sha).map(lambda b: _forged(b, kid)),
        _random_payload(sha).map(signer.sign_bytes))  # a buggy job signs garbage
    sent = [0]

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(messages)
    def attack(update: SignedUpdate) -> None:
        applied = m.counts()["applied"]
        transport.updates.put(update)
        sent[0] += 1
        _wait(lambda: client.stats().updates_received == sent[0])
        assert _update_thread(client).is_alive()
        if m.counts()["applied"] == applied:
            np.testing.assert_array_equal(rt.predict(x).probabilities, want)

    try:
        attack()
        assert client.stats().update_errors == 0  # every failure was a typed rejection
        # a signed (buggy) update refused after verification may have moved the cursor
        v = max(m.cloud_version, client.stats().last_version) + 1
        transport.updates.put(signer.sign(_genuine(rt, v)))
        _wait(lambda: m.cloud_version == v and client.stats().last_version == v)
        assert _update_thread(client).is_alive()
    finally:
        client.stop()
        box.close()


def test_a_callback_that_raises_does_not_stop_the_update_thread(rt, signer, tmp_path):
    calls: list[int] = []

    def on_update(update):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return m(update)

    m = _manager(rt, signer)
    transport = QueueTransport()
    box = Outbox(tmp_path / "o.db")
    client = SyncClient(box, transport, device_id="cb-1", enrollment_key=KEY,
                        encoder_sha256=rt.bundle.encoder_sha256, on_update=on_update,
                        poll_s=0.01).start(uploads=False)
    try:
        transport.updates.put(signer.sign(_genuine(rt, 1)))
        transport.updates.put(signer.sign(_genuine(rt, 2)))
        _wait(lambda: m.cloud_version == 2)
        stats = client.stats()
        assert stats.update_errors == 1 and stats.last_version == 2
    finally:
        client.stop()
        box.close()


# -- 3a: signed, but for someone else ------------------------------------------------------
@pytest.mark.parametrize("device_id,group", [("cam-2", ""), ("cam-2", "lobby"),
                                             ("", "other"), ("", "")])
def test_update_for_another_device_or_group_is_refused(rt, signer, device_id, group):
    m = _manager(rt, signer, device_id="cam-1", group="lobby")
    x = images(6)
    want = rt.predict(x).probabilities
    bad = signer.sign(_genuine(rt, 1, device_id=device_id, group=group))
    _assert_refused(m, rt, bad, x, want, "addressee")
    assert not m(bad).verified  # a sync client does not move its cursor past it
    assert m.apply(signer.sign(_genuine(rt, 1, device_id="cam-1")))
    assert m.apply(signer.sign(_genuine(rt, 2, group="lobby")))
    assert m.cloud_version == 2


def test_the_cloud_addresses_group_updates_to_the_group():
    from edgecl.cloud._learning import _addressee

    class Store:
        by_group = True

    assert _addressee(Store(), "lobby") == {"device_id": "", "group": "lobby"}
    assert _addressee(object(), "cam-1") == {"device_id": "cam-1", "group": ""}


# -- 3b: a version far ahead ---------------------------------------------------------------
def test_version_far_ahead_is_refused_and_later_updates_still_apply(rt, signer):
    m = _manager(rt, signer)
    x = images(6)
    want = rt.predict(x).probabilities
    _assert_refused(m, rt, signer.sign(_genuine(rt, 2**63 - 1)), x, want, "version")
    assert not m(signer.sign(_genuine(rt, 2**63 - 1))).verified
    assert m.apply(signer.sign(_genuine(rt, 2))) and m.cloud_version == 2
    small = _manager(DeviceRuntime.open(rt.bundle.path, threads=1, ood=None), signer,
                     max_version_step=10)
    with pytest.raises(UpdateRejected, match="more than 10 above"):
        small.apply(signer.sign(_genuine(small.runtime, 11)))
    assert small.apply(signer.sign(_genuine(small.runtime, 10)))


# -- 3c: nothing in it -----------------------------------------------------------------------
def test_update_without_parts_is_refused_but_reverts_still_work(rt, signer):
    m = _manager(rt, signer)
    x = images(6)
    reference = rt.predict(x).probabilities
    m.apply(signer.sign(_genuine(rt, 1)))
    want = rt.predict(x).probabilities
    empty = UpdatePayload(2, 1, rt.bundle.encoder_sha256)
    _assert_refused(m, rt, signer.sign(empty), x, want, "parts")
    # a revert disguising other parts is refused; the cloud's revert (the bundle's head,
    # fp16) and a bare revert serve the bundle's own state exactly
    w = m._base.head.arrays()
    fake = {"head.weight": w["weight"] * 3, "head.bias": w["bias"]}
    _assert_refused(m, rt, signer.sign(_genuine(rt, 2, parts=fake, metrics={"revert": 1.0})),
                    x, want, "parts")
    prompt = {"prompt": np.zeros(rt.bundle.input_spec.shape, np.float32)}
    _assert_refused(m, rt, signer.sign(_genuine(rt, 2, parts=prompt,
                                                metrics={"revert": 1.0})), x, want, "parts")
    cloud_revert = {"head.weight": w["weight"], "head.bias": w["bias"]}
    m.apply(signer.sign(_genuine(rt, 2, parts=cloud_revert, metrics={"revert": 1.0})))
    np.testing.assert_array_equal(rt.predict(x).probabilities, reference)
    assert rt.state.metadata["serving_cloud"] is False
    m.apply(signer.sign(_genuine(rt, 3)))
    m.apply(signer.sign(UpdatePayload(4, 3, rt.bundle.encoder_sha256, metrics={"revert": 1.0})))
    np.testing.assert_array_equal(rt.predict(x).probabilities, reference)


# -- 3d: absurd values on a fresh device (empty canary buffer) -----------------------------
def _absurd(rt, name: str, value: float) -> dict[str, np.ndarray]:
    w = rt.state.head.arrays()
    d, shape = rt.bundle.manifest.feature_dim, rt.bundle.input_spec.shape
    if name == "adapter":
        return {"adapter.down": np.full((2, d), value, np.float32),
                "adapter.up": np.full((d, 2), value, np.float32)}
    if name == "head":
        bias = np.zeros_like(w["bias"], dtype=np.float32)
        bias[0] = value
        return {"head.weight": w["weight"].astype(np.float32), "head.bias": bias}
    if name == "prompt":
        return {"prompt": np.full(shape, value, np.float32)}
    return {"filter": np.full((shape[0], 3, 3), value, np.float32)}


@pytest.mark.parametrize("value", [1e4, 1e12, 1e30])
@pytest.mark.parametrize("name", ["head", "prompt", "filter", "adapter"])
def test_absurd_values_are_refused_on_a_fresh_device(rt, signer, name, value):
    m = _manager(rt, signer)  # default canary, nothing observed: the buffer is empty
    x = images(6)
    want = rt.predict(x).probabilities
    update = signer.sign(_genuine(rt, 1, parts=_absurd(rt, name, value)), fp16=False)
    _assert_refused(m, rt, update, x, want, "bounds")
    assert m.apply(signer.sign(_genuine(rt, 2))) and m.cloud_version == 2


@pytest.fixture()
def zoo_rt(tiny_zoo):
    """The zoo student: its probe (calibration images) spreads over every class."""
    return DeviceRuntime.open(tiny_zoo.student_bundle, threads=1, ood=None)


def test_collapse_within_bounds_is_caught_on_the_probe_when_configured(zoo_rt, signer):
    rt = zoo_rt
    x = images(6)
    want = rt.predict(x).probabilities
    collapsed = signer.sign(_genuine(rt, 1, parts=_absurd(rt, "head", 900.0)), fp16=False)
    # by default the probe asks only for finite outputs: an update for a severe shift may
    # legitimately map the bundle's clean probe to few classes
    assert _manager(rt, signer)(collapsed).applied
    rt = DeviceRuntime.open(rt.bundle.path, threads=1, ood=None)
    m = _manager(rt, signer, canary=CanaryPolicy(probe_max_class_share=0.9))  # empty buffer
    x = images(6)
    want = rt.predict(x).probabilities
    collapsed = signer.sign(_genuine(rt, 1, parts=_absurd(rt, "head", 900.0)), fp16=False)
    _assert_refused(m, rt, collapsed, x, want, "probe")
    assert "probe" in m.events[-1].reason
    big_prompt = signer.sign(_genuine(rt, 2, parts=_absurd(rt, "prompt", 900.0)))
    _assert_refused(m, rt, big_prompt, x, want, "probe")
    assert m.apply(signer.sign(_genuine(rt, 3))) and m.cloud_version == 3


def _rewrite_bundle(src: Path, dst: Path, **changes) -> Path:
    """A copy of a bundle with manifest fields changed (the manifest re-digested)."""
    shutil.copytree(src, dst)
    manifest = dataclasses.replace(load_bundle(src).manifest, **changes)
    (dst / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return dst


def test_bounds_declared_by_the_bundle(small_bundle, signer, tmp_path):
    manifest = load_bundle(small_bundle).manifest
    path = _rewrite_bundle(small_bundle, tmp_path / "b",
                           extra={**manifest.extra, "update_bounds": {"head.bias": 10.0}})
    rt = DeviceRuntime.open(path, threads=1, ood=None)
    assert rt.bundle.update_bounds() == {"head.bias": 10.0}
    m = _manager(rt, signer)
    x = images(6)
    want = rt.predict(x).probabilities
    _assert_refused(m, rt, signer.sign(_genuine(rt, 1, parts=_absurd(rt, "head", 50.0)),
                                       fp16=False), x, want, "bounds")
    assert m.apply(signer.sign(_genuine(rt, 2))) and m.cloud_version == 2


def test_a_bundle_without_probe_npz_gets_a_synthetic_probe(tiny_zoo, signer, tmp_path):
    src = Path(tiny_zoo.student_bundle)
    manifest = load_bundle(src).manifest
    files = {k: v for k, v in manifest.files.items() if k != PROBE_FILE}
    path = _rewrite_bundle(src, tmp_path / "b", files=files)
    (path / PROBE_FILE).unlink()
    rt = DeviceRuntime.open(path, threads=1, ood=None)
    probe = rt.bundle.probe_inputs()
    np.testing.assert_array_equal(probe, synthetic_probe(rt.bundle.input_spec))
    assert probe.min() >= 0.0 and probe.max() <= 1.0 and len(probe) >= 32
    m = _manager(rt, signer, canary=CanaryPolicy(probe_max_class_share=0.9))
    x = images(6)
    want = rt.predict(x).probabilities
    _assert_refused(m, rt, signer.sign(_genuine(rt, 1, parts=_absurd(rt, "head", 900.0)),
                                       fp16=False), x, want, "probe")
    assert m.apply(signer.sign(_genuine(rt, 2))) and m.cloud_version == 2
