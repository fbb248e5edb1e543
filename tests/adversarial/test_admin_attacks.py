"""Attacks on the operator side and on what devices report: FleetAdmin under a message
fuzz with a valid operator token (every RPC, random but valid messages with extreme
values: never INTERNAL or UNKNOWN), reports past their bounds (refused whole, nothing
stored), and a device lying about a version it was never admitted to (the gate ignores
it). Bounded, on loopback."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecl._proto import admin_pb2
from edgecl._proto import edgecl_pb2 as pb
from edgecl.wire import UpdatePayload
from tests.adversarial.test_grpc_fuzz import FORBIDDEN, _build, _message
from tests.cloud.conftest import register, start_server

OPERATOR = "fuzz-operator-token-0123456789abcd"
ADMIN = "/edgecl.v1.FleetAdmin/"
MAX_EXAMPLES = 60
RPCS = {m.name: getattr(admin_pb2, m.input_type.name)
        for m in admin_pb2.DESCRIPTOR.services_by_name["FleetAdmin"].methods}


@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("admin-fuzz"),
                       learning_group_by="group", limits_requests_per_s="1e6",
                       limits_burst="1e6", admin_operators=f"fuzz:operator:{OPERATOR}")
    for i in range(3):
        register(srv, f"dev-{i}", group="g")
    yield srv
    srv.stop(grace=1.0)


@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_fleet_admin_fuzz_never_answers_internal(server, rpc):
    channel = grpc.insecure_channel(server.target)
    call = channel.unary_unary(ADMIN + rpc)
    md = (("authorization", f"Bearer {OPERATOR}"),)

    @settings(max_examples=MAX_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(values=_message(RPCS[rpc].DESCRIPTOR), raw=st.booleans(), junk=st.binary(max_size=64))
    def fuzz(values, raw, junk):
        data = junk if raw else _build(RPCS[rpc], values)
        try:
            call(data, metadata=md, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() not in FORBIDDEN, f"{rpc}: {exc.code()} {exc.details()!r}"

    try:
        fuzz()
    finally:
        channel.close()
    assert server.registry.device("dev-0") is not None  # still serving, devices intact


def test_reports_past_their_bounds_are_refused_whole(server):
    client = register(server, "liar", group="g")
    before = len(server.registry.reports_of("liar", 1000))
    event = pb.UpdateEvent(version=1, action="applied", reason="ok", time_ms=1)
    bad = [pb.DeviceReport(state_version=1, events=[event] * 65),
           pb.DeviceReport(state_version=1, events=[pb.UpdateEvent(version=1, action="exploded")]),
           pb.DeviceReport(state_version=1, events=[pb.UpdateEvent(version=-3,
                                                                   action="applied")]),
           pb.DeviceReport(state_version=1, config_revision=1, config={"budget": "x" * 300}),
           pb.DeviceReport(state_version=1, config={"k" * 200: "v"}),
           pb.DeviceReport(state_version=1, config={f"k{i}": "v" for i in range(65)})]
    for report in bad:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Report(report, metadata=client.md, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, report
    assert len(server.registry.reports_of("liar", 1000)) == before
    assert server.registry.reported_config("liar") == (0, {})


def test_a_device_lying_about_a_version_it_was_not_given_moves_no_gate(server):
    sha = next(iter(server.bundles))
    server.registry.set_rollout_policy("g", {"mode": "staged", "canary_share": 0.3,
                                             "wave_interval_s": 0.0}, "test")
    try:
        version = server.registry.latest_version("g") + 1
        payload = UpdatePayload(version, version - 1, sha, group="g", parts={})
        server.publish_update("g", server.signer.sign(payload))
        server.rollouts.tick()
        admitted = {d for d, *_ in server.registry.admitted("g", version)}
        ids = [d for d in ("dev-0", "dev-1", "dev-2") if d not in admitted]
        assert admitted and ids, admitted
        # an outsider claims it refused the version: nothing the gate reads changes
        server.registry.add_report(ids[0], version, {"confidence": 0.1},
                                   [(version, "rejected", "lie", 1)])
        health = server.registry.health_of("g", version)
        assert {h.device_id for h in health} == admitted
        assert all(h.outcome != "refused" for h in health)
    finally:
        server.registry.set_rollout_policy("g", None, "test")
