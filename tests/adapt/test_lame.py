"""LAME equals an independent plain implementation of the published algorithm; contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecl import ConfigError, InvalidInput
from edgecl.adapt import create_adapter, lame, list_adapters
from edgecl.bundle import FeatureStats
from edgecl.heads import LinearHead


def reference_lame(probs, feats, kind, knn):
    """Boudiaf et al. 2022 as written in the paper/fiveai code, with plain Python loops."""
    n, k = probs.shape
    x = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in feats.tolist()]
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], x[j]))) for j in range(n)]
            for i in range(n)]
    w = [[0.0] * n for _ in range(n)]
    if kind == "rbf":
        kk = min(knn, n)
        sigma = sum(sorted(dist[i])[kk - 1] for i in range(n)) / n
        w = [[math.exp(-dist[i][j] ** 2 / (2 * sigma ** 2)) for j in range(n)] for i in range(n)]
    else:
        kk = min(knn + 1, n)
        for i in range(n):
            nearest = sorted(range(n), key=lambda j: dist[i][j])[1:kk]
            for j in nearest:
                w[i][j] = 1.0
    unary = [[-math.log(p + 1e-10) for p in row] for row in probs.tolist()]

    def softmax(row):
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        return [v / s for v in e]

    y = [softmax([-u for u in row]) for row in unary]
    old = None
    for it in range(100):
        pair = [[sum(w[i][j] * y[j][c] for j in range(n)) for c in range(k)] for i in range(n)]
        y = [softmax([-unary[i][c] + pair[i][c] for c in range(k)]) for i in range(n)]
        e = sum(unary[i][c] * y[i][c] - pair[i][c] * y[i][c]
                + y[i][c] * math.log(max(y[i][c], 1e-20)) for i in range(n) for c in range(k))
        if it > 1 and abs(e - old) <= 1e-8 * abs(old):
            break
        old = e
    return np.array(y)


@pytest.mark.parametrize("kind", ["rbf", "knn"])
@pytest.mark.parametrize("seed", [0, 1])
def test_lame_matches_the_reference_algorithm(kind, seed):
    rng = np.random.default_rng(seed)
    n, d, k = 24, 6, 4
    centres = rng.normal(size=(k, d)) * 2
    labels = rng.integers(0, k, n)
    feats = centres[labels] + rng.normal(size=(n, d))
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = lame(probs, feats, kind=kind, knn=5)
    want = reference_lame(probs, feats, kind, 5)
    assert np.abs(got - want).max() <= 1e-6
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)


def _context(name):
    """Constructor arguments a method needs besides its hyperparameters (5 features,
    3 classes)."""
    rng = np.random.default_rng(7)
    if name in ("lame", "adanpc"):
        return {}
    head = LinearHead(rng.normal(size=(3, 5)), rng.normal(size=3))
    if name == "align":
        return {"head": head, "source": FeatureStats(np.zeros(5), np.ones(5), 100),
                "min_samples": 4}
    return {"head": head}


@pytest.mark.parametrize("name", list_adapters())
def test_adapter_contract(name):
    rng = np.random.default_rng(0)
    a, b = create_adapter(name, **_context(name)), create_adapter(name, **_context(name))
    for _ in range(5):
        f, z = rng.normal(size=(8, 5)), rng.normal(size=(8, 3))
        pa, pb = a.adapt(f, z), b.adapt(f, z)
        assert pa.shape == (8, 3) and np.allclose(pa.sum(axis=1), 1.0)
        np.testing.assert_array_equal(pa, pb)  # deterministic
    a.reset()
    fresh = create_adapter(name, **{**_context(name), **a.hyperparameters()})
    f, z = rng.normal(size=(4, 5)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(a.adapt(f, z), fresh.adapt(f, z))
    for bad in ((np.zeros((0, 5)), np.zeros((0, 3))), (np.zeros((3, 5)), np.zeros((2, 3))),
                (np.full((2, 5), np.nan), np.zeros((2, 3)))):
        with pytest.raises(InvalidInput):
            a.adapt(*bad)
    with pytest.raises(ConfigError):
        create_adapter("nope")


def test_lame_smooths_predictions_over_clusters():
    rng = np.random.default_rng(3)
    centres = np.eye(3) * 4
    y = np.repeat(np.arange(3), 20)
    feats = centres[y] + rng.normal(0, 0.3, (60, 3))
    logits = np.eye(3)[y] * 0.8 + rng.normal(0, 0.6, (60, 3))  # noisy classifier
    before = (logits.argmax(1) == y).mean()
    adapted = create_adapter("lame", window=60).adapt(feats, logits)
    assert (adapted.argmax(1) == y).mean() > before
