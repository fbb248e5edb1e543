"""The reference OOD benchmark on a zoo: every detector against shifts and novel classes.

Detectors are fitted on the student's features and logits for the calibration split
(known classes). In-distribution (ID) data is the clean test split (known classes); each OOD
set is either one corruption at ``severity`` applied to those same test images (seeded) or
``novel_classes``: the clean test images of the classes the student never saw.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.eval.results import OodDetectorResult, OodResult, OodSetResult
from edgecl.ood import auroc, create_detector, fpr_at_tpr, list_detectors

NOVEL = "novel_classes"
CONVENTION = ("OOD is the positive class and a higher score means more out-of-distribution; "
              "auroc = P(score_ood > score_id) + 0.5 P(tie); fpr95 = fraction of OOD samples "
              "accepted as ID (score <= t) at the threshold t that accepts 95% of the ID "
              "test samples; mean_auroc = mean over all OOD sets; thresholds are fitted on the "
              "calibration split (accepting 95% of it)")
_BATCH = 512


def _outputs(rt: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = [], []
    for start in range(0, images.shape[0], _BATCH):
        pred = rt.predict(images[start:start + _BATCH], return_features=True)
        feats.append(pred.features)
        logits.append(pred.logits)
    return np.concatenate(feats), np.concatenate(logits)


def corruption_rng(name: str, seed: int) -> np.random.Generator:
    """The generator a corruption is drawn with: depends on its name, not on the selection."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def evaluate_ood(zoo: Any, *, detectors: Sequence[str] | None = None,
                 corruptions: Sequence[str] | None = None, severity: int = 5,
                 seed: int = 0) -> OodResult:
    """Fit ``detectors`` (default: all registered) on the zoo student and measure them.

    Parameters
    ----------
    zoo : edgecl.zoo.Zoo
        A built zoo; its ``student_bundle`` is run with the device runtime.
    detectors : sequence of str, optional
        Registered detector names (default hyperparameters); default all.
    corruptions : sequence of str, optional
        Corruptions to use as OOD sets; default all of :func:`edgecl.zoo.list_corruptions`.
        ``novel_classes`` is always included.
    severity : int
        Corruption severity, 1 to 5.
    seed : int
        Seed of the corruptions' randomness.

    Returns
    -------
    OodResult
        ``convention``, ``id``, ``ood_sets``, ``severity``, ``seed``, ``encoder_sha256``,
        ``detectors.<name>.<ood_set>.auroc`` / ``.fpr95``, ``detectors.<name>.mean_auroc``,
        ``thresholds.<name>`` (fitted on calibration) and ``samples`` (counts per split);
        its JSON matches ``edgecl/schemas/eval-ood.schema.json``.
    """
    from edgecl.device import DeviceRuntime
    from edgecl.zoo import KNOWN_CLASSES, NOVEL_CLASSES, corrupt, list_corruptions, load_mnist

    names = list_detectors() if detectors is None else list(detectors)
    dets = {name: create_detector(name) for name in names}  # unknown names fail early
    if not dets:
        raise ConfigError("no detectors to evaluate")
    shifts = list_corruptions() if corruptions is None else list(corruptions)
    unknown = sorted(set(shifts) - set(list_corruptions()))
    if unknown:
        raise ConfigError(f"unknown corruptions {unknown}; valid: {list_corruptions()}")
    if NOVEL in shifts or len(set(shifts)) != len(shifts):
        raise ConfigError(f"corruptions must be distinct corruption names, got {shifts}")

    rt = DeviceRuntime.open(zoo.student_bundle)
    head = rt.state.head
    data = load_mnist()
    calibration = data.calibration.only(KNOWN_CLASSES)
    clean = data.test.only(KNOWN_CLASSES)
    cal_f, cal_z = _outputs(rt, calibration.images)
    id_f, id_z = _outputs(rt, clean.images)
    ood: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in shifts:
        images = corrupt(clean.images, name, severity, corruption_rng(name, seed))
        ood[name] = _outputs(rt, images)
    ood[NOVEL] = _outputs(rt, data.test.only(NOVEL_CLASSES).images)

    results: dict[str, OodDetectorResult] = {}
    thresholds: dict[str, float] = {}
    for name, det in dets.items():
        det.fit(cal_f, cal_z, calibration.labels, head=head)
        thresholds[name] = float(det.threshold)  # type: ignore[arg-type]
        id_scores = det.score(id_f, id_z)
        per_set: dict[str, OodSetResult] = {}
        for set_name, (f, z) in ood.items():
            scores = det.score(f, z)
            per_set[set_name] = OodSetResult(auroc=auroc(id_scores, scores),
                                             fpr95=fpr_at_tpr(id_scores, scores, 0.95))
        results[name] = OodDetectorResult(
            sets=per_set, mean_auroc=float(np.mean([v.auroc for v in per_set.values()])))
    return OodResult(
        convention=CONVENTION,
        id=f"clean test split, {len(clean)} samples of the known classes "
           f"{list(KNOWN_CLASSES)}",
        ood_sets=list(ood),
        severity=severity,
        seed=seed,
        encoder_sha256=rt.bundle.encoder_sha256,
        detectors=results,
        thresholds=thresholds,
        samples={"calibration": len(calibration), "id": len(clean),
                 **{k: int(v[0].shape[0]) for k, v in ood.items()}},
    )
