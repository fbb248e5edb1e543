"""Conformance suite run over every registered detector (a new entry is tested automatically)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import BundleError, ConfigError, InvalidInput
from edgecl.ood import (
    Detector,
    auroc,
    create_detector,
    list_detectors,
    load_detectors,
    save_detectors,
)
from tests.ood.conftest import C, D

SHA = "ab" * 32
OTHER_SHA = "cd" * 32
NAMES = list_detectors()


def fit(name: str, s, **hp) -> Detector:
    return create_detector(name, **hp).fit(s.cal_f, s.cal_z, s.cal_y, head=s.head)


@pytest.fixture(scope="module")
def fitted(synthetic) -> dict[str, Detector]:
    return {name: fit(name, synthetic) for name in NAMES}


def test_registry_lists_the_reference_detectors():
    assert NAMES == sorted(NAMES)
    assert {"energy", "hdc", "knn", "mahalanobis", "msp", "vim"} <= set(NAMES)
    with pytest.raises(ConfigError, match="unknown detector"):
        create_detector("no_such_detector")
    with pytest.raises(ConfigError, match="hyperparameters"):
        create_detector(NAMES[0], no_such_option=1)


@pytest.mark.parametrize("name", NAMES)
def test_fit_and_score_shapes(name, fitted, synthetic):
    det = fitted[name]
    assert det.name == name and det.fitted
    assert isinstance(det.threshold, float) and np.isfinite(det.threshold)
    assert (det.feature_dim, det.num_classes) == (D, C)
    scores = det.score(synthetic.id_f, synthetic.id_z)
    assert scores.shape == (synthetic.id_f.shape[0],) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert det.score(synthetic.id_f[:0], synthetic.id_z[:0]).shape == (0,)
    one = det.score(synthetic.id_f[:1], synthetic.id_z[:1])
    np.testing.assert_allclose(one, scores[:1], rtol=1e-6, atol=1e-9)
    flags = det.is_ood(synthetic.ood_f, synthetic.ood_z)
    assert flags.dtype == bool
    np.testing.assert_array_equal(flags, det.score(synthetic.ood_f, synthetic.ood_z)
                                  > det.threshold)


@pytest.mark.parametrize("name", NAMES)
def test_threshold_accepts_95_percent_of_id(name, fitted, synthetic):
    det = fitted[name]
    on_calibration = np.mean(det.score(synthetic.cal_f, synthetic.cal_z) <= det.threshold)
    on_fresh_id = np.mean(det.score(synthetic.id_f, synthetic.id_z) <= det.threshold)
    assert abs(on_calibration - 0.95) <= 0.02, on_calibration
    assert abs(on_fresh_id - 0.95) <= 0.03, on_fresh_id  # new data: sampling error too
    det_90 = create_detector(name, **det.hyperparameters())
    det_90.fit(synthetic.cal_f, synthetic.cal_z, synthetic.cal_y, head=synthetic.head, tpr=0.9)
    assert det_90.threshold <= det.threshold


@pytest.mark.parametrize("name", NAMES)
def test_shifted_data_scores_higher(name, fitted, synthetic):
    det = fitted[name]
    id_scores = det.score(synthetic.id_f, synthetic.id_z)
    ood_scores = det.score(synthetic.ood_f, synthetic.ood_z)
    assert auroc(id_scores, ood_scores) > 0.9
    assert det.is_ood(synthetic.ood_f, synthetic.ood_z).mean() > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, fitted, synthetic, tmp_path):
    det = fitted[name]
    path = tmp_path / "detectors.npz"
    save_detectors(path, {name: det, "second": det}, encoder_sha256=SHA)
    assert [p.name for p in tmp_path.iterdir()] == ["detectors.npz"]  # no temp files left
    loaded = load_detectors(path, encoder_sha256=SHA)
    assert sorted(loaded) == sorted([name, "second"])
    back = loaded[name]
    assert type(back) is type(det)
    assert back.hyperparameters() == det.hyperparameters()
    assert back.threshold == det.threshold
    np.testing.assert_array_equal(back.score(synthetic.ood_f, synthetic.ood_z),
                                  det.score(synthetic.ood_f, synthetic.ood_z))
    np.testing.assert_array_equal(back.score(synthetic.id_f, synthetic.id_z),
                                  det.score(synthetic.id_f, synthetic.id_z))
    for key, value in det.state().items():
        np.testing.assert_array_equal(back.state()[key], value)
        assert back.state()[key].dtype == value.dtype


@pytest.mark.parametrize("name", NAMES)
def test_file_for_another_encoder_is_refused(name, fitted, tmp_path):
    path = tmp_path / "for-other.npz"
    save_detectors(path, {name: fitted[name]}, encoder_sha256=OTHER_SHA)
    with pytest.raises(BundleError, match=r"for-other\.npz.*encoder") as info:
        load_detectors(path, encoder_sha256=SHA)
    assert info.value.path == str(path)


@pytest.mark.parametrize("name", NAMES)
def test_truncated_or_corrupt_file_is_refused(name, fitted, synthetic, tmp_path):
    path = tmp_path / "dets.npz"
    save_detectors(path, {name: fitted[name]}, encoder_sha256=SHA)
    blob = path.read_bytes()
    expected = fitted[name].score(synthetic.id_f, synthetic.id_z)
    for cut in (0, 10, len(blob) // 3, len(blob) // 2, len(blob) - 1):
        path.write_bytes(blob[:cut])
        with pytest.raises(BundleError, match=r"dets\.npz"):
            load_detectors(path, encoder_sha256=SHA)
    # a flipped byte anywhere is refused, or (a field zip does not read back, e.g. a
    # timestamp) changes nothing: never a silently different detector
    rng = np.random.default_rng(0)
    offsets = rng.choice(len(blob), size=min(len(blob), 60), replace=False)
    refused = 0
    for offset in offsets:
        bad = bytearray(blob)
        bad[offset] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            back = load_detectors(path, encoder_sha256=SHA)[name]
        except BundleError as exc:
            assert "dets.npz" in str(exc)
            refused += 1
            continue
        np.testing.assert_array_equal(back.score(synthetic.id_f, synthetic.id_z), expected)
    assert refused > len(offsets) // 2


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, synthetic):
    a, b = fit(name, synthetic), fit(name, synthetic)
    assert a.threshold == b.threshold
    np.testing.assert_array_equal(a.score(synthetic.ood_f, synthetic.ood_z),
                                  b.score(synthetic.ood_f, synthetic.ood_z))


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name, fitted, synthetic):
    s, det = synthetic, fitted[name]
    fresh = create_detector(name)
    with pytest.raises(ConfigError, match="not fitted"):
        fresh.score(s.id_f, s.id_z)
    with pytest.raises(ConfigError, match="not fitted"):
        fresh.is_ood(s.id_f, s.id_z)
    with pytest.raises(ConfigError, match="not fitted"):
        fresh.state()

    nan_f = s.cal_f.copy()
    nan_f[3, 2] = np.nan
    inf_z = s.cal_z.copy()
    inf_z[0, 0] = np.inf
    bad_fits = [
        (nan_f, s.cal_z, s.cal_y),                      # NaN feature
        (s.cal_f, inf_z, s.cal_y),                      # inf logit
        (s.cal_f[:, :, None], s.cal_z, s.cal_y),        # 3-D features
        (s.cal_f[0], s.cal_z, s.cal_y),                 # 1-D features
        (s.cal_f[:-1], s.cal_z, s.cal_y),               # row counts differ
        (s.cal_f, s.cal_z, s.cal_y[:-1]),               # labels too short
        (s.cal_f, s.cal_z, s.cal_y + C),                # labels outside [0, C)
        (s.cal_f, s.cal_z, s.cal_y + 0.5),              # non-integer labels
        (s.cal_f.astype(complex), s.cal_z, s.cal_y),    # not real
    ]
    for f, z, y in bad_fits:
        with pytest.raises(InvalidInput):
            create_detector(name).fit(f, z, y, head=s.head)

    bad_scores = [
        (np.where(np.arange(D) == 0, np.nan, s.id_f[:4]), s.id_z[:4]),
        (s.id_f[:4], np.full((4, C), -np.inf)),
        (s.id_f[:4, :-1], s.id_z[:4]),                  # fewer feature dimensions
        (s.id_f[:4], s.id_z[:4, :-1]),                  # fewer classes
        (s.id_f[:4], s.id_z[:3]),                       # row counts differ
        (s.id_f[0], s.id_z[0]),                         # a single unbatched sample
    ]
    for f, z in bad_scores:
        with pytest.raises(InvalidInput):
            det.score(f, z)

    with pytest.raises(ConfigError, match="at least"):  # one sample is too few for anything
        create_detector(name).fit(s.cal_f[:1], s.cal_z[:1], s.cal_y[:1], head=s.head)
    with pytest.raises(ConfigError, match="tpr"):
        create_detector(name).fit(s.cal_f, s.cal_z, s.cal_y, head=s.head, tpr=1.5)
    if det.min_per_class:  # detectors with per-class statistics need every class
        keep = s.cal_y != 2
        with pytest.raises(ConfigError, match=r"classes \[2\]"):
            create_detector(name).fit(s.cal_f[keep], s.cal_z[keep], s.cal_y[keep], head=s.head)


@pytest.mark.parametrize("name", NAMES)
def test_state_must_fit_its_dimensions(name, fitted):
    det = fitted[name]
    cls = type(det)
    state = det.state()
    assert cls.from_state(state, **det.hyperparameters()).threshold == det.threshold
    with pytest.raises(ConfigError):
        cls.from_state({k: v for k, v in state.items() if k != "threshold"},
                       **det.hyperparameters())
    if len(state) > 3:  # detectors with learned arrays notice dimensions they do not fit
        with pytest.raises(ConfigError):
            cls.from_state(dict(state, feature_dim=np.array(D + 3)), **det.hyperparameters())
    if det.min_per_class:  # and those with per-class arrays, a wrong number of classes
        with pytest.raises(ConfigError):
            cls.from_state(dict(state, num_classes=np.array(C + 1)), **det.hyperparameters())
