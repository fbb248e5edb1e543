"""Feature alignment, Tent, EATA, CoTTA and combinations: behaviour on synthetic features
with a known shift, and the evaluation on the tiny zoo."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import BundleError, ConfigError, InvalidInput
from edgecl.adapt import EATA, Aligned, CoTTA, FeatureAlign, Tent, augment, create_adapter
from edgecl.bundle import FeatureStats, read_feature_stats
from edgecl.heads import FeatureNorm, LinearHead
from tests.schema_checks import check_result

SHA = "ab" * 32


def _problem(seed: int = 0, n: int = 600, shift: float = 12.0, scale: float = 2.0):
    """Three well separated classes in 6-D; the 'test' domain scales them and shifts them
    towards class 0 (``shift`` along its axis)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 6) * 4.0
    y = rng.integers(0, 3, n)
    src = centres[y] + rng.normal(0, 0.5, (n, 6))
    tgt = (centres[y] + rng.normal(0, 0.5, (n, 6))) * scale + shift * np.eye(6)[0]
    head = LinearHead(centres * 0.5, -0.25 * (centres**2).sum(1))
    return src, tgt, y, head


class AlwaysOOD:
    threshold = 0.0

    def score(self, features, logits):
        return np.ones(len(features))


class NeverOOD(AlwaysOOD):
    def score(self, features, logits):
        return -np.ones(len(features))


def test_feature_norm_maps_window_statistics_to_the_source():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (5000, 4))
    norm = FeatureNorm.align(mean=x.mean(0), var=x.var(0), source_mean=np.arange(4.0),
                             source_var=np.full(4, 0.25))
    y = norm.apply(x.astype(np.float32))
    np.testing.assert_allclose(y.mean(0), np.arange(4.0), atol=1e-3)
    np.testing.assert_allclose(y.std(0), 0.5, atol=1e-3)
    with pytest.raises(InvalidInput):
        norm.apply(np.zeros((2, 3), np.float32))
    with pytest.raises(ConfigError):
        FeatureNorm(np.ones(3), np.ones(4))


def test_feature_stats_round_trip_and_refuse_corrupt_or_foreign_files(tmp_path):
    stats = FeatureStats.of(np.random.default_rng(0).normal(size=(50, 5)))
    path = tmp_path / "s.npz"
    path.write_bytes(stats.to_bytes(SHA))
    back = read_feature_stats(path, encoder_sha256=SHA)
    np.testing.assert_allclose(back.mean, stats.mean)
    assert back.count == 50
    with pytest.raises(BundleError, match="another encoder"):
        read_feature_stats(path, encoder_sha256="cd" * 32)
    path.write_bytes(stats.to_bytes(SHA)[:40])
    with pytest.raises(BundleError, match="unreadable"):
        read_feature_stats(path, encoder_sha256=SHA)
    with pytest.raises(ConfigError):
        FeatureStats.of(np.full((3, 2), np.nan))


def test_align_recovers_a_shifted_domain_and_predicts_before_it_adapts():
    src, tgt, y, head = _problem()
    before = (head.logits(tgt).argmax(1) == y).mean()
    align = FeatureAlign(head, FeatureStats.of(src), detector=AlwaysOOD(), window=128)
    first = align.adapt(tgt[:32], head.logits(tgt[:32]))
    # prequential: the first batch is predicted with the unaligned state
    np.testing.assert_allclose(first, _softmax(head.logits(tgt[:32])), atol=1e-9)
    preds = [first.argmax(1)] + [align.adapt(tgt[i:i + 32], head.logits(tgt[i:i + 32]))
                                 .argmax(1) for i in range(32, len(y), 32)]
    after = (np.concatenate(preds)[128:] == y[128:]).mean()
    assert before < 0.5 and after > 0.95
    norm = align.state_changes()["feature_norm"]
    assert isinstance(norm, FeatureNorm)
    assert np.abs(norm.apply(tgt).mean(0) - src.mean(0)).max() < 0.5


def test_align_gate_keeps_an_in_distribution_stream_untouched():
    src, _, y, head = _problem()
    skewed = src[y == 0]  # label shift only: one class
    gated = FeatureAlign(head, FeatureStats.of(src), detector=NeverOOD(), window=64)
    for i in range(0, len(skewed), 16):
        out = gated.adapt(skewed[i:i + 16], head.logits(skewed[i:i + 16]))
        assert (out.argmax(1) == 0).all()
    assert not gated.active and gated.state_changes() == {"feature_norm": None}
    ungated = FeatureAlign(head, FeatureStats.of(src), detector=None, window=64)
    for i in range(0, len(skewed), 16):
        ungated.adapt(skewed[i:i + 16], head.logits(skewed[i:i + 16]))
    assert ungated.active  # without the gate, alignment would act on a pure label shift


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_tent_lowers_entropy_and_eata_filters_unreliable_samples():
    _src, tgt, y, head = _problem(shift=0.5, scale=1.0)
    tent = Tent(head, lr=1e-2)
    h0 = _entropy(_softmax(head.logits(tgt)))
    for _ in range(5):
        for i in range(0, len(y), 64):
            tent.adapt(tgt[i:i + 64], head.logits(tgt[i:i + 64]))
    new_head = tent.state_changes()["head"]
    assert _entropy(_softmax(new_head.logits(tgt))) < 0.8 * h0
    eata = EATA(head, lr=1e-2, fisher_alpha=0.0)
    noise = np.random.default_rng(3).normal(0, 0.01, (64, 6))  # all near-uniform predictions
    eata.adapt(noise, head.logits(noise))
    assert eata.kept == 0  # every sample is above E0: no step
    np.testing.assert_array_equal(eata.state_changes()["head"].arrays()["weight"],
                                  head.arrays()["weight"])
    eata.adapt(tgt[:64], head.logits(tgt[:64]))
    assert 0 < eata.kept <= 64


def _entropy(p):
    return float(-(p * np.log(np.clip(p, 1e-12, 1))).sum(1).mean())


def test_eata_fisher_anchor_limits_drift_from_the_source():
    src, tgt, y, head = _problem(shift=0.5, scale=1.0)
    moved = {}
    for alpha in (0.0, 1e6):
        eata = EATA(head, lr=1e-2, fisher_alpha=alpha, redundancy_eps=1.0)
        eata.seed(src)
        for _ in range(5):
            for i in range(0, len(y), 64):
                eata.adapt(tgt[i:i + 64], head.logits(tgt[i:i + 64]))
        w = eata.state_changes()["head"].arrays()["weight"]
        moved[alpha] = float(np.abs(w - head.arrays()["weight"]).sum())
    assert moved[1e6] < 0.5 * moved[0.0]


def test_cotta_restores_parameters_and_averages_augmented_views():
    _src, _tgt, _y, head = _problem(shift=0.5, scale=1.0)
    calls = []

    def encoder(images):
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :6].astype(np.float64)

    images = np.random.default_rng(0).random((64, 1, 4, 4), dtype=np.float32)
    feats = encoder(images)
    calls.clear()
    full = CoTTA(head, lr=0.1, restore=1.0, ap=1.0, views=4, encoder=encoder)
    full.adapt(feats, head.logits(feats), images=images)
    assert calls == [64] * 4  # unsure source: 4 augmented views of the batch
    # restore probability 1: the student is back at the source values after the step
    for k, v in full.trainer.params.items():
        np.testing.assert_array_equal(v, full.source[k])
    none = CoTTA(head, lr=0.1, restore=0.0, ap=0.0, views=4, encoder=encoder)
    calls.clear()
    none.adapt(feats, head.logits(feats), images=images)
    assert calls == []  # confident source: no views
    aug = augment(images, np.random.default_rng(1))
    assert aug.shape == images.shape and aug.min() >= 0 and aug.max() <= 1
    assert not np.array_equal(aug, images)


def test_aligned_combination_publishes_norm_and_head():
    src, tgt, _y, head = _problem()
    combo = Aligned(FeatureAlign(head, FeatureStats.of(src), detector=AlwaysOOD(),
                                 window=64), Tent(head, lr=1e-3))
    assert combo.name == "align+tent"
    for i in range(0, 256, 32):
        combo.adapt(tgt[i:i + 32], head.logits(tgt[i:i + 32]))
    changes = combo.state_changes()
    assert set(changes) == {"feature_norm", "head", "adapter"}
    assert changes["feature_norm"] is not None
    lame_combo = Aligned(FeatureAlign(head, FeatureStats.of(src)), create_adapter("lame"))
    with pytest.raises(ConfigError, match="outputs only"):
        lame_combo.state_changes()
    with pytest.raises(ConfigError):
        Aligned(FeatureAlign(head, FeatureStats.of(src)), FeatureAlign(head,
                                                                       FeatureStats.of(src)))


def test_eval_adapt_on_the_tiny_zoo(tiny_zoo):
    from edgecl.eval.adapt import evaluate_adapt

    r = evaluate_adapt(tiny_zoo, scenario="continual", samples=400,
                       methods=("source", "align", "eata"))
    check_result(r, ("methods", "align"), ("floors",))
    m = r.methods
    assert set(m) == {"source", "align", "eata"} and r.samples == 4000
    for v in m.values():
        assert len(v.per_domain) == 10
    assert m["align"].mean_online_acc >= m["source"].mean_online_acc + 0.05
    assert m["align"].worst_domain_delta >= -0.02
    assert not any(v.collapsed for v in m.values())
    assert r.best_device in ("align", "eata")
    assert r.floors is not None and r.floors.collapsed == []


def test_align_restarts_its_window_when_the_domain_changes():
    src, tgt_a, y, head = _problem(shift=12.0)
    rng = np.random.default_rng(5)
    y_b = rng.integers(0, 3, len(y))
    tgt_b = (np.eye(3, 6)[y_b] * 4.0 + rng.normal(0, 0.5, (len(y), 6))) * 0.5 \
        - 8.0 * np.eye(6)[1]  # another corruption: shrunk and pushed away from class 1
    acc = {}
    for reset_z in (None, 0.5):
        align = FeatureAlign(head, FeatureStats.of(src), detector=AlwaysOOD(), window=256,
                             reset_z=reset_z)
        for i in range(0, len(y), 32):
            align.adapt(tgt_a[i:i + 32], head.logits(tgt_a[i:i + 32]))
        hits = [(align.adapt(tgt_b[i:i + 32], head.logits(tgt_b[i:i + 32])).argmax(1)
                 == y_b[i:i + 32]) for i in range(0, 256, 32)]
        acc[reset_z] = float(np.concatenate(hits[1:]).mean())  # after the first batch
        assert align.restarts == (0 if reset_z is None else 1)
    assert acc[0.5] > 0.95 and acc[0.5] > acc[None] + 0.1
