"""Bad data against a real service on loopback: refused with INVALID_ARGUMENT and a short
message of ours (never Python exception text), nothing of the request stored, and the
service keeps serving."""

from __future__ import annotations

import logging
import zlib

import grpc
import numpy as np
import pytest

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import tensor_pb2
from edgecl.wire import WireSample, batch_to_proto, sample_to_proto
from tests.cloud.conftest import inputs, register, start_server

LEAKS = ("Traceback", "Exception", "Error(", "list index", "Exception calling application")


@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("cloud"))
    yield srv
    srv.stop(grace=1.0)


def _refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    assert len(details) <= 200 and not any(leak in details for leak in LEAKS), details
    return details


def _batch_with_tensor(shape, *, data=b"", compression=0, name="input"):
    msg = sample_to_proto(WireSample("t1", input=inputs(1)[0]))
    tensor = getattr(msg, name)
    tensor.CopyFrom(tensor_pb2.Tensor(dtype=1, shape=shape, data=data,
                                      compression=compression))
    return pb.SampleBatch(samples=[msg])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_and_nothing_is_stored(server, value):
    client = register(server, f"feat-{str(value).strip('-')}{'m' if value < 0 else ''}")
    dim = client.response.feature_dim
    feats = np.zeros(dim, np.float32)
    feats[3] = value
    good = WireSample("good", input=inputs(1)[0])
    bad = WireSample("bad", input=inputs(1, seed=1)[0], features=feats)
    _refused(lambda: client.upload([batch_to_proto([good, bad])]))
    assert server.registry.sample_count(client.device_id) == 0


@pytest.mark.parametrize("shape", [[1 << 32, 1 << 32], [0, 1 << 62], [1 << 62, 0],
                                   [-1], [1] * 9, [(1 << 63) - 1]])
def test_absurd_tensor_shapes_are_invalid_argument(server, shape):
    client = register(server, "shapes-" + "x".join(map(str, shape)))  # one id per case
    _refused(lambda: client.upload([_batch_with_tensor(shape)]))
    _refused(lambda: client.upload([_batch_with_tensor(shape, name="features")]))


def test_zlib_with_trailing_bytes_is_refused(server):
    client = register(server, "zlib")
    raw = inputs(1)[0].tobytes()
    batch = _batch_with_tensor([1, 28, 28], data=zlib.compress(raw) + b"tail", compression=1)
    _refused(lambda: client.upload([batch]))
    ok = _batch_with_tensor([1, 28, 28], data=zlib.compress(raw), compression=1)
    assert client.upload([ok]).accepted == 1


def test_negative_after_version_is_invalid_argument_and_logged(server, caplog):
    client = register(server, "versions")
    with caplog.at_level(logging.INFO, logger="edgecl.cloud"):
        _refused(lambda: client.stub.FetchUpdate(
            pb.FetchUpdateRequest(device_id=client.device_id, after_version=-1),
            metadata=client.md, timeout=10))
    assert any(r.getMessage() == "request refused" for r in caplog.records)
    stream = client.stub.Subscribe(pb.SubscribeRequest(device_id=client.device_id,
                                                       after_version=-5),
                                   metadata=client.md, timeout=10)
    _refused(lambda: list(stream))


def test_oversized_labels_and_stats_are_invalid_argument(server):
    from tests.cloud.conftest import KEY

    client = register(server, "maps")
    sha = next(iter(server.bundles))
    _refused(lambda: client.stub.Register(pb.RegisterRequest(
        device_id="maps2", enrollment_key=KEY, encoder_sha256=sha,
        labels={f"k{i}": "v" * 300 for i in range(100)}), timeout=10))
    _refused(lambda: client.stub.Report(pb.DeviceReport(
        device_id=client.device_id, stats={f"s{i}": 1.0 for i in range(1000)}),
        metadata=client.md, timeout=10))


def test_the_service_still_serves_a_genuine_device(server):
    client = register(server, "genuine")
    ack = client.upload([batch_to_proto([WireSample("g1", input=inputs(1)[0])])])
    assert ack.accepted == 1 and list(ack.acked_ids) == ["g1"]
