"""evaluate_ood on the tiny zoo: documented keys, values in [0, 1], its JSON Schema."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.eval import evaluate_ood
from tests.schema_checks import check_result


def test_evaluate_ood_keys_and_ranges(tiny_zoo):
    result = evaluate_ood(tiny_zoo, detectors=["msp", "mahalanobis", "knn"],
                          corruptions=["gaussian_noise", "rotate"], severity=5, seed=0)
    report = check_result(result, ("detectors", "msp", "rotate"))
    assert "positive" in result.convention and "fpr95" in result.convention
    assert result.id.startswith("clean test split, 800 samples")
    assert result.ood_sets == ["gaussian_noise", "rotate", "novel_classes"]
    assert result.samples == {"calibration": 400, "id": 800, "gaussian_noise": 800,
                              "rotate": 800, "novel_classes": 200}
    assert set(result.detectors) == {"msp", "mahalanobis", "knn"}
    for name, per_set in report["detectors"].items():
        assert set(per_set) == {"gaussian_noise", "rotate", "novel_classes", "mean_auroc"}
        aurocs = []
        for ood_set in result.ood_sets:
            assert set(per_set[ood_set]) == {"auroc", "fpr95"}
            for value in per_set[ood_set].values():
                assert isinstance(value, float) and 0.0 <= value <= 1.0
            aurocs.append(per_set[ood_set]["auroc"])
        assert result.detectors[name].mean_auroc == pytest.approx(np.mean(aurocs))
        assert np.isfinite(result.thresholds[name])
    assert result.detectors["knn"].sets["novel_classes"].auroc > 0.6


def test_evaluate_ood_refuses_unknown_names(tiny_zoo):
    with pytest.raises(ConfigError, match="unknown detector"):
        evaluate_ood(tiny_zoo, detectors=["nope"])
    with pytest.raises(ConfigError, match="unknown corruptions"):
        evaluate_ood(tiny_zoo, detectors=["msp"], corruptions=["nope"])
