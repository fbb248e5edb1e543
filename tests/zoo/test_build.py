"""Zoo build: artefacts, caching by recipe, determinism, and the floors of the full recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgecl
from edgecl import ConfigError
from edgecl.device import DeviceRuntime
from edgecl.zoo import build_zoo, get_recipe, list_corruptions
from edgecl.zoo.build import FLOORS, floor_failures, zoo_dir


def test_tiny_zoo_artefacts(tiny_zoo):
    report = tiny_zoo.report
    rt = DeviceRuntime.open(tiny_zoo.student_bundle)
    assert rt.class_names == tuple(str(c) for c in range(8))
    assert rt.bundle.manifest.export_check["n_real"] == 64
    assert set(report["student"]["corruptions"]) == set(list_corruptions())
    assert report["params"]["student"] <= 100_000
    assert report["params"]["ratio"] >= 10
    assert report["student"]["clean_acc"] >= 0.80, "even the tiny student must learn"
    teacher = tiny_zoo.load_teacher()
    import torch

    from edgecl.zoo import load_mnist

    test = load_mnist().test
    with torch.no_grad():
        acc = (teacher(torch.from_numpy(test.images[:200].copy())).argmax(1).numpy()
               == test.labels[:200]).mean()
    assert abs(acc - report["teacher"]["clean_acc"]) < 0.1
    assert set(tiny_zoo.held_out).isdisjoint(report["teacher"]["trained"])


def test_cache_reused_and_keyed_by_recipe(tiny_zoo, tmp_path):
    home = tiny_zoo.path.parent.parent
    stamp = os.path.getmtime(tiny_zoo.path / "report.json")
    t0 = time.perf_counter()
    again = build_zoo("tiny", home=home, progress=False)
    assert time.perf_counter() - t0 < 2.0, "a cached zoo must not be retrained"
    assert again.path == tiny_zoo.path
    assert os.path.getmtime(again.path / "report.json") == stamp
    changed = get_recipe("tiny", student_epochs=2)
    assert changed.digest() != get_recipe("tiny").digest()
    assert zoo_dir(changed, home) != tiny_zoo.path


_BUILD_TINY = ("import sys; from edgecl.zoo import build_zoo; "
               "print(build_zoo('tiny', home=sys.argv[1], progress=False).path)")


def _build_in_subprocess(home: Path) -> Path:
    """Build the tiny zoo in a fresh interpreter with another hash seed and thread default."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"}
    root = Path(edgecl.__file__).resolve().parents[1]  # same sources, same traced file paths
    proc = subprocess.run([sys.executable, "-c", _BUILD_TINY, str(home)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def _stable_files(zoo_path: Path) -> dict[str, bytes]:
    """Every file a build writes, without timings and creation times."""
    out = {}
    for path in sorted(p for p in zoo_path.rglob("*") if p.is_file()):
        rel = path.relative_to(zoo_path).as_posix()
        if path.name in ("report.json", "manifest.json"):
            data = json.loads(path.read_text())
            for volatile in ("build_seconds", "created_at", "digest"):
                data.pop(volatile, None)
            out[rel] = json.dumps(data, sort_keys=True).encode()
        else:
            out[rel] = path.read_bytes()
    return out


def test_build_is_bit_identical_across_processes(tiny_zoo, tmp_path):
    """Same recipe, fresh home, another process (PYTHONHASHSEED, thread defaults): every
    model file and every report number is identical."""
    torch = pytest.importorskip("torch")
    other = _build_in_subprocess(tmp_path)
    assert other.name == tiny_zoo.path.name
    a, b = _stable_files(tiny_zoo.path), _stable_files(other)
    assert sorted(a) == sorted(b)
    assert {"teacher.pt2", "student/heads.npz", "student/encoder.onnx"} <= set(a)
    assert [name for name in a if a[name] != b[name]] == []
    report = json.loads((other / "report.json").read_text())
    assert report["machine"]["torch_threads"] == get_recipe("tiny").threads
    teacher_a, teacher_b = (torch.export.load(str(p / "teacher.pt2")).state_dict
                            for p in (tiny_zoo.path, other))
    assert all(torch.equal(teacher_a[k], teacher_b[k]) for k in teacher_a)


def test_build_restores_torch_settings():
    """The build pins threads and deterministic kernels only while it runs, and leaves the
    caller's torch RNG state as it was."""
    torch = pytest.importorskip("torch")
    from edgecl.zoo.train import deterministic_torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    state = torch.random.get_rng_state()
    try:
        with deterministic_torch(3):
            assert torch.get_num_threads() == 3
            assert torch.are_deterministic_algorithms_enabled()
            torch.rand(4)
        assert torch.get_num_threads() == 1
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def test_threads_are_part_of_the_recipe():
    assert get_recipe("tiny", threads=1).digest() != get_recipe("tiny").digest()
    with pytest.raises(ConfigError):
        get_recipe("tiny", threads=0)


def test_floor_failures_reports_misses():
    report = {"student": {"clean_acc": 0.9}, "teacher": {"clean_acc": 0.99, "mean_trained": 0.9,
                                                         "mean_held_out": 0.5},
              "params": {"student": 200_000, "ratio": 3}}
    fails = " ".join(floor_failures(report))
    assert "student_clean" in fails and "teacher_held_out" in fails
    assert "100k" in fails and "10x" in fails and "teacher_clean" not in fails


@pytest.mark.slow
def test_full_zoo_meets_floors():
    """The real recipe (cached under $EDGECL_HOME; about 2 minutes to build on 2 cores)."""
    zoo = build_zoo("full", progress=False)
    r = zoo.report
    assert zoo.floor_failures() == [], json.dumps(r["floors"])
    assert r["student"]["clean_acc"] >= FLOORS["student_clean"]
    assert r["teacher"]["mean_held_out"] >= FLOORS["teacher_held_out"]
    assert len(r["teacher"]["held_out"]) >= 3
    # The student, trained on clean data only, collapses on several shifts.
    assert sum(acc < 0.5 for acc in r["student"]["corruptions"].values()) >= 5
