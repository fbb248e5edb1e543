"""The wire contract: generated code is fresh, messages round-trip, bad input is typed."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecl import InvalidInput
from edgecl._proto import edgecl_pb2, tensor_pb2
from edgecl.wire import (
    UpdatePayload,
    WireSample,
    payload_from_bytes,
    payload_to_bytes,
    sample_from_proto,
    sample_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)

ROOT = Path(__file__).resolve().parents[2]
DTYPES = ["float32", "float16", "float64", "uint8", "int32", "int64"]


def test_generated_code_is_not_stale():
    pytest.importorskip("grpc_tools")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_proto_field_is_documented():
    for path in (ROOT / "proto" / "edgecl" / "v1").glob("*.proto"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            is_field = s.endswith(";") and "=" in s and not s.startswith(("option", "syntax"))
            if is_field and not s.startswith("//"):
                assert lines[i - 1].strip().startswith("//") or "DTYPE_" in s or \
                    "COMPRESSION_" in s or s.startswith("repeated Sample") or \
                    s.startswith(("string name", "Tensor tensor")), f"{path.name}:{i + 1} {s}"


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), compress=st.booleans(), data=st.data())
def test_tensor_round_trip_is_exact(dtype, compress, data):
    arr = data.draw(hnp.arrays(np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=4,
                                                                max_side=5)))
    msg = tensor_pb2.Tensor.FromString(tensor_to_proto(arr, compress=compress)
                                       .SerializeToString())
    back = tensor_from_proto(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == np.ascontiguousarray(arr).tobytes()


def _tensor(**fields):
    msg = tensor_pb2.Tensor(dtype=1, shape=[2, 2], data=np.zeros(4, np.float32).tobytes())
    for key, value in fields.items():
        if key == "shape":
            del msg.shape[:]
            msg.shape.extend(value)
        else:
            setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(("fields", "match"), [
    ({"dtype": 0}, "dtype"),
    ({"dtype": 99}, "dtype"),
    ({"shape": [2, -2]}, "shape"),
    ({"shape": [3, 2]}, "bytes of data"),
    ({"data": b"abc"}, "bytes of data"),
    ({"compression": 7}, "compression"),
    ({"compression": 1, "data": b"not zlib"}, "zlib"),
    ({"shape": [1 << 20, 1 << 20]}, "exceeds"),
])
def test_malformed_tensors_are_refused(fields, match):
    with pytest.raises(InvalidInput, match=match):
        tensor_from_proto(_tensor(**fields))


def test_zlib_bomb_is_refused_without_inflating():
    msg = _tensor(compression=1, data=zlib.compress(bytes(50 << 20)))
    with pytest.raises(InvalidInput):
        tensor_from_proto(msg)


def test_unsupported_dtype_is_refused_on_encode():
    with pytest.raises(InvalidInput, match="wire"):
        tensor_to_proto(np.zeros(3, dtype=np.complex64))


def test_sample_round_trip_and_checks():
    x = np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)
    s = WireSample("dev-1.a:b", 123, input=x, features=np.ones(8, np.float32), priority=0.5,
                   device_label=3, device_entropy=0.7, ood_score=2.0, state_version=4,
                   explored=True)
    back = sample_from_proto(edgecl_pb2.Sample.FromString(
        sample_to_proto(s, compress=True).SerializeToString()))
    assert np.array_equal(back.input, x) and back.device_label == 3 and back.state_version == 4
    assert back.explored and not sample_from_proto(sample_to_proto(WireSample("y"))).explored
    bad = sample_to_proto(WireSample("x", input=np.full((1, 2, 2), np.nan, np.float32)))
    with pytest.raises(InvalidInput, match="NaN"):
        sample_from_proto(bad)
    for sid in ("", "a b", "x" * 129, "ü"):
        with pytest.raises(InvalidInput, match="sample_id"):
            sample_from_proto(edgecl_pb2.Sample(sample_id=sid))


def test_update_payload_round_trip_fp16_and_refusals():
    rng = np.random.default_rng(1)
    parts = {"prompt": rng.normal(size=(1, 28, 28)).astype(np.float32),
             "adapter.up": rng.normal(size=(64, 8)).astype(np.float32)}
    p = UpdatePayload(7, 6, "ab" * 32, parts=parts, metrics={"agreement": 0.9}, created_ms=5)
    data = payload_to_bytes(p)
    assert data == payload_to_bytes(p)  # deterministic bytes: what gets signed
    back = payload_from_bytes(data)
    assert (back.version, back.base_version, back.encoder_sha256) == (7, 6, "ab" * 32)
    for name, arr in parts.items():
        assert back.parts[name].dtype == np.float32
        np.testing.assert_allclose(back.parts[name], arr, rtol=1e-3, atol=1e-3)
    exact = payload_from_bytes(payload_to_bytes(p, fp16=False))
    assert np.array_equal(exact.parts["prompt"], parts["prompt"])
    with pytest.raises(InvalidInput, match="part"):
        payload_to_bytes(p.replace(parts={"bogus": np.zeros(2)}))
    with pytest.raises(InvalidInput, match="UpdatePayload"):
        payload_from_bytes(b"\xff\xff\xff")
    nan = payload_to_bytes(p.replace(parts={"prompt": np.full((2,), np.nan)}), fp16=False)
    with pytest.raises(InvalidInput, match="NaN"):
        payload_from_bytes(nan)


def test_undecodable_update_parts_are_invalid_input_and_the_version_reads_alone():
    from edgecl._exceptions import InvalidInput
    from edgecl._proto import edgecl_pb2 as pb
    from edgecl.wire import payload_from_bytes, payload_version

    msg = pb.UpdatePayload(version=2**63 - 1, encoder_sha256="ab" * 32)
    part = msg.parts.add(name="head.weight")
    part.tensor.dtype = 1
    part.tensor.shape.extend([2**32, 2**32])  # the product overflows int64 to 0
    data = msg.SerializeToString()
    with pytest.raises(InvalidInput):
        payload_from_bytes(data)
    assert payload_version(data) == 2**63 - 1
    with pytest.raises(InvalidInput):
        payload_version(b"\xff" * 16)
