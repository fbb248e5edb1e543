"""The runtime's unvalidated fast path gives the same scores as the validated one."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.device import softmax
from edgecl.ood import create_detector, list_detectors
from tests.ood.conftest import clusters


@pytest.mark.parametrize("name", list_detectors())
def test_score_trusted_matches_score(name):
    data = clusters(per_class=100)
    det = create_detector(name)
    with pytest.raises(ConfigError, match="not fitted"):
        det.score_trusted(data.id_f, data.id_z)
    det.fit(data.cal_f, data.cal_z, data.cal_y, head=data.head)
    f = data.ood_f.astype(np.float32)
    z = data.ood_z.astype(np.float32)
    want = det.score(f, z)
    np.testing.assert_allclose(det.score_trusted(f, z, softmax(z)), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(det.score_trusted(f, z), want, rtol=1e-4, atol=1e-4)
    top = z.max(axis=1)
    conf = softmax(z).max(axis=1)
    np.testing.assert_allclose(det.score_trusted(f, z, softmax(z), confidence=conf,
                                                 logit_max=top), want, rtol=1e-4, atol=1e-4)


def test_runtime_confidence_is_the_top_probability(small_bundle):
    from edgecl.device import DeviceRuntime
    from tests.conftest import images

    rt = DeviceRuntime.open(small_bundle, ood=None)
    pred = rt.predict(images(16))
    np.testing.assert_allclose(pred.confidence, pred.probabilities.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(pred.labels, pred.probabilities.argmax(axis=1))
    np.testing.assert_allclose(pred.probabilities, softmax(pred.logits), rtol=1e-5, atol=1e-7)
