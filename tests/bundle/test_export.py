"""Export round trip: ONNX, torch.export mirror and numpy head agree with torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgecl import ConfigError, ExportError
from edgecl.bundle import export_bundle, load_bundle
from edgecl.device import DeviceRuntime
from tests.conftest import images


def torch_reference(model, x: np.ndarray) -> np.ndarray:
    enc, head = model
    with torch.no_grad():
        return head(enc((torch.from_numpy(x) - 0.13) / 0.31)).numpy()


def test_round_trip_manifest(small_bundle):
    bundle = load_bundle(small_bundle)
    m = bundle.manifest
    assert m.input.shape == (1, 28, 28) and m.input.dtype == "float32"
    assert m.input.mean == (0.13,) and m.input.std == (0.31,)
    assert m.feature_dim == 16 and m.class_names == ("a", "b", "c", "d", "e")
    assert m.head["type"] == "linear"
    check = m.export_check
    assert check["n_real"] == 8 and check["n_random"] >= 16
    assert check["max_abs_diff"]["onnx_vs_torch"] <= 1e-4
    raw = json.loads((small_bundle / "manifest.json").read_text())
    assert set(raw["files"]) == {"encoder.onnx", "encoder.pt2", "heads.npz", "probe.npz"}
    probe = bundle.probe_inputs()  # the real inputs become the probe devices test updates on
    assert probe.shape == (8, 1, 28, 28) and probe.dtype == np.float32
    assert bundle.update_bounds() == {}
    assert raw["encoder_sha256"] == raw["files"]["encoder.onnx"]["sha256"]


def test_runtime_matches_torch(small_bundle, small_model):
    rt = DeviceRuntime.open(small_bundle, threads=1)
    x = images(33, seed=3)
    want = torch_reference(small_model, x)
    got = rt.predict(x)
    assert np.abs(got.logits - want).max() <= 1e-4
    assert (got.labels == want.argmax(1)).all()


def test_pt2_mirror_is_the_same_encoder(small_bundle, small_model):
    program = torch.export.load(str(small_bundle / "encoder.pt2")).module()
    x = images(5, seed=4)
    with torch.no_grad():
        feats = program(torch.from_numpy(x)).numpy()
    rt = DeviceRuntime.open(small_bundle)
    assert np.abs(rt.encode(x) - feats).max() <= 1e-4
    head = small_model[1]
    with torch.no_grad():
        assert np.abs(head(torch.from_numpy(feats)).numpy()
                      - torch_reference(small_model, x)).max() <= 1e-4


class NoisyEncoder(torch.nn.Module):
    """Not a function of its input: export must notice and refuse."""

    def forward(self, x):
        return x.flatten(1)[:, :4] + torch.rand(x.shape[0], 4)


def test_export_refuses_disagreeing_encoder(tmp_path):
    with pytest.raises(ExportError, match="disagrees with torch"):
        export_bundle(NoisyEncoder(), torch.nn.Linear(4, 2), images(1)[0], tmp_path / "b")
    assert not (tmp_path / "b").exists(), "a refused export must leave nothing behind"


class SpatialEncoder(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_export_refuses_non_feature_output(tmp_path):
    with pytest.raises(ExportError, match=r"\(N, D\)"):
        export_bundle(SpatialEncoder(), torch.nn.Linear(4, 2), images(1)[0], tmp_path / "b")


def test_export_refuses_bad_arguments(tmp_path, small_model, small_bundle):
    enc, head = small_model
    with pytest.raises(ConfigError, match="head must be"):
        export_bundle(enc, torch.nn.ReLU(), images(1)[0], tmp_path / "b")
    with pytest.raises(ConfigError, match="exists"):
        export_bundle(enc, head, images(1)[0], small_bundle)
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        export_bundle(enc, head, np.zeros((28, 28), np.float32), tmp_path / "c")
