"""Loading verifies schema and hashes: every kind of damage is a BundleError naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from edgecl import BundleError
from edgecl.bundle import load_bundle
from edgecl.bundle._manifest import canonical_digest
from edgecl.device import DeviceRuntime


@pytest.fixture
def bundle_copy(small_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(small_bundle, dst)
    return dst


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_manifest(root, change) -> None:
    d = json.loads((root / "manifest.json").read_text())
    change(d)
    d["digest"] = canonical_digest(d)
    (root / "manifest.json").write_text(json.dumps(d))


@pytest.mark.parametrize("name", ["encoder.onnx", "encoder.pt2", "heads.npz"])
def test_flipped_byte_detected(bundle_copy, name):
    flip_byte(bundle_copy / name, (bundle_copy / name).stat().st_size // 2)
    with pytest.raises(BundleError, match=rf"{name}: sha256 mismatch"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError):
        DeviceRuntime.open(bundle_copy)


@pytest.mark.parametrize("name", ["encoder.onnx", "heads.npz"])
def test_truncated_file_detected(bundle_copy, name):
    path = bundle_copy / name
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleError, match=rf"{name}: truncated"):
        load_bundle(bundle_copy)


def test_missing_files(bundle_copy):
    (bundle_copy / "encoder.pt2").unlink()
    with pytest.raises(BundleError, match="encoder.pt2: missing file"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="missing manifest.json"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(bundle_copy / "nope")


def test_edited_manifest_detected(bundle_copy):
    path = bundle_copy / "manifest.json"
    d = json.loads(path.read_text())
    d["class_names"][0] = "cat"
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="manifest.json: manifest digest mismatch"):
        load_bundle(bundle_copy)


def test_corrupt_manifest(bundle_copy):
    path = bundle_copy / "manifest.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BundleError, match="manifest.json"):
        load_bundle(bundle_copy)


def test_schema_version_and_fields_checked(bundle_copy):
    rewrite_manifest(bundle_copy, lambda d: d.update(schema_version=99))
    with pytest.raises(BundleError, match="unsupported schema_version 99"):
        load_bundle(bundle_copy)
    rewrite_manifest(bundle_copy, lambda d: d.update(schema_version=1, feature_dim="x"))
    with pytest.raises(BundleError, match="invalid manifest"):
        load_bundle(bundle_copy)
    rewrite_manifest(bundle_copy, lambda d: d.update(feature_dim=16, input={"shape": [1]}))
    with pytest.raises(BundleError, match="invalid manifest"):
        load_bundle(bundle_copy)


def test_path_escape_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda d: d["files"].update(
        {"../evil": {"sha256": "0" * 64, "bytes": 1}}))
    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(bundle_copy)


def test_head_disagreeing_with_manifest(bundle_copy):
    rewrite_manifest(bundle_copy, lambda d: d.update(class_names=["a", "b"]))
    with pytest.raises(BundleError, match="heads.npz"):
        load_bundle(bundle_copy)


def test_oversized_manifest_refused_without_reading_it(bundle_copy):
    path = bundle_copy / "manifest.json"
    with open(path, "ab") as f:
        f.truncate(5 << 20)
    with pytest.raises(BundleError, match="manifest.json: larger than"):
        load_bundle(bundle_copy)


def test_add_optional_file_is_hashed_and_verified(bundle_copy):
    from edgecl import ConfigError
    from edgecl.bundle import add_bundle_files

    bundle = add_bundle_files(bundle_copy, {"ood.npz": b"detector state"})
    assert bundle.manifest.files["ood.npz"]["bytes"] == len(b"detector state")
    assert (bundle_copy / "ood.npz").read_bytes() == b"detector state"
    flip_byte(bundle_copy / "ood.npz", 3)
    with pytest.raises(BundleError, match="ood.npz: sha256 mismatch"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError):  # a damaged bundle is not silently re-hashed
        add_bundle_files(bundle_copy, {"ood.npz": b"other"})
    with pytest.raises(ConfigError, match="core bundle file"):
        add_bundle_files(bundle_copy, {"encoder.onnx": b"x"})
