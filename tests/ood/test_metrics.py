"""AUROC and FPR@95TPR against brute-force pairwise computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import ConfigError, InvalidInput
from edgecl.ood import auroc, fpr_at_tpr


def auroc_pairwise(ids, oods):
    """P(ood > id) + 0.5 P(ood == id) over all pairs."""
    ids, oods = np.asarray(ids, float)[:, None], np.asarray(oods, float)[None, :]
    return float(np.mean((oods > ids) + 0.5 * (oods == ids)))


def fpr_brute(ids, oods, tpr=0.95):
    """Try every ID score as threshold; keep the smallest that accepts >= tpr of ID."""
    ids, oods = np.asarray(ids, float), np.asarray(oods, float)
    t = min(x for x in ids if np.mean(ids <= x) >= tpr)
    return float(np.mean(oods <= t))


def test_against_pairwise_and_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, m = rng.integers(1, 300, size=2)
        if trial % 2:  # coarse integer scores: many ties within and across the two sets
            ids, oods = rng.integers(0, 6, n).astype(float), rng.integers(2, 8, m).astype(float)
        else:
            ids, oods = rng.normal(size=n), rng.normal(0.7, 1.3, size=m)
        ours = auroc(ids, oods)
        assert ours == pytest.approx(auroc_pairwise(ids, oods), abs=1e-12)
        labels = np.r_[np.zeros(n), np.ones(m)]  # OOD is the positive class
        if 0 < labels.sum() < labels.size:
            assert ours == pytest.approx(
                sklearn_metrics.roc_auc_score(labels, np.r_[ids, oods]), abs=1e-12)
        for tpr in (0.95, 0.5, 1.0):
            assert fpr_at_tpr(ids, oods, tpr) == fpr_brute(ids, oods, tpr)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=40),
       st.lists(st.integers(-5, 5), min_size=1, max_size=40))
def test_property_matches_pairwise(ids, oods):
    assert auroc(ids, oods) == pytest.approx(auroc_pairwise(ids, oods), abs=1e-12)
    assert fpr_at_tpr(ids, oods) == fpr_brute(ids, oods)
    assert auroc(oods, ids) == pytest.approx(1.0 - auroc(ids, oods), abs=1e-12)


def test_extremes_and_conventions():
    ids, oods = np.arange(100.0), np.arange(100.0) + 1000.0
    assert auroc(ids, oods) == 1.0 and fpr_at_tpr(ids, oods) == 0.0
    assert auroc(oods, ids) == 0.0 and fpr_at_tpr(oods, ids) == 1.0
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    # threshold accepting 95 of 100 ID scores is 94: OOD scores 94 (tie) and below count
    assert fpr_at_tpr(np.arange(100.0), [93.0, 94.0, 94.5, 300.0]) == 0.5


def test_bad_inputs():
    for bad in ([], [1.0, np.nan], [[1.0, 2.0]], ["a"]):
        with pytest.raises(InvalidInput):
            auroc(bad, [1.0])
        with pytest.raises(InvalidInput):
            fpr_at_tpr([1.0], bad)
    with pytest.raises(ConfigError, match="tpr"):
        fpr_at_tpr([1.0], [2.0], tpr=0.0)
