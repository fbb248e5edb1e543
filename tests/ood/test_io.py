"""Detector files: format checks beyond the per-detector round trip of the conformance suite."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from edgecl import BundleError, ConfigError
from edgecl.ood import create_detector, load_detectors, save_detectors

SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def detectors(synthetic):
    s = synthetic
    return {"msp": create_detector("msp").fit(s.cal_f, s.cal_z, s.cal_y),
            "knn_k1": create_detector("knn", k=1, normalize=False).fit(s.cal_f, s.cal_z,
                                                                       s.cal_y)}


def rewrite_meta(path, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["__edgecl_ood__"][()]))
    change(meta)
    arrays["__edgecl_ood__"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def test_keys_and_hyperparameters_survive(detectors, tmp_path):
    path = tmp_path / "d.npz"
    save_detectors(path, detectors, encoder_sha256=SHA)
    back = load_detectors(str(path), encoder_sha256=SHA)
    assert list(back) == ["msp", "knn_k1"]
    assert back["knn_k1"].hyperparameters() == {"k": 1, "normalize": False,
                                                "max_memory": 4096, "seed": 0}
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, no pickled objects
        assert all(npz[k].dtype != object for k in npz.files)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["detectors"]["msp"].update(name="no_such_detector"), "unknown detector"),
    (lambda m: m.update(version=99), "version"),
    (lambda m: m.update(format="something else"), "format"),
    (lambda m: m["detectors"]["msp"].update(hyperparameters={"bogus": 1}), "cannot be restored"),
    (lambda m: m["detectors"]["msp"]["arrays"].append("missing"), "cannot be restored"),
    (lambda m: m.update(arrays_sha256="0" * 64), "sha256"),
])
def test_refused_metadata(detectors, tmp_path, change, message):
    path = tmp_path / "d.npz"
    save_detectors(path, detectors, encoder_sha256=SHA)
    rewrite_meta(path, change)
    with pytest.raises(BundleError, match=message) as info:
        load_detectors(path, encoder_sha256=SHA)
    assert str(path) in str(info.value)


def test_refused_files(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(BundleError, match="missing.npz"):
        load_detectors(missing, encoder_sha256=SHA)
    npy = tmp_path / "bare.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(BundleError, match="bare.npy"):
        load_detectors(npy, encoder_sha256=SHA)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(3))
    with pytest.raises(BundleError, match="no metadata"):
        load_detectors(plain, encoder_sha256=SHA)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(BundleError, match="text.npz"):
        load_detectors(text, encoder_sha256=SHA)


def test_bad_save_arguments(detectors, tmp_path):
    path = tmp_path / "d.npz"
    with pytest.raises(ConfigError, match="encoder_sha256"):
        save_detectors(path, detectors, encoder_sha256="abc")
    with pytest.raises(ConfigError, match="encoder_sha256"):
        load_detectors(path, encoder_sha256=SHA.upper())
    with pytest.raises(ConfigError, match="no detectors"):
        save_detectors(path, {}, encoder_sha256=SHA)
    for key in ("", "a/b", "__x"):
        with pytest.raises(ConfigError, match="bad detector key"):
            save_detectors(path, {key: detectors["msp"]}, encoder_sha256=SHA)
    with pytest.raises(ConfigError, match="not fitted"):
        save_detectors(path, {"x": create_detector("msp")}, encoder_sha256=SHA)
    assert not path.exists()
