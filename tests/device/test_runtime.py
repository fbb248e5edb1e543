"""DeviceRuntime: predictions, input validation, thread safety, state handling."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgecl import ConfigError, InvalidInput
from edgecl.device import DeviceRuntime, ModelState
from edgecl.heads import CosineHead, LowRankAdapter
from tests.conftest import images


@pytest.fixture(scope="module")
def rt(small_bundle):
    return DeviceRuntime.open(small_bundle, threads=1, max_batch=64)


def test_single_image_equals_batch_row(rt):
    x = images(4, seed=1)
    batch = rt.predict(x, return_features=True)
    one = rt.predict(x[2])
    assert len(one) == 1 and one.labels[0] == batch.labels[2]
    np.testing.assert_allclose(one.probabilities[0], batch.probabilities[2], atol=1e-6)
    assert batch.features.shape == (4, 16)
    np.testing.assert_allclose(batch.probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch.confidence, batch.probabilities.max(1))
    assert batch.state_version == 0
    assert (batch.entropy() >= 0).all() and (batch.entropy() <= np.log(5) + 1e-5).all()


BAD_INPUTS = {
    "list": ([[0.0] * 28] * 28, "expected a numpy array"),
    "float64": (np.zeros((1, 1, 28, 28)), "wrong dtype float64"),
    "uint8": (np.zeros((1, 1, 28, 28), np.uint8), "wrong dtype uint8"),
    "rank2": (np.zeros((28, 28), np.float32), "wrong rank 2"),
    "rank5": (np.zeros((1, 1, 1, 28, 28), np.float32), "wrong rank 5"),
    "shape": (np.zeros((2, 3, 28, 28), np.float32), "wrong shape"),
    "hw": (np.zeros((2, 1, 32, 32), np.float32), "wrong shape"),
    "empty": (np.zeros((0, 1, 28, 28), np.float32), "empty batch"),
    "too_big": (np.zeros((65, 1, 28, 28), np.float32), "max_batch=64"),
    "nan": (np.where(np.arange(784).reshape(1, 1, 28, 28) == 5, np.nan, 0.5)
            .astype(np.float32), r"NaN values in sample\(s\) \[0\]"),
    "inf": (np.full((3, 1, 28, 28), np.inf, np.float32), "inf values"),
    "range_hi": (np.full((1, 1, 28, 28), 1.5, np.float32), "out of range"),
    "range_lo": (np.full((1, 1, 28, 28), -0.1, np.float32), "out of range"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_typed_and_runtime_keeps_serving(rt, case):
    x, message = BAD_INPUTS[case]
    with pytest.raises(InvalidInput, match=message) as info:
        rt.predict(x)
    if case not in ("too_big",):
        assert "float32 NCHW" in str(info.value) and "[0, 1]" in str(info.value)
    good = images(2, seed=9)
    assert len(rt.predict(good)) == 2


def test_masked_nan_is_refused_and_predictions_stay_finite(rt):
    x = images(2, seed=3)
    x[0, 0, 3, 3] = np.nan
    hidden = np.ma.masked_invalid(x)  # the attack: NaN under the mask
    with pytest.raises(InvalidInput, match="NaN"):
        rt.predict(hidden)
    clean = np.ma.MaskedArray(images(2, seed=3), mask=False)
    pred = rt.predict(clean)
    assert np.isfinite(pred.probabilities).all()
    assert type(rt.predict(images(1)).probabilities) is np.ndarray


def test_non_contiguous_input_accepted(rt):
    x = images(6, seed=2)
    view = x[::2]
    assert not view.flags.c_contiguous
    np.testing.assert_allclose(rt.predict(view).logits, rt.predict(x[::2].copy()).logits)


def test_concurrent_predict_equals_sequential(rt):
    batches = [images(1 + i % 5, seed=100 + i) for i in range(64)]
    sequential = [rt.predict(b).logits for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda b: rt.predict(b).logits, batches * 4))
    for i, got in enumerate(concurrent):
        np.testing.assert_array_equal(got, sequential[i % len(batches)])


def test_prompt_adapter_and_head_in_state(small_bundle):
    rt = DeviceRuntime.open(small_bundle)
    x = images(3, seed=5)
    base = rt.predict(x, return_features=True)
    prompt = np.full((1, 28, 28), 0.05, np.float32)
    rng = np.random.default_rng(0)
    adapter = LowRankAdapter(rng.normal(size=(2, 16)), rng.normal(size=(16, 2)) * 0.1)
    head = CosineHead(rng.normal(size=(5, 16)))
    old = rt.swap_state(rt.state.evolve(prompt=prompt, adapter=adapter, head=head))
    assert old.version == 0 and rt.state.version == 1
    got = rt.predict(x, return_features=True)
    assert got.state_version == 1
    feats = adapter.apply(rt.encode_checked(x + prompt))
    np.testing.assert_allclose(got.features, feats, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.logits, head.logits(feats), rtol=1e-5, atol=1e-5)
    assert np.abs(got.features - base.features).max() > 1e-3


def test_swap_refuses_incompatible_state(small_bundle):
    rt = DeviceRuntime.open(small_bundle)
    with pytest.raises(ConfigError, match="prompt has shape"):
        rt.swap_state(rt.state.evolve(prompt=np.zeros((1, 8, 8), np.float32)))
    with pytest.raises(ConfigError, match="another encoder"):
        rt.swap_state(rt.state.evolve(encoder_sha256="0" * 64))
    with pytest.raises(ConfigError, match="not newer"):
        rt.swap_state(rt.state.evolve(version=0))
    with pytest.raises(ConfigError, match="NaN"):
        rt.state.evolve(prompt=np.full((1, 28, 28), np.nan, np.float32))
    assert rt.state.version == 0
    assert isinstance(rt.state, ModelState)


def test_state_is_immutable(small_bundle):
    rt = DeviceRuntime.open(small_bundle)
    state = rt.state.evolve(prompt=np.zeros((1, 28, 28), np.float32))
    with pytest.raises(ValueError):
        state.prompt[0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        state.version = 7  # type: ignore[misc]


def test_device_imports_no_torch():
    code = ("import sys, edgecl.device, edgecl.bundle, edgecl.heads, edgecl.wire, edgecl.adapt, "
            "edgecl._proto.edgecl_pb2_grpc; "
            "bad = [m for m in ('torch', 'onnxscript', 'torchvision') if m in sys.modules]; "
            "print(','.join(bad) or 'clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "clean", out.stdout


def test_device_package_imports_no_grpc_until_a_transport_is_built():
    code = ("import sys, edgecl.device; print('grpc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_bundle_detectors_score_every_prediction(tiny_zoo):
    from edgecl.ood import list_detectors

    rt = DeviceRuntime.open(tiny_zoo.student_bundle)
    assert set(rt._detectors) == {"vim"}, "only the detector in use is restored at open"
    assert sorted(rt.detectors) == list_detectors()
    assert rt.state.ood is rt.detectors["vim"]
    x = images(5, seed=11)
    pred = rt.predict(x, return_features=True)
    want = rt.detectors["vim"].score(pred.features, pred.logits)
    np.testing.assert_allclose(pred.ood_score, want)
    assert pred.is_ood.dtype == bool
    np.testing.assert_array_equal(pred.is_ood, want > rt.detectors["vim"].threshold)
    rt.use_detector("energy")
    assert rt.state.version == 1
    e = rt.predict(x)
    np.testing.assert_allclose(e.ood_score, -np.log(np.exp(e.logits).sum(1)), rtol=1e-5)
    rt.use_detector(None)
    assert rt.predict(x).ood_score is None
    with pytest.raises(ConfigError, match="no OOD detector 'nope'"):
        rt.use_detector("nope")
    assert DeviceRuntime.open(tiny_zoo.student_bundle, ood=None).predict(x).is_ood is None


def test_random_images_are_ood_for_the_zoo_student(tiny_zoo):
    rt = DeviceRuntime.open(tiny_zoo.student_bundle)
    assert rt.predict(images(64, seed=12)).is_ood.mean() > 0.9
    from edgecl.zoo import KNOWN_CLASSES, load_mnist

    test = load_mnist().test.only(KNOWN_CLASSES)
    assert rt.predict(test.images[:400]).is_ood.mean() < 0.15


def test_runtimes_may_share_one_session_and_predict_alike(small_bundle):
    x = np.random.default_rng(3).random((6, *DeviceRuntime.open(small_bundle).bundle
                                         .input_spec.shape), dtype=np.float32)
    a = DeviceRuntime.open(small_bundle, threads=1, share_session=True)
    b = DeviceRuntime.open(small_bundle, threads=1, share_session=True)
    alone = DeviceRuntime.open(small_bundle, threads=1)
    assert a.onnx_session is b.onnx_session and alone.onnx_session is not a.onnx_session
    assert DeviceRuntime.open(small_bundle, threads=2, share_session=True).onnx_session \
        is not a.onnx_session  # another thread count: another session
    b.swap_state(b.state.evolve(prompt=np.full(b.bundle.input_spec.shape, 0.2, np.float32)))
    np.testing.assert_array_equal(a.predict(x).probabilities, alone.predict(x).probabilities)
    assert not np.array_equal(a.predict(x).probabilities, b.predict(x).probabilities)
