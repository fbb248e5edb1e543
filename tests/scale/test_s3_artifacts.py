"""Update payloads in an S3-compatible object store (a real S3 API server on loopback:
moto's): published and served through it, shared by two registries on one PostgreSQL
database, verified on read (a changed object is refused), and a store that is away is a
clear StorageError, not a crash."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from edgecl import StorageError
from edgecl.cloud import Registry
from edgecl.cloud._signing import UpdateSigner
from edgecl.wire import UpdatePayload, payload_from_bytes

moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3(monkeypatch):
    """The endpoint of an S3 API server on a free loopback port, with a bucket."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "edgecl", "AWS_SECRET_ACCESS_KEY": "edgecl-test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="updates")
    yield endpoint
    server.stop()


def _publish(reg: Registry, signer: UpdateSigner, version: int) -> None:
    payload = UpdatePayload(version, version - 1, "sha", device_id="cam-1",
                            parts={"prompt": np.full((1, 4, 4), version, np.float32)})
    reg.publish("cam-1", signer.sign(payload), payload)


def test_payloads_live_in_the_object_store_and_are_verified(s3, postgres_url, tmp_path):
    import boto3

    signer = UpdateSigner.generate()
    one = Registry(tmp_path / "r1", url=postgres_url, artifacts="s3://updates/fleet-a",
                   artifacts_endpoint=s3)
    two = Registry(tmp_path / "r2", url=postgres_url, artifacts="s3://updates/fleet-a",
                   artifacts_endpoint=s3)
    try:
        _publish(one, signer, 1)
        stored = two.updates_after("cam-1", 0)  # the other replica reads it from the store
        assert payload_from_bytes(stored[0].update.payload).version == 1
        client = boto3.client("s3", endpoint_url=s3)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="updates")["Contents"]]
        assert len(keys) == 1 and keys[0].startswith("fleet-a/")
        assert one._rows("SELECT COUNT(*) FROM artifacts")[0][0] == 0  # not in the database
        client.put_object(Bucket="updates", Key=keys[0], Body=b"tampered")
        with pytest.raises(StorageError, match="corrupt"):
            two.updates_after("cam-1", 0)
    finally:
        one.close()
        two.close()


def test_an_unreachable_store_is_a_storage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    reg = Registry(tmp_path, artifacts="s3://updates", artifacts_endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(StorageError, match="cannot store artifact"):
        _publish(reg, UpdateSigner.generate(), 1)
    assert reg.latest_version("cam-1") == 0  # nothing published
    reg.close()
