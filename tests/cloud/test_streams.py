"""Subscribe streams: hold no RPC thread (hundreds on 4 threads), capped, released on
cancel, woken by publications, ended cleanly."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from edgecl._proto import edgecl_pb2 as pb
from edgecl.wire import UpdatePayload, WireSample, batch_to_proto
from tests.cloud.conftest import inputs, register, start_server


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def _publish(server, target, version):
    sha = next(iter(server.bundles))
    payload = UpdatePayload(version, version - 1, sha, device_id=target,
                            parts={"prompt": np.full((1, 28, 28), 0.01 * version)})
    return server.publish_update(target, server.signer.sign(payload))


def test_open_streams_hold_no_thread_and_are_capped(tiny_zoo, tmp_path):
    # 4 RPC threads and a cap of 3 streams: the cap is enforced (RESOURCE_EXHAUSTED with
    # a hint to poll), and open streams take no thread from Register and Upload.
    srv = start_server(tiny_zoo, tmp_path, server_max_workers="4", server_max_streams="3")
    try:
        assert srv.servicer.streams.limit == 3
        subs = [register(srv, f"sub-{i}") for i in range(4)]
        streams = [s.stub.Subscribe(pb.SubscribeRequest(), metadata=s.md, timeout=30)
                   for s in subs[:3]]
        _until(lambda: srv.servicer.streams.open == 3)
        refused = subs[3].stub.Subscribe(pb.SubscribeRequest(), metadata=subs[3].md,
                                         timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            next(refused)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "FetchUpdate" in info.value.details()
        up = register(srv, "uploader")  # unary RPCs still served
        ack = up.upload([batch_to_proto([WireSample("a", input=inputs(1)[0])])], timeout=5)
        assert ack.accepted == 1
        assert "edgecl_subscribe_streams 3.0" in srv.metrics.text()
        streams[0].cancel()  # a client cancel frees its slot
        _until(lambda: srv.servicer.streams.open == 2)
        late = subs[3].stub.Subscribe(pb.SubscribeRequest(), metadata=subs[3].md, timeout=10)
        _until(lambda: srv.servicer.streams.open == 3)
        assert _publish(srv, "sub-3", 1) == 1
        assert pb.UpdatePayload.FromString(next(late).payload).version == 1
        for s in (*streams[1:], late):
            s.cancel()
        _until(lambda: srv.servicer.streams.open == 0)
        assert 'edgecl_rpc_total{code="RESOURCE_EXHAUSTED",method="Subscribe"}' in \
            srv.metrics.text()
    finally:
        srv.stop(grace=1.0)


def test_hundreds_of_streams_on_four_threads_each_get_a_publication(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path, server_max_workers="4",
                       limits_requests_per_s="1000", limits_burst="1000")
    try:
        subs = [register(srv, f"many-{i}", group="fleet") for i in range(200)]
        streams = [s.stub.Subscribe(pb.SubscribeRequest(), metadata=s.md, timeout=60)
                   for s in subs]
        _until(lambda: srv.servicer.streams.open == 200, timeout=30)
        up = register(srv, "uploader")  # 4 threads, 200 open streams: still served
        for k in range(5):
            ack = up.upload([batch_to_proto([WireSample(f"u{k}", input=inputs(1)[0])])],
                            timeout=5)
            assert ack.accepted == 1
        got: list[int] = []
        lock = threading.Lock()

        def first(stream) -> None:
            version = pb.UpdatePayload.FromString(next(stream).payload).version
            with lock:
                got.append(version)

        t0 = time.monotonic()
        for s in subs:  # a publication for every device: each stream is woken at once
            _publish(srv, s.device_id, 1)
        readers = [threading.Thread(target=first, args=(s,)) for s in streams]
        for r in readers:
            r.start()
        for r in readers:
            r.join(30)
        assert got == [1] * 200 and time.monotonic() - t0 < 20
        for s in streams:
            s.cancel()
        _until(lambda: srv.servicer.streams.open == 0)
    finally:
        srv.stop(grace=1.0)


def test_streams_end_cleanly_after_their_lifetime_and_on_server_stop(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path, server_stream_max_s="0.5")
    stopped = False
    try:
        c = register(srv, "life-1")
        _publish(srv, "life-1", 1)
        t0 = time.monotonic()
        got = [pb.UpdatePayload.FromString(m.payload).version for m in
               c.stub.Subscribe(pb.SubscribeRequest(), metadata=c.md, timeout=10)]
        assert got == [1] and time.monotonic() - t0 < 5  # ended with OK, no error
        # resuming from the applied version sends nothing old
        assert list(c.stub.Subscribe(pb.SubscribeRequest(after_version=1), metadata=c.md,
                                     timeout=10)) == []
        srv.servicer.stream_max_s = 60.0
        stream = c.stub.Subscribe(pb.SubscribeRequest(after_version=1), metadata=c.md,
                                  timeout=30)
        ended = threading.Event()

        def read():
            for _ in stream:
                pass
            ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        _until(lambda: srv.servicer.streams.open == 1)
        t0 = time.monotonic()
        srv.stop(grace=5.0)
        stopped = True
        assert ended.wait(5) and time.monotonic() - t0 < 5  # not held for the whole grace
    finally:
        if not stopped:
            srv.stop(grace=1.0)


def test_publish_update_needs_a_newer_version(server):
    from edgecl import InvalidInput

    register(server, "pubver-1")
    assert _publish(server, "pubver-1", 1) == 1
    with pytest.raises(InvalidInput, match="not newer"):
        _publish(server, "pubver-1", 1)
    assert server.registry.latest_version("pubver-1") == 1


def test_connections_are_recycled_at_their_maximum_age_and_calls_carry_on(tiny_zoo,
                                                                         tmp_path):
    from edgecl.device._transport import GrpcTransport

    srv = start_server(tiny_zoo, tmp_path, server_max_connection_age_s="1",
                       server_stream_max_s="0.5", server_grace_s="0.5")
    try:
        c = register(srv, "aged-1")
        transport = GrpcTransport([srv.target, srv.target], deadline_s=5.0)  # balanced
        sent = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:  # across several connection lifetimes
            batch = [WireSample(f"a{sent}", input=inputs(1, seed=sent)[0])]
            assert transport.upload(c.token, [batch]).acked_ids == (f"a{sent}",)
            sent += 1
            time.sleep(0.1)
        transport.close()
        assert sent >= 20 and srv.registry.sample_count("aged-1") == sent
    finally:
        srv.stop(grace=1.0)
