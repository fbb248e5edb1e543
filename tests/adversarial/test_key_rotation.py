"""Rotating the service's signing key: devices trust a small key set and follow a new key
only when a key they trust endorsed it. Attacks as written: a self-endorsed key, a forged
endorsement, a chain that skips a link, an update under a new key without its chain.
The end-to-end part rotates the key of a real loopback service with ``edgecl keys rotate``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from edgecl import UpdateRejected
from edgecl.cloud import UpdateSigner, rotate_signing_key
from edgecl.device import DeviceRuntime, Outbox, SyncClient, UpdateManager, UpdateVerifier
from edgecl.device._verify import MAX_TRUSTED_KEYS
from edgecl.wire import KeyEndorsement, UpdatePayload, payload_to_bytes
from tests.adversarial.test_update_attacks import _wait
from tests.cloud.conftest import KEY, start_server


def _payload(version: int, sha: str = "0" * 64) -> bytes:
    return payload_to_bytes(UpdatePayload(version, version - 1, sha, parts={
        "prompt": np.full((1, 28, 28), 0.01, np.float32)}))


def _rotated(old: UpdateSigner) -> UpdateSigner:
    """A new signer whose chain ends with ``old``'s endorsement of it."""
    new = UpdateSigner.generate()
    return UpdateSigner(new._key, (*old.endorsements, old.endorse(new.public_key)))


def test_a_device_follows_an_endorsed_key_and_then_trusts_it():
    k0 = UpdateSigner.generate()
    k1 = _rotated(k0)
    k2 = _rotated(k1)
    verifier = UpdateVerifier(k0.public_key)
    assert verifier.verify(k2.sign_bytes(_payload(1))).version == 1  # two links at once
    assert verifier.trusted_key_ids == [k0.key_id, k1.key_id, k2.key_id]
    bare = k2.sign_bytes(_payload(2))
    assert verifier.verify(type(bare)(bare.payload, bare.signature, bare.key_id)).version == 2


def test_an_update_under_a_new_key_without_its_chain_is_refused():
    k0, k1 = UpdateSigner.generate(), UpdateSigner.generate()
    verifier = UpdateVerifier(k0.public_key)
    with pytest.raises(UpdateRejected, match="unknown key"):
        verifier.verify(k1.sign_bytes(_payload(1)))
    assert verifier.trusted_key_ids == [k0.key_id]


def test_forged_self_and_gapped_endorsements_are_refused():
    k0, attacker = UpdateSigner.generate(), UpdateSigner.generate()
    verifier = UpdateVerifier(k0.public_key)
    forged = KeyEndorsement(attacker.public_key, k0.key_id, bytes(64))  # claims k0 signed it
    self_signed = attacker.endorse(attacker.public_key)  # endorser: the attacker itself
    k1 = UpdateSigner.generate()
    gap = k1.endorse(attacker.public_key)  # k1 endorses it, but nothing trusted endorsed k1
    for chain in [(forged,), (self_signed,), (gap,), (forged, self_signed, gap)]:
        update = UpdateSigner(attacker._key, chain).sign_bytes(_payload(1))
        with pytest.raises(UpdateRejected, match="unknown key"):
            verifier.verify(update)
    assert verifier.trusted_key_ids == [k0.key_id]


def test_a_genuine_chain_with_a_tampered_payload_teaches_nothing():
    k0 = UpdateSigner.generate()
    k1 = _rotated(k0)
    good = k1.sign_bytes(_payload(1))
    tampered = type(good)(good.payload[:-1] + b"\x00", good.signature, good.key_id,
                          good.endorsements)
    verifier = UpdateVerifier(k0.public_key)
    with pytest.raises(UpdateRejected, match="bad signature"):
        verifier.verify(tampered)
    assert verifier.trusted_key_ids == [k0.key_id]  # trust moves only with a valid update


def test_the_trusted_set_stays_small():
    signer = UpdateSigner.generate()
    provisioned = signer.key_id
    verifier = UpdateVerifier(signer.public_key)
    for v in range(1, 3 * MAX_TRUSTED_KEYS):
        signer = _rotated(signer)
        assert verifier.verify(signer.sign_bytes(_payload(v))).version == v
    ids = verifier.trusted_key_ids
    assert len(ids) == MAX_TRUSTED_KEYS
    assert ids[0] == provisioned and ids[-1] == signer.key_id  # provisioned kept, newest in


def test_rotate_keeps_the_old_key_retired_and_chains_the_new(tmp_path):
    path = tmp_path / "signing_key.pem"
    first = UpdateSigner.load_or_create(path)
    old_id, new_id = rotate_signing_key(path)
    assert old_id == first.key_id and new_id != old_id
    retired = tmp_path / f"signing_key.pem.{old_id}.retired"
    assert retired.exists() and stat.S_IMODE(os.stat(retired).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = UpdateSigner.load_or_create(path)
    assert second.key_id == new_id and (tmp_path / "signing_key.pem.pub").read_bytes() == \
        second.public_key
    assert [e.endorser_key_id for e in second.endorsements] == [old_id]
    rotate_signing_key(path)
    third = UpdateSigner.load_or_create(path)
    assert len(third.endorsements) == 2
    assert UpdateVerifier(first.public_key).verify(third.sign_bytes(_payload(3))).version == 3


def test_devices_on_the_old_and_the_new_key_take_updates_across_a_rotation(
        tiny_zoo, tmp_path):
    """A real service publishes v1, its key is rotated with ``edgecl keys rotate``, it
    restarts and publishes v2: a device provisioned before the rotation and one provisioned
    after it both apply v1 (stored under the old key, sent under the new) and v2."""
    storage = tmp_path / "cloud"
    server = start_server(tiny_zoo, storage)
    old_pub = (storage / "signing_key.pem.pub").read_bytes()
    sha = next(iter(server.bundles))

    def payload(version: int, device_id: str) -> UpdatePayload:
        return UpdatePayload(version, version - 1, sha, device_id=device_id, parts={
            "prompt": np.full((1, 28, 28), 0.002 * version, np.float32)})

    for device_id in ("before", "after"):
        server.publish_update(device_id, server.signer.sign(payload(1, device_id)))
    server.stop(grace=1.0)
    out = subprocess.run([sys.executable, "-m", "edgecl", "keys", "rotate", "--key",
                          str(storage / "signing_key.pem")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    new_pub = (storage / "signing_key.pem.pub").read_bytes()
    assert new_pub != old_pub
    server = start_server(tiny_zoo, storage)
    try:
        assert [e.endorser_key_id for e in server.signer.endorsements] == [
            UpdateVerifier(old_pub).key_id]
        managers = {}
        for device_id, pub in (("before", old_pub), ("after", new_pub)):
            rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1, ood=None)
            manager = UpdateManager(rt, UpdateVerifier(pub), state_dir=tmp_path / device_id)
            client = SyncClient(Outbox(tmp_path / f"{device_id}.db"), server.target,
                                device_id=device_id, enrollment_key=KEY, encoder_sha256=sha,
                                on_update=manager, state_path=tmp_path / f"{device_id}.json")
            managers[device_id] = (manager, client.start(uploads=False))
        for manager, _ in managers.values():
            _wait(lambda m=manager: m.cloud_version == 1)
        for device_id in managers:
            server.publish_update(device_id, server.signer.sign(payload(2, device_id)))
        for manager, client in managers.values():
            _wait(lambda m=manager: m.cloud_version == 2)
            client.stop()
        before = managers["before"][0]
        assert before.verifier.trusted_key_ids[-1] == server.signer.key_id
        assert before.counts()["rejected"] == 0 and managers["after"][0].counts()["rejected"] == 0
        # the device restarts from its persisted history with only the old key provisioned
        rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1, ood=None)
        again = UpdateManager(rt, UpdateVerifier(old_pub), state_dir=tmp_path / "before")
        assert again.cloud_version == 2
    finally:
        server.stop(grace=1.0)
