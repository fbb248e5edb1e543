"""Deployment: config loading, TLS with a self-signed pair, graceful SIGTERM of a real process."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from edgecl import ConfigError
from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.cloud import load_config
from edgecl.wire import WireSample, batch_to_proto
from tests.cloud.conftest import KEY, cloud_env, inputs, register, start_server

ROOT = Path(__file__).resolve().parents[2]


def test_sample_config_loads_and_env_overrides(tmp_path):
    cfg = load_config(ROOT / "cloud" / "edgecl-cloud.toml",
                      env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": "s3cret-enrollment-key",
                           "EDGECL_CLOUD_SERVER_MAX_WORKERS": "3",
                           "EDGECL_CLOUD_LEARNING_PARTS": "prompt,head"})
    assert cfg.auth.enrollment_key == "s3cret-enrollment-key" and cfg.server.max_workers == 3
    assert cfg.learning.parts == ["prompt", "head"] and cfg.metrics.port == 9464
    with pytest.raises(ConfigError, match="enrollment_key"):
        load_config(ROOT / "cloud" / "edgecl-cloud.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nadress = "x"\n')
    with pytest.raises(ConfigError, match="adress"):
        load_config(bad, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY})
    bad.write_text('[server]\nmax_workers = "many"\n')
    with pytest.raises(ConfigError, match="max_workers"):
        load_config(bad, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY})
    with pytest.raises(ConfigError, match="section"):
        load_config(None, env={"EDGECL_CLOUD_NOPE_X": "1", "EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY})
    with pytest.raises(ConfigError, match="max_streams"):
        load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                               "EDGECL_CLOUD_SERVER_MAX_STREAMS": "-1"})
    for bad_registry in ("mysql://x/y", "sqlite://relative.db", "postgresql://host:5432"):
        with pytest.raises(ConfigError, match="storage.registry"):
            load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                                   "EDGECL_CLOUD_STORAGE_REGISTRY": bad_registry})
    with pytest.raises(ConfigError, match="storage.artifacts"):
        load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                               "EDGECL_CLOUD_STORAGE_ARTIFACTS": "/srv/artifacts"})
    with pytest.raises(ConfigError, match="compute.backend"):
        load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                               "EDGECL_CLOUD_COMPUTE_BACKEND": "spark"})
    replicas = load_config(ROOT / "cloud" / "edgecl-replicas.toml", env={
        "EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
        "EDGECL_CLOUD_STORAGE_REGISTRY": "postgresql://edgecl:pw@db:5432/edgecl"})
    assert replicas.compute.backend == "ray" and replicas.storage.registry.startswith(
        "postgresql://")
    with pytest.raises(ConfigError, match="max_workers"):
        load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                               "EDGECL_CLOUD_SERVER_MAX_WORKERS": "1"})
    auto = load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                                  "EDGECL_CLOUD_SERVER_MAX_WORKERS": "8"})
    assert auto.stream_slots == cfg.stream_slots == 10_000  # Subscribe holds no thread
    assert auto.stream_capacity == 7 and cfg.stream_capacity == 3  # threads for Uploads
    assert cfg.limits.max_streams_per_device == 4 and cfg.limits.max_backlog == 20000
    for key, value, match in [("LIMITS_SAMPLE_BURST", "100", "sample_burst"),
                              ("LIMITS_MAX_BACKLOG", "10", "max_backlog"),
                              ("LIMITS_SAMPLES_PER_S", "nan", "samples_per_s"),
                              ("LIMITS_MAX_STREAMS_PER_DEVICE", "0", "max_streams_per_device"),
                              ("LIMITS_MAX_REPORT_KEYS", "-1", "max_report_keys"),
                              ("SERVER_UNARY_WORKERS", "8", "unary_workers")]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY,
                                   "EDGECL_CLOUD_SERVER_MAX_WORKERS": "8",
                                   f"EDGECL_CLOUD_{key}": value})
    bad.write_text("not toml [")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(bad, env={"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": KEY})


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_when_a_certificate_is_configured(tiny_zoo, tmp_path):
    cert, key = _self_signed(tmp_path)
    srv = start_server(tiny_zoo, tmp_path / "data", server_tls_cert=str(cert),
                       server_tls_key=str(key))
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        stub = pb_grpc.EdgeCloudStub(grpc.secure_channel(f"localhost:{srv.port}", creds))
        resp = stub.Register(pb.RegisterRequest(device_id="tls-1", enrollment_key=KEY,
                                                encoder_sha256=next(iter(srv.bundles))),
                             timeout=10)
        assert resp.token
        plain = pb_grpc.EdgeCloudStub(grpc.insecure_channel(srv.target))
        with pytest.raises(grpc.RpcError) as info:
            plain.Register(pb.RegisterRequest(device_id="x", enrollment_key=KEY), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(grace=1.0)


def _spawn(tiny_zoo, data: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **cloud_env(data, server_address=f"127.0.0.1:{port}",
                                      log_format="json")}
    proc = subprocess.Popen([sys.executable, "-m", "edgecl", "serve", "--home",
                             str(tiny_zoo.path.parent.parent)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(proc.stderr.read())
    return proc, json.loads(line)["serving"]


def test_sigterm_during_uploads_stops_gracefully_and_loses_nothing_acknowledged(tiny_zoo,
                                                                              tmp_path):
    from edgecl.bundle import load_bundle

    proc, target = _spawn(tiny_zoo, tmp_path)
    acked: set[str] = set()
    errors: list[grpc.StatusCode] = []
    busy = threading.Event()
    try:
        class Remote:  # register() needs .target and .bundles
            bundles = {load_bundle(tiny_zoo.student_bundle).encoder_sha256: None}

        Remote.target = target
        c = register(Remote, "term-1")

        def uploader() -> None:  # uploads back to back until the server refuses
            for k in range(10_000):
                batches = [batch_to_proto([WireSample(f"t{k}-{j}-{i}", input=x) for i, x in
                                           enumerate(inputs(10, 3 * k + j))])
                           for j in range(3)]
                try:
                    acked.update(c.upload(batches, timeout=30).acked_ids)
                except grpc.RpcError as exc:
                    errors.append(exc.code())
                    return
                if k == 3:
                    busy.set()

        thread = threading.Thread(target=uploader)
        thread.start()
        assert busy.wait(30)
        proc.send_signal(signal.SIGTERM)  # while uploads are in flight
        proc.send_signal(signal.SIGTERM)  # a second signal changes nothing
        assert proc.wait(60) == 0
        thread.join(30)
        logs = [json.loads(line) for line in proc.stderr.read().splitlines() if
                line.startswith("{")]
        assert any(entry["msg"] == "stopped" for entry in logs)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert errors and errors[0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    from edgecl.cloud import Registry

    reg = Registry(tmp_path)
    stored = reg.sample_ids("term-1")
    assert len(acked) >= 120 and acked <= stored  # every acknowledged sample is durable
    stats = reg.sample_stats()
    assert stats["max_label_count"] <= 1  # never twice; what is left is labelled after the
    # next start (a stop does not label the backlog: tests/adversarial/test_flood.py)
    assert not (tmp_path / "registry.sqlite-wal").exists() or \
        (tmp_path / "registry.sqlite-wal").stat().st_size == 0  # WAL checkpointed
