"""A message fuzz over every RPC of a real service on loopback.

Random bytes (sent raw, past client-side serialisation) and random but valid messages
with extreme values, with and without a valid token: never INTERNAL or UNKNOWN, the
service stays healthy, a genuine device still registers and uploads, and memory stays
bounded. Bounded: ``MAX_EXAMPLES`` per RPC and kind, no deadline.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor as FD
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.cloud import _auth
from edgecl.wire import WireSample, batch_to_proto
from tests.cloud.conftest import inputs, register, start_server

MAX_EXAMPLES = 150
SERVICE = "/edgecl.v1.EdgeCloud/"
RPCS = {"Register": ("unary_unary", pb.RegisterRequest),
        "Upload": ("stream_unary", pb.SampleBatch),
        "Subscribe": ("unary_stream", pb.SubscribeRequest),
        "FetchUpdate": ("unary_unary", pb.FetchUpdateRequest),
        "Report": ("unary_unary", pb.DeviceReport)}
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Undecodable bytes reach the servicer only once the interceptor wraps deserializers with
# edgecl.cloud._errors.tolerant (a change in _auth.py); until then grpc answers INTERNAL.
RAW_DECODES = "tolerant" in vars(_auth)

INTS = {FD.TYPE_INT64: (-(1 << 63), (1 << 63) - 1), FD.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
        FD.TYPE_UINT64: (0, (1 << 64) - 1), FD.TYPE_UINT32: (0, (1 << 32) - 1),
        FD.TYPE_ENUM: (-(1 << 31), (1 << 31) - 1)}
EXTREME = {FD.TYPE_INT64: [0, -1, 1 << 62, -(1 << 63), (1 << 63) - 1],
           FD.TYPE_INT32: [0, -1, (1 << 31) - 1, -(1 << 31)]}


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    t = field.type
    if t in INTS:
        lo, hi = INTS[t]
        return st.one_of(st.sampled_from(EXTREME.get(t, [lo, hi, 0])), st.integers(lo, hi))
    if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return st.floats(width=32 if t == FD.TYPE_FLOAT else 64)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_STRING:
        return st.one_of(st.text(max_size=40), st.text(alphabet="ab-:.", max_size=300))
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=3200)
    raise AssertionError(f"unhandled field type {t}")


def _repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FD.LABEL_REPEATED


def _message(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for f in descriptor.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            k, v = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            fields[f.name] = st.dictionaries(_scalar(k), _scalar(v), max_size=5)
        elif f.message_type is not None:
            if depth > 3:
                continue
            inner = _message(f.message_type, depth + 1)
            fields[f.name] = st.lists(inner, max_size=3) if _repeated(f) else inner
        elif _repeated(f):
            fields[f.name] = st.lists(_scalar(f), max_size=9)
        else:
            fields[f.name] = _scalar(f)
    return st.fixed_dictionaries({}, optional=fields)


def _build(cls: type, values: dict[str, Any]) -> bytes:
    msg = cls()
    _fill(msg, values)
    return msg.SerializeToString()


def _fill(msg: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if isinstance(value, dict) and field.message_type.GetOptions().map_entry:
            getattr(msg, name).update(value)
        elif isinstance(value, dict):
            _fill(getattr(msg, name), value)
        elif field.message_type is not None and isinstance(value, list):
            for item in value:
                _fill(getattr(msg, name).add(), item)
        elif isinstance(value, list):
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)


@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("cloud"), limits_requests_per_s="1e6",
                       limits_burst="1e6", server_stream_max_s="0.05")
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def token(server):
    return register(server, "fuzz-owner").token


def _call(channel: grpc.Channel, rpc: str, data: bytes, token: str | None) -> None:
    kind, _ = RPCS[rpc]
    md = (("authorization", f"Bearer {token}"),) if token else None
    fn = getattr(channel, kind)(SERVICE + rpc)  # no serializers: raw bytes both ways
    try:
        if kind == "stream_unary":
            fn(iter([data, data]), metadata=md, timeout=5)
        elif kind == "unary_stream":
            for _ in fn(data, metadata=md, timeout=5):
                pass
        else:
            fn(data, metadata=md, timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() not in FORBIDDEN, f"{rpc}: {exc.code()} {exc.details()!r}"


def _fuzz(strategy: st.SearchStrategy[Any]) -> Any:
    def wrap(fn: Any) -> Any:
        return settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))(given(strategy)(fn))

    return wrap


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize("authorized", [False, True])
def test_valid_messages_with_extreme_values(channel, token, rpc, authorized):
    @_fuzz(_message(RPCS[rpc][1].DESCRIPTOR))
    def run(values: dict[str, Any]) -> None:
        _call(channel, rpc, _build(RPCS[rpc][1], values), token if authorized else None)

    run()


@pytest.mark.xfail(not RAW_DECODES, strict=True, reason="needs _auth.py to wrap request "
                   "deserializers with edgecl.cloud._errors.tolerant")
@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_random_bytes(channel, token, rpc):
    @_fuzz(st.tuples(st.binary(max_size=2048), st.booleans()))
    def run(case: tuple[bytes, bool]) -> None:
        data, authorized = case
        _call(channel, rpc, data, token if authorized else None)

    run()


def _register_when_unthrottled(server: Any, device_id: str) -> Any:
    """The fuzz sent wrong enrollment keys from this address: its throttle allows one
    attempt every 10 s; a genuine Register gets through within that."""
    deadline = time.monotonic() + 25
    while True:
        try:
            return register(server, device_id)
        except grpc.RpcError as exc:
            if (exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                    or time.monotonic() > deadline):
                raise
            time.sleep(1.0)


def test_the_service_is_healthy_and_bounded_afterwards(server, channel, token):
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    stub = pb_grpc.EdgeCloudStub(channel)  # the device registered before the fuzz
    batch = batch_to_proto([WireSample("o1", input=inputs(1)[0])])
    assert stub.Upload(iter([batch]), metadata=(("authorization", f"Bearer {token}"),),
                       timeout=10).accepted == 1
    client = _register_when_unthrottled(server, "after-fuzz")
    ack = client.upload([batch_to_proto([WireSample("g1", input=inputs(1)[0])])])
    assert ack.accepted == 1
    assert rss_mb < 4096, f"peak RSS {rss_mb:.0f} MiB"
