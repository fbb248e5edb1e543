"""The device agent as a real process (``edgecl device run``) against a real service:
frames dropped in a directory are predicted and sampled, samples reach the service,
health reports and desired config flow without the app calling anything, an update is
applied, and SIGTERM ends the process cleanly with the outbox flushed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgecl.bundle import load_bundle
from edgecl.cloud import AdminClient, BaseState
from edgecl.device import load_agent_config
from edgecl.wire import UpdatePayload
from tests.cloud.conftest import KEY, start_server, wait_for

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "otto-operator-token-0123456789abc"


def _drop(directory: Path, name: str, array: np.ndarray) -> None:
    """Write a frames file the spool way: under another name, then renamed in."""
    tmp = directory / f".{name}.part"
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(directory / name)




def _config(tmp: Path, srv, bundle: Path, frames: Path) -> Path:
    """The sample device.toml with this test's bundle, server, state and frames."""
    text = (ROOT / "device" / "device.toml").read_text()
    for old, new in (('bundle = ""', f'bundle = "{bundle}"'),
                     ('server = ""', f'server = "{srv.target}"'),
                     ('device_id = ""', 'device_id = "gate-7"'),
                     ('group = ""', 'group = "yard"'),
                     ('public_key = ""', f'public_key = "{srv.signing_key}.pub"'),
                     ('method = "align"', 'method = ""'),
                     ('interval_s = 60', 'interval_s = 1'),
                     ('dir = "~/.local/state/edgecl"', f'dir = "{tmp / "state"}"'),
                     ('path = ""', f'path = "{frames}"'),
                     ('poll_s = 1.0', 'poll_s = 0.1')):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp / "device.toml"
    path.write_text(text)
    return path


def test_the_agent_runs_a_device_and_stops_cleanly_on_sigterm(tiny_zoo, tmp_path):
    srv = start_server(tiny_zoo, tmp_path / "cloud", admin_operators=f"otto:operator:{OPERATOR}")
    frames = tmp_path / "frames"
    frames.mkdir()
    config = _config(tmp_path, srv, tiny_zoo.student_bundle, frames)
    assert load_agent_config(config, env={"EDGECL_DEVICE_ENROLLMENT_KEY": KEY}).server
    env = {**os.environ, "EDGECL_DEVICE_ENROLLMENT_KEY": KEY}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgecl", "device", "run", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        started = json.loads(proc.stdout.readline())
        assert started["device_id"] == "gate-7" and started["source"] == "directory"
        x = load_bundle(tiny_zoo.student_bundle).probe_inputs().astype(np.float32)
        _drop(frames, "000.npy", x[:32])
        (frames / "001.npy").write_bytes(b"not an npy file")  # skipped, moved aside
        _drop(frames, "002.npy", np.zeros((2, 3, 5, 5), np.float32))  # refused: wrong shape
        _drop(frames, "003.npy", x[32:64])
        wait_for(lambda: not any(frames.glob("*.npy")), what="the agent to take the files")
        assert (frames / "rejected" / "001.npy").exists()
        assert sorted(p.name for p in (frames / "processed").iterdir()) == [
            "000.npy", "002.npy", "003.npy"]
        wait_for(lambda: srv.registry.sample_count("gate-7") > 0, what="uploads")
        with AdminClient(srv.target, OPERATOR) as admin:
            wait_for(lambda: admin.device("gate-7")["reports"], what="a report")
            report = admin.device("gate-7")["reports"][0]
            assert report["stats"]["predictions"] >= 0
            # the operator turns the budget up for the group; the agent applies it
            rev = int(admin.set_config({"budget": "0.5"}, group="yard")["revision"])
            wait_for(lambda: int(admin.devices(group="yard")[0]["reported_revision"]) == rev,
                  what="the desired config to be applied and reported")
            listed = admin.devices(group="yard")[0]
            assert listed["reported_config"]["budget"] == "0.5"
            assert listed["reported_config"]["adaptation"] == "off"
        errors = [r for r in srv.registry.reports_of("gate-7", 50)
                  if r[2].get("errors", 0) > 0]
        assert sum(r[2]["errors"] for r in errors) == 2  # the two wrong-shape frames
        # an update for the device is applied and reported
        sha = next(iter(srv.bundles))
        base = BaseState.from_bundle(tiny_zoo.student_bundle)
        payload = UpdatePayload(1, 0, sha, device_id="gate-7",
                                parts={"head.weight": base.head_weight * 1.01,
                                       "head.bias": base.head_bias})
        srv.publish_update("gate-7", srv.signer.sign(payload))
        wait_for(lambda: srv.registry.reports_of("gate-7", 1)[0][1] == 1,
              what="the update to be applied and reported")
        _drop(frames, "004.npy", x[:48])
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop(grace=1.0)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["outbox_left"] == 0 and summary["flushed"], summary
    assert summary["cloud_version"] == 1 and summary["errors"] == 2
    assert summary["config"]["budget"] == "0.5"
    assert summary["uploaded"] == summary["selected"] > 0  # everything selected arrived
