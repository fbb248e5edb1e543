"""How well do sampling policies pick the samples the student gets wrong?

:func:`evaluate_sampling` runs the zoo's student over a gradual drifting stream and feeds
every predict batch to the ``uncertainty``, ``entropy`` and ``random`` policies at the same
budget. :func:`auroc` is the numpy rank-sum AUROC it reports.

Importing this module needs numpy only; :func:`evaluate_sampling` also needs the zoo's
streams (numpy/scipy) and onnxruntime, imported when called.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.device import create_policy
from edgecl.eval.results import SamplingPolicyResult, SamplingResult
from edgecl.heads import l2_normalise

POLICIES: tuple[str, ...] = ("uncertainty", "entropy", "random")
FLOORS: dict[str, float] = {"error_ratio_vs_random": 2.0, "score_error_auroc": 0.80}

OodFn = Callable[[Any], np.ndarray]


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for telling ``positives`` from the rest.

    Mann-Whitney rank sum with average ranks for ties (a tie counts one half), so it
    equals ``sklearn.metrics.roc_auc_score(positives, scores)``. Higher scores are taken
    to mean "positive". NaN when either class is empty.

    Examples
    --------
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positives)
    if s.ndim != 1 or pos.shape != s.shape:
        raise InvalidInput(f"scores {s.shape} and positives {pos.shape} must be equal 1-D shapes")
    if not np.isfinite(s).all():
        raise InvalidInput("scores contain NaN or inf")
    pos = pos.astype(bool)
    n_pos = int(pos.sum())
    n_neg = s.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from edgecl.ood import auroc as rank_auroc  # one rank-sum implementation for the project

    return rank_auroc(s[~pos], s[pos])


def energy_score(prediction: Any) -> np.ndarray:
    """OOD score ``-logsumexp(logits)`` (higher = more out-of-distribution)."""
    z = np.asarray(prediction.logits, dtype=np.float64)
    top = z.max(axis=1)
    return -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def _ood_fn(ood_score: str | OodFn | None) -> OodFn | None:
    if ood_score is None or callable(ood_score):
        return ood_score
    if ood_score == "runtime":
        return _runtime_score
    if ood_score == "energy":
        return energy_score
    raise ConfigError(f"ood_score must be 'runtime', 'energy', None or a callable, "
                      f"got {ood_score!r}")


def _runtime_score(prediction: Any) -> np.ndarray:
    """The score of the runtime's own OOD detector (the bundle's calibrated default)."""
    if prediction.ood_score is None:
        raise ConfigError("the bundle has no OOD detector: calibrate it or pass 'energy'")
    return prediction.ood_score


def _mean_similarity(features: np.ndarray) -> float | None:
    if features.shape[0] < 2:
        return None
    unit = l2_normalise(features.astype(np.float64))
    sim = unit @ unit.T
    n = unit.shape[0]
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_sampling(
    zoo: Any,
    *,
    budget: float = 0.05,
    corruptions: Sequence[str] | None = None,
    samples_per_severity: int = 200,
    batch: int = 16,
    seed: int = 0,
    ood_score: str | OodFn | None = "runtime",
    policy_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    threads: int | None = None,
) -> SamplingResult:
    """Error rate among the samples each policy sends, at one budget, on a gradual stream.

    The stream visits each corruption at severities 1..5..1 (``samples_per_severity`` each,
    known classes only). The student predicts every batch with features; the policies
    ``uncertainty``, ``entropy`` and ``random`` (seeded with ``seed``) each get every batch
    with ``fraction=budget``.

    Parameters
    ----------
    zoo : :class:`edgecl.zoo.Zoo` (anything with ``student_bundle``)
    ood_score : ``"runtime"`` (the score of the runtime's OOD detector, from the bundle's
        ``ood.npz``), ``"energy"`` (``-logsumexp(logits)``), None (entropy only) or a callable
        ``ood_fn(prediction) -> (N,) scores``, higher = more out-of-distribution.
    policy_kwargs : extra hyperparameters per policy name, e.g.
        ``{"uncertainty": {"w_ood": 0.5}}``.
    threads : onnxruntime intra-op threads of the student.

    Returns
    -------
    SamplingResult
        ``budget``, ``samples``, ``overall_error_rate``, ``policies`` (per name:
        ``selected``, ``selected_fraction``, ``error_rate_selected``, ``mean_similarity``
        (mean pairwise cosine of selected features), ``score_error_auroc``),
        ``error_ratio_vs_random`` (uncertainty over random error rate among selected),
        ``max_error_ratio`` (the ratio if every selected sample were an error,
        ``1 / overall_error_rate``), ``score_error_auroc`` (AUROC of the uncertainty
        policy's scores for the student's errors, all samples), ``floors`` and
        ``floor_failures``, ``corruptions``, ``seconds``. Undefined figures are None. Its
        JSON matches ``edgecl/schemas/eval-sampling.schema.json``.
    """
    from edgecl.device import DeviceRuntime
    from edgecl.zoo.streams import DEFAULT_CORRUPTIONS, gradual_stream

    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ConfigError(f"budget must be in (0, 1], got {budget!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, got {batch!r}")
    ood_fn = _ood_fn(ood_score)
    extra = dict(policy_kwargs or {})
    unknown = sorted(set(extra) - set(POLICIES))
    if unknown:
        raise ConfigError(f"policy_kwargs names unknown policies: {unknown}")
    started = time.perf_counter()
    corruptions = tuple(DEFAULT_CORRUPTIONS if corruptions is None else corruptions)
    stream = gradual_stream(corruptions, samples_per_severity=samples_per_severity, seed=seed)
    rt = DeviceRuntime.open(zoo.student_bundle, threads=threads)
    names = rt.class_names
    to_label = np.array([int(c) for c in names]) if all(c.isdigit() for c in names) else None
    num_classes = len(names)
    own = {"uncertainty": {"num_classes": num_classes}, "entropy": {"num_classes": num_classes},
           "random": {"seed": seed}}
    policies = {p: create_policy(p, fraction=budget, **{**own[p], **extra.get(p, {})})
                for p in POLICIES}
    errors, feats = [], []
    masks: dict[str, list[np.ndarray]] = {p: [] for p in POLICIES}
    scores: dict[str, list[np.ndarray]] = {p: [] for p in POLICIES}
    for images, labels, _ in stream.batches(batch):
        pred = rt.predict(images, return_features=True)
        predicted = pred.labels if to_label is None else to_label[pred.labels]
        errors.append(predicted != labels)
        feats.append(pred.features)
        entropy = pred.entropy()
        ood = None if ood_fn is None else np.asarray(ood_fn(pred))
        for p, policy in policies.items():
            sel = policy.select(entropy=entropy, ood_score=ood, features=pred.features)
            mask = np.zeros(len(pred), dtype=bool)
            mask[sel.indices] = True
            masks[p].append(mask)
            scores[p].append(sel.scores)
    err = np.concatenate(errors)
    features = np.concatenate(feats)
    report: dict[str, SamplingPolicyResult] = {}
    for p in POLICIES:
        mask = np.concatenate(masks[p])
        report[p] = SamplingPolicyResult(
            selected=int(mask.sum()),
            selected_fraction=float(mask.mean()),
            error_rate_selected=float(err[mask].mean()) if mask.any() else None,
            mean_similarity=_mean_similarity(features[mask]),
            score_error_auroc=_finite(auroc(np.concatenate(scores[p]), err)),
        )
    overall = float(err.mean())
    figures = {
        "error_ratio_vs_random": _ratio(report["uncertainty"].error_rate_selected,
                                        report["random"].error_rate_selected),
        "score_error_auroc": report["uncertainty"].score_error_auroc,
    }
    return SamplingResult(
        budget=float(budget),
        samples=int(err.shape[0]),
        corruptions=list(corruptions),
        ood_score=ood_score if isinstance(ood_score, str) or ood_score is None else "callable",
        policies=report,
        overall_error_rate=overall,
        error_ratio_vs_random=figures["error_ratio_vs_random"],
        max_error_ratio=_ratio(1.0, overall),
        score_error_auroc=figures["score_error_auroc"],
        floors=dict(FLOORS),
        floor_failures=[k for k, floor in FLOORS.items()
                        if (v := figures[k]) is None or v < floor],
        seconds=round(time.perf_counter() - started, 3),
    )
