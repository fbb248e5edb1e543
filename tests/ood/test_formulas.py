"""Each detector against a direct numpy computation of its formula (methods.md)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.heads import CosineHead, LinearHead
from edgecl.ood import HDC, KNN, create_detector, hdc_projection
from tests.ood.conftest import C, D, clusters


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def threshold_rule(scores, tpr=0.95):
    """Brute force: the smallest score accepting at least ``tpr`` of the scores."""
    return min(t for t in scores if np.mean(scores <= t) >= tpr)


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_msp_and_energy(synthetic, t):
    s = synthetic
    z = s.ood_z.astype(np.float64)
    msp = create_detector("msp", temperature=t).fit(s.cal_f, s.cal_z, s.cal_y)
    np.testing.assert_allclose(msp.score(s.ood_f, s.ood_z), -softmax(z / t).max(axis=1),
                               rtol=1e-12, atol=1e-15)
    energy = create_detector("energy", temperature=t).fit(s.cal_f, s.cal_z, s.cal_y)
    np.testing.assert_allclose(energy.score(s.ood_f, s.ood_z),
                               -t * np.log(np.exp(z / t).sum(axis=1)), rtol=1e-12)
    cal = -t * np.log(np.exp(s.cal_z.astype(np.float64) / t).sum(axis=1))
    assert energy.threshold == pytest.approx(threshold_rule(cal), rel=1e-12)
    with pytest.raises(ConfigError, match="temperature"):
        create_detector("msp", temperature=0.0)


def test_energy_is_stable_for_large_logits():
    z = np.array([[1000.0, 0.0], [0.0, 0.0], [-1000.0, -1000.0]])
    det = create_detector("energy").fit(np.zeros((3, 1)), z, np.array([0, 1, 0]))
    np.testing.assert_allclose(det.score(np.zeros((3, 1)), z),
                               [-1000.0, -np.log(2.0), 1000.0 - np.log(2.0)])


def mahalanobis_direct(f, y, x, eps=1e-6):
    f, x = f.astype(np.float64), x.astype(np.float64)
    means = np.stack([f[y == k].mean(axis=0) for k in range(y.max() + 1)])
    centred = f - means[y]
    cov = centred.T @ centred / (len(f) - 1) + eps * np.eye(f.shape[1])
    precision = np.linalg.inv(cov)
    d2 = np.stack([np.einsum("ij,jk,ik->i", x - m, precision, x - m) for m in means], axis=1)
    return 0.5 * d2.min(axis=1)


def test_mahalanobis_against_explicit_inverse(synthetic):
    s = synthetic
    det = create_detector("mahalanobis").fit(s.cal_f, s.cal_z, s.cal_y)
    for x, z in ((s.id_f, s.id_z), (s.ood_f, s.ood_z)):
        np.testing.assert_allclose(det.score(x, z), mahalanobis_direct(s.cal_f, s.cal_y, x),
                                   rtol=1e-9)
    assert det.threshold == pytest.approx(
        threshold_rule(mahalanobis_direct(s.cal_f, s.cal_y, s.cal_f)), rel=1e-9)


def test_mahalanobis_singular_covariance_is_regularised():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(9, 20))  # 9 samples in 20-d: the covariance has rank 6
    f[:, 5] = 1.0                 # and a constant (dead) unit
    y = np.repeat(np.arange(3), 3)
    det = create_detector("mahalanobis").fit(f, np.zeros((9, 3)), y)
    x = rng.normal(size=(5, 20))
    scores = det.score(x, np.zeros((5, 3)))
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, mahalanobis_direct(f, y, x), rtol=1e-6)


def test_mahalanobis_needs_two_samples_per_class():
    f = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ConfigError, match=r"at least 2 .* classes \[1\]"):
        create_detector("mahalanobis").fit(f, np.zeros((5, 2)), np.array([0, 0, 0, 0, 1]))


def knn_direct(memory, x, k, normalize):
    if normalize:
        memory = memory / np.linalg.norm(memory, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.linalg.norm(x[:, None, :] - memory[None, :, :], axis=2)
    return np.sort(dist, axis=1)[:, k - 1]


@pytest.mark.parametrize(("k", "normalize"), [(10, True), (1, False), (3, True)])
def test_knn_against_brute_force(k, normalize):
    s = clusters(per_class=60, seed=1)
    cal = s.cal_f.astype(np.float64)
    det = KNN(k=k, normalize=normalize).fit(s.cal_f, s.cal_z, s.cal_y)
    for x, z in ((s.id_f, s.id_z), (s.ood_f, s.ood_z)):
        np.testing.assert_allclose(det.score(x, z), knn_direct(cal, x.astype(np.float64), k,
                                                               normalize), rtol=2e-5, atol=1e-6)
    # the threshold comes from leave-one-out calibration scores: the k-th *other* sample
    loo = knn_direct(cal, cal, k + 1, normalize)
    assert det.threshold == pytest.approx(threshold_rule(loo), rel=2e-5, abs=1e-6)


def test_knn_memory_is_a_bounded_seeded_subset(synthetic):
    s = synthetic
    a = KNN(max_memory=300, seed=1).fit(s.cal_f, s.cal_z, s.cal_y)
    b = KNN(max_memory=300, seed=1).fit(s.cal_f, s.cal_z, s.cal_y)
    c = KNN(max_memory=300, seed=2).fit(s.cal_f, s.cal_z, s.cal_y)
    assert a.state()["memory"].shape == (300, D)
    assert a.state()["memory"].dtype == np.float32
    np.testing.assert_array_equal(a.state()["memory"], b.state()["memory"])
    assert not np.array_equal(a.state()["memory"], c.state()["memory"])
    np.testing.assert_array_equal(a.score(s.ood_f, s.ood_z), b.score(s.ood_f, s.ood_z))
    # the memory rows are calibration features (normalised), and the threshold still
    # accepts ~95% of calibration data, leaving out self-matches of remembered samples
    normalised = s.cal_f / np.linalg.norm(s.cal_f, axis=1, keepdims=True)
    dist = np.linalg.norm(a.state()["memory"][:, None] - normalised[None], axis=2)
    assert np.allclose(dist.min(axis=1), 0.0, atol=1e-6)
    assert abs(np.mean(a.score(s.id_f, s.id_z) <= a.threshold) - 0.95) < 0.03


def test_knn_needs_k_plus_one_samples():
    f = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ConfigError, match="k \\+ 1 = 11"):
        KNN(k=10).fit(f, np.zeros((10, 2)), np.zeros(10, dtype=int))
    KNN(k=9).fit(f, np.zeros((10, 2)), np.zeros(10, dtype=int))
    with pytest.raises(ConfigError, match="max_memory"):
        KNN(k=10, max_memory=10)
    with pytest.raises(ConfigError, match="k must"):
        KNN(k=0)


def test_vim_against_direct_computation(synthetic):
    s = synthetic
    w, b = s.head.weight.astype(np.float64), s.head.bias.astype(np.float64)
    det = create_detector("vim").fit(s.cal_f, s.cal_z, s.cal_y, head=s.head)
    d = D // 2
    u = -np.linalg.pinv(w) @ b
    x = s.cal_f.astype(np.float64) - u
    _, _, vt = np.linalg.svd(x, full_matrices=False)  # rows: principal directions
    top = vt[:d].T

    def residual(f):
        c = f.astype(np.float64) - u
        return np.linalg.norm(c - c @ top @ top.T, axis=1)

    alpha = s.cal_z.astype(np.float64).max(axis=1).mean() / residual(s.cal_f).mean()
    z = s.ood_z.astype(np.float64)
    expected = alpha * residual(s.ood_f) - np.log(np.exp(z).sum(axis=1))
    np.testing.assert_allclose(det.score(s.ood_f, s.ood_z), expected, rtol=1e-8)
    assert float(det.state()["alpha"]) == pytest.approx(alpha, rel=1e-10)


def test_vim_needs_a_linear_head(synthetic):
    s = synthetic
    for head in (None, CosineHead(np.eye(C, D))):
        with pytest.raises(ConfigError, match="LinearHead"):
            create_detector("vim").fit(s.cal_f, s.cal_z, s.cal_y, head=head)
    with pytest.raises(ConfigError, match="head is"):
        create_detector("vim").fit(s.cal_f, s.cal_z, s.cal_y, head=LinearHead(np.eye(C, 3),
                                                                              np.zeros(C)))
    with pytest.raises(ConfigError, match="d must"):
        create_detector("vim", d=D).fit(s.cal_f, s.cal_z, s.cal_y, head=s.head)
    det = create_detector("vim", d=3).fit(s.cal_f, s.cal_z, s.cal_y, head=s.head)
    assert det.state()["residual_basis"].shape == (D, D - 3)


@pytest.mark.parametrize(("feature_dim", "dim"), [(16, 4096), (64, 100), (300, 128)])
def test_hdc_projection_is_block_orthogonal_and_seeded(feature_dim, dim):
    p = hdc_projection(feature_dim, dim, seed=5)
    assert p.shape == (feature_dim, dim) and p.dtype == np.float32
    for start in range(0, dim, feature_dim):  # columns (rows of P^T) orthonormal per block
        block = p[:, start:start + feature_dim].astype(np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(block.shape[1]), atol=1e-5)
    np.testing.assert_array_equal(p, hdc_projection(feature_dim, dim, seed=5))
    assert not np.allclose(p, hdc_projection(feature_dim, dim, seed=6))
    if dim % feature_dim == 0:  # whole blocks: inner products scale by dim / feature_dim
        np.testing.assert_allclose(p.astype(np.float64) @ p.T,
                                   dim / feature_dim * np.eye(feature_dim), atol=1e-4)


@pytest.mark.parametrize("bipolar", [False, True])
def test_hdc_against_direct_computation(synthetic, bipolar):
    s = synthetic
    det = HDC(seed=3, bipolar=bipolar).fit(s.cal_f, s.cal_z, s.cal_y)
    p = hdc_projection(D, 4096, seed=3).astype(np.float64)
    mu = s.cal_f.astype(np.float64).mean(axis=0)

    def encode(f):
        h = (f.astype(np.float64) - mu) @ p
        return np.sign(h) if bipolar else h

    protos = np.stack([encode(s.cal_f[s.cal_y == k]).sum(axis=0) for k in range(C)])
    h = encode(s.ood_f)
    cos = (h @ protos.T) / np.linalg.norm(h, axis=1)[:, None] / np.linalg.norm(protos, axis=1)
    np.testing.assert_allclose(det.score(s.ood_f, s.ood_z), -cos.max(axis=1), atol=2e-5)


def test_hdc_refuses_a_projection_it_cannot_regenerate(synthetic):
    s = synthetic
    det = HDC().fit(s.cal_f, s.cal_z, s.cal_y)
    state = det.state()
    assert set(state) == {"threshold", "feature_dim", "num_classes", "mean", "prototypes",
                          "projection_check"}  # the projection itself is not stored
    tampered = dict(state, projection_check=state["projection_check"] + 0.01)
    with pytest.raises(ConfigError, match="regenerated from seed"):
        HDC.from_state(tampered, **det.hyperparameters())
    with pytest.raises(ConfigError, match="regenerated from seed"):  # fitted with seed 0
        HDC.from_state(state, dim=4096, seed=1, bipolar=False)
