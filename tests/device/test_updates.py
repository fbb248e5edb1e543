"""Signed updates on the device: verified, checked, canaried, swapped, rolled back, restored."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgecl import ConfigError, UpdateRejected
from edgecl.cloud._signing import UpdateSigner
from edgecl.device import DeviceRuntime
from edgecl.device._updates import CanaryPolicy, UpdateManager
from edgecl.device._verify import UpdateVerifier
from edgecl.wire import SignedUpdate, UpdatePayload
from tests.conftest import images

NO_CANARY = CanaryPolicy(min_samples=10**9)


@pytest.fixture()
def rt(small_bundle):
    return DeviceRuntime.open(small_bundle, threads=1, ood=None)


@pytest.fixture(scope="module")
def signer():
    return UpdateSigner.generate()


def parts(rt, seed=0, scale=0.05, rank=4):
    rng = np.random.default_rng(seed)
    w = rt.state.head.arrays()
    d = rt.bundle.manifest.feature_dim
    return {"prompt": rng.normal(0, scale, rt.bundle.input_spec.shape).astype(np.float32),
            "adapter.down": rng.normal(0, 0.2, (rank, d)).astype(np.float32),
            "adapter.up": rng.normal(0, scale, (d, rank)).astype(np.float32),
            "head.weight": (w["weight"] + rng.normal(0, scale, w["weight"].shape)).astype(
                np.float32),
            "head.bias": w["bias"].astype(np.float32)}


def payload(rt, version, seed=0, **kw):
    return UpdatePayload(version=version, base_version=version - 1,
                         encoder_sha256=rt.bundle.encoder_sha256,
                         parts=kw.pop("parts", None) or parts(rt, seed), **kw)


def manager(rt, signer, **kw):
    kw.setdefault("canary", NO_CANARY)
    return UpdateManager(rt, UpdateVerifier(signer.public_key), **kw)


def test_applied_update_changes_predictions_as_the_parts_say(rt, signer):
    m = manager(rt, signer)
    x = images(8)
    p = parts(rt)
    update = signer.sign(payload(rt, 1, parts=p), fp16=False)
    state = m.apply(update)
    assert rt.state is state and m.cloud_version == 1 and state.version == 1
    feats = rt.encode_checked(x + p["prompt"])
    feats = feats + (feats @ p["adapter.down"].T) @ p["adapter.up"].T
    logits = feats @ p["head.weight"].T + p["head.bias"]
    np.testing.assert_allclose(rt.predict(x).logits, logits, rtol=1e-4, atol=1e-4)
    assert m.counts()["applied"] == 1


def test_update_for_the_zoo_student_fits_in_16_kb(signer):
    rng = np.random.default_rng(0)
    big = {"prompt": rng.normal(0, 0.1, (1, 28, 28)), "adapter.down": rng.normal(0, 0.1, (8, 64)),
           "adapter.up": rng.normal(0, 0.1, (64, 8))}
    update = signer.sign(UpdatePayload(1, 0, "ab" * 32, parts=big))
    wire = len(update.payload) + len(update.signature) + len(update.key_id)
    assert wire <= 16 * 1024, wire


def _tampered(u: SignedUpdate) -> SignedUpdate:
    data = bytearray(u.payload)
    data[len(data) // 2] ^= 0x01
    return SignedUpdate(bytes(data), u.signature, u.key_id)


@pytest.mark.parametrize("case", ["tampered", "truncated", "bad_signature", "other_key",
                                  "wrong_encoder", "replayed", "bad_shape", "half_adapter",
                                  "nan_part", "fewer_classes"])
def test_bad_updates_are_rejected_and_the_device_keeps_serving(rt, signer, case):
    m = manager(rt, signer)
    m.apply(signer.sign(payload(rt, 5)))
    before = rt.state
    x = images(4)
    want = rt.predict(x).probabilities
    good = signer.sign(payload(rt, 6, seed=1))
    p = parts(rt, seed=1)
    update = {
        "tampered": lambda: _tampered(good),
        "truncated": lambda: SignedUpdate(good.payload[:-7], good.signature, good.key_id),
        "bad_signature": lambda: SignedUpdate(good.payload, bytes(64), good.key_id),
        "other_key": lambda: UpdateSigner.generate().sign(payload(rt, 6)),
        "wrong_encoder": lambda: signer.sign(payload(rt, 6).replace(encoder_sha256="0" * 64)),
        "replayed": lambda: signer.sign(payload(rt, 5, seed=2)),
        "bad_shape": lambda: signer.sign(payload(rt, 6, parts={"prompt": np.zeros((3, 3))})),
        "half_adapter": lambda: signer.sign(payload(rt, 6, parts={
            "adapter.down": p["adapter.down"]})),
        "nan_part": lambda: signer.sign(payload(rt, 6, parts={
            "prompt": np.full((1, 28, 28), np.nan)}), fp16=False),
        "fewer_classes": lambda: signer.sign(payload(rt, 6, parts={
            "head.weight": p["head.weight"][:3], "head.bias": p["head.bias"][:3]})),
    }[case]()
    with pytest.raises(UpdateRejected) as info:
        m.apply(update)
    assert info.value.reason
    assert rt.state is before and m.cloud_version == 5
    np.testing.assert_array_equal(rt.predict(x).probabilities, want)
    assert m.events[-1].action == "rejected"
    assert m(good).applied and m.cloud_version == 6  # still accepts a good one


def test_canary_rejects_a_degenerate_candidate(rt, signer):
    m = manager(rt, signer, canary=CanaryPolicy(min_samples=16))
    x = images(64, seed=3)
    m.observe(x, rt.predict(x))
    w = rt.state.head.arrays()
    bias = np.zeros_like(w["bias"])
    bias[0] = 1e3
    bad = {"head.weight": w["weight"], "head.bias": bias}
    with pytest.raises(UpdateRejected, match="canary"):
        m.apply(signer.sign(payload(rt, 1, parts=bad), fp16=False))
    assert m.cloud_version == 0
    m.apply(signer.sign(payload(rt, 2, parts=parts(rt, scale=0.01))))
    assert m.cloud_version == 2


def test_manual_and_automatic_rollback(rt, signer):
    m = manager(rt, signer, monitor_window=32)
    with pytest.raises(ConfigError):
        m.rollback()
    x = images(64, seed=4)
    m.observe(x, rt.predict(x))
    m.apply(signer.sign(payload(rt, 1)))
    m.rollback("operator asked")
    assert m.cloud_version == 0 and m.events[-1].action == "rolled_back"
    with pytest.raises(UpdateRejected, match="rolled back"):
        m.apply(signer.sign(payload(rt, 1)))
    # a confident head, then one that flattens it: confidence collapses, auto rollback
    w = rt.state.head.arrays()
    sharp = {"head.weight": w["weight"] * 200, "head.bias": w["bias"] * 200}
    m.apply(signer.sign(payload(rt, 2, parts=sharp), fp16=False))
    for i in range(3):
        xs = images(16, seed=20 + i)
        m.observe(xs, rt.predict(xs))
    assert m.cloud_version == 2  # confidence did not fall: kept
    flat = {"head.weight": w["weight"] * 1e-4, "head.bias": np.zeros_like(w["bias"])}
    m.apply(signer.sign(payload(rt, 3, parts=flat), fp16=False))
    assert m.cloud_version == 3
    for i in range(3):
        xs = images(16, seed=10 + i)
        m.observe(xs, rt.predict(xs))
    assert m.cloud_version == 2 and m.events[-1].action == "rolled_back"
    assert "confidence" in m.events[-1].reason


def test_active_version_is_restored_after_a_restart(small_bundle, signer, tmp_path):
    rt1 = DeviceRuntime.open(small_bundle, ood=None)
    m1 = manager(rt1, signer, state_dir=tmp_path, keep=2)
    for v in (1, 2, 3):
        m1.apply(signer.sign(payload(rt1, v, seed=v)))
    m1.rollback()
    x = images(8)
    want = rt1.predict(x).probabilities
    assert len(list((tmp_path / "updates").glob("v*.bin"))) == 3
    rt2 = DeviceRuntime.open(small_bundle, ood=None)
    m2 = manager(rt2, signer, state_dir=tmp_path, keep=2)
    assert m2.cloud_version == 2
    np.testing.assert_allclose(rt2.predict(x).probabilities, want, rtol=1e-6)
    with pytest.raises(UpdateRejected, match="rolled back"):
        m2.apply(signer.sign(payload(rt2, 3, seed=3)))
    # a corrupt stored update is skipped with a reason; the device serves what it can
    (tmp_path / "updates" / "v000000000002.bin").write_bytes(b"garbage")
    rt3 = DeviceRuntime.open(small_bundle, ood=None)
    m3 = manager(rt3, signer, state_dir=tmp_path)
    assert m3.cloud_version == 1
    assert any(e.action == "rejected" and "v000000000002" in e.reason for e in m3.events)


def test_zero_downtime_hot_swap_under_concurrent_predict(rt, signer):
    m = manager(rt, signer)
    states = {0: rt.state}
    updates = [signer.sign(payload(rt, v, seed=v % 7)) for v in range(1, 201)]
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, np.ndarray, np.ndarray]] = []

    def worker(seed: int) -> None:
        x = images(2, seed=seed)
        try:
            while not stop.is_set():
                pred = rt.predict(x)
                seen.append((pred.state_version, x, pred.probabilities))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for u in updates:
        state = m.apply(u)
        states[state.version] = state
    stop.set()
    for t in threads:
        t.join()
    assert not errors and m.cloud_version == 200
    versions = {v for v, _, _ in seen}
    assert len(versions) > 1
    rng = np.random.default_rng(0)
    for i in rng.choice(len(seen), size=min(400, len(seen)), replace=False):
        v, x, probs = seen[i]
        np.testing.assert_allclose(rt.predict_with(states[v], x).probabilities, probs,
                                   rtol=1e-5, atol=1e-6)


def test_revert_serves_the_bundle_state_and_keeps_replay_protection(rt, signer):
    m = manager(rt, signer)
    x = images(6)
    want = rt.predict(x).probabilities
    m.apply(signer.sign(payload(rt, 3)))
    assert not np.allclose(rt.predict(x).probabilities, want)
    m.revert("new domain")
    np.testing.assert_allclose(rt.predict(x).probabilities, want, rtol=1e-6)
    assert m.cloud_version == 3 and m.counts()["reverted"] == 1
    with pytest.raises(UpdateRejected):
        m.apply(signer.sign(payload(rt, 2)))
    m.rollback()  # undo the revert
    assert not np.allclose(rt.predict(x).probabilities, want)


def test_an_update_describes_a_whole_state_on_top_of_the_bundle(rt, signer):
    """A part an update leaves out is the bundle's, never a leftover of the previous
    update: what the cloud validated is exactly what the device serves."""
    m = manager(rt, signer)
    x = images(8)
    reference = rt.predict(x).logits
    m.apply(signer.sign(payload(rt, 1), fp16=False))  # prompt + adapter + head
    assert rt.state.prompt is not None and rt.state.adapter is not None
    head_only = {k: v for k, v in parts(rt, seed=3).items() if k.startswith("head.")}
    m.apply(signer.sign(payload(rt, 2, parts=head_only), fp16=False))
    assert rt.state.prompt is None and rt.state.adapter is None  # the bundle's: none
    feats = rt.encode_checked(x)
    np.testing.assert_allclose(rt.predict(x).logits,
                               feats @ head_only["head.weight"].T + head_only["head.bias"],
                               rtol=1e-4, atol=1e-4)
    bundle_head = {f"head.{k}": v for k, v in m._base.head.arrays().items()}
    m.apply(signer.sign(payload(rt, 3, parts=bundle_head, metrics={"revert": 1.0}),
                        fp16=False))
    np.testing.assert_allclose(rt.predict(x).logits, reference, rtol=1e-5, atol=1e-5)
    assert rt.state.metadata["serving_cloud"] is False and m.cloud_version == 3


def test_after_a_domain_change_updates_learned_before_it_are_refused(rt, signer):
    """The cloud may still publish from uploads it had before the device saw the change:
    such an update is not served on the new inputs; one learned after the change is."""
    m = manager(rt, signer)
    m.apply(signer.sign(payload(rt, 1, metrics={"segment": 0.0})))
    state = m.domain_changed("input change", segment=1)
    assert state.prompt is None and m.counts()["reverted"] == 1  # the bundle's state
    with pytest.raises(UpdateRejected, match="earlier domain"):
        m.apply(signer.sign(payload(rt, 2, metrics={"segment": 0.0})))
    assert rt.state.prompt is None
    m.apply(signer.sign(payload(rt, 3, metrics={"segment": 1.0})))
    assert m.cloud_version == 3 and rt.state.prompt is not None
    m.apply(signer.sign(payload(rt, 4)))  # no segment named: nothing to hold against it
    assert m.cloud_version == 4


def test_an_update_is_served_only_on_inputs_like_those_it_was_applied_on(rt, signer):
    """The input guard: inputs move away from those seen before the swap -> the bundle's
    state again within a few samples; the same kind of inputs -> the update stays."""
    x = images(600, seed=4)
    reference = rt.predict(x[:8]).logits
    for guarded in (True, False):
        m = manager(rt, signer, input_guard=guarded)
        m.observe(x[:64], rt.predict(x[:64]))
        m.apply(signer.sign(payload(rt, 1 + 10 * (not guarded))))
        for i in range(64, 400, 8):  # more of the same: served throughout
            m.observe(x[i:i + 8], rt.predict(x[i:i + 8]))
        assert rt.state.metadata["serving_cloud"] and m.counts()["reverted"] == 0
        dark = x[400:600] * 0.25  # the light changed
        for i in range(0, 40, 8):
            m.observe(dark[i:i + 8], rt.predict(dark[i:i + 8]))
        if guarded:
            assert m.counts()["reverted"] == 1 and not rt.state.metadata["serving_cloud"]
            assert "moved away" in m.events[-1].reason
            np.testing.assert_allclose(rt.predict(x[:8]).logits, reference, rtol=1e-5,
                                       atol=1e-5)
        else:
            assert m.counts()["reverted"] == 0 and rt.state.metadata["serving_cloud"]
