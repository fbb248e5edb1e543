"""Analytic gradients of heads and adapter match finite differences; the trainer learns."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError, InvalidInput
from edgecl.heads import CosineHead, LinearHead, LowRankAdapter
from edgecl.heads._grad import loss_and_grads
from edgecl.heads._optim import SGD, Adam, create_optimizer
from edgecl.heads._trainer import HeadTrainer


def _problem(kind: str, adapter: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d, k, r = 7, 5, 4, 3
    head = ({"weight": rng.normal(size=(k, d)), "bias": rng.normal(size=k)} if kind == "linear"
            else {"prototypes": rng.normal(size=(k, d))})
    adp = {"down": rng.normal(size=(r, d)), "up": rng.normal(size=(d, r)) * 0.5} if adapter \
        else None
    f = rng.normal(size=(n, d))
    t = rng.dirichlet(np.ones(k), size=n)
    w = rng.random(n)
    return head, adp, f, t, w


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("adapter", [False, True])
@pytest.mark.parametrize("objective", ["ce", "entropy"])
def test_gradients_match_finite_differences(kind, adapter, objective):
    head, adp, f, t, w = _problem(kind, adapter)
    targets = t if objective == "ce" else None
    scale = 3.0

    def loss_of():
        return loss_and_grads(kind, head, adp, f, targets=targets, weights=w, scale=scale)[0]

    _, grads, _ = loss_and_grads(kind, head, adp, f, targets=targets, weights=w, scale=scale)
    eps = 1e-6
    for name, g in grads.items():
        part, key = name.split(".")
        arr = (head if part == "head" else adp)[key]
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = loss_of()
            arr[idx] = old - eps
            down = loss_of()
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7, err_msg=name)


def test_optimizers_minimise_a_quadratic():
    for opt in (SGD(lr=0.1, momentum=0.9), Adam(lr=0.1), create_optimizer("sgd", lr=0.1)):
        p = {"x": np.array([3.0, -2.0])}
        for _ in range(300):
            opt.step(p, {"x": 2 * p["x"]})
        assert np.abs(p["x"]).max() < 1e-2
    with pytest.raises(ConfigError):
        create_optimizer("lbfgs")
    with pytest.raises(ConfigError):
        Adam(lr=-1)


def _blobs(k=3, d=6, n=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    y = np.repeat(np.arange(k), n)
    return (centres[y] + rng.normal(size=(k * n, d))).astype(np.float32), y, centres


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_trainer_learns_adds_and_removes_classes(kind):
    x, y, centres = _blobs()
    rng = np.random.default_rng(1)
    head = LinearHead(rng.normal(0, 0.01, (3, 6)), np.zeros(3)) if kind == "linear" \
        else CosineHead(rng.normal(size=(3, 6)), scale=10.0)
    adapter = LowRankAdapter.identity(6, 2)
    trainer = HeadTrainer(head, adapter, lr=0.05, class_names=["a", "b", "c"])
    first = trainer.learn_batch(x, y)
    for _ in range(150):
        last = trainer.learn_batch(x, y)
    assert last < first
    acc = (trainer.head().logits(trainer.adapter().apply(x)).argmax(1) == y).mean()
    assert acc >= 0.95
    # a new class from 5 shots is predicted for its own samples right away
    new = (centres[0] * -1.5 + rng.normal(size=(30, 6))).astype(np.float32)
    idx = trainer.add_class("d", new[:5])
    assert idx == 3 and trainer.class_names == ["a", "b", "c", "d"]
    pred = trainer.head().logits(trainer.adapter().apply(new[5:])).argmax(1)
    assert (pred == 3).mean() >= 0.8
    # a few batches with the shots and the old data settle both
    xs, ys = np.vstack([x, new[:5]]), np.append(y, [3] * 5)
    for _ in range(60):
        trainer.learn_batch(xs, ys)
    old = trainer.head().logits(trainer.adapter().apply(x)).argmax(1)
    assert (old == y).mean() >= 0.9  # the old classes survive
    pred = trainer.head().logits(trainer.adapter().apply(new[5:])).argmax(1)
    assert (pred == 3).mean() >= 0.8
    assert trainer.remove_class(1) == "b" and trainer.num_classes == 3
    assert trainer.head().num_classes == 3
    with pytest.raises(ConfigError):
        trainer.add_class("a", new[:2])
    with pytest.raises(InvalidInput):
        trainer.learn_batch(x, np.full(len(x), 7))
    with pytest.raises(InvalidInput):
        trainer.learn_batch(x[:, :3], y)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInput):
        trainer.step(bad)


def test_entropy_step_sharpens_predictions_without_labels():
    x, y, _ = _blobs(seed=2)
    trainer = HeadTrainer(LinearHead(np.random.default_rng(0).normal(0, 0.05, (3, 6)),
                                     np.zeros(3)), lr=0.01)
    for _ in range(20):
        trainer.learn_batch(x, y)
    before = trainer.step(x)  # entropy objective
    for _ in range(30):
        after = trainer.step(x)
    assert after < before
