"""evaluate_ood on the tiny zoo: documented keys, values in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.eval import evaluate_ood


def test_evaluate_ood_keys_and_ranges(tiny_zoo):
    report = evaluate_ood(tiny_zoo, detectors=["msp", "mahalanobis", "knn"],
                          corruptions=["gaussian_noise", "rotate"], severity=5, seed=0)
    assert "positive" in report["convention"] and "fpr95" in report["convention"]
    assert report["id"].startswith("clean test split, 800 samples")
    assert report["ood_sets"] == ["gaussian_noise", "rotate", "novel_classes"]
    assert report["samples"] == {"calibration": 400, "id": 800, "gaussian_noise": 800,
                                 "rotate": 800, "novel_classes": 200}
    assert set(report["detectors"]) == {"msp", "mahalanobis", "knn"}
    for name, per_set in report["detectors"].items():
        assert set(per_set) == {"gaussian_noise", "rotate", "novel_classes", "mean_auroc"}
        aurocs = []
        for ood_set in report["ood_sets"]:
            assert set(per_set[ood_set]) == {"auroc", "fpr95"}
            for value in per_set[ood_set].values():
                assert isinstance(value, float) and 0.0 <= value <= 1.0
            aurocs.append(per_set[ood_set]["auroc"])
        assert per_set["mean_auroc"] == pytest.approx(np.mean(aurocs))
        assert np.isfinite(report["thresholds"][name])
    assert report["detectors"]["knn"]["novel_classes"]["auroc"] > 0.6


def test_evaluate_ood_refuses_unknown_names(tiny_zoo):
    with pytest.raises(ConfigError, match="unknown detector"):
        evaluate_ood(tiny_zoo, detectors=["nope"])
    with pytest.raises(ConfigError, match="unknown corruptions"):
        evaluate_ood(tiny_zoo, detectors=["msp"], corruptions=["nope"])
