"""AdaNPC's bounded memory and votes; the collapse guard resets a degenerating adapter."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import InvalidInput
from edgecl.adapt import AdaNPC, CollapseGuard, create_adapter


def _clusters(seed=0, n=30, k=3, d=4):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    return np.eye(k, d)[y] * 3 + rng.normal(0, 0.3, (k * n, d)), y


def test_adanpc_votes_with_its_seeded_memory_and_stays_bounded():
    x, y = _clusters()
    npc = AdaNPC(k=10, per_class=20)
    npc.seed(x, y)
    assert npc.size == 3 * 20  # capped per class
    xq, yq = _clusters(seed=1)
    wrong_logits = np.zeros((len(xq), 3))  # an uninformative model
    probs = npc.adapt(xq, wrong_logits)
    assert (probs.argmax(1) == yq).mean() >= 0.95
    for _ in range(10):
        npc.adapt(xq, wrong_logits)
    assert npc.size <= 3 * 20 + 3 * 20  # learned entries capped too
    npc.reset()
    assert npc.size == 60  # the seed survives a reset
    with pytest.raises(InvalidInput):
        npc.adapt(xq, np.zeros((len(xq), 2)))  # memory has class 2, logits only 2 classes


class Collapsing(AdaNPC):
    """An adapter that predicts class 0 for everything."""

    name = "collapsing"

    def adapt(self, features, logits, *, images=None):
        out = np.zeros((len(features), logits.shape[1]))
        out[:, 0] = 1.0
        return out


def test_collapse_guard_resets_an_adapter_that_predicts_one_class():
    rng = np.random.default_rng(0)
    guard = CollapseGuard(Collapsing(), window=100, max_share=0.9)
    for _ in range(12):
        logits = rng.normal(size=(20, 4)) * 3  # the source model spreads its predictions
        guard.adapt(rng.normal(size=(20, 5)), logits)
    assert guard.events and guard.events[0].dominant_class == 0
    assert guard.events[0].share > 0.9 and guard.events[0].source_share <= 0.9
    honest = CollapseGuard(create_adapter("lame"), window=100)
    for _ in range(12):
        honest.adapt(rng.normal(size=(20, 5)), rng.normal(size=(20, 4)) * 3)
    assert not honest.events


def test_guard_serves_the_source_during_a_growing_cooldown():
    rng = np.random.default_rng(1)
    guard = CollapseGuard(Collapsing(), window=200, min_samples=40, cooldown=100)
    outputs = []
    for _ in range(60):
        logits = rng.normal(size=(20, 4)) * 3
        outputs.append(guard.adapt(rng.normal(size=(20, 5)), logits).argmax(1))
    preds = np.concatenate(outputs)
    assert [e.cooldown for e in guard.events[:3]] == [100, 200, 400]
    # detected after 40 samples, then switched off: no 200-window is one class
    shares = [np.bincount(preds[s:s + 200]).max() / 200 for s in range(0, 1000, 20)]
    assert max(shares) < 0.6
    # a degenerate source is not the method's fault: no event when the source agrees
    agree = CollapseGuard(Collapsing(), window=100, min_samples=40)
    for _ in range(10):
        logits = np.zeros((20, 4))
        logits[:, 0] = 5.0
        agree.adapt(rng.normal(size=(20, 5)), logits)
    assert not agree.events
