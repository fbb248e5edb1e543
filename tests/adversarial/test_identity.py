"""The red team's attacks on device identity, each written as the attack, on a real
loopback service: a group named after a device, a takeover by re-registration, a weak
enrollment key, a token that never expires or cannot be revoked.
"""

from __future__ import annotations

import os
import time

import grpc
import numpy as np
import pytest

from edgecl._exceptions import ConfigError
from edgecl._proto import edgecl_pb2 as pb
from edgecl._retry import Backoff
from edgecl.cloud import load_config
from edgecl.device import DeviceKey, Outbox, SyncClient, TransportError
from edgecl.wire import UpdatePayload, registration_message
from tests.cloud.conftest import KEY, cloud_env, register, start_server
from tests.cloud.test_registry import before_alembic
from tests.conftest import images


@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("identity"))
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="module")
def grouped(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("grouped"),
                       learning_group_by="group")
    yield srv
    srv.stop(grace=1.0)


def _code(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def _md(token: str):
    return (("authorization", f"Bearer {token}"),)


def _register(c, server, device_id: str, token: str = ""):
    """Register ``device_id`` on ``c``'s channel, presenting ``token`` if given."""
    req = pb.RegisterRequest(device_id=device_id, enrollment_key=KEY,
                             encoder_sha256=next(iter(server.bundles)))
    return c.stub.Register(req, metadata=_md(token) if token else None, timeout=5)


def _publish(server, target: str, version: int) -> None:
    sha = next(iter(server.bundles))
    p = UpdatePayload(version, version - 1, sha,
                      parts={"prompt": np.full((1, 28, 28), 0.01, np.float32)})
    server.publish_update(target, server.signer.sign(p))


def _client(outbox, server, device_id: str, **kw) -> SyncClient:
    return SyncClient(outbox, server.target, device_id=device_id, enrollment_key=KEY,
                      encoder_sha256=next(iter(server.bundles)), deadline_s=5,
                      subscribe=False, backoff=Backoff(0.02, 2.0, 0.3, seed=1), **kw)


def _fill(outbox, n: int, start: int = 0) -> None:
    x = images(n, seed=start)
    for i in range(n):
        outbox.put_sync(f"s{start + i}", {"image": x[i]}, priority=1.0,
                        meta={"label": 1, "ood_score": 0.5, "state_version": 0})


# -- 1. a group named after a device ----------------------------------------------------
def test_a_group_named_after_a_device_gets_none_of_its_updates(grouped):
    victim = register(grouped, "cam-victim")  # no group: its own updates
    thief = register(grouped, "thief-1", group="cam-victim")
    victim_target = grouped.servicer.target_of(grouped.registry.device("cam-victim"))
    assert victim_target != grouped.servicer.target_of(grouped.registry.device("thief-1"))
    _publish(grouped, victim_target, 1)
    got = victim.stub.FetchUpdate(pb.FetchUpdateRequest(), metadata=victim.md, timeout=5)
    assert got.payload
    code, _ = _code(lambda: thief.stub.FetchUpdate(pb.FetchUpdateRequest(),
                                                   metadata=thief.md, timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND
    # and the thief's uploads never feed the victim's learning
    assert grouped.registry.devices_in(victim_target, True) == ["cam-victim"]


def test_a_device_named_after_a_group_gets_none_of_its_updates(grouped):
    member = register(grouped, "site-member", group="site-x")
    thief = register(grouped, "site-x")  # its id is the group's name
    _publish(grouped, "site-x", 1)
    assert member.stub.FetchUpdate(pb.FetchUpdateRequest(), metadata=member.md,
                                   timeout=5).payload
    code, _ = _code(lambda: thief.stub.FetchUpdate(pb.FetchUpdateRequest(),
                                                   metadata=thief.md, timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND
    assert grouped.registry.devices_in("site-x", True) == ["site-member"]


# -- 2. takeover by re-registration ---------------------------------------------------
def test_re_registering_another_device_id_with_the_fleet_key_is_refused(server):
    victim = register(server, "victim-2")
    code, msg = _code(lambda: _register(victim, server, "victim-2"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "release_device" in msg
    code, _ = _code(lambda: _register(victim, server, "victim-2", token="forged-token"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # the genuine device still works, and nobody else can act for it
    victim.stub.Report(pb.DeviceReport(state_version=1), metadata=victim.md, timeout=5)
    assert server.registry.device_for_token(victim.token).device_id == "victim-2"


def test_a_restarted_device_re_registers_with_its_persisted_token(server, tmp_path):
    state = tmp_path / "sync.json"
    with Outbox(tmp_path / "o.db") as box:
        first = _client(box, server, "restart-2", state_path=state)
        token = first.register()
        first.stop()
        assert oct(os.stat(state).st_mode & 0o777) == "0o600"
        again = _client(box, server, "restart-2", state_path=state)  # after a reboot
        assert again.register() != token
        again.stop()


def test_a_device_that_lost_its_token_needs_the_operator(server, tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        _client(box, server, "lost-2").register()
        lost = _client(box, server, "lost-2")  # no state_path: the token is gone
        with pytest.raises(TransportError) as info:
            lost.register()
        assert info.value.code == "PERMISSION_DENIED"
        assert "release_device('lost-2')" in str(info.value)
        assert server.registry.release_device("lost-2")
        assert lost.register()
        lost.stop()


# -- 3. weak enrollment keys -----------------------------------------------------------
@pytest.mark.parametrize("key", ["k", " " * 32, "a" * 40, "abcabcabcabcabcabc",
                                 "  padded-enrollment-key-0123  ", "short-key-12"])
def test_a_weak_enrollment_key_is_refused_at_start_up(tmp_path, key):
    env = {**cloud_env(tmp_path), "EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": key}
    with pytest.raises(ConfigError, match="secrets.token_urlsafe"):
        load_config(None, env=env)


def test_a_strong_key_and_a_bad_ttl(tmp_path):
    assert load_config(None, env=cloud_env(tmp_path)).auth.token_ttl_s == 30 * 24 * 3600
    with pytest.raises(ConfigError, match="token_ttl_s"):
        load_config(None, env=cloud_env(tmp_path, auth_token_ttl_s="0"))


# -- 4. tokens that never expire and cannot be revoked ----------------------------------
def test_the_configured_token_ttl_reaches_the_service(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path, auth_token_ttl_s="1")
    try:
        assert srv.servicer.token_ttl_s == 1.0
    finally:
        srv.stop(grace=1.0)


def test_an_expired_token_is_refused_and_the_client_re_registers(server, tmp_path):
    ttl = server.servicer.token_ttl_s
    server.servicer.token_ttl_s = 1.0
    try:
        with Outbox(tmp_path / "o.db") as box:
            c = _client(box, server, "expire-4", state_path=tmp_path / "sync.json")
            token = c.register()
            time.sleep(1.2)
            raw = register(server, "expire-probe")
            code, msg = _code(lambda: raw.stub.Report(pb.DeviceReport(), metadata=_md(token),
                                                      timeout=5))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in msg
            _fill(box, 3)
            with c:
                assert c.flush(30)
            stats = c.stats()
        assert stats.registrations == 2 and stats.uploaded == 3
        assert "expired" in stats.last_error
    finally:
        server.servicer.token_ttl_s = ttl


def test_an_operator_revokes_a_device_at_once(server):
    c = register(server, "stolen-4")
    c.stub.Report(pb.DeviceReport(), metadata=c.md, timeout=5)
    assert server.registry.revoke_device("stolen-4")
    assert not server.registry.revoke_device("no-such-device")
    code, _ = _code(lambda: c.stub.Report(pb.DeviceReport(), metadata=c.md, timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # the thief holding the old token cannot re-register the id either
    code, msg = _code(lambda: _register(c, server, "stolen-4", token=c.token))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in msg
    server.registry.release_device("stolen-4")  # the operator hands the id back
    fresh = _register(c, server, "stolen-4")
    c.stub.Report(pb.DeviceReport(), metadata=_md(fresh.token), timeout=5)


def test_a_schema_3_registry_keeps_its_devices_and_their_tokens_expire(tmp_path):
    import sqlite3

    from edgecl.cloud import Registry

    reg = Registry(tmp_path)
    reg.register("old-4", "old-token", "sha", "", {})
    reg.close()
    conn = sqlite3.connect(tmp_path / "registry.sqlite")  # what edgecl with schema 3 wrote
    conn.execute("ALTER TABLE devices DROP COLUMN token_expires_ms")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    before_alembic(conn)
    conn.commit()
    conn.close()
    found = Registry(tmp_path).identify("old-token")
    assert found is not None and found.device.device_id == "old-4"
    left_s = (found.expires_ms - time.time() * 1000) / 1000
    assert 29 * 24 * 3600 < left_s <= 30 * 24 * 3600 and not found.expired()


# -- 5. per-device keys: a stolen token or a replayed registration takes nothing ---------
def _signed(c, server, device_id: str, key: DeviceKey, counter: int, token: str = "",
            group: str = ""):
    """A registration signed by ``key`` with exactly ``counter``, and a call sending it."""
    sha = next(iter(server.bundles))
    signature = key._key.sign(registration_message(device_id, sha, group, counter,
                                                   key.public_key))
    req = pb.RegisterRequest(device_id=device_id, enrollment_key=KEY, encoder_sha256=sha,
                             group=group, device_public_key=key.public_key,
                             proof_counter=counter, proof_signature=signature)
    return req, lambda: c.stub.Register(req, metadata=_md(token) if token else None,
                                        timeout=5)


def test_a_stolen_token_cannot_re_register_a_device_that_has_its_own_key(server, tmp_path):
    state = tmp_path / "sync.json"
    with Outbox(tmp_path / "o.db") as box:
        genuine = _client(box, server, "keyed-5", state_path=state)
        token = genuine.register()
        key_file = tmp_path / "sync.json.key"
        assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
        assert server.registry.device_key("keyed-5") == genuine.device_key.public_key
        thief = register(server, "thief-5")
        code, msg = _code(lambda: _register(thief, server, "keyed-5", token=token))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "own key" in msg
        _, call = _signed(thief, server, "keyed-5", DeviceKey.generate(), 10**15, token)
        code, _ = _code(call)  # a key of the thief's, even with the stolen token
        assert code == grpc.StatusCode.PERMISSION_DENIED
        server.registry.device_for_token(token)  # the genuine token still works...
        again = _client(box, server, "keyed-5", state_path=state)  # ...and after a reboot
        assert again.register() not in ("", token)  # the device's key re-registers it
        assert again.device_key.public_key == genuine.device_key.public_key
        again.stop()
        genuine.stop()


def test_a_replayed_or_forged_signed_registration_is_refused(server):
    c = register(server, "observer-5")
    key = DeviceKey.generate()
    req, first = _signed(c, server, "replay-5", key, 1000)
    assert first().token
    code, msg = _code(lambda: c.stub.Register(req, timeout=5))  # the same bytes again
    assert code == grpc.StatusCode.PERMISSION_DENIED and "replayed" in msg
    _, older = _signed(c, server, "replay-5", key, 999)
    assert _code(older)[0] == grpc.StatusCode.PERMISSION_DENIED
    forged = pb.RegisterRequest()
    forged.CopyFrom(req)
    forged.proof_counter = 2000  # not what was signed
    code, msg = _code(lambda: c.stub.Register(forged, timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not signed" in msg
    forged.device_public_key = b"\x01" * 31
    assert _code(lambda: c.stub.Register(forged, timeout=5))[0] == \
        grpc.StatusCode.UNAUTHENTICATED
    _, fresh = _signed(c, server, "replay-5", key, 3000)
    assert fresh().token  # the genuine device, with a new counter


def test_a_device_registered_without_a_key_adopts_one_with_its_token(server):
    c = register(server, "legacy-5")  # an old client: no key
    assert server.registry.device_key("legacy-5") is None
    key = DeviceKey.generate()
    _, adopt = _signed(c, server, "legacy-5", key, 1, token=c.token)
    token = adopt().token
    assert server.registry.device_key("legacy-5") == key.public_key
    code, _ = _code(lambda: _register(c, server, "legacy-5", token=token))  # token alone
    assert code == grpc.StatusCode.PERMISSION_DENIED


# -- 6. one attacker behind a shared address (NAT) ----------------------------------------
def test_an_attacker_behind_a_shared_address_locks_out_no_other_device(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path)
    try:
        probe = register(srv, "nat-probe")
        sha = next(iter(srv.bundles))
        wrong = pb.RegisterRequest(device_id="nat-attacker", enrollment_key="x" * 32,
                                   encoder_sha256=sha)
        codes = [_code(lambda: probe.stub.Register(wrong, timeout=5))[0] for _ in range(60)]
        assert codes[:10] == [grpc.StatusCode.UNAUTHENTICATED] * 10
        assert set(codes[10:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}  # its id throttled
        for i in range(45):  # every legitimate device behind the same address registers
            assert register(srv, f"nat-device-{i}").token
        # guessing with ever new ids meets the per-address ceiling
        from edgecl.cloud._auth import TokenBucket

        srv.servicer._address_failures = TokenBucket(0.01, 20)
        codes = [_code(lambda i=i: probe.stub.Register(pb.RegisterRequest(
            device_id=f"guess-{i}", enrollment_key="y" * 32, encoder_sha256=sha),
            timeout=5))[0] for i in range(25)]
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 5
    finally:
        srv.stop(grace=1.0)
