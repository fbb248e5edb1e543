"""A newcomer's first steps: version and help, the student bundle's path, the sample
cloud config on a fresh cache, and a missing extra named instead of a raw ImportError."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import edgecl
from edgecl import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = ROOT / "cloud" / "edgecl-cloud.toml"


def run_edgecl(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
               pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}\nimport sys\nfrom edgecl.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_version_matches_the_package():
    out = run_edgecl("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"edgecl {edgecl.__version__}"


def test_help_names_every_command_and_every_option_has_help():
    parser = cli.build_parser()
    commands = _subparsers(parser)
    top = [c for c in commands if " " not in c]
    assert set(top) == {"zoo", "export", "bundle", "bench", "eval", "simulate", "serve", "keys",
                        "fleet", "device", "demo"}
    text = parser.format_help()
    assert all(name in text for name in top) and "`" not in text
    undocumented = [f"{cmd} {opt}" for cmd, sub in commands.items() for action in sub._actions
                    if not isinstance(action, argparse._SubParsersAction)
                    and action.dest != "help" and not action.help
                    for opt in (action.option_strings or [action.dest])]
    assert undocumented == []


def test_zoo_build_prints_the_student_bundle_path(tiny_zoo):
    env = {"EDGECL_HOME": str(tiny_zoo.path.parent.parent)}
    only = run_edgecl("zoo", "build", "--variant", "tiny", "--student-path", env=env)
    assert only.returncode == 0, only.stderr
    path = Path(only.stdout.strip())
    assert path.is_absolute() and (path / "manifest.json").is_file()
    full = run_edgecl("zoo", "build", "--variant", "tiny", env=env)
    assert full.stdout.strip().splitlines()[-1] == f"student bundle: {path}"


def test_a_missing_extra_is_named_not_a_traceback(tmp_path):
    """A cloud-only install (no zoo extra) serving the sample config on a fresh cache."""
    block = "import sys\nfor m in ('scipy', 'mlxtend', 'tqdm'):\n    sys.modules[m] = None"
    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": "first-run-enrollment-key",
           "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
           "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_HOME": str(tmp_path)}
    out = run_edgecl("serve", "--config", str(SAMPLE_CONFIG), env=env, pre=block)
    assert out.returncode == 2, out.stderr
    assert "pip install 'edgecl[cloud,zoo]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unexpected_missing_module_names_its_extra(monkeypatch, capsys):
    def needs_matplotlib(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib.pyplot")

    monkeypatch.setattr(cli, "cmd_bundle_verify", needs_matplotlib)
    assert cli.main(["bundle", "verify", "x"]) == 2
    assert "pip install 'edgecl[sim]'" in capsys.readouterr().err
    monkeypatch.setattr(cli, "cmd_bundle_verify", lambda args: __import__("no_such_module_x"))
    with pytest.raises(ModuleNotFoundError):  # not an extra of ours: a real bug, not hidden
        cli.main(["bundle", "verify", "x"])


def test_serve_with_the_sample_config_keeps_its_data_outside_the_checkout(tiny_zoo, tmp_path):
    home = tmp_path / "home"
    (home / "zoo").mkdir(parents=True)
    (home / "zoo" / tiny_zoo.path.name).symlink_to(tiny_zoo.path)
    env = {**os.environ, "EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": "first-run-enrollment-key",
           "EDGECL_HOME": str(home),
           "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0", "EDGECL_CLOUD_METRICS_PORT": "-1",
           "EDGECL_CLOUD_TEACHER_ZOO": "tiny", "EDGECL_CLOUD_LOG_FORMAT": "text"}
    before = set(os.listdir(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edgecl", "serve", "--config",
                             str(SAMPLE_CONFIG)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert info["storage"] == str((home / "cloud").resolve())
    assert Path(info["public_key"]).is_absolute() and Path(info["public_key"]).is_file()
    steps = [m for m in ("opening the registry", "loading bundles", "loading the teacher",
                         "signing key ready", "serving") if m in err]
    assert len(steps) == 5, err
    assert set(os.listdir(ROOT)) == before


def test_device_app_finds_the_cached_zoo_student_or_says_how_to_get_one(tiny_zoo, tmp_path):
    app = [sys.executable, str(ROOT / "device" / "app.py"), "--frames", "5"]
    empty = subprocess.run(app, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                           env={**os.environ, "EDGECL_HOME": str(tmp_path)})
    assert empty.returncode == 2 and "--student-path" in empty.stderr
    found = subprocess.run(app, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                           env={**os.environ, "EDGECL_HOME": str(tiny_zoo.path.parent.parent)})
    assert found.returncode == 0, found.stderr
    assert f"bundle: {tiny_zoo.student_bundle}" in found.stdout and "5 frames" in found.stdout
