"""The publication rule for a learned update: better agreement with the teacher, few flips.

Negative flip rate (MUSCLE, Echterhoff et al. 2024), measured with teacher labels: the
fraction of held-out samples the current state got right and the candidate gets wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgecl._exceptions import InvalidInput


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may be published, why, and the figures behind the decision."""

    accepted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


def negative_flip_rate(old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples ``old`` predicts correctly and ``new`` does not."""
    old, new, labels = (np.asarray(a) for a in (old, new, labels))
    if not old.shape == new.shape == labels.shape or old.ndim != 1:
        raise InvalidInput(f"predictions and labels must be equal-length vectors, got "
                           f"{old.shape}, {new.shape}, {labels.shape}")
    if len(labels) == 0:
        return 0.0
    return float(np.mean((old == labels) & (new != labels)))


def validate_candidate(current: np.ndarray, candidate: np.ndarray, teacher_labels: np.ndarray,
                       *, margin: float = 0.0, max_nfr: float = 0.05) -> Verdict:
    """Accept when the candidate agrees with the teacher more than the current state by
    more than ``margin`` and its negative flip rate is at most ``max_nfr``.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([0, 1, 2, 3])
    >>> validate_candidate(np.array([0, 0, 0, 0]), t, t).accepted
    True
    >>> validate_candidate(t, np.array([0, 0, 0, 0]), t).reason
    'no gain: agreement 0.250 vs current 1.000 (margin 0.000)'
    """
    if len(teacher_labels) == 0:
        return Verdict(False, "no held-out samples")
    nfr = negative_flip_rate(current, candidate, teacher_labels)
    cur = float(np.mean(np.asarray(current) == teacher_labels))
    cand = float(np.mean(np.asarray(candidate) == teacher_labels))
    metrics = {"current_agreement": cur, "candidate_agreement": cand,
               "negative_flip_rate": nfr, "holdout": float(len(teacher_labels))}
    if cand <= cur + margin:
        return Verdict(False, f"no gain: agreement {cand:.3f} vs current {cur:.3f} "
                              f"(margin {margin:.3f})", metrics)
    if nfr > max_nfr:
        return Verdict(False, f"negative flip rate {nfr:.3f} above {max_nfr:.3f}", metrics)
    return Verdict(True, f"agreement {cand:.3f} vs current {cur:.3f}, NFR {nfr:.3f}", metrics)
