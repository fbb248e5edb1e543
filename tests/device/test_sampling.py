"""Sampling policies (UGS): conformance over the registry, budgets, preferences, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.device._sampling import (
    SamplingPolicy,
    Selection,
    UncertaintyPolicy,
    create_policy,
    list_policies,
    register_policy,
)
from edgecl.eval.sampling import auroc, evaluate_sampling
from tests.schema_checks import check_result

POLICIES = list_policies()


def synthetic_stream(seed: int = 0, batches: int = 400, dim: int = 32, max_batch: int = 40,
                     rate: float = 20.0):
    """Batches of (entropy, ood, features, timestamp) with random sizes (empty ones too),
    drifting score levels and bursts of hard samples."""
    rng = np.random.default_rng(seed)
    t = 0.0
    out = []
    for b in range(batches):
        n = int(rng.integers(0, max_batch + 1))
        level = 0.5 + 0.4 * math.sin(b / 25.0)  # drift
        entropy = rng.uniform(0, level, n) * np.log(8)
        if b % 37 < 3:  # a burst: everything uncertain
            entropy = np.full(n, np.log(8)) - rng.uniform(0, 0.01, n)
        ood = 100.0 * rng.normal(level, 1.0, n) - 5000.0  # arbitrary detector scale
        features = rng.normal(size=(n, dim)).astype(np.float32)
        t += float(rng.exponential(n / rate)) if n else 0.0
        out.append((entropy, ood, features, t))
    return out


def run(policy: SamplingPolicy, stream) -> list[np.ndarray]:
    return [policy.select(entropy=e, ood_score=o, features=f, timestamp=t).indices
            for e, o, f, t in stream]


# -- conformance over every registered policy ----------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize(("fraction", "burst"), [(0.05, 4.0), (0.2, 1.0), (1.0, 1.0)])
def test_fraction_budget_is_never_exceeded(name, fraction, burst):
    stream = synthetic_stream(seed=1)
    policy = create_policy(name, fraction=fraction, burst=burst)
    picked = np.array([len(i) for i in run(policy, stream)])
    sizes = np.array([len(e) for e, *_ in stream])
    assert policy.selected == picked.sum() and policy.seen == sizes.sum()
    # every run of consecutive batches: selected <= fraction * seen + burst
    cs, cn = np.concatenate([[0], np.cumsum(picked)]), np.concatenate([[0], np.cumsum(sizes)])
    runs_sel = cs[None, :] - cs[:, None]
    runs_seen = cn[None, :] - cn[:, None]
    upper = np.triu(np.ones_like(runs_sel, dtype=bool))
    assert (runs_sel[upper] <= fraction * runs_seen[upper] + burst).all()
    assert picked.sum() >= 0.3 * fraction * sizes.sum()  # and the budget is used


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("k", [1, 3])
def test_per_window_budget_is_never_exceeded(name, k):
    stream = synthetic_stream(seed=2)
    policy = create_policy(name, per_window=k, window_seconds=2.0)
    times = np.concatenate([np.full(len(i), t) for i, (*_, t) in zip(run(policy, stream), stream)])
    assert len(times) > 0
    for t in times:  # the worst sliding window ends at a selection time
        assert ((times > t - 2.0) & (times <= t)).sum() <= k
    spans = stream[-1][3] / 2.0
    assert len(times) <= k * (spans + 1)


@pytest.mark.parametrize("name", POLICIES)
def test_selection_contract_deterministic_and_reset(name):
    stream = synthetic_stream(seed=3, batches=150)
    a, b = create_policy(name, fraction=0.1), create_policy(name, fraction=0.1)
    first = run(a, stream)
    assert all(np.array_equal(x, y) for x, y in zip(first, run(b, stream)))
    a.reset()
    assert a.seen == 0 and a.selected == 0
    assert all(np.array_equal(x, y) for x, y in zip(first, run(a, stream)))
    clone = create_policy(name, **a.hyperparameters())
    assert all(np.array_equal(x, y) for x, y in zip(first, run(clone, stream)))
    e, o, f, _ = stream[5]
    sel = create_policy(name).select(entropy=e, ood_score=o, features=f)
    assert isinstance(sel, Selection) and sel.scores.shape == (len(e),)
    assert sel.indices.dtype == np.int64 and np.all(np.diff(sel.indices) > 0)
    assert np.all((sel.indices >= 0) & (sel.indices < len(e))) and math.isfinite(sel.threshold)
    empty = create_policy(name).select(entropy=np.zeros(0), ood_score=None, features=None)
    assert len(empty) == 0 and empty.scores.shape == (0,)


@pytest.mark.parametrize("name", POLICIES)
def test_works_without_ood_score_or_features(name):
    policy = create_policy(name, fraction=0.1)
    for e, *_ in synthetic_stream(seed=4, batches=50):
        policy.select(entropy=e, ood_score=None, features=None)
    assert 0 < policy.selected <= 0.1 * policy.seen + policy.burst


BAD_INPUTS = {
    "ood length": dict(ood_score=np.zeros(3)),
    "feature rows": dict(features=np.zeros((3, 8))),
    "feature rank 1": dict(features=np.zeros(4)),
    "feature rank 3": dict(features=np.zeros((4, 2, 2))),
    "nan entropy": dict(entropy=np.array([0.1, np.nan, 0.2, 0.3])),
    "inf ood": dict(ood_score=np.array([0.1, np.inf, 0.2, 0.3])),
    "nan feature": dict(features=np.full((4, 8), np.nan)),
    "entropy rank 2": dict(entropy=np.zeros((4, 1))),
    "entropy strings": dict(entropy=np.array(["a", "b", "c", "d"])),
    "nan timestamp": dict(timestamp=float("nan")),
    "timestamp string": dict(timestamp="now"),
}


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_invalid_input(name, case):
    args = dict(entropy=np.full(4, 0.5), ood_score=np.zeros(4), features=np.ones((4, 8)),
                timestamp=1.0)
    args.update(BAD_INPUTS[case])
    with pytest.raises(InvalidInput):
        create_policy(name).select(**args)


def test_feature_dimension_must_not_change():
    policy = create_policy("uncertainty", fraction=1.0)
    policy.select(entropy=np.ones(3), ood_score=None, features=np.eye(3, 8))
    seen = policy.seen
    with pytest.raises(InvalidInput, match="dimensions"):
        policy.select(entropy=np.ones(3), ood_score=None, features=np.eye(3, 4))
    assert policy.seen == seen  # rejected input leaves the state alone
    policy.reset()
    assert len(policy.select(entropy=np.ones(3), ood_score=None, features=np.eye(3, 4))) == 3


@pytest.mark.parametrize("name", POLICIES)
def test_time_must_not_go_backwards(name):
    policy = create_policy(name, per_window=2)
    policy.select(entropy=np.ones(3), ood_score=None, features=None, timestamp=10.0)
    with pytest.raises(InvalidInput):
        policy.select(entropy=np.ones(3), ood_score=None, features=None, timestamp=9.0)


BAD_HYPERPARAMETERS = [
    dict(fraction=0.0), dict(fraction=1.5), dict(fraction=-0.1), dict(fraction=float("nan")),
    dict(fraction="0.1"), dict(per_window=-1), dict(per_window=0), dict(per_window=2.5),
    dict(fraction=0.1, per_window=3), dict(per_window=3, window_seconds=0.0),
    dict(burst=0.5), dict(fill_gain=-1.0), dict(no_such_option=1),
]


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("hp", BAD_HYPERPARAMETERS, ids=str)
def test_bad_hyperparameters_raise_config_error(name, hp):
    with pytest.raises(ConfigError):
        create_policy(name, **hp)


def test_registry():
    assert {"uncertainty", "entropy", "random"} <= set(POLICIES) and POLICIES == sorted(POLICIES)
    with pytest.raises(ConfigError, match="unknown sampling policy"):
        create_policy("nope")
    with pytest.raises(ConfigError):
        register_policy(int)  # type: ignore[arg-type]
    for hp in (dict(w_entropy=-1.0), dict(w_entropy=0.0, w_ood=0.0), dict(max_similarity=1.5),
               dict(memory=-1), dict(num_classes=1), dict(history=1), dict(ood_warmup=0),
               dict(ood_reference=(0.0, 0.0))):
        with pytest.raises(ConfigError):
            create_policy("uncertainty", **hp)
    with pytest.raises(ConfigError):
        create_policy("random", seed=-1)


# -- what the uncertainty policy prefers ---------------------------------------------------


def hard_stream(seed: int, n: int = 20_000, batch: int = 32, signal: str = "both"):
    """5% known-hard samples: higher entropy and/or a higher OOD score (odd scale); with
    ``signal="entropy"`` there is no OOD score."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.05
    entropy = rng.uniform(0.0, 0.5, n) + (hard * 1.0 if signal in ("both", "entropy") else 0)
    ood = 1e4 + 50.0 * (rng.normal(size=n) + (hard * 6.0 if signal in ("both", "ood") else 0))
    features = rng.normal(size=(n, 64))
    return hard, [(entropy[i:i + batch], None if signal == "entropy" else ood[i:i + batch],
                   features[i:i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("signal", ["both", "entropy", "ood"])
def test_uncertainty_policy_recalls_the_hard_five_percent(signal):
    hard, batches = hard_stream(seed=5, signal=signal)
    policy = create_policy("uncertainty", fraction=0.05, burst=8, num_classes=8)
    chosen = np.zeros(len(hard), dtype=bool)
    start = 0
    for e, o, f in batches:
        chosen[start + policy.select(entropy=e, ood_score=o, features=f).indices] = True
        start += len(e)
    recall = chosen[hard].mean()
    assert recall > 0.8, recall
    assert chosen.sum() <= 0.05 * len(hard) + 8
    assert chosen[hard].sum() / chosen.sum() > 0.8  # and what it sends is mostly hard


def test_ood_score_scale_does_not_matter():
    _, batches = hard_stream(seed=6, n=4000)
    a, b = UncertaintyPolicy(num_classes=8), UncertaintyPolicy(num_classes=8)
    for e, o, f in batches:
        sa = a.select(entropy=e, ood_score=o, features=f)
        sb = b.select(entropy=e, ood_score=1e-3 * o - 7.0, features=f)
        np.testing.assert_allclose(sa.scores, sb.scores, atol=1e-6)
        assert np.array_equal(sa.indices, sb.indices)


def test_diversity_filter_rejects_near_duplicates():
    rng = np.random.default_rng(7)
    base = rng.normal(size=32)

    def select_duplicates(**hp):
        policy = create_policy("uncertainty", fraction=0.5, burst=1000, **hp)
        for _ in range(20):  # ordinary, diverse, low-uncertainty traffic
            policy.select(entropy=rng.uniform(0, 0.2, 20), ood_score=None,
                          features=rng.normal(size=(20, 32)))
        before = policy.selected
        for _ in range(10):  # 100 near-copies of one feature, all very uncertain
            dup = base + 1e-3 * rng.normal(size=(10, 32))
            policy.select(entropy=np.full(10, 2.0) + rng.uniform(0, 0.01, 10),
                          ood_score=None, features=dup)
        return policy.selected - before

    assert select_duplicates() <= 2
    assert select_duplicates(memory=0) >= 50  # the filter, not the budget, held them back
    assert select_duplicates(max_similarity=1.0) >= 50


def test_per_window_prefers_high_scores():
    rng = np.random.default_rng(8)
    policy = create_policy("uncertainty", per_window=2, window_seconds=1.0, num_classes=8)
    sel_scores, all_scores = [], []
    for step in range(400):
        e = rng.uniform(0, np.log(8), 10)
        sel = policy.select(entropy=e, ood_score=None, features=None, timestamp=step * 0.1)
        sel_scores.extend(sel.scores[sel.indices])
        all_scores.extend(sel.scores)
    # 2 per second out of 100 per second: the chosen are far above the average sample
    assert len(sel_scores) <= 2 * 40 + 2
    assert len(sel_scores) >= 40
    assert np.mean(sel_scores) > np.quantile(all_scores, 0.9)


# -- AUROC helper ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_auroc_matches_sklearn_with_ties(pairs):
    scores = np.array([s for s, _ in pairs], dtype=float)
    labels = np.array([y for _, y in pairs])
    if labels.all() or not labels.any():
        assert math.isnan(auroc(scores, labels))
    else:
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_on_continuous_scores_and_bad_input():
    rng = np.random.default_rng(9)
    labels = rng.random(5000) < 0.3
    scores = rng.normal(size=5000) + labels
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc(np.ones(10), np.arange(10) % 2) == 0.5
    with pytest.raises(InvalidInput):
        auroc(np.ones(3), np.ones(4))
    with pytest.raises(InvalidInput):
        auroc(np.array([0.0, np.nan]), np.array([0, 1]))


# -- evaluation and device hygiene ---------------------------------------------------------


def test_evaluate_sampling_on_tiny_zoo(tiny_zoo):
    small = dict(corruptions=["gaussian_noise", "fog"], samples_per_severity=8, batch=8)
    report = evaluate_sampling(tiny_zoo, budget=0.1, **small)
    check_result(report, ("policies",), ("policies", "uncertainty"))
    assert report.samples == 2 * 9 * 8 and report.budget == 0.1
    assert set(report.policies) == {"uncertainty", "entropy", "random"}
    for stats in report.policies.values():
        assert stats.selected <= 0.1 * report.samples + 4
    assert 0.0 <= report.overall_error_rate <= 1.0
    assert report.score_error_auroc is None or 0.0 <= report.score_error_auroc <= 1.0
    again = evaluate_sampling(tiny_zoo, budget=0.1, **small)
    assert again.policies == report.policies  # deterministic
    custom = evaluate_sampling(tiny_zoo, budget=0.1, ood_score=lambda p: -p.confidence, **small)
    assert custom.ood_score == "callable"
    plain = evaluate_sampling(tiny_zoo, budget=0.1, ood_score=None, **small)
    assert plain.samples == 144
    check_result(plain)
    with pytest.raises(ConfigError):
        evaluate_sampling(tiny_zoo, budget=0.0, **small)
    with pytest.raises(ConfigError):
        evaluate_sampling(tiny_zoo, ood_score="nope", **small)


def test_exploration_spends_the_same_budget_on_a_representative_share():
    rng = np.random.default_rng(0)
    ent = [rng.random(50) for _ in range(200)]
    picks = {}
    for explore in (0.0, 0.5, 1.0):
        policy = create_policy("uncertainty", fraction=0.1, burst=4.0, num_classes=4,
                               explore=explore, seed=3)
        chosen = []
        for e in ent:
            sel = policy.select(entropy=e, ood_score=None, features=None)
            np.testing.assert_array_equal(sel.scores, e / np.log(4))  # true scores reported
            chosen.extend(e[sel.indices].tolist())
        assert policy.selected <= 0.1 * 50 * 200 + 4.0  # the exact budget holds
        picks[explore] = np.mean(chosen)
    assert picks[0.0] > 0.85  # pure UGS: the top of U(0, 1)
    assert picks[1.0] < 0.6  # pure exploration: close to the mean 0.5
    assert picks[1.0] < picks[0.5] < picks[0.0]


def test_selection_marks_the_random_draws():
    rng = np.random.default_rng(1)
    policy = create_policy("uncertainty", fraction=0.2, burst=4.0, num_classes=4,
                           explore=0.5, seed=5)
    explored = picked = 0
    for _ in range(100):
        e = rng.random(40)
        sel = policy.select(entropy=e, ood_score=None, features=None)
        mask = sel.explored_mask()
        assert mask.shape == sel.indices.shape and mask.dtype == bool
        # explored picks need not be uncertain; scored picks pass the threshold
        assert (sel.scores[sel.indices[~mask]] > sel.threshold).all()
        explored += int(mask.sum())
        picked += len(sel)
    assert 0.3 < explored / picked < 0.7  # about half of the budget explores
    plain = create_policy("uncertainty", fraction=0.2, num_classes=4)
    assert not plain.select(entropy=rng.random(40), ood_score=None,
                            features=None).explored_mask().any()
    rand = create_policy("random", fraction=0.5)
    sel = rand.select(entropy=rng.random(40), ood_score=None, features=None)
    assert len(sel) > 0 and sel.explored_mask().all()  # every random pick is a random draw


# -- a reserve spent after a shift -----------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_reserve_is_saved_while_stable_and_spent_after_a_shift(name):
    rng = np.random.default_rng(2)
    policy = create_policy(name, fraction=0.1, burst=100.0, fill_gain=0.0, reserve=0.5,
                           shift_fraction=0.5, shift_span=100)
    assert policy.hyperparameters()["reserve"] == 0.5
    picked = []
    for b in range(300):  # 3,000 stable samples, then a shift, then 3,000 more
        if b == 150:
            policy.notify_shift()
        picked.append(len(policy.select(entropy=rng.random(20), ood_score=None,
                                        features=None)))
    picked = np.array(picked)
    saving = picked[5:35].sum() / (30 * 20)
    assert 0.035 < saving < 0.065  # aims at fraction * (1 - reserve) ...
    full = picked[100:150].sum() / (50 * 20)
    assert 0.085 < full < 0.115  # ... until the bucket holds 100 * (0.5 - 0.1) tokens
    burst = picked[150:155].sum() / 100  # the shift span: saved tokens at shift_fraction
    assert burst > 0.3
    assert picked.sum() <= 0.1 * 300 * 20 + 100  # the exact budget still holds
    # no shift: the same policy never goes above its stable rate for long
    quiet = create_policy(name, fraction=0.1, burst=100.0, fill_gain=0.0, reserve=0.5,
                          shift_fraction=0.5, shift_span=100)
    counts = [len(quiet.select(entropy=rng.random(20), ood_score=None, features=None))
              for _ in range(300)]
    assert max(np.convolve(counts, np.ones(5), "valid")) < 0.3 * 100


def test_reserve_configuration_errors():
    with pytest.raises(ConfigError):
        create_policy("uncertainty", fraction=0.1, reserve=1.0)
    with pytest.raises(ConfigError):
        create_policy("uncertainty", per_window=4, reserve=0.2)
    with pytest.raises(ConfigError):
        create_policy("uncertainty", fraction=0.1, reserve=0.2, shift_fraction=0.0)
    with pytest.raises(ConfigError):
        create_policy("random", fraction=0.1, reserve=0.2, shift_span=0)
    # without a reserve a shift only lets the policy aim at shift_fraction for a while
    policy = create_policy("uncertainty", fraction=0.1, burst=1.0, num_classes=4)
    policy.notify_shift()  # shift_fraction defaults to fraction: nothing changes
    rng = np.random.default_rng(0)
    n = sum(len(policy.select(entropy=rng.random(10), ood_score=None, features=None))
            for _ in range(100))
    assert n <= 0.1 * 1000 + 1.0
