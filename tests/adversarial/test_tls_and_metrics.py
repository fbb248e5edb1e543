"""Transport hardening, written as the attacks: a plaintext client or one trusting another CA
against the development-TLS service, and anonymous or wrong-token scrapes of /metrics.
Real servers on loopback (ephemeral ports) over the tiny zoo; every wait bounded.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from edgecl import ConfigError
from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.cloud import load_config
from edgecl.cloud._tls import dev_hosts, ensure_dev_certificate
from edgecl.device import GrpcTransport, Outbox, SyncClient, TransportError
from tests.cloud.conftest import KEY, cloud_env, inputs, start_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture(scope="module")
def tls_server(tiny_zoo, tmp_path_factory):
    srv = start_server(tiny_zoo, tmp_path_factory.mktemp("tls"), server_tls_dev="true",
                       metrics_port="0", metrics_token=TOKEN)
    yield srv
    srv.stop(grace=1.0)


def _sha(srv) -> str:
    return next(iter(srv.bundles))


def _register(target: str, creds, device_id: str, sha: str) -> pb.RegisterResponse:
    channel = (grpc.secure_channel(target, creds) if creds is not None
               else grpc.insecure_channel(target))
    try:
        return pb_grpc.EdgeCloudStub(channel).Register(
            pb.RegisterRequest(device_id=device_id, enrollment_key=KEY, encoder_sha256=sha),
            timeout=5)
    finally:
        channel.close()


# -- TLS with the development certificate ---------------------------------------------------
def test_a_device_trusting_the_dev_ca_registers_and_uploads_over_tls(tls_server, tmp_path):
    assert tls_server.tls and tls_server.tls_ca_path is not None
    ca = tls_server.tls_ca_path.read_bytes()
    with Outbox(tmp_path / "outbox.db") as box:
        x = inputs(20, seed=1)
        for i in range(20):
            box.put_sync(f"tls-{i}", {"image": x[i]}, priority=1.0)
        client = SyncClient(box, f"localhost:{tls_server.port}", device_id="tls-dev",
                            enrollment_key=KEY, encoder_sha256=_sha(tls_server),
                            subscribe=False, root_cert=ca, deadline_s=5).start()
        try:
            assert client.flush(timeout=30)
        finally:
            client.stop()
    assert client.stats().uploaded == 20
    assert len(tls_server.registry.sample_ids("tls-dev")) == 20
    # every name of the certificate works, the IPv4 loopback address too
    transport = GrpcTransport(f"127.0.0.1:{tls_server.port}", root_cert=ca, deadline_s=5)
    try:
        assert transport.register("tls-ip", KEY, _sha(tls_server), "").token
    finally:
        transport.close()


def test_plaintext_client_to_the_tls_port_fails(tls_server):
    with pytest.raises(grpc.RpcError) as info:
        _register(f"localhost:{tls_server.port}", None, "plain-1", _sha(tls_server))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert tls_server.registry.device("plain-1") is None


def test_a_client_trusting_another_ca_fails(tls_server, tmp_path):
    other = ensure_dev_certificate(tmp_path / "other", dev_hosts("127.0.0.1"))
    assert other.ca.read_bytes() != tls_server.tls_ca_path.read_bytes()
    transport = GrpcTransport(f"localhost:{tls_server.port}", root_cert=other.ca.read_bytes(),
                              deadline_s=5)
    try:
        with pytest.raises(TransportError) as info:
            transport.register("mitm-1", KEY, _sha(tls_server), "")
        assert info.value.code == "UNAVAILABLE"
    finally:
        transport.close()
    # and the system's trust store (no root_cert given) does not trust the dev CA either
    with pytest.raises(grpc.RpcError) as raw:
        _register(f"localhost:{tls_server.port}", grpc.ssl_channel_credentials(), "sys-1",
                  _sha(tls_server))
    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
    assert tls_server.registry.device("mitm-1") is None


def test_a_name_outside_the_certificate_fails(tls_server):
    ca = tls_server.tls_ca_path.read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    channel = grpc.secure_channel(f"127.0.0.1:{tls_server.port}", creds,
                                  (("grpc.ssl_target_name_override", "evil.example"),))
    try:
        with pytest.raises(grpc.RpcError) as info:  # right CA, wrong name: no match
            pb_grpc.EdgeCloudStub(channel).Register(
                pb.RegisterRequest(device_id="name-1", enrollment_key=KEY,
                                   encoder_sha256=_sha(tls_server)), timeout=5)
    finally:
        channel.close()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_dev_keys_are_private(tls_server):
    folder = tls_server.tls_ca_path.parent
    assert folder == tls_server.storage_dir / "tls"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # no temp files left


def test_the_dev_certificate_is_reused_renewed_for_new_hosts_and_replaced_when_broken(
        tmp_path):
    folder = tmp_path / "tls"
    first = ensure_dev_certificate(folder, dev_hosts("127.0.0.1"))
    files = {p: p.read_bytes() for p in (first.ca, first.cert, first.key)}
    again = ensure_dev_certificate(folder, dev_hosts("127.0.0.1"))
    assert first.generated and not again.generated
    assert {p: p.read_bytes() for p in files} == files
    moved = ensure_dev_certificate(folder, dev_hosts("cloud.example"))
    assert moved.generated and "cloud.example" in moved.hosts
    assert first.ca.read_bytes() == files[first.ca]  # same CA: devices keep trusting it
    assert first.cert.read_bytes() != files[first.cert]
    first.key.write_bytes(b"not a key")  # a damaged pair is replaced, not served
    fixed = ensure_dev_certificate(folder, dev_hosts("cloud.example"))
    assert fixed.generated and b"PRIVATE KEY" in fixed.key.read_bytes()
    assert stat.S_IMODE(fixed.key.stat().st_mode) == 0o600


def _spawn(tiny_zoo, data: Path) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, **cloud_env(data, server_address="localhost:0",
                                      server_tls_dev="true", log_format="json")}
    proc = subprocess.Popen([sys.executable, "-m", "edgecl", "serve", "--home",
                             str(tiny_zoo.path.parent.parent)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(proc.stderr.read())
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen) -> list[dict]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_serve_prints_the_ca_warns_and_reuses_the_certificate_on_restart(tiny_zoo, tmp_path):
    from edgecl.bundle import load_bundle

    sha = load_bundle(tiny_zoo.student_bundle).encoder_sha256
    proc, info = _spawn(tiny_zoo, tmp_path)
    try:
        ca = Path(info["tls_ca"])
        assert info["tls"] is True and ca.is_absolute() and ca == tmp_path / "tls" / "ca.pem"
        first = {p.name: p.read_bytes() for p in ca.parent.iterdir()}
        creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        assert _register(info["serving"], creds, "cli-1", sha).token
    finally:
        logs = _stop(proc)
    warnings = [e for e in logs if e["level"] == "WARNING" and "DEVELOPMENT" in e["msg"]]
    assert len(warnings) == 1 and warnings[0]["tls_ca"] == str(ca)
    assert not any("PLAINTEXT" in e["msg"] for e in logs)
    serving = next(e for e in logs if e["msg"] == "serving")
    assert serving["tls"] is True and serving["tls_ca"] == str(ca)

    proc, info = _spawn(tiny_zoo, tmp_path)  # second start: the same CA and certificate
    try:
        assert info["tls_ca"] == str(ca)
        assert {p.name: p.read_bytes() for p in ca.parent.iterdir()} == first
        assert _register(info["serving"], creds, "cli-2", sha).token
    finally:
        logs = _stop(proc)
    assert [e["generated"] for e in logs if "DEVELOPMENT" in e["msg"]] == [False]


def test_tls_configuration():
    base = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY}
    assert load_config(None, env=base).server.tls_dev is False  # embedded use: plaintext
    assert load_config(None, env={**base, "EDGECL_CLOUD_SERVER_TLS_DEV": "true"}).server.tls_dev
    sample = load_config(ROOT / "cloud" / "edgecl-cloud.toml", env=base)
    assert sample.server.tls_dev is True and not sample.server.tls_cert
    assert sample.metrics.bind == "127.0.0.1" and not sample.metrics.token
    off = load_config(ROOT / "cloud" / "edgecl-cloud.toml",
                      env={**base, "EDGECL_CLOUD_SERVER_TLS_DEV": "false"})
    assert off.server.tls_dev is False
    with pytest.raises(ConfigError, match="tls_dev"):
        load_config(None, env={**base, "EDGECL_CLOUD_SERVER_TLS_DEV": "maybe"})


def test_explicit_certificate_files_win_over_the_dev_certificate(tiny_zoo, tmp_path):
    own = ensure_dev_certificate(tmp_path / "own", dev_hosts("127.0.0.1"))
    srv = start_server(tiny_zoo, tmp_path / "data", server_tls_dev="true",
                       server_tls_cert=str(own.cert), server_tls_key=str(own.key))
    try:
        assert srv.tls and srv.tls_ca_path is None
        assert not (tmp_path / "data" / "tls").exists()
        creds = grpc.ssl_channel_credentials(root_certificates=own.ca.read_bytes())
        assert _register(f"localhost:{srv.port}", creds, "own-1", _sha(srv)).token
    finally:
        srv.stop(grace=1.0)


# -- /metrics access control ------------------------------------------------------------------
def _scrape(port: int, authorization: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_need_the_bearer_token(tls_server):
    port = tls_server.metrics_port
    assert port
    for header in (None, "Bearer wrong-token-0123456789", f"Bearer {TOKEN}x",
                   f"Basic {TOKEN}", TOKEN, "Bearer "):
        code, body = _scrape(port, header)
        assert code == 401 and "edgecl_" not in body, header
    code, body = _scrape(port, f"Bearer {TOKEN}")
    assert code == 200 and "edgecl_rpc_total" in body


def test_metrics_listen_on_loopback_by_default(tls_server):
    assert tls_server.metrics._server.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "10.1.2.3", "metrics.example", ""])
def test_metrics_beyond_loopback_without_a_token_are_refused(bind):
    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY, "EDGECL_CLOUD_METRICS_PORT": "9464",
           "EDGECL_CLOUD_METRICS_BIND": bind}
    with pytest.raises(ConfigError, match="EDGECL_CLOUD_METRICS_TOKEN"):
        load_config(None, env=env)
    with pytest.raises(ConfigError, match="metrics.bind"):
        load_config(ROOT / "cloud" / "edgecl-cloud.toml", env=env)
    assert load_config(None, env={**env, "EDGECL_CLOUD_METRICS_TOKEN": TOKEN}).metrics.token
    assert load_config(None, env={**env, "EDGECL_CLOUD_METRICS_PORT": "-1"})  # off: fine


@pytest.mark.parametrize("bind", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_metrics_on_loopback_need_no_token(bind):
    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY, "EDGECL_CLOUD_METRICS_BIND": bind}
    assert load_config(None, env=env).metrics.bind == bind


def test_a_weak_metrics_token_is_refused():
    for token in ("short", "aaaaaaaaaaaaaaaaaaaa", f" {TOKEN}"):
        with pytest.raises(ConfigError, match="metrics.token"):
            load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                                   "EDGECL_CLOUD_METRICS_TOKEN": token})


def test_metrics_without_a_token_on_ipv6_loopback(tiny_zoo, tmp_path):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = start_server(tiny_zoo, tmp_path, metrics_port="0", metrics_bind="::1")
    try:
        with urllib.request.urlopen(f"http://[::1]:{srv.metrics_port}/metrics",
                                    timeout=5) as resp:
            assert resp.status == 200 and "edgecl_rpc_total" in resp.read().decode()
    finally:
        srv.stop(grace=1.0)
    assert srv.metrics._server is None
