"""The numpy depthwise filter equals torch's grouped conv2d, and the runtime applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecl import ConfigError
from edgecl.device import DeviceRuntime
from edgecl.device._filter import depthwise_conv2d
from tests.conftest import images


@pytest.mark.parametrize(("channels", "k"), [(1, 1), (1, 3), (1, 5), (3, 3), (2, 7)])
def test_depthwise_conv_matches_torch(channels, k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(4, channels, 12, 10)).astype(np.float32)
    kern = rng.normal(size=(channels, k, k)).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(kern[:, None]),
                                      padding=k // 2, groups=channels).numpy()
    got = depthwise_conv2d(x, kern)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_runtime_filters_then_adds_the_prompt(small_bundle):
    rt = DeviceRuntime.open(small_bundle, ood=None)
    x = images(3)
    kern = np.random.default_rng(0).normal(0, 0.3, (1, 3, 3)).astype(np.float32)
    prompt = np.full((1, 28, 28), 0.05, np.float32)
    rt.swap_state(rt.state.evolve(input_filter=kern, prompt=prompt))
    want = rt.encode_checked(depthwise_conv2d(x, kern) + prompt)
    np.testing.assert_allclose(rt.predict(x, return_features=True).features, want, rtol=1e-5)
    for bad in (np.zeros((1, 2, 2)), np.zeros((2, 3, 3)), np.full((1, 3, 3), np.nan)):
        with pytest.raises(ConfigError):
            rt.swap_state(rt.state.evolve(input_filter=bad))
