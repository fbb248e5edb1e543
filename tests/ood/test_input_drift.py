"""InputDriftMonitor: environment changes seen in the images, blind to model updates."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError, InvalidInput
from edgecl.ood import IMAGE_STATISTICS, InputDriftMonitor, image_statistics
from edgecl.zoo import KNOWN_CLASSES, corrupt, load_mnist


@pytest.fixture(scope="module")
def digits():
    return load_mnist().test.only(KNOWN_CLASSES).images


def test_image_statistics_measure_brightness_contrast_and_edges(digits):
    x = digits[:200]
    stats = image_statistics(x)
    assert stats.shape == (200, len(IMAGE_STATISTICS)) and stats.dtype == np.float64
    np.testing.assert_allclose(stats[:, 0], x.reshape(200, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats[:, 1], x.reshape(200, -1).std(axis=1), rtol=1e-5)
    base = np.median(stats, axis=0)
    noisy = np.median(image_statistics(corrupt(x, "gaussian_noise", 5, 0)), axis=0)
    blurred = np.median(image_statistics(corrupt(x, "defocus_blur", 5, 0)), axis=0)
    bright = np.median(image_statistics(corrupt(x, "brightness", 5, 0)), axis=0)
    assert noisy[2] > 1.5 * base[2]  # noise: more edge energy per unit of contrast
    assert blurred[2] < 0.8 * base[2]  # blur: less
    assert bright[0] > base[0] + 0.1  # brightness: a higher mean
    assert image_statistics(x[0]).shape == (1, 3)  # (N, H, W) works too


def test_every_corruption_change_is_found_soon_and_a_clean_stream_raises_no_alarm(digits):
    rng = np.random.default_rng(0)
    kinds = ["gaussian_noise", "defocus_blur", "contrast", "brightness", "pixelate"]
    blocks = [digits[rng.permutation(len(digits))[:600]]]
    for i, kind in enumerate(kinds):
        blocks.append(corrupt(digits[rng.permutation(len(digits))[:600]], kind, 5, i))
    stream = np.concatenate(blocks)
    monitor = InputDriftMonitor()
    found = []
    for start in range(0, len(stream), 10):
        found.extend(s.index for s in monitor.update(stream[start:start + 10]))
    changes = [600 * (i + 1) for i in range(len(kinds))]
    assert len(found) == len(changes), found  # no false alarm, no miss
    delays = np.array(found) - np.array(changes)
    assert (delays >= 0).all() and (delays < 100).all(), delays
    assert monitor.samples_seen == len(stream)
    clean = InputDriftMonitor()
    for _ in range(3):
        assert clean.update(digits[rng.permutation(len(digits))[:3000]]) == []


def test_batching_does_not_change_what_is_found(digits):
    stream = np.concatenate([digits[:500], corrupt(digits[500:900], "contrast", 5, 0)])
    one = InputDriftMonitor()
    by_one = [s.index for i in range(len(stream)) for s in one.update(stream[i:i + 1])]
    whole = [s.index for s in InputDriftMonitor().update(stream)]
    assert by_one == whole and len(whole) == 1
    assert InputDriftMonitor().update(stream)[0].detector.startswith("input:")


def test_bad_input_is_refused_and_consumes_nothing(digits):
    monitor = InputDriftMonitor()
    monitor.update(digits[:50])
    bad = digits[:10].copy()
    bad[3, 0, 5, 5] = np.nan
    for images in (bad, digits[:10, 0, 0], np.array(["a", "b"]), np.zeros((3, 1, 1, 8))):
        with pytest.raises(InvalidInput):
            monitor.update(images)
    assert monitor.samples_seen == 50
    with pytest.raises(ConfigError):
        InputDriftMonitor(window=8, stride=16)
    with pytest.raises(ConfigError):
        InputDriftMonitor(alpha=0.0)


def test_input_guard_fires_soon_after_the_inputs_move_and_never_on_the_same_domain(digits):
    from edgecl.ood import InputGuard

    rng = np.random.default_rng(1)
    delays = []
    for i, kind in enumerate(["gaussian_noise", "defocus_blur", "contrast", "brightness",
                              "fog", "jpeg"]):
        pool = digits[rng.permutation(len(digits))]
        domain = corrupt(pool[:600], kind, 5, i)
        guard = InputGuard()
        guard.set_reference(domain[:64])
        assert guard.update(domain[64:]) is None, kind  # 536 more of the same: quiet
        assert guard.armed and guard.update(domain[:0]) is None  # an empty batch: nothing
        fired = guard.update(corrupt(pool[600:], "zoom_blur", 5, i))
        assert fired is not None, kind
        delays.append(fired - (600 - 64))
    # most within a few samples, well before the long-baseline monitor (10-70 samples);
    # jpeg -> zoom blur moves the statistics least and takes ~100
    assert np.median(delays) < 12 and max(delays) < 150, delays
    clean = InputGuard()
    clean.set_reference(digits[:64])
    assert clean.update(digits[64:]) is None  # the whole clean test set


def test_input_guard_fires_once_per_reference_and_refuses_bad_input(digits):
    from edgecl.ood import InputGuard

    guard = InputGuard(window=16)
    assert not guard.armed and guard.update(digits[:10]) is None  # disarmed: nothing
    guard.set_reference(digits[:10])  # fewer than min_reference: stays disarmed
    assert not guard.armed
    guard.set_reference(digits[:100])
    dark = digits[100:300] * 0.2
    assert guard.update(dark) is not None and not guard.armed
    assert guard.update(dark) is None  # fired once; a new reference re-arms it
    bad = digits[:10].copy()
    bad[0, 0, 0, 0] = np.inf
    guard.set_reference(digits[:100])
    with pytest.raises(InvalidInput):
        guard.update(bad)
    assert guard.seen == 0 and guard.armed
    for kwargs in ({"window": 1}, {"z": 0.0}, {"z": float("inf")}, {"min_reference": 1}):
        with pytest.raises(ConfigError):
            InputGuard(**kwargs)


def test_input_guard_subsamples_large_frames_and_still_sees_a_change():
    from edgecl.ood import InputGuard

    rng = np.random.default_rng(2)
    frames = rng.random((300, 3, 224, 224), dtype=np.float32)
    guard = InputGuard()  # max_side 64: every 4th pixel of a 224 x 224 frame
    assert guard._statistics(frames[:2]).shape == (2, 3)
    np.testing.assert_allclose(guard._statistics(frames[:2]),
                               image_statistics(frames[:2, :, ::4, ::4]))
    guard.set_reference(frames[:64])
    assert guard.update(frames[64:200]) is None
    assert guard.update(frames[200:] * 0.5) is not None  # half the light
