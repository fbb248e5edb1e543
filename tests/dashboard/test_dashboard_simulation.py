"""Watching a simulated fleet: the simulator's services serve the dashboard, and
``--keep-cloud`` keeps one up (a real process) until Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from edgecl.fleet import simulate
from tests.dashboard.conftest import http

TOKEN = "sim-watcher-token-0123456789abcdef"


def _bearer(url, path):
    return http(url, path, headers={"Authorization": f"Bearer {TOKEN}"})


def test_a_simulated_fleet_is_on_its_services_dashboard(tiny_zoo):
    seen = {}

    def on_cloud(strategy, url, target):
        status, overview, _ = _bearer(url, "/api/overview")
        assert status == 200
        seen[strategy] = overview
        seen["service"] = _bearer(url, "/api/service")[1]
        seen["segments"] = [s["segment"] for d in overview["devices"] for s in
                            _bearer(url, f"/api/device?id={d['device_id']}")[1]["uploads"]
                            ["segments"]]
        seen["anonymous"] = http(url, "/api/overview")[0]

    result = simulate(devices=2, steps=8, strategies=("source", "cloud"), variant="tiny",
                      home=str(tiny_zoo.path.parent.parent), progress=False, dashboard=0,
                      operator_token=TOKEN, on_cloud=on_cloud)
    assert set(seen) == {"cloud", "service", "anonymous", "segments"}  # cloud strategies only
    assert seen["segments"] == [0, 0]  # these devices do not watch their inputs
    devices = seen["cloud"]["devices"]
    assert len(devices) == 2 and all(d["samples"] > 0 for d in devices)
    uploaded = sum(d.uploads for d in result.strategies["cloud"].per_device)
    assert sum(d["samples"] for d in devices) == uploaded
    assert {r["method"] for r in seen["service"]["rpcs"]} >= {"Register", "Upload"}
    assert seen["anonymous"] == 401


def test_devices_that_watch_their_inputs_tell_the_service_of_each_new_domain(tiny_zoo):
    segments = []

    def on_cloud(strategy, url, target):
        for d in _bearer(url, "/api/overview")[1]["devices"]:
            page = _bearer(url, f"/api/device?id={d['device_id']}")[1]
            segments.extend(s["segment"] for s in page["uploads"]["segments"])

    simulate(devices=1, steps=60, domains=2, strategies=("cloud",), variant="tiny",
             home=str(tiny_zoo.path.parent.parent), progress=False, dashboard=0,
             operator_token=TOKEN, on_cloud=on_cloud, watch_inputs=True)
    assert segments[0] == 0 and max(segments) >= 1  # a drift segment per change seen


def test_keep_cloud_keeps_the_service_up_until_ctrl_c(tiny_zoo, tmp_path):
    out = tmp_path / "sim.json"
    env = {**os.environ, "EDGECL_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecl", "simulate", "--variant", "tiny", "--home",
         str(tiny_zoo.path.parent.parent), "--devices", "2", "--steps", "8",
         "--strategies", "cloud", "--quiet", "--keep-cloud", "--json", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 240
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            found = re.search(r"stays up until Ctrl-C: dashboard (\S+),", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        assert not out.exists()  # the run waits with its service up
        for _ in range(3):  # still up a while later
            status, overview, _ = _bearer(url, "/api/overview")
            assert status == 200 and len(overview["devices"]) == 2
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert json.loads(out.read_text())["strategies"]["cloud"]
        assert "dashboard login (operator token)" not in proc.stdout.read()  # stderr only
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
