"""Cloud-side domain changes: found on the frozen encoder's features of the raw uploads."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import InvalidInput
from edgecl.cloud import newest_segment_start
from edgecl.cloud._learner import UpdateLearner
from edgecl.cloud._segments import split_statistics
from edgecl.zoo.streams import continual_stream


@pytest.fixture(scope="module")
def learner(tiny_zoo):
    return UpdateLearner(tiny_zoo.student_bundle)


def _features(learner, corruptions, n, seed=0):
    x, _, _ = continual_stream(corruptions, severity=5, samples_per_domain=n,
                               seed=seed).arrays()
    return learner.encoder_features(x)


def test_statistic_is_near_one_within_a_domain_and_large_across(learner):
    one = _features(learner, ["gaussian_noise"], 200)
    two = _features(learner, ["contrast", "fog"], 100)
    within = split_statistics(one, 12)
    across = split_statistics(two, 12)
    assert np.median(within) < 3.0
    assert within.max() < 12.0  # the default threshold
    assert int(np.argmax(across)) + 12 == 100 and across.max() > 30.0


@pytest.mark.parametrize("pair", [("gaussian_noise", "brightness"), ("shot_noise", "zoom_blur"),
                                  ("defocus_blur", "pixelate")])
def test_newest_segment_found_on_real_corruption_changes(learner, pair):
    feats = _features(learner, list(pair), 80, seed=1)
    start = newest_segment_start(feats)
    assert abs(start - 80) <= 3, start
    assert newest_segment_start(feats[:80]) == 0  # one domain: the whole window


def test_the_newest_of_several_changes_wins(learner):
    feats = _features(learner, ["contrast", "impulse_noise", "fog"], 60)
    assert abs(newest_segment_start(feats) - 120) <= 3


def test_a_segment_is_never_shorter_than_min_size(learner):
    feats = _features(learner, ["contrast", "fog"], 100)[:108]  # 8 fog samples
    assert newest_segment_start(feats, min_size=12) in (0, 96)
    assert newest_segment_start(feats[:104], min_size=12) in (0, 92)


def test_bad_input_is_refused():
    with pytest.raises(InvalidInput, match=r"\(N, D\)"):
        newest_segment_start(np.zeros(10))
    with pytest.raises(InvalidInput, match="threshold"):
        newest_segment_start(np.zeros((40, 3)), threshold=0.0)
    assert newest_segment_start(np.zeros((5, 3))) == 0  # too few to split
