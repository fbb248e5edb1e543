"""TIES merging of peers' updates (discovered groups with ``peer_merge = "ties"``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError, InvalidInput
from edgecl.cloud._learner import BaseState
from edgecl.cloud._learning import LearningPolicy
from edgecl.cloud._merge import merge_updates, ties


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_entries():
    # keep 2 of 3 entries each: [1, -2, 0] and [3, 1, 0]; signs + - ; mean of agreeing
    merged = ties([np.array([1.0, -2.0, 0.1]), np.array([3.0, 1.0, -0.1])], density=2 / 3)
    np.testing.assert_allclose(merged, [2.0, -2.0, 0.0])
    # one delta at full density is itself; opposite equal deltas cancel to nothing
    d = np.array([[0.5, -1.5], [2.0, 0.0]])
    np.testing.assert_allclose(ties([d], density=1.0), d)
    np.testing.assert_allclose(ties([d, -d], density=1.0), np.zeros_like(d), atol=0)


def test_merging_identical_updates_gives_the_update_back():
    rng = np.random.default_rng(0)
    bundle = BaseState(0, rng.normal(size=(4, 6)).astype(np.float32),
                       np.zeros(4, np.float32))
    up, down = rng.normal(size=(6, 2)), rng.normal(size=(2, 6))
    kernel = np.zeros((1, 3, 3))
    kernel[0, 1, 1] = 1.0
    kernel[0, 0, 0] = 0.3
    update = {"prompt": rng.normal(size=(1, 5, 5)), "filter": kernel,
              "adapter.up": up, "adapter.down": down,
              "head.weight": bundle.head_weight + 0.1, "head.bias": np.full(4, 0.2)}
    merged = merge_updates(bundle, [update, update, update], density=1.0)
    for name in ("prompt", "filter", "head.weight", "head.bias"):
        np.testing.assert_allclose(merged[name], update[name], atol=1e-5)
    # the adapter is merged as the map it adds (up @ down), factored back to rank 2
    np.testing.assert_allclose(merged["adapter.up"] @ merged["adapter.down"], up @ down,
                               atol=1e-4)
    assert merged["adapter.up"].shape == (6, 2) and merged["adapter.up"].dtype == np.float32
    assert merge_updates(bundle, [update])["prompt"].dtype == np.float32


def test_bad_input_and_settings():
    with pytest.raises(InvalidInput):
        ties([])
    with pytest.raises(InvalidInput):
        ties([np.array([np.nan, 1.0])])
    with pytest.raises(InvalidInput):
        ties([np.ones(3)], density=0.0)
    with pytest.raises(InvalidInput):
        merge_updates(BaseState(0, np.zeros((2, 2), np.float32), np.zeros(2, np.float32)), [])
    with pytest.raises(ConfigError):
        LearningPolicy(peer_merge="average")
