"""The publication rule for a learned update: better agreement with the teacher, few flips,
and never below the bundle's source state.

Negative flip rate (MUSCLE, Echterhoff et al. 2024), measured with teacher labels: the
fraction of held-out samples a reference state got right and the candidate gets wrong.
Both references count: the state the device runs and the bundle's source state. When the
candidate fails but the source state beats what the device runs, the verdict says
``revert``: the service then publishes the source state itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgecl._exceptions import InvalidInput


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may be published, why, and the figures behind the decision."""

    accepted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    revert: bool = False  # not accepted, but the source state beats the current one


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
                       *, source: np.ndarray | None = None, margin: float = 0.0,
                       max_nfr: float = 0.05, source_z: float = 0.0,
                       recent: int = 0, source_mask: np.ndarray | None = None) -> Verdict:
    """Accept when the candidate agrees with the teacher more than the current state (and,
    given ``source`` predictions, more than the source state) by more than ``margin``, and
    its negative flip rate against each of them is at most ``max_nfr``. Against the
    source it must also win a sign test: on the samples where exactly one of the two is
    right, its wins minus its losses exceed ``source_z * sqrt(wins + losses)``. A rejected
    verdict has ``revert`` set when the source state agrees with the teacher more than the
    current state by more than ``margin``.

    ``recent`` > 0 (with ``source``): the arrays are in time order, and the newest
    ``recent`` samples are the current domain as it is now (a gradual change or a fresh
    domain that no detector split off yet): there the candidate must agree with the
    teacher at least as often as the source, and ``revert`` is also set when the source
    beats the current state there.

    ``source_mask`` (optional, boolean per sample) selects the samples on which the
    source is compared with the candidate and with the current state (agreement, sign
    test, ``revert``): e.g. the uploads a device drew at random, since those it picked
    for their uncertainty are the ones the source gets wrong and a candidate was trained
    to fix, which makes any candidate look better than the source than it is.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([0, 1, 2, 3])
    >>> validate_candidate(np.array([0, 0, 0, 0]), t, t).accepted
    True
    >>> validate_candidate(t, np.array([0, 0, 0, 0]), t).reason
    'no gain: agreement 0.250 vs current 1.000 (margin 0.000)'
    >>> v = validate_candidate(np.array([0, 0, 0, 0]), np.array([0, 1, 0, 0]), t, source=t)
    >>> v.accepted, v.revert, v.reason
    (False, True, 'no gain over source: agreement 0.500 vs source 1.000 (margin 0.000)')
    """
    labels = np.asarray(teacher_labels)
    if len(labels) == 0:
        return Verdict(False, "no held-out samples")
    nfr = negative_flip_rate(current, candidate, labels)
    cur = float(np.mean(np.asarray(current) == labels))
    cand = float(np.mean(np.asarray(candidate) == labels))
    metrics = {"current_agreement": cur, "candidate_agreement": cand,
               "negative_flip_rate": nfr, "holdout": float(len(labels))}
    src = cur
    nfr_src = 0.0
    cur_s, cand_s = cur, cand  # on the samples that judge the source
    sel = np.ones(len(labels), bool) if source_mask is None else np.asarray(source_mask, bool)
    if sel.shape != labels.shape:
        raise InvalidInput(f"source_mask must be a boolean vector of length {len(labels)}")
    if source is not None:
        nfr_src = negative_flip_rate(source, candidate, labels)
        if not sel.any():
            sel = np.ones(len(labels), bool)
        src = float(np.mean(np.asarray(source)[sel] == labels[sel]))
        cur_s = float(np.mean(np.asarray(current)[sel] == labels[sel]))
        cand_s = float(np.mean(np.asarray(candidate)[sel] == labels[sel]))
        metrics.update(source_agreement=src, negative_flip_rate_source=nfr_src,
                       source_samples=float(sel.sum()))
    revert = source is not None and src > cur_s + margin
    newest_ok = True
    if source is not None and recent > 0:
        tail = slice(max(0, len(labels) - recent), None)
        r_src = float(np.mean(np.asarray(source)[tail] == labels[tail]))
        r_cur = float(np.mean(np.asarray(current)[tail] == labels[tail]))
        r_cand = float(np.mean(np.asarray(candidate)[tail] == labels[tail]))
        metrics.update(recent_source_agreement=r_src, recent_current_agreement=r_cur,
                       recent_candidate_agreement=r_cand)
        revert = revert or r_src > r_cur + margin
        newest_ok = r_cand >= r_src
    if cand <= cur + margin:
        return Verdict(False, f"no gain: agreement {cand:.3f} vs current {cur:.3f} "
                              f"(margin {margin:.3f})", metrics, revert)
    if cand_s <= src + margin:
        return Verdict(False, f"no gain over source: agreement {cand_s:.3f} vs source "
                              f"{src:.3f} (margin {margin:.3f})", metrics, revert)
    if source is not None and source_z > 0:
        src_right = np.asarray(source)[sel] == labels[sel]
        cand_right = np.asarray(candidate)[sel] == labels[sel]
        wins = int(np.sum(cand_right & ~src_right))
        losses = int(np.sum(src_right & ~cand_right))
        if wins - losses <= source_z * math.sqrt(wins + losses):
            return Verdict(False, f"not clearly better than source: {wins} wins, {losses} "
                                  f"losses (z {source_z:.2f})", metrics, revert)
    if not newest_ok:
        return Verdict(False, f"worse than source on the newest {recent} held-out uploads: "
                              f"{metrics['recent_candidate_agreement']:.3f} vs "
                              f"{metrics['recent_source_agreement']:.3f}", metrics, revert)
    if nfr > max_nfr:
        return Verdict(False, f"negative flip rate {nfr:.3f} above {max_nfr:.3f}", metrics,
                       revert)
    if nfr_src > max_nfr:
        return Verdict(False, f"negative flip rate against source {nfr_src:.3f} above "
                              f"{max_nfr:.3f}", metrics, revert)
    return Verdict(True, f"agreement {cand:.3f} vs current {cur:.3f}, source {src:.3f}, "
                         f"NFR {max(nfr, nfr_src):.3f}", metrics)
