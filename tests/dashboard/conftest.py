"""A real service with its dashboard on loopback, real devices reporting to it, and a
staged rollout under way (so there is something to pause)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.cloud import AdminClient, RolloutPolicy
from edgecl.wire import UpdatePayload
from tests.cloud.conftest import KEY, start_server, wait_for
from tests.fleet_devices import Device

OPERATOR = "olga-operator-token-0123456789ab"
READER = "rita-read-only-token-0123456789ab"
GROUP = "line-1"
#: A device whose labels (keys and values) carry markup and script: the pages must show
#: them as text (ids and groups are limited to [A-Za-z0-9._:-] by Register).
HOSTILE_ID = "cam-hostile"
HOSTILE_LABELS = {"site": "<script>window.__pwned=2</script>",
                  "model": '"><img src=x onerror=window.__pwned=3>',
                  '<b onmouseover="window.__pwned=4">k</b>': "<i>v</i>"}


@dataclass
class DashboardFleet:
    server: Any
    devices: list[Device]
    url: str
    admin: AdminClient


def http(fleet_or_url: Any, path: str, *, body: Any = None, cookie: str = "",
         headers: dict[str, str] | None = None, method: str | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request to the dashboard: ``(status, JSON body, headers)``."""
    base = fleet_or_url if isinstance(fleet_or_url, str) else fleet_or_url.url
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if cookie:
        request.add_header("Cookie", cookie)
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, payload, got = exc.code, exc.read(), dict(exc.headers)
    try:
        parsed = json.loads(payload) if payload else {}
    except ValueError:
        parsed = {"_text": payload.decode("utf-8", "replace")}
    return status, parsed, got


def login(fleet_or_url: Any, token: str) -> tuple[str, str]:
    """``(cookie header, csrf token)`` of a fresh login."""
    status, body, headers = http(fleet_or_url, "/api/login", body={"token": token})
    assert status == 200, body
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    return cookie, body["csrf"]


def publish(server: Any, device: Device, version: int) -> int:
    """A small, harmless head change for the group, as version ``version``."""
    sha = next(iter(server.bundles))
    rng = np.random.default_rng(version)
    weight = np.asarray(device.rt.state.head.weight, np.float32)
    bias = np.asarray(device.rt.state.head.bias, np.float32)
    payload = UpdatePayload(version, version - 1, sha, group=GROUP,
                            parts={"head.weight": weight + rng.normal(0, 1e-3, weight.shape)
                                   .astype(np.float32), "head.bias": bias},
                            metrics={"candidate_agreement": 0.9})
    return server.publish_update(GROUP, server.signer.sign(payload))


def register_hostile(server: Any) -> None:
    stub = pb_grpc.EdgeCloudStub(grpc.insecure_channel(server.target))
    stub.Register(pb.RegisterRequest(device_id=HOSTILE_ID, enrollment_key=KEY,
                                     encoder_sha256=next(iter(server.bundles)),
                                     group="yard", labels=HOSTILE_LABELS),
                  timeout=10)


@pytest.fixture(scope="module")
def fleet(tiny_zoo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    server = start_server(tiny_zoo, tmp / "cloud", learning_group_by="group",
                          admin_operators=f"olga:operator:{OPERATOR},rita:read:{READER}",
                          dashboard_port="0", dashboard_refresh_s="0.5")
    devices = [Device(tiny_zoo.student_bundle, server.target, server.signer.public_key,
                      f"arm-{i:02d}", tmp, GROUP) for i in range(4)]
    admin = AdminClient(server.target, OPERATOR)
    try:
        for d in devices:
            d.client.register()
            d.client.start()
            d.predict()
            d.reporter.report_now()
        for d in devices:  # uploads in two drift segments (a domain change)
            x = d.rt.bundle.probe_inputs()
            for i in range(24):
                d.outbox.put_sync(f"{d.id}-{i}", {"image": x[i % len(x)]}, priority=1.0,
                                  meta={"segment": i // 12})
            d.client.upload_now()
        register_hostile(server)
        # v1 to everyone, then v2 staged: its canary (1 of 4) takes it, the rest wait
        publish(server, devices[0], 1)
        wait_for(lambda: all(d.version == 1 for d in devices), what="v1 everywhere")
        for d in devices:
            d.predict()
            d.reporter.report_now()
        admin.set_rollout_policy(GROUP, RolloutPolicy(mode="staged", canary_share=0.25,
                                                      wave_interval_s=3600.0))
        publish(server, devices[0], 2)
        wait_for(lambda: sum(d.version == 2 for d in devices) == 1, what="the v2 canary")
        for _ in range(6):  # a few report rounds: a time series to plot
            for d in devices:
                d.predict()
                d.reporter.report_now()
            time.sleep(0.2)
        yield DashboardFleet(server, devices, server.dashboard.url, admin)
    finally:
        admin.close()
        for d in devices:
            d.close()
        server.stop(grace=1.0)
