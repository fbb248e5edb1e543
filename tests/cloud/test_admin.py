"""The FleetAdmin service on a real server over loopback: operators see devices, updates
and reports; a rollback publishes old content as a new signed version that devices take;
tokens and roles are enforced and nothing changes on a refused call."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from edgecl._proto import edgecl_pb2 as pb
from edgecl.cli import main
from edgecl.cloud import AdminClient, AdminError
from edgecl.device import UpdateVerifier
from edgecl.wire import UpdatePayload, payload_from_bytes, update_from_proto
from tests.cloud.conftest import KEY, inputs, start_server

OPERATOR = "alice-operator-token-0123456789"
READER = "bob-read-only-token-0123456789ab"


@pytest.fixture(scope="module")
def fleet(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("admin"),
                       admin_operators=f"alice:operator:{OPERATOR},bob:read:{READER}")
    channel = grpc.insecure_channel(srv.target)
    from edgecl._proto import edgecl_pb2_grpc as pb_grpc

    stub = pb_grpc.EdgeCloudStub(channel)
    sha = next(iter(srv.bundles))
    tokens = {}
    for i, (group, site) in enumerate((("north", "a"), ("north", "b"), ("south", "a"))):
        resp = stub.Register(pb.RegisterRequest(
            device_id=f"cam-{i}", enrollment_key=KEY, encoder_sha256=sha, group=group,
            labels={"site": site}), timeout=10)
        tokens[f"cam-{i}"] = resp.token
    md = (("authorization", f"Bearer {tokens['cam-0']}"),)
    x = inputs(3)
    stub.Upload(iter([pb.SampleBatch(samples=[pb.Sample(
        sample_id=f"s{k}", input=_tensor(x[k])) for k in range(3)])]), metadata=md, timeout=10)
    stub.Report(pb.DeviceReport(timestamp_ms=1, state_version=2,
                                stats={"outbox_pending": 4.0, "rollbacks": 1.0}),
                metadata=md, timeout=10)
    for version, value in ((1, 0.01), (2, 0.02)):
        p = UpdatePayload(version, version - 1, sha, device_id="cam-0",
                          parts={"prompt": np.full((1, 28, 28), value, np.float32)},
                          metrics={"candidate_agreement": 0.5 + version / 10})
        srv.publish_update("cam-0", srv.signer.sign(p))
    yield srv, stub, tokens
    channel.close()
    srv.stop(grace=1.0)


def _tensor(a):
    from edgecl.wire import tensor_to_proto

    return tensor_to_proto(a)


def test_operators_see_devices_filtered_with_their_reports_and_updates(fleet):
    srv, _, _ = fleet
    with AdminClient(srv.target, READER) as admin:
        devices = admin.devices()
        assert {d["device_id"] for d in devices} == {"cam-0", "cam-1", "cam-2"}
        assert devices[0]["device_id"] == "cam-0"  # seen last (uploaded, reported)
        cam0 = devices[0]
        assert cam0["samples"] == "3" and cam0["reported_version"] == "2"
        assert cam0["latest_version"] == "2" and cam0["stats"]["outbox_pending"] == 4.0
        assert cam0["labels"] == {"site": "a"} and cam0["group"] == "north"
        north_a = admin.devices(group="north", labels={"site": "a"})
        assert [d["device_id"] for d in north_a] == ["cam-0"]
        assert admin.devices(limit=1)[0]["device_id"] == "cam-0"
        detail = admin.device("cam-0")
        assert [u["version"] for u in detail["updates"]] == ["2", "1"]
        assert detail["updates"][0]["parts"] == ["prompt"]
        assert detail["reports"][0]["stats"]["rollbacks"] == 1.0
        assert admin.device("cam-1")["device"]["reported_version"] == "-1"


def test_a_rollback_is_a_new_signed_version_with_the_old_content_that_devices_take(fleet):
    srv, stub, tokens = fleet
    with AdminClient(srv.target, OPERATOR) as admin:
        out = admin.rollback("cam-0", to_version=1, reason="v2 is worse on site a")
        assert out["version"] == "3" and out["metrics"]["rollback_of"] == 1.0
    md = (("authorization", f"Bearer {tokens['cam-0']}"),)
    update = update_from_proto(stub.FetchUpdate(pb.FetchUpdateRequest(after_version=2),
                                                metadata=md, timeout=10))
    payload = payload_from_bytes(update.payload)
    assert payload.version == 3 and payload.base_version == 2 and payload.device_id == "cam-0"
    v1 = payload_from_bytes(srv.registry.updates_after("cam-0", 0, 1)[0].update.payload)
    np.testing.assert_array_equal(payload.parts["prompt"], v1.parts["prompt"])  # v1's content
    assert abs(float(payload.parts["prompt"].mean()) - 0.01) < 1e-4
    UpdateVerifier(srv.signer.public_key).verify(update)  # signed by the service's key
    with AdminClient(srv.target, OPERATOR) as admin:  # back to the bundle's own state
        out = admin.rollback("cam-0", to_version=0)
        assert out["version"] == "4" and out["parts"] == ["head.bias", "head.weight"]


def test_refused_calls_get_the_right_status_and_change_nothing(fleet):
    srv, _, tokens = fleet
    before = srv.registry.latest_version("cam-0")
    cases = [(tokens["cam-1"], "devices", (), "UNAUTHENTICATED"),  # a device token
             ("not-a-token-at-all-0123456789", "devices", (), "UNAUTHENTICATED"),
             (READER, "rollback", ("cam-0", 1), "PERMISSION_DENIED"),
             (OPERATOR, "rollback", ("cam-0", before), "INVALID_ARGUMENT"),
             (OPERATOR, "rollback", ("cam-0", -1), "INVALID_ARGUMENT"),
             (OPERATOR, "rollback", ("cam-1", 0), "NOT_FOUND"),  # nothing published
             (OPERATOR, "rollback", ("nobody", 0), "NOT_FOUND"),
             (READER, "device", ("nobody",), "NOT_FOUND"),
             (READER, "updates", ("nobody",), "NOT_FOUND"),
             (READER, "devices", ("", None, -1), "INVALID_ARGUMENT")]
    for token, call, args, code in cases:
        with AdminClient(srv.target, token) as admin, pytest.raises(AdminError) as err:
            getattr(admin, call)(*args)
        assert err.value.code == code, (call, args, err.value)
    assert srv.registry.latest_version("cam-0") == before
    # no metadata at all
    from edgecl._proto import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(srv.target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.FleetAdminStub(channel).ListDevices(admin_pb2.ListDevicesRequest(),
                                                               timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # the device API still serves the device
    with AdminClient(srv.target, READER) as admin:
        assert len(admin.devices()) == 3


def test_the_fleet_command_lists_and_rolls_back(fleet, capsys, monkeypatch):
    srv, _, _ = fleet
    monkeypatch.setenv("EDGECL_ADMIN_TOKEN", OPERATOR)
    assert main(["fleet", "devices", "--server", srv.target, "--group", "south"]) == 0
    table = capsys.readouterr().out
    assert "cam-2" in table and "cam-0" not in table
    assert main(["fleet", "updates", "cam-0", "--server", srv.target, "--json"]) == 0
    versions = [int(u["version"]) for u in json.loads(capsys.readouterr().out)["updates"]]
    assert versions == sorted(versions, reverse=True) and versions[-1] == 1
    latest = versions[0]
    assert main(["fleet", "rollback", "cam-0", "--to", "2", "--server", srv.target]) == 0
    assert f"v{latest + 1}" in capsys.readouterr().out
    assert main(["fleet", "rollback", "cam-0", "--to", "2", "--server", srv.target,
                 "--token", READER]) == 2  # read-only: refused, a clear error
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["fleet", "pin", "cam-2", "--version", "0", "--server", srv.target]) == 0
    assert "device cam-2: pinned to v0" in capsys.readouterr().out
    assert main(["fleet", "pin", "cam-2", "--server", srv.target]) == 2  # no --version
    assert "--version" in capsys.readouterr().err
    assert main(["fleet", "pin", "cam-2", "--clear", "--server", srv.target]) == 0
    assert srv.registry.served_cap("cam-2", "cam-2") is None
    capsys.readouterr()
    assert main(["fleet", "token", "--name", "carol", "--role", "operator"]) == 0
    entry = json.loads(capsys.readouterr().out)["entry"]
    from edgecl.cloud._admin_auth import parse_operators

    assert next(iter(parse_operators([entry]).values())).role == "operator"


def test_bad_operator_settings_are_config_errors(tmp_path):
    from edgecl import ConfigError
    from edgecl.cloud import load_config
    from tests.cloud.conftest import cloud_env

    for entries in ("alice:admin:" + OPERATOR, "alice:read:short",
                    f"alice:read:{OPERATOR},alice:operator:{READER}", "alice"):
        with pytest.raises(ConfigError):
            load_config(None, env=cloud_env(tmp_path, admin_operators=entries))


def test_a_pinned_device_is_served_nothing_above_its_pin_until_it_is_cleared(fleet):
    srv, stub, tokens = fleet
    sha = next(iter(srv.bundles))
    md = (("authorization", f"Bearer {tokens['cam-0']}"),)
    held = srv.registry.latest_version("cam-0")
    with AdminClient(srv.target, OPERATOR) as admin:
        assert admin.pin(device_id="cam-0", version=held)["version"] == str(held)
        p = UpdatePayload(held + 1, held, sha, device_id="cam-0",
                          parts={"prompt": np.full((1, 28, 28), 0.03, np.float32)})
        srv.publish_update("cam-0", srv.signer.sign(p))
        with pytest.raises(grpc.RpcError) as err:
            stub.FetchUpdate(pb.FetchUpdateRequest(after_version=held), metadata=md, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        stream = stub.Subscribe(pb.SubscribeRequest(after_version=held), metadata=md,
                                timeout=1.5)
        with pytest.raises(grpc.RpcError) as err:  # nothing arrives before the deadline
            next(iter(stream))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert stub.Report(pb.DeviceReport(state_version=held), metadata=md,
                           timeout=5).latest_version == held
        assert admin.device("cam-0")["device"]["pinned_version"] == str(held)
        # refused pins change nothing
        for kwargs, code in (({"device_id": "cam-0", "version": held + 5}, "INVALID_ARGUMENT"),
                             ({"device_id": "cam-0", "target": "cam-0"}, "INVALID_ARGUMENT"),
                             ({"device_id": "nobody", "version": 0}, "NOT_FOUND"),
                             ({"target": "nowhere", "version": 0}, "NOT_FOUND")):
            with pytest.raises(AdminError) as e:
                admin.pin(**kwargs)
            assert e.value.code == code, kwargs
        with AdminClient(srv.target, READER) as reader, pytest.raises(AdminError) as e:
            reader.pin(device_id="cam-0", clear=True)
        assert e.value.code == "PERMISSION_DENIED"
        assert srv.registry.served_cap("cam-0", "cam-0") == held
        assert admin.pin(device_id="cam-0", clear=True)["version"] == "-1"
    update = update_from_proto(stub.FetchUpdate(pb.FetchUpdateRequest(after_version=held),
                                                metadata=md, timeout=5))
    assert payload_from_bytes(update.payload).version == held + 1
    stream = stub.Subscribe(pb.SubscribeRequest(after_version=held), metadata=md, timeout=5)
    assert payload_from_bytes(update_from_proto(next(iter(stream))).payload).version == held + 1
