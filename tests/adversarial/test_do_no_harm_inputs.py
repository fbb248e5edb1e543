"""Attacks on the do-no-harm paths: odd segment / revert metrics in signed updates, and
inputs the input guard cannot read. Bounded, in-process, no network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecl import UpdateRejected
from edgecl.cloud._signing import UpdateSigner
from edgecl.device import DeviceRuntime, UpdateManager, UpdateVerifier
from edgecl.device._updates import CanaryPolicy
from edgecl.wire import REVERT_METRIC, UpdatePayload
from tests.conftest import images


@pytest.fixture()
def rt(small_bundle):
    return DeviceRuntime.open(small_bundle, threads=1, ood=None)


def _head(rt, scale=0.1, seed=0):
    rng = np.random.default_rng(seed)
    w = rt.state.head.arrays()
    return {"head.weight": (w["weight"] + rng.normal(0, scale, w["weight"].shape)).astype(
        np.float32), "head.bias": w["bias"].astype(np.float32)}


@pytest.mark.parametrize("segment", [math.nan, math.inf, -math.inf, -1e300, 1e300, -1.0])
def test_odd_segment_metrics_never_bypass_the_refusal_or_crash(rt, segment):
    """After a change to segment 3, no update that says it was learned on segment < 3 is
    served; non-finite values are dropped by the wire (an update that names no segment);
    nothing raises but UpdateRejected and the device keeps serving."""
    signer = UpdateSigner.generate()
    m = UpdateManager(rt, UpdateVerifier(signer.public_key),
                      canary=CanaryPolicy(min_samples=10**9))
    m.domain_changed("change", segment=3)
    x = images(4)
    payload = UpdatePayload(version=1, base_version=0, encoder_sha256=rt.bundle.encoder_sha256,
                            parts=_head(rt), metrics={"segment": segment})
    update = signer.sign(payload, fp16=False)
    if math.isfinite(segment) and segment < 3:  # -1e300, -1.0
        with pytest.raises(UpdateRejected, match="earlier domain"):
            m.apply(update)
        assert m.cloud_version == 0
    else:  # non-finite (dropped on the wire: no claim) or 1e300: nothing to hold against it
        m.apply(update)
        assert m.cloud_version == 1
    assert np.isfinite(rt.predict(x).probabilities).all()


@pytest.mark.parametrize("flag", [math.nan, math.inf, -5.0, 0.0, 1.0])
def test_a_revert_flag_cannot_smuggle_a_state_other_than_the_bundles(rt, flag):
    signer = UpdateSigner.generate()
    m = UpdateManager(rt, UpdateVerifier(signer.public_key),
                      canary=CanaryPolicy(min_samples=10**9))
    parts = _head(rt, seed=1)
    x = images(6)
    before = rt.predict(x).logits
    revert = math.isfinite(flag) and flag != 0.0  # non-finite metrics are dropped on the wire
    payload = UpdatePayload(version=1, base_version=0, encoder_sha256=rt.bundle.encoder_sha256,
                            parts=parts, metrics={REVERT_METRIC: flag})
    if revert:  # a "revert" must carry the bundle's own head: refused, nothing changes
        with pytest.raises(UpdateRejected, match="revert must carry the bundle's own head"):
            m.apply(signer.sign(payload, fp16=False))
        np.testing.assert_array_equal(rt.predict(x).logits, before)
        return
    m.apply(signer.sign(payload, fp16=False))
    feats = rt.encode_checked(x)
    np.testing.assert_allclose(rt.predict(x).logits,
                               feats @ parts["head.weight"].T + parts["head.bias"],
                               rtol=1e-4, atol=1e-4)  # served exactly as signed
    assert rt.state.metadata["serving_cloud"] is True


def test_observe_survives_inputs_the_guard_cannot_read_and_keeps_serving(rt):
    signer = UpdateSigner.generate()
    m = UpdateManager(rt, UpdateVerifier(signer.public_key),
                      canary=CanaryPolicy(min_samples=10**9))
    x = images(80, seed=7)
    m.observe(x[:64], rt.predict(x[:64]))
    m.apply(signer.sign(UpdatePayload(version=1, base_version=0,
                                      encoder_sha256=rt.bundle.encoder_sha256,
                                      parts=_head(rt)), fp16=False))
    assert m.guard is not None and m.guard.armed
    bad = x[64:72].copy()
    bad[0, 0, 0, 0] = np.nan  # an app that feeds observe what predict would refuse
    m.observe(bad, rt.predict(x[64:72]))
    assert not m.guard.armed and rt.state.metadata["serving_cloud"]  # disarmed, no crash
    m.observe(x[72:80], rt.predict(x[72:80]))  # and the next batch is fine
    assert m.counts()["reverted"] == 0
