"""Restarts on the same storage: labels exactly once, stale registrations, enrollment abuse."""

from __future__ import annotations

import grpc
import pytest

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.cloud import create_server, load_config
from edgecl.wire import WireSample, batch_to_proto
from tests.cloud.conftest import KEY, Client, cloud_env, inputs, register, start_server


def _server(tiny_zoo, data, **extra):
    cfg = load_config(None, env=cloud_env(data, **extra))
    return create_server(cfg, home=str(tiny_zoo.path.parent.parent))


def _batch(prefix, n, seed=0):
    return batch_to_proto([WireSample(f"{prefix}{i}", input=x)
                           for i, x in enumerate(inputs(n, seed))])


def test_samples_stored_before_a_stop_are_labelled_exactly_once_after_restart(tiny_zoo,
                                                                             tmp_path):
    first = _server(tiny_zoo, tmp_path).start(labelling=False)  # stores, never labels
    try:
        c = register(first, "rs-1")
        assert c.upload([_batch("a", 30), _batch("b", 10, seed=1)]).accepted == 40
    finally:
        first.stop(grace=1.0)
    second = _server(tiny_zoo, tmp_path).start()
    try:
        assert second.wait_labelled(40, timeout=60)
        counts = second.registry.label_counts("rs-1")
        assert len(counts) == 40 and set(counts.values()) == {1}
        labels = second.registry.teacher_labels("rs-1")
        assert all(0 <= lab < 10 and 0.0 <= unc <= 1.0 for lab, unc in labels.values())
        # the same device, token still valid after the restart, re-sends: acked, not stored
        c = Client(pb_grpc.EdgeCloudStub(grpc.insecure_channel(second.target)),
                   c.device_id, c.token, c.response)
        again = c.upload([_batch("a", 30)])
        assert (again.accepted, again.duplicates, len(again.acked_ids)) == (0, 30, 30)
        assert second.wait_idle(30)
    finally:
        second.stop(grace=1.0)
    third = _server(tiny_zoo, tmp_path).start()
    try:
        assert third.wait_idle(30)
        assert set(third.registry.label_counts("rs-1").values()) == {1}
        assert third.registry.sample_count("rs-1") == third.registry.labelled_count() == 40
    finally:
        third.stop(grace=1.0)


def test_a_device_whose_encoder_is_no_longer_served_must_register_again(tiny_zoo,
                                                                       small_bundle, tmp_path):
    from edgecl.bundle import load_bundle

    old_sha = load_bundle(small_bundle).encoder_sha256
    srv = start_server(tiny_zoo, tmp_path, bundles_paths=str(small_bundle))
    try:
        assert old_sha in srv.bundles and len(srv.bundles) == 2
        stub = register(srv, "x").stub
        token = stub.Register(pb.RegisterRequest(device_id="stale-1", enrollment_key=KEY,
                                                 encoder_sha256=old_sha), timeout=5).token
    finally:
        srv.stop(grace=1.0)
    srv = start_server(tiny_zoo, tmp_path)  # the operator dropped the small bundle
    try:
        assert old_sha not in srv.bundles
        c = register(srv, "probe")
        stale = Client(c.stub, "stale-1", token, c.response)
        with pytest.raises(grpc.RpcError) as info:
            stale.upload([_batch("s", 1)])
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no longer serves" in info.value.details()
        # with a served encoder (and its current token, which proves the id): fine again
        again = c.stub.Register(pb.RegisterRequest(
            device_id="stale-1", enrollment_key=KEY, encoder_sha256=next(iter(srv.bundles))),
            metadata=stale.md, timeout=5)
        fresh = Client(c.stub, "stale-1", again.token, again)
        assert fresh.upload([_batch("s", 1)]).accepted == 1
    finally:
        srv.stop(grace=1.0)


def test_wrong_enrollment_keys_are_throttled_per_address(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path)
    try:
        stub = register(srv, "ok-1").stub
        sha = next(iter(srv.bundles))

        def attempt(key):
            try:
                stub.Register(pb.RegisterRequest(device_id="guess", enrollment_key=key,
                                                 encoder_sha256=sha), timeout=5)
                return "OK"
            except grpc.RpcError as exc:
                return exc.code().name

        codes = [attempt(f"guess-{i}") for i in range(12)]
        assert codes[:10] == ["UNAUTHENTICATED"] * 10
        assert codes[10:] == ["RESOURCE_EXHAUSTED"] * 2
        assert attempt(KEY) == "RESOURCE_EXHAUSTED"  # no more guesses from this address
        srv.servicer._enroll_failures = type(srv.servicer._enroll_failures)(0.1, 10)
        assert attempt(KEY) == "OK"  # after the bucket refills (here: reset)
    finally:
        srv.stop(grace=1.0)
