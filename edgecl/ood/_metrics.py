"""Detection metrics: AUROC and FPR at 95% TPR (numpy only).

Convention: scores are higher for "more out-of-distribution"; a sample is accepted as
in-distribution (ID) when ``score <= threshold``.
"""

from __future__ import annotations

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.ood._base import check_scores, threshold_at


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve, OOD being the positive class (higher score = more OOD).

    Equal to ``P(s_ood > s_id) + 0.5 P(s_ood == s_id)`` over all ID/OOD pairs, computed from
    the Mann-Whitney rank sum with mid-ranks for ties: ``O(n log n)``, no pairwise matrix.
    1.0 means every OOD sample scores above every ID sample, 0.5 is chance.

    Examples
    --------
    >>> auroc([0.1, 0.2, 0.3], [0.25, 0.9])
    0.8333333333333334
    """
    ids = check_scores(id_scores, "id_scores")
    oods = check_scores(ood_scores, "ood_scores")
    pooled = np.concatenate([ids, oods])
    order = np.argsort(pooled, kind="mergesort")
    _, first, counts = np.unique(pooled[order], return_index=True, return_counts=True)
    ranks = np.empty(pooled.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based mid-ranks
    n_id, n_ood = ids.size, oods.size
    u = ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u / (n_id * n_ood))


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """FPR@``tpr``: the fraction of OOD samples accepted as ID at the ID-calibrated threshold.

    The threshold is the smallest ID score ``t`` with at least ``tpr`` of the ID scores
    ``<= t`` (the rule :meth:`Detector.fit <edgecl.ood.Detector.fit>` uses); the result is
    the fraction of OOD scores ``<= t`` (ties count as accepted). Here the "true positive
    rate" is the ID acceptance rate, as in the OOD literature's FPR95 (Liang et al., 2018;
    Liu et al., 2020). Lower is better; 0.0 is perfect.

    Examples
    --------
    >>> fpr_at_tpr(list(range(100)), [50.0, 94.0, 95.0, 200.0])  # threshold 94
    0.5
    """
    if isinstance(tpr, bool) or not (isinstance(tpr, (int, float, np.integer, np.floating))
                                     and 0.0 < float(tpr) <= 1.0):
        raise ConfigError(f"tpr must be a number in (0, 1], got {tpr!r}")
    ids = check_scores(id_scores, "id_scores")
    oods = check_scores(ood_scores, "ood_scores")
    threshold = threshold_at(ids, float(tpr))
    return float(np.mean(oods <= threshold))
