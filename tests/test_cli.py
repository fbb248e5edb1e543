"""The edgecl command in real subprocesses, and the demo / bench entry points on tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from edgecl.bench.device import bench_device
from edgecl.demo import run_demo
from tests.schema_checks import check_json, check_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def edgecl(*args: str, home=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    if home is not None:
        env["EDGECL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "edgecl.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)


def test_export_then_verify_then_tamper(tmp_path):
    out = tmp_path / "bundle"
    real = tmp_path / "real.npy"
    np.save(real, np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    res = edgecl("export", "tests.factories:small_model", "--out", str(out),
                 "--input-shape", "1,28,28", "--mean", "0.13", "--std", "0.31",
                 "--classes", "a,b,c,d,e", "--real-inputs", str(real))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["export_check"]["n_real"] == 4
    assert info["export_check"]["max_abs_diff"]["onnx_vs_torch"] <= 1e-4
    res = edgecl("bundle", "verify", str(out))
    assert res.returncode == 0 and json.loads(res.stdout)["classes"] == list("abcde")
    with open(out / "heads.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    res = edgecl("bundle", "verify", str(out))
    assert res.returncode == 2
    assert "heads.npz: sha256 mismatch" in res.stderr


def test_export_bad_factory_is_a_clear_error(tmp_path):
    res = edgecl("export", "tests.factories", "--out", str(tmp_path / "b"),
                 "--input-shape", "1,28,28")
    assert res.returncode == 2 and "package.module:factory" in res.stderr


def test_zoo_build_json_uses_cache(tiny_zoo):
    home = tiny_zoo.path.parent.parent
    res = edgecl("zoo", "build", "--variant", "tiny", "--json", home=home)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["recipe_digest"] == tiny_zoo.report["recipe_digest"]
    assert report["student"]["clean_acc"] == tiny_zoo.report["student"]["clean_acc"]


def test_demo_runs_a_fleet_and_writes_the_report(tiny_zoo, tmp_path):
    lines: list[str] = []
    home = tiny_zoo.path.parent.parent
    assert run_demo(variant="tiny", home=str(home), report_dir=str(tmp_path), out=lines.append,
                    devices=2, steps=12, pace=60.0) == 0
    text = "\n".join(lines)
    for strategy in ("source", "device", "cloud", "cloud+device"):
        assert f"\n{strategy} " in text
    assert "clean" in text and "cloud vs source:" in text
    assert (tmp_path / "index.html").exists() and (tmp_path / "accuracy_over_time.png").exists()


def test_bench_device_reports_every_key(tiny_zoo):
    home = tiny_zoo.path.parent.parent
    result = bench_device(calls=5, warmup=2, zoo_variant="tiny", home=str(home), progress=False)
    data = check_result(result, ("machine",), ("torch_reference",), ("tiny",), ("edge",),
                        ("tiny", "ood", "msp"))
    for m in ("tiny", "edge"):
        for key in ("sdk_ms_b1", "ort_ms_b1", "torch_ms_b1", "sdk_ms_b32", "ort_ms_b32",
                    "torch_ms_b32", "overhead_b1", "overhead_b32", "added_us_b1"):
            assert np.isfinite(data[m][key]), (m, key)
        model = getattr(result, m)
        assert model.sdk_ms_b1 > 0 and model.overhead_b1 > 0.5
        assert set(model.ood) >= {"msp", "vim"}
    assert 10 < result.rss_mb < 2000
    assert result.threads == 1 and result.calls == 5


def test_eval_commands_emit_documented_keys(tiny_zoo, capsys):
    from edgecl.cli import main

    home = str(tiny_zoo.path.parent.parent)
    assert main(["eval", "ood", "--variant", "tiny", "--home", home, "--json",
                 "--detectors", "msp,vim"]) == 0
    ood = json.loads(capsys.readouterr().out)
    check_json("eval-ood", ood, ("detectors", "vim", "novel_classes"))
    assert 0.0 <= ood["detectors"]["vim"]["novel_classes"]["auroc"] <= 1.0
    assert 0.0 <= ood["detectors"]["msp"]["mean_auroc"] <= 1.0
    assert main(["eval", "drift", "--variant", "tiny", "--home", home, "--json",
                 "--severities", "5", "--clean-samples", "1000"]) == 0
    drift = json.loads(capsys.readouterr().out)
    check_json("eval-drift", drift, ("detectors", "ks", "severity_5"))
    assert "median_delay" in drift["detectors"]["ks"]["severity_5"]
    assert main(["eval", "sampling", "--variant", "tiny", "--home", home, "--json"]) == 0
    sampling = json.loads(capsys.readouterr().out)
    check_json("eval-sampling", sampling, ("policies", "random"))
    assert sampling["policies"]["uncertainty"]["selected_fraction"] <= 0.05 + 1e-9
    assert 0.0 <= sampling["score_error_auroc"] <= 1.0
