"""``edgecl zoo build``: train, export, evaluate and cache the reference models."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import require
from edgecl._home import default_home
from edgecl.bundle import export_bundle
from edgecl.zoo.corruptions import corrupt, list_corruptions
from edgecl.zoo.data import CLASS_NAMES, KNOWN_CLASSES, NUM_CLASSES, Split, load_mnist
from edgecl.zoo.recipe import ZooRecipe, get_recipe

STUDENT_DIR = "student"
TEACHER_PT2 = "teacher.pt2"
REPORT = "report.json"
FLOORS = {"student_clean": 0.95, "teacher_clean": 0.95, "teacher_trained": 0.80,
          "teacher_held_out": 0.65}


@dataclass(frozen=True)
class Zoo:
    """A built zoo on disk: the student bundle, the teacher program and the report."""

    path: Path
    report: dict[str, Any]

    @property
    def student_bundle(self) -> Path:
        """Bundle directory of the student (what devices run)."""
        return self.path / STUDENT_DIR

    @property
    def teacher_pt2(self) -> Path:
        """torch.export program of the teacher: images ``(N,1,28,28)`` -> logits over 10 digits."""
        return self.path / TEACHER_PT2

    @property
    def held_out(self) -> list[str]:
        """Corruptions the teacher never trained on."""
        return list(self.report["teacher"]["held_out"])

    def load_teacher(self) -> Any:
        """The teacher as a callable torch module (needs ``edgecl[cloud]``)."""
        import torch

        return torch.export.load(str(self.teacher_pt2)).module()

    def floor_failures(self) -> list[str]:
        """Floors from the recipe that this build misses (empty when all are met)."""
        return floor_failures(self.report)


def zoo_dir(recipe: ZooRecipe, home: Path | None = None) -> Path:
    """Cache folder of a recipe: ``<home>/zoo/<variant>-<digest>``."""
    return (home or default_home()) / "zoo" / f"{recipe.variant}-{recipe.digest()}"


def build_zoo(variant: str = "full", *, home: str | os.PathLike[str] | None = None,
              force: bool = False, progress: bool = True, **overrides: Any) -> Zoo:
    """Build (or reuse the cached) zoo for ``variant``; rebuilds only when the recipe changes."""
    recipe = get_recipe(variant, **overrides)
    target = zoo_dir(recipe, Path(home) if home is not None else None)
    if (target / REPORT).is_file() and not force:
        return Zoo(target, json.loads((target / REPORT).read_text()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        report = _build_into(tmp, recipe, progress)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Zoo(target, report)


def _build_into(out: Path, recipe: ZooRecipe, show_progress: bool) -> dict[str, Any]:
    require("torch", "zoo")
    from edgecl.zoo.train import deterministic_torch

    started = time.perf_counter()
    with deterministic_torch(recipe.threads):
        report = _train_and_evaluate(out, recipe, show_progress)
    report["build_seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = _machine(recipe.threads)
    report["floors"] = {"thresholds": FLOORS, "failures": floor_failures(report)}
    (out / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _train_and_evaluate(out: Path, recipe: ZooRecipe, show_progress: bool) -> dict[str, Any]:
    """Train and export both models into ``out``; the report without timing and machine."""
    tqdm = require("tqdm.auto", "zoo").tqdm  # type: ignore[attr-defined]

    from edgecl.zoo import train as tr
    from edgecl.zoo.models import count_parameters

    splits = load_mnist(recipe.seed)
    full = _fraction(splits.train, recipe.train_fraction)
    student_train = full.only(KNOWN_CLASSES)
    total = (len(full) * recipe.teacher_aug_copies + tr.student_passes(recipe, len(student_train))
             + tr.teacher_passes(recipe, len(full)))
    with tqdm(total=total, desc=f"zoo build ({recipe.variant})", unit="img",
              disable=not show_progress, leave=False) as bar:
        bar.set_postfix_str("student")
        encoder, head = tr.train_student(student_train, len(KNOWN_CLASSES), recipe, bar.update)
        calib = splits.calibration.only(KNOWN_CLASSES)
        export_bundle(encoder, head, calib.images[:1], out / STUDENT_DIR,
                      class_names=[CLASS_NAMES[c] for c in KNOWN_CLASSES],
                      real_inputs=calib.images[:64], name="zoo-student",
                      extra={"zoo_recipe": recipe.digest(), "trained_on": "clean",
                             "novel_classes": [c for c in range(NUM_CLASSES)
                                               if c not in KNOWN_CLASSES]})
        calibrate_student(out / STUDENT_DIR, calib.images, calib.labels,
                          threads=recipe.threads)
        bar.set_postfix_str("teacher augmentation")
        pool = tr.augmentation_pool(full, recipe, bar.update)
        bar.set_postfix_str("teacher")
        teacher = tr.train_teacher(full, pool, NUM_CLASSES, recipe, bar.update)
    _save_teacher(teacher, out / TEACHER_PT2)
    if show_progress:
        print("zoo build: evaluating ...", flush=True)
    report = _evaluate(out, teacher, splits.test, recipe)
    report["params"] = {"student": count_parameters(encoder) + count_parameters(head),
                        "teacher": count_parameters(teacher)}
    report["params"]["ratio"] = report["params"]["teacher"] / report["params"]["student"]
    report["recipe"] = recipe.to_dict()
    report["recipe_digest"] = recipe.digest()
    return report


def _machine(threads: int) -> dict[str, Any]:
    """Where the zoo was built: equal recipes give identical figures only where these match."""
    import torch

    versions = {}
    for dist in ("torch", "numpy", "scipy", "onnxruntime", "pillow"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "versions": versions}


def _fraction(split: Split, fraction: float) -> Split:
    return split if fraction >= 1.0 else split.take(max(10, int(len(split) * fraction)))


def calibrate_student(bundle_dir: Path, images: np.ndarray, labels: np.ndarray, *,
                      threads: int = 1) -> None:
    """Fit every OOD detector on the bundle encoder's features for in-distribution
    ``images`` and store them (with the feature statistics) in the bundle; the encoder runs
    on ``threads`` onnxruntime threads (fixed, so the fit does not depend on the machine)."""
    from edgecl.device import DeviceRuntime
    from edgecl.ood import calibrate_bundle

    runtime = DeviceRuntime.open(bundle_dir, ood=None, threads=threads)
    calibrate_bundle(bundle_dir, runtime.encode(images, batch=256), labels)


def _save_teacher(teacher: Any, path: Path) -> None:
    import torch

    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(teacher.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def _evaluate(out: Path, teacher: Any, test: Split, recipe: ZooRecipe) -> dict[str, Any]:
    from edgecl.device import DeviceRuntime
    from edgecl.zoo.train import torch_accuracy

    runtime = DeviceRuntime.open(out / STUDENT_DIR, threads=recipe.threads)
    known = np.isin(test.labels, KNOWN_CLASSES)

    def student_acc(images: np.ndarray) -> float:
        preds = np.concatenate([runtime.predict(images[known][s:s + 500]).labels
                                for s in range(0, int(known.sum()), 500)])
        return float((preds == test.labels[known]).mean())

    student = {"clean_acc": student_acc(test.images), "corruptions": {}}
    teach = {"clean_acc": torch_accuracy(teacher, test.images, test.labels), "corruptions": {},
             "held_out": list(recipe.teacher_held_out)}
    for i, name in enumerate(list_corruptions()):
        shifted = corrupt(test.images, name, recipe.eval_severity, 1000 + i)
        student["corruptions"][name] = student_acc(shifted)
        teach["corruptions"][name] = torch_accuracy(teacher, shifted, test.labels)
    trained = [n for n in teach["corruptions"] if n not in recipe.teacher_held_out]
    teach["trained"] = trained
    teach["mean_trained"] = float(np.mean([teach["corruptions"][n] for n in trained]))
    teach["mean_held_out"] = float(np.mean([teach["corruptions"][n]
                                            for n in recipe.teacher_held_out]))
    student["mean_corrupted"] = float(np.mean(list(student["corruptions"].values())))
    return {"student": student, "teacher": teach, "eval_severity": recipe.eval_severity,
            "test_samples": {"student": int(known.sum()), "teacher": len(test)}}


def floor_failures(report: dict[str, Any]) -> list[str]:
    """Human-readable list of the floors a zoo report misses."""
    got = {"student_clean": report["student"]["clean_acc"],
           "teacher_clean": report["teacher"]["clean_acc"],
           "teacher_trained": report["teacher"]["mean_trained"],
           "teacher_held_out": report["teacher"]["mean_held_out"]}
    fails = [f"{k} = {got[k]:.3f} < {v}" for k, v in FLOORS.items() if got[k] < v]
    if report.get("params", {}).get("student", 0) > 100_000:
        fails.append("student has more than 100k parameters")
    if report.get("params", {}).get("ratio", 10) < 10:
        fails.append("teacher has fewer than 10x the student's parameters")
    return fails
