"""Zoo build: artefacts, caching by recipe, determinism, and the floors of the full recipe."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

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


def test_student_training_is_deterministic(tiny_zoo, tmp_path):
    """Same recipe, fresh cache: the exported student head is bit-identical."""
    other = build_zoo("tiny", home=tmp_path, progress=False, teacher_epochs=1,
                      teacher_aug_copies=1)
    a = np.load(tiny_zoo.student_bundle / "heads.npz")
    b = np.load(other.student_bundle / "heads.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


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
