"""Drift detectors: the KS test against scipy, the detector contract over the registry,
and the zoo benchmark on tiny settings."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.ood import drift
from edgecl.ood.drift import (
    DomainShift,
    DriftDetector,
    KSWindowDetector,
    PageHinkley,
    create_drift_detector,
    kolmogorov_sf,
    ks_2samp_pvalue,
    ks_2samp_statistic,
    list_drift_detectors,
)
from tests.schema_checks import check_result

DETECTORS = list_drift_detectors()
# Upper bound on the delay for a +2 sigma mean shift (observed max over 200 seeds:
# ks 43, page_hinkley 22).
MAX_DELAY = {"ks": 64, "page_hinkley": 40}


def shifted_stream(seed: int, *levels: tuple[float, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mean, 1.0, n) for mean, n in levels])


# -- the KS test -------------------------------------------------------------------------


@pytest.mark.parametrize("n, m, shift, rounded", [
    (256, 64, 0.0, False), (256, 64, 0.6, False), (100, 80, 0.3, False), (50, 300, 1.0, False),
    (1, 5, 0.0, False), (200, 64, 0.0, True), (64, 64, 0.5, True),
])  # fmt: skip
def test_ks_matches_scipy(n, m, shift, rounded):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n * 1000 + m)
    a, b = rng.normal(size=n), rng.normal(shift, size=m)
    if rounded:  # heavy ties
        a, b = np.round(a, 1), np.round(b, 1)
    ref = stats.ks_2samp(a, b, method="asymp")
    d = ks_2samp_statistic(a, b)
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    p = ks_2samp_pvalue(d, n, m)
    assert p == pytest.approx(stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * d), rel=1e-9)
    if min(n, m) >= 50:  # Kolmogorov's limit vs scipy's finite-n approximation
        assert abs(p - ref.pvalue) < 0.02 + 0.5 * ref.pvalue


def test_kolmogorov_sf_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for x in [0.0, 0.05, 0.3, 0.7, 0.99, 1.0, 1.01, 1.36, 2.0, 3.0, 5.0, 10.0]:
        assert kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-300)
    assert kolmogorov_sf(-1.0) == 1.0


def test_ks_statistic_edge_cases():
    assert ks_2samp_statistic([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert ks_2samp_statistic([0.0, 0.0], [1.0]) == 1.0
    with pytest.raises(InvalidInput):
        ks_2samp_statistic([], [1.0])


# -- every registered detector -----------------------------------------------------------


def test_registry():
    assert DETECTORS == ["ks", "page_hinkley"]
    assert isinstance(create_drift_detector("ks"), KSWindowDetector)
    assert isinstance(create_drift_detector("page_hinkley", threshold=10), PageHinkley)
    for bad in ("nope", None, 3):
        with pytest.raises(ConfigError):
            create_drift_detector(bad)
    with pytest.raises(ConfigError):
        create_drift_detector("ks", not_a_param=1)


@pytest.mark.parametrize("name", DETECTORS)
def test_no_alarm_on_stationary_stream(name):
    det = create_drift_detector(name)
    for seed in range(2):
        det.reset()
        assert det.update_many(np.random.default_rng(seed).normal(size=20_000)) == []
        assert det.samples_seen == 20_000


@pytest.mark.parametrize("name", DETECTORS)
def test_detects_shift_and_rebaselines(name):
    det = create_drift_detector(name)
    values = shifted_stream(0, (0.0, 1000), (2.0, 1500), (4.0, 1000))
    shifts = det.update_many(values)
    idx = [s.index for s in shifts]
    assert all(isinstance(s, DomainShift) and s.detector == name for s in shifts)
    assert not [i for i in idx if i < 1000], "false alarm before the first shift"
    first = next(i for i in idx if i >= 1000)
    assert first - 1000 <= MAX_DELAY[name]
    s = shifts[0]
    assert abs(s.reference_mean) < 0.3 and s.current_mean > s.reference_mean + 0.5
    assert s.statistic > 0
    second = [i for i in idx if i >= 2500]
    assert second and second[0] - 2500 <= MAX_DELAY[name]
    assert [i for i in idx if first < i < 2500] == [], "false alarm after re-baselining"


@pytest.mark.parametrize("name", DETECTORS)
def test_detects_decrease_by_default(name):
    shifts = create_drift_detector(name).update_many(shifted_stream(1, (0.0, 1000), (-2.0, 500)))
    assert shifts and 0 <= shifts[0].index - 1000 <= MAX_DELAY[name]
    assert shifts[0].current_mean < shifts[0].reference_mean


def test_page_hinkley_direction():
    down = shifted_stream(1, (0.0, 1000), (-2.0, 500))
    up = shifted_stream(1, (0.0, 1000), (2.0, 500))
    assert PageHinkley(direction="increase").update_many(down) == []
    assert PageHinkley(direction="decrease").update_many(up) == []
    assert PageHinkley(direction="increase").update_many(up)
    assert PageHinkley(direction="decrease").update_many(down)


def test_page_hinkley_is_scale_free():
    values = shifted_stream(2, (0.0, 1000), (2.0, 500))
    a = PageHinkley().update_many(values)
    b = PageHinkley().update_many(values * 1e3 + 7.0)
    assert [s.index for s in a] == [s.index for s in b]
    assert a[0].statistic == pytest.approx(b[0].statistic)
    assert PageHinkley(standardize=False).update_many(values * 1e-3) == []


@pytest.mark.parametrize("name", DETECTORS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), jump=st.floats(-4.0, 4.0), chunk=st.integers(1, 700))
def test_update_matches_update_many(name, seed, jump, chunk):
    values = shifted_stream(seed, (0.0, 600), (jump, 600), (0.0, 300))
    one = create_drift_detector(name)
    singles = [s for v in values if (s := one.update(v)) is not None]
    many = create_drift_detector(name)
    batched = []
    for i in range(0, len(values), chunk):
        batched += many.update_many(values[i : i + chunk])
    assert singles == batched
    assert one.samples_seen == many.samples_seen == len(values)
    many.reset()
    assert many.samples_seen == 0 and many.update_many(values) == singles


@pytest.mark.parametrize("name", DETECTORS)
def test_bad_scores(name):
    det = create_drift_detector(name)
    det.update_many(np.zeros(10))
    for bad in (math.nan, math.inf, -math.inf, "x", None, [1.0, 2.0]):
        with pytest.raises(InvalidInput):
            det.update(bad)
    for bad in ([1.0, math.nan], np.zeros((2, 2)), 3.0, ["a"]):
        with pytest.raises(InvalidInput):
            det.update_many(bad)
    assert det.samples_seen == 10  # nothing consumed by a rejected call
    assert det.update(np.float32(1.5)) is None and det.update_many([]) == []
    assert det.samples_seen == 11


@pytest.mark.parametrize("name, params", [
    ("ks", {"reference": 1}), ("ks", {"window": 0}), ("ks", {"stride": 0}),
    ("ks", {"stride": 65}), ("ks", {"alpha": 0.0}), ("ks", {"alpha": 1.0}),
    ("ks", {"alpha": math.nan}), ("ks", {"reference": 2.5}), ("ks", {"window": True}),
    ("page_hinkley", {"delta": -0.1}), ("page_hinkley", {"threshold": 0}),
    ("page_hinkley", {"threshold": math.inf}), ("page_hinkley", {"min_samples": 1}),
    ("page_hinkley", {"standardize": "yes"}), ("page_hinkley", {"direction": "up"}),
    ("page_hinkley", {"delta": "0.1"}),
])  # fmt: skip
def test_bad_hyperparameters(name, params):
    with pytest.raises(ConfigError):
        create_drift_detector(name, **params)


@pytest.mark.parametrize("name", DETECTORS)
def test_contract(name):
    det = create_drift_detector(name)
    assert isinstance(det, DriftDetector) and det.name == name and det.samples_seen == 0
    assert create_drift_detector(name, **det.params).params == det.params
    assert type(det).__name__ in repr(det)


def test_module_example():
    assert doctest.testmod(drift, raise_on_error=False).failed == 0


# -- the zoo benchmark --------------------------------------------------------------------


def test_evaluate_drift_tiny(tiny_zoo):
    from edgecl.eval.drift import evaluate_drift, stream_scores

    out = evaluate_drift(
        tiny_zoo,
        severities=(5,),
        corruptions=("gaussian_noise", "jpeg"),
        clean_before=300,
        shifted=200,
        clean_samples=2000,
    )
    data = check_result(out, ("detectors", "ks"), ("detectors", "ks", "severity_5"))
    assert "median_delay" in data["detectors"]["page_hinkley"]["severity_5"]
    assert out.score == "energy" and set(out.detectors) == {"ks", "page_hinkley"}
    for res in out.detectors.values():
        assert set(res.severities) == {5}
        sev = res.severities[5]
        assert set(sev.per_corruption) == {"gaussian_noise", "jpeg"}
        assert sev.missed == sum(v is None for v in sev.per_corruption.values())
        for v in sev.per_corruption.values():
            assert v is None or 0 <= v < 200
        assert res.clean_samples == 2000 and res.false_alarms_per_10k >= 0.0
    logits = np.array([[0.0, 0.0], [10.0, -10.0]])
    assert stream_scores(logits, "energy") == pytest.approx([-math.log(2.0), -10.0], abs=1e-6)
    assert stream_scores(logits, "msp") == pytest.approx([0.5, 0.0], abs=1e-6)
    with pytest.raises(ConfigError):
        evaluate_drift(tiny_zoo, score="entropy")
    with pytest.raises(ConfigError):
        evaluate_drift(tiny_zoo, detectors=("ks", "ks"))


def test_evaluate_drift_on_the_runtime_detector_score(tiny_zoo):
    from edgecl.eval.drift import evaluate_drift

    out = evaluate_drift(tiny_zoo, detectors=("ks",), severities=(5,),
                         corruptions=("gaussian_noise",), clean_before=300, shifted=200,
                         clean_samples=1000, score="vim")
    sev = out.detectors["ks"].severities[5]
    assert out.score == "vim"
    assert sev.missed == 0 and sev.median_delay is not None and sev.median_delay < 200
