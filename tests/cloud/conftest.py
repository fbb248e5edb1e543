"""A real cloud service on loopback (ephemeral port) over the tiny zoo, and a client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc

KEY = "test-enrollment-key"


def cloud_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY, "EDGECL_CLOUD_TEACHER_ZOO": "tiny",
           "EDGECL_CLOUD_STORAGE_DIR": str(tmp), "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
           "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_CLOUD_LEARNING_ENABLED": "false"}
    env.update({f"EDGECL_CLOUD_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def start_server(tiny_zoo, tmp: Path, **extra: str):
    from edgecl.cloud import create_server, load_config

    cfg = load_config(None, env=cloud_env(tmp, **extra))
    return create_server(cfg, home=str(tiny_zoo.path.parent.parent)).start()


@dataclass
class Client:
    stub: pb_grpc.EdgeCloudStub
    device_id: str
    token: str
    response: pb.RegisterResponse

    @property
    def md(self):
        return (("authorization", f"Bearer {self.token}"),)

    def upload(self, batches, timeout=10.0):
        return self.stub.Upload(iter(batches), metadata=self.md, timeout=timeout)


def register(server, device_id: str, group: str = "") -> Client:
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.EdgeCloudStub(channel)
    sha = next(iter(server.bundles))
    resp = stub.Register(pb.RegisterRequest(device_id=device_id, enrollment_key=KEY,
                                            encoder_sha256=sha, group=group), timeout=10)
    return Client(stub, device_id, resp.token, resp)


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("cloud"), metrics_port="0")
    yield srv
    srv.stop(grace=1.0)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true; AssertionError naming ``what`` at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
