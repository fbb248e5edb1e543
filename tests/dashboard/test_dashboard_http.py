"""The dashboard over HTTP against a real service and real devices: logins, roles, CSRF,
bad input, and that what a page does is what the admin API then reports."""

from __future__ import annotations

import time

from tests.cloud.conftest import start_server
from tests.dashboard.conftest import (
    GROUP,
    HOSTILE_ID,
    OPERATOR,
    READER,
    http,
    login,
)


def test_every_api_call_needs_a_login(fleet):
    for path in ("/api/me", "/api/overview", "/api/rollouts", "/api/service",
                 f"/api/device?id={HOSTILE_ID}"):
        status, body, _ = http(fleet, path)
        assert status == 401, (path, status)
        assert "log in" in body["error"]
    status, _, _ = http(fleet, "/api/rollout/pause", body={"target": GROUP})
    assert status == 401
    assert fleet.admin.rollout(GROUP)["state"] == "rolling"
    status, body, _ = http(fleet, "/api/login", body={"token": "not-a-token-" + "x" * 20})
    assert status == 401 and "operator token" in body["error"]


def test_forged_tampered_and_logged_out_sessions_get_401(fleet):
    cookie, _ = login(fleet, READER)
    assert http(fleet, "/api/me", cookie=cookie)[0] == 200
    name, value = cookie.split("=", 1)
    payload, mac = value.split(".")
    forged = [f"{name}={payload}.{'A' * len(mac)}",  # a made-up signature
              f"{name}={payload[:-2]}xx.{mac}",  # a changed payload
              f"{name}=garbage", f"{name}=" + "a." * 600]
    for bad in forged:
        assert http(fleet, "/api/overview", cookie=bad)[0] == 401, bad
    # a reader cannot turn its cookie into an operator's: the role is signed
    import base64
    import json

    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["r"] = "operator"
    raised = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    assert http(fleet, "/api/overview", cookie=f"{name}={raised}.{mac}")[0] == 401
    assert http(fleet, "/api/logout", body={}, cookie=cookie)[0] == 200
    assert http(fleet, "/api/overview", cookie=cookie)[0] == 401


def test_a_session_expires(tiny_zoo, tmp_path):
    server = start_server(tiny_zoo, tmp_path, dashboard_port="0",
                          dashboard_session_ttl_s="1.0",
                          admin_operators=f"rita:read:{READER}")
    try:
        url = server.dashboard.url
        status, body, headers = http(url, "/api/login", body={"token": READER})
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert http(url, "/api/me", cookie=cookie)[0] == 200
        time.sleep(1.2)
        status, body, _ = http(url, "/api/me", cookie=cookie)
        assert status == 401 and "expired" in body["error"]
    finally:
        server.stop(grace=1.0)


def test_a_reader_sees_but_cannot_change_anything(fleet):
    cookie, csrf = login(fleet, READER)
    status, overview, _ = http(fleet, "/api/overview", cookie=cookie)
    assert status == 200
    ids = {d["device_id"] for d in overview["devices"]}
    assert {d.id for d in fleet.devices} | {HOSTILE_ID} == ids
    for action in ("pause", "abort", "resume"):
        status, body, _ = http(fleet, f"/api/rollout/{action}", body={"target": GROUP},
                               cookie=cookie, headers={"X-Edgecl-Csrf": csrf})
        assert status == 403 and "operator" in body["error"], (action, status, body)
    status, _, _ = http(fleet, "/api/rollout/rollback", body={"target": GROUP, "to_version": 0},
                        cookie=cookie, headers={"X-Edgecl-Csrf": csrf})
    assert status == 403
    assert fleet.admin.rollout(GROUP)["state"] == "rolling"
    assert fleet.server.registry.latest_version(GROUP) == 2


def test_mutations_need_the_csrf_header_and_json(fleet):
    cookie, csrf = login(fleet, OPERATOR)
    status, body, _ = http(fleet, "/api/rollout/pause", body={"target": GROUP}, cookie=cookie)
    assert status == 403 and "Csrf" in body["error"]
    status, _, _ = http(fleet, "/api/rollout/pause", body={"target": GROUP}, cookie=cookie,
                        headers={"X-Edgecl-Csrf": csrf[:-1] + "x"})
    assert status == 403
    # a form post (what a cross-site page can send without CORS) is refused
    status, _, _ = http(fleet, "/api/rollout/pause", raw=b"target=line-1", cookie=cookie,
                        headers={"X-Edgecl-Csrf": csrf,
                                 "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    assert fleet.admin.rollout(GROUP)["state"] == "rolling"


def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(fleet):
    cookie, csrf = login(fleet, OPERATOR)
    h = {"X-Edgecl-Csrf": csrf}
    cases = [
        ("/api/rollout/pause", b"{not json", 400),
        ("/api/rollout/pause", b"[1, 2]", 400),
        ("/api/rollout/pause", b'{"target": 5}', 400),
        ("/api/rollout/pause", b'{"target": "no-such-group"}', 404),
        ("/api/rollout/rollback", b'{"target": "line-1", "to_version": "1"}', 400),
        ("/api/rollout/rollback", b'{"target": "line-1", "to_version": 99}', 400),
        ("/api/rollout/explode", b'{"target": "line-1"}', 400),
        ("/api/rollout/pause", b'{"target": "' + b"x" * 20000 + b'"}', 413),
        ("/api/rollout/pause", b'{"target": "' + b"[" * 5000 + b'"}', 400),
    ]
    for path, raw, expected in cases:
        status, body, _ = http(fleet, path, raw=raw, cookie=cookie, headers=h)
        assert status == expected, (path, raw[:40], status, body)
        assert body.get("error"), body
    assert http(fleet, "/api/device?id=nobody", cookie=cookie)[0] == 404
    assert http(fleet, "/api/device", cookie=cookie)[0] == 400
    assert http(fleet, "/api/nothing", cookie=cookie)[0] == 404
    assert http(fleet, "/../../etc/passwd")[0] == 404
    assert http(fleet, "/static/../_http.py")[0] == 404
    assert http(fleet, "/api/overview", cookie=cookie, method="DELETE")[0] == 405
    assert fleet.admin.rollout(GROUP)["state"] == "rolling"
    assert http(fleet, "/api/overview", cookie=cookie)[0] == 200


def test_logins_are_rate_limited_per_address(tiny_zoo, tmp_path):
    server = start_server(tiny_zoo, tmp_path, dashboard_port="0",
                          admin_operators=f"rita:read:{READER}")
    try:
        url = server.dashboard.url
        codes = [http(url, "/api/login", body={"token": f"guess-{i:04d}-" + "y" * 20})[0]
                 for i in range(14)]
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
        # even the right token waits: guessing cannot be sped up by mixing in a real one
        assert http(url, "/api/login", body={"token": READER})[0] == 429
    finally:
        server.stop(grace=1.0)


def test_pages_show_the_fleet_the_admin_api_reports(fleet):
    cookie, _ = login(fleet, READER)
    _, overview, _ = http(fleet, "/api/overview", cookie=cookie)
    by_id = {d["device_id"]: d for d in overview["devices"]}
    canary = [d for d in fleet.devices if d.version == 2]
    assert len(canary) == 1
    assert by_id[canary[0].id]["served_version"] == 2
    assert all(by_id[d.id]["health"] == "ok" for d in fleet.devices)
    assert by_id[HOSTILE_ID]["health"] == "new"
    _, device, _ = http(fleet, f"/api/device?id={canary[0].id}", cookie=cookie)
    assert [e["version"] for e in device["events"] if e["action"] == "applied"][:2] == [2, 1]
    rated = [r["confidence"] for r in device["series"] if "confidence" in r]
    assert rated and all(0 <= c <= 1 for c in rated)
    assert sum(b["count"] for b in device["uploads"]["buckets"]) == device["device"]["samples"]
    _, rollouts, _ = http(fleet, "/api/rollouts", cookie=cookie)
    line = next(t for t in rollouts["targets"] if t["target"] == GROUP)
    assert line["state"] == "rolling" and line["version"] == 2
    assert line["waves"][0]["devices"] == 1 and line["waves"][0]["applied"] == 1
    assert [u["version"] for u in line["updates"]][:2] == [2, 1]
    assert {r["target"]: r["state"] for r in rollouts["summary"]} == {
        GROUP: "rolling", "yard": "released"}
    _, found, _ = http(fleet, "/api/rollouts?q=yar", cookie=cookie)
    assert [t["target"] for t in found["targets"]] == ["yard"]
    assert len(found["summary"]) == 2
    _, service, _ = http(fleet, "/api/service", cookie=cookie)
    assert service["devices"] == 5
    methods = {r["method"]: r for r in service["rpcs"]}
    assert methods["Register"]["ok"] >= 5 and methods["Report"]["ok"] >= 8
    assert service["history"], "the service's rates are sampled"


def test_beyond_loopback_the_dashboard_needs_tls(tmp_path):
    import pytest

    from edgecl import ConfigError
    from edgecl.cloud import load_config
    from tests.cloud.conftest import cloud_env

    def config(**extra):
        return load_config(None, env=cloud_env(tmp_path, dashboard_port="8080", **extra))

    with pytest.raises(ConfigError, match="plain HTTP"):
        config(dashboard_bind="0.0.0.0", server_tls_dev="false")
    assert config(dashboard_bind="0.0.0.0", server_tls_dev="true").dashboard.bind == "0.0.0.0"
    for bad in ({"dashboard_refresh_s": "0"}, {"dashboard_session_ttl_s": "nan"},
                {"dashboard_session_ttl_s": "-5"}):
        with pytest.raises(ConfigError, match="dashboard"):
            config(**bad)


def test_with_tls_the_dashboard_is_https_and_its_cookie_secure(tiny_zoo, tmp_path):
    import json
    import ssl
    import urllib.error
    import urllib.request

    server = start_server(tiny_zoo, tmp_path, dashboard_port="0", server_tls_dev="true",
                          admin_operators=f"rita:read:{READER}")
    try:
        url = server.dashboard.url
        assert url.startswith("https://")
        context = ssl.create_default_context(cafile=str(server.tls_ca_path))
        request = urllib.request.Request(url + "api/login", method="POST",
                                         data=json.dumps({"token": READER}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # plain HTTP to the HTTPS port gets no page
        try:
            urllib.request.urlopen(url.replace("https://", "http://") + "api/me", timeout=5)
            raise AssertionError("plain HTTP was answered")
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            assert response.status == 200  # and it still serves after the bad request
    finally:
        server.stop(grace=1.0)


def test_a_taken_dashboard_port_fails_the_start_with_a_clear_error(tiny_zoo, tmp_path):
    import socket

    import pytest

    from edgecl import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"dashboard cannot listen on 127.0.0.1:{port}"):
            start_server(tiny_zoo, tmp_path, dashboard_port=str(port))
