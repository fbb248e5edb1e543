"""The service over real gRPC on loopback: health, auth, ownership, bad input, idempotence."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import tensor_pb2
from edgecl.cloud import UpdateSigner
from edgecl.wire import UpdatePayload, WireSample, batch_to_proto, sample_to_proto
from tests.cloud.conftest import KEY, inputs, register, start_server


def _code(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def test_health_and_reflection(server):
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "edgecl.v1.EdgeCloud"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {"edgecl.v1.EdgeCloud", "grpc.health.v1.Health"} <= names


def test_register_checks_key_encoder_and_id(server):
    c = register(server, "reg-1")
    assert c.token and tuple(c.response.input_shape) == (1, 28, 28)
    assert c.response.feature_dim > 0 and c.response.max_batch_samples == 256
    sha = next(iter(server.bundles))

    def reg(**kw):
        fields = {"device_id": "reg-2", "enrollment_key": KEY, "encoder_sha256": sha, **kw}
        return lambda: c.stub.Register(pb.RegisterRequest(**fields), timeout=5)

    assert _code(reg(enrollment_key="wrong"))[0] == grpc.StatusCode.UNAUTHENTICATED
    code, msg = _code(reg(encoder_sha256="ab" * 32))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "encoder" in msg
    assert _code(reg(device_id="bad id!"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    # re-enrolling needs the current token, and replaces it: the old one stops working
    code, _ = _code(reg(device_id="reg-1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    again = c.stub.Register(pb.RegisterRequest(device_id="reg-1", enrollment_key=KEY,
                                               encoder_sha256=sha), metadata=c.md, timeout=5)
    code, _ = _code(lambda: c.stub.Report(pb.DeviceReport(), metadata=c.md, timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    c.stub.Report(pb.DeviceReport(state_version=1),
                  metadata=(("authorization", f"Bearer {again.token}"),), timeout=5)


def test_every_rpc_needs_a_valid_token(server):
    c = register(server, "auth-1")
    calls = {
        "none": (),
        "garbage": (("authorization", "Bearer nope"),),
        "scheme": (("authorization", f"Basic {c.token}"),),
    }
    for md in calls.values():
        assert _code(lambda md=md: c.stub.Report(pb.DeviceReport(), metadata=md,
                                                 timeout=5))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda md=md: c.stub.FetchUpdate(pb.FetchUpdateRequest(), metadata=md,
                                                      timeout=5))[0] == \
            grpc.StatusCode.UNAUTHENTICATED


def test_a_device_cannot_act_for_another(server):
    a, b = register(server, "own-a"), register(server, "own-b")
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: a.stub.Report(pb.DeviceReport(device_id="own-b"), metadata=a.md,
                                       timeout=5))[0] == denied
    assert _code(lambda: a.stub.FetchUpdate(pb.FetchUpdateRequest(device_id="own-b"),
                                            metadata=a.md, timeout=5))[0] == denied
    assert _code(lambda: next(a.stub.Subscribe(pb.SubscribeRequest(device_id="own-b"),
                                               metadata=a.md, timeout=5)))[0] == denied
    batch = batch_to_proto([WireSample("x1", input=inputs(1)[0])])
    batch.device_id = "own-b"
    assert _code(lambda: a.upload([batch]))[0] == denied
    assert server.registry.sample_ids("own-b") == set()
    # the same sample id from two devices is two samples: each device's own
    ok = batch_to_proto([WireSample("x1", input=inputs(1)[0])])
    assert a.upload([ok]).accepted == 1 and b.upload([ok]).accepted == 1


def _sample(sid="s", **tensor):
    msg = sample_to_proto(WireSample(sid, input=inputs(1)[0]))
    for k, v in tensor.items():
        if k == "shape":
            del msg.input.shape[:]
            msg.input.shape.extend(v)
        else:
            setattr(msg.input, k, v)
    return pb.SampleBatch(samples=[msg])


@pytest.mark.parametrize(("case", "batch", "match"), [
    ("malformed", lambda: _sample(data=b"123"), "bytes"),
    ("wrong_shape", lambda: batch_to_proto([WireSample("s", input=np.zeros((1, 14, 14),
                                                                           np.float32))]),
     "shape|float32"),
    ("wrong_dtype", lambda: batch_to_proto([WireSample("s", input=np.zeros((1, 28, 28)))]),
     "float32"),
    ("nan", lambda: batch_to_proto([WireSample("s", input=np.full((1, 28, 28), np.nan,
                                                                   np.float32))]), "NaN"),
    ("range", lambda: batch_to_proto([WireSample("s", input=np.full((1, 28, 28), 7.0,
                                                                     np.float32))]), "range"),
    ("no_input", lambda: batch_to_proto([WireSample("s")]), "no input"),
    ("bad_id", lambda: pb.SampleBatch(samples=[pb.Sample(sample_id="a b")]), "sample_id"),
    ("features", lambda: batch_to_proto([WireSample("s", input=inputs(1)[0],
                                                    features=np.zeros(3, np.float32))]),
     "features"),
    ("unknown_dtype", lambda: _sample(dtype=0), "dtype"),
])
def test_bad_uploads_get_invalid_argument_and_others_keep_being_served(server, case, batch,
                                                                       match):
    bad = register(server, f"bad-{case}")
    code, msg = _code(lambda: bad.upload([batch()]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    import re

    assert re.search(match, msg), msg
    good = register(server, f"good-{case}")
    ack = good.upload([batch_to_proto([WireSample("ok", input=inputs(1)[0])])])
    assert ack.accepted == 1 and list(ack.acked_ids) == ["ok"]


def test_oversized_message_and_too_many_samples(server):
    c = register(server, "big-1")
    huge = batch_to_proto([WireSample(f"h{i}", input=inputs(1, i)[0]) for i in range(200)])
    huge.samples[0].features.CopyFrom(tensor_pb2.Tensor(dtype=1, shape=[2 << 20],
                                                        data=bytes(8 << 20)))
    assert _code(lambda: c.upload([huge]))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    many = batch_to_proto([WireSample(f"m{i}", input=inputs(1)[0]) for i in range(257)])
    code, msg = _code(lambda: c.upload([many]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_batch_samples" in msg
    assert c.upload([batch_to_proto([WireSample("fine", input=inputs(1)[0])])]).accepted == 1


def test_duplicates_are_acknowledged_not_stored_twice_and_labelled_once(server):
    c = register(server, "dup-1")
    x = inputs(40, seed=5)
    first = c.upload([batch_to_proto([WireSample(f"d{i}", input=x[i]) for i in range(25)])])
    again = c.upload([batch_to_proto([WireSample(f"d{i}", input=x[i]) for i in range(20, 40)]),
                      batch_to_proto([WireSample(f"d{i}", input=x[i]) for i in range(0, 5)])])
    assert (first.accepted, first.duplicates) == (25, 0)
    assert (again.accepted, again.duplicates) == (15, 10)
    assert len(again.acked_ids) == 25
    assert server.registry.sample_ids("dup-1") == {f"d{i}" for i in range(40)}
    assert server.wait_idle(60)
    stats = server.registry.sample_stats()
    assert stats["unlabelled"] == 0 and stats["max_label_count"] == 1
    assert server.registry.label_counts("dup-1") == {f"d{i}": 1 for i in range(40)}
    rows = server.registry._conn().execute(
        "SELECT teacher_label, teacher_uncertainty FROM samples WHERE device_id = 'dup-1'"
    ).fetchall()
    assert len(rows) == 40 and all(0 <= lab < 10 and 0.0 <= unc <= 1.0 for lab, unc in rows)


def test_subscribe_resumes_and_receives_new_updates_fetch_returns_latest(server):
    c = register(server, "sub-1")
    signer = server.signer
    sha = next(iter(server.bundles))

    def publish(v):
        payload = UpdatePayload(v, v - 1, sha, parts={"prompt": np.full((1, 28, 28), v * 0.01)})
        server.registry.publish("sub-1", signer.sign(payload), payload)

    code, _ = _code(lambda: c.stub.FetchUpdate(pb.FetchUpdateRequest(), metadata=c.md,
                                               timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND
    for v in (1, 2):
        publish(v)
    stream = c.stub.Subscribe(pb.SubscribeRequest(after_version=1), metadata=c.md, timeout=20)
    got = []

    def read():
        for msg in stream:
            got.append(pb.UpdatePayload.FromString(msg.payload).version)
            if len(got) == 2:
                return

    reader = threading.Thread(target=read)
    reader.start()
    publish(3)
    reader.join(15)
    stream.cancel()
    assert got == [2, 3]
    latest = c.stub.FetchUpdate(pb.FetchUpdateRequest(after_version=1), metadata=c.md,
                                timeout=5)
    assert pb.UpdatePayload.FromString(latest.payload).version == 3
    assert latest.key_id == signer.key_id
    ack = c.stub.Report(pb.DeviceReport(state_version=3, stats={"predictions": 10}),
                        metadata=c.md, timeout=5)
    assert ack.latest_version == 3
    assert server.registry.last_report("sub-1")["stats"] == {"predictions": 10.0}
    assert isinstance(UpdateSigner, type)


def test_metrics_endpoint_counts_rpcs_and_labels(server):
    c = register(server, "met-1")
    c.upload([batch_to_proto([WireSample("m", input=inputs(1)[0])])])
    server.wait_idle(60)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                  timeout=5).read().decode()
    assert 'edgecl_rpc_total{code="OK",method="Upload"}' in text
    assert 'edgecl_rpc_total{code="UNAUTHENTICATED"' in text or "Register" in text
    labelled = [ln for ln in text.splitlines() if ln.startswith("edgecl_samples_labelled_total")]
    assert labelled and float(labelled[0].split()[-1]) >= 1
    assert "edgecl_rpc_seconds_bucket" in text and "edgecl_teacher_queue_depth" in text
    # a failed stream is counted with its own status, not as OK
    stream = c.stub.Subscribe(pb.SubscribeRequest(device_id="someone-else"), metadata=c.md,
                              timeout=5)
    assert _code(lambda: next(stream))[0] == grpc.StatusCode.PERMISSION_DENIED
    text = server.metrics.text()
    assert 'edgecl_rpc_total{code="PERMISSION_DENIED",method="Subscribe"}' in text


def test_rate_limit_gives_resource_exhausted(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path, limits_requests_per_s="1", limits_burst="3")
    try:
        c = register(srv, "rate-1")
        codes = []
        for _ in range(6):
            try:
                c.stub.Report(pb.DeviceReport(), metadata=c.md, timeout=5)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        assert codes[:3] == ["OK"] * 3 and "RESOURCE_EXHAUSTED" in codes[3:]
        other = register(srv, "rate-2")  # others are not affected
        other.stub.Report(pb.DeviceReport(), metadata=other.md, timeout=5)
    finally:
        srv.stop(grace=1.0)
