"""Conformance tests over every registered head, plus the feature adapter."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError, InvalidInput
from edgecl.heads import (
    CosineHead,
    LinearHead,
    LowRankAdapter,
    create_head,
    head_from_spec,
    list_heads,
)

D, C = 6, 4


def make(kind: str):
    rng = np.random.default_rng(1)
    if kind == "linear":
        return create_head("linear", weight=rng.normal(size=(C, D)), bias=rng.normal(size=C))
    if kind == "cosine":
        return create_head("cosine", prototypes=rng.normal(size=(C, D)), scale=8.0)
    raise AssertionError(f"no factory for new head kind {kind}: add one here")


@pytest.mark.parametrize("kind", list_heads())
def test_head_contract(kind):
    head = make(kind)
    feats = np.random.default_rng(2).normal(size=(7, D)).astype(np.float32)
    out = head.logits(feats)
    assert out.shape == (7, C) and out.dtype == np.float32
    rebuilt = head_from_spec(head.spec(), head.arrays())
    np.testing.assert_array_equal(rebuilt.logits(feats), out)
    assert head.spec()["type"] == kind
    for arr in head.arrays().values():
        assert not arr.flags.writeable, "head parameters must be immutable"
    with pytest.raises(InvalidInput, match=rf"\(N, {D}\)"):
        head.logits(np.zeros((3, D + 1), np.float32))


@pytest.mark.parametrize("kind", list_heads())
def test_head_spec_mismatch_refused(kind):
    head = make(kind)
    spec = dict(head.spec(), num_classes=C + 1)
    with pytest.raises(ConfigError, match="num_classes"):
        head_from_spec(spec, head.arrays())


def test_linear_matches_formula():
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(C, D)), rng.normal(size=C)
    f = rng.normal(size=(5, D)).astype(np.float32)
    np.testing.assert_allclose(LinearHead(w, b).logits(f), f @ w.T + b, rtol=1e-5, atol=1e-5)


def test_cosine_matches_formula_and_prototypes():
    rng = np.random.default_rng(4)
    p = rng.normal(size=(C, D))
    f = rng.normal(size=(5, D)).astype(np.float32)
    want = 8.0 * (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (
        p / np.linalg.norm(p, axis=1, keepdims=True)).T
    np.testing.assert_allclose(CosineHead(p, 8.0).logits(f), want, rtol=1e-5, atol=1e-5)
    labels = np.array([0, 1, 2, 3, 0])
    head = CosineHead.from_features(f[:5], labels, C)
    assert (head.logits(f[:4]).argmax(1) == np.arange(4)).all()


def test_bad_parameters_refused():
    with pytest.raises(ConfigError, match="bias"):
        LinearHead(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ConfigError, match="NaN"):
        LinearHead(np.full((3, 2), np.nan), np.zeros(3))
    with pytest.raises(ConfigError, match="scale"):
        CosineHead(np.ones((3, 2)), scale=0.0)
    with pytest.raises(ConfigError, match="unknown head kind"):
        create_head("mlp")


def test_adapter_identity_and_formula():
    f = np.random.default_rng(5).normal(size=(4, D)).astype(np.float32)
    ident = LowRankAdapter.identity(D, rank=2)
    np.testing.assert_array_equal(ident.apply(f), f)
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2, D)), rng.normal(size=(D, 2))
    np.testing.assert_allclose(LowRankAdapter(a, b).apply(f), f + (f @ a.T) @ b.T,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="up must have shape"):
        LowRankAdapter(a, b.T)
    with pytest.raises(InvalidInput):
        ident.apply(np.zeros((2, D + 1), np.float32))
