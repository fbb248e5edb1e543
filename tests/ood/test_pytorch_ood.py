"""Cross-check against pytorch-ood 0.4.0 on the tiny zoo student's real features.

pytorch-ood's package ``__init__`` imports torchvision (not installed here, and pip must not
install it: it would replace torch), so only its ``detector`` subpackage is loaded, under a
bare ``pytorch_ood`` package module. Install with::

    .venv/bin/pip install --no-deps pytorch-ood==0.4.0
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest

from edgecl.ood import auroc, create_detector

INSTALL = ".venv/bin/pip install --no-deps pytorch-ood==0.4.0"


@pytest.fixture(scope="module")
def pod():
    """``pytorch_ood.detector``, imported without the package's ``__init__``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn", reason="pytorch-ood's KNN uses scikit-learn")
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"pytorch-ood is not installed ({INSTALL})")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "pytorch_ood"}
    for key in saved:
        del sys.modules[key]
    package = types.ModuleType("pytorch_ood")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["pytorch_ood"] = package
    try:
        detector = importlib.import_module("pytorch_ood.detector")
        yield types.SimpleNamespace(torch=torch, detector=detector)
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] == "pytorch_ood"]:
            del sys.modules[key]
        sys.modules.update(saved)


def linear(torch, head):
    """A torch layer computing exactly the student head's logits."""
    layer = torch.nn.Linear(head.feature_dim, head.num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(head.weight)))
        layer.bias.copy_(torch.from_numpy(np.array(head.bias)))
    return layer.eval()


def theirs(pod, out, name, **hp):
    """Fit pytorch-ood's detector on the calibration split; scores on clean/novel/corrupted."""
    torch, det_mod = pod.torch, pod.detector
    head = out.head
    if name == "msp":
        det = det_mod.MaxSoftmax(linear(torch, head))
    elif name == "energy":
        det = det_mod.EnergyBased(linear(torch, head))
    elif name == "mahalanobis":
        det = det_mod.Mahalanobis(torch.nn.Identity())
    elif name == "knn":
        det = det_mod.KNN(torch.nn.Identity(), k=hp["k"], normalize=hp["normalize"])
    elif name == "vim":
        det = det_mod.ViM(torch.nn.Identity(), d=head.feature_dim // 2,
                          w=torch.from_numpy(np.array(head.weight)),
                          b=torch.from_numpy(np.array(head.bias)))
    else:
        raise AssertionError(name)
    det.to("cpu")
    features = torch.from_numpy(np.array(out.cal[0]))
    labels = torch.from_numpy(np.array(out.cal_y))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, labels),
                                         batch_size=128)
    det.fit(loader)
    with torch.no_grad():
        return [det.predict(torch.from_numpy(np.array(f))).double().numpy()
                for f, _ in (out.clean, out.novel, out.corrupted)]


@pytest.mark.parametrize(("name", "hp"), [
    ("msp", {}),
    ("energy", {}),
    ("mahalanobis", {}),
    ("knn", {"k": 1, "normalize": False}),   # pytorch-ood's raw-feature nearest neighbour
    ("knn", {"k": 10, "normalize": True}),   # the paper's setting (our default)
    ("vim", {}),
])
def test_auroc_matches_pytorch_ood(pod, student_outputs, name, hp):
    out = student_outputs
    ours = create_detector(name, **hp).fit(*out.cal, out.cal_y, head=out.head)
    ours_scores = [ours.score(*pair) for pair in (out.clean, out.novel, out.corrupted)]
    their_scores = theirs(pod, out, name, **hp)
    for ood in (1, 2):  # novel classes, one corruption
        a = auroc(ours_scores[0], ours_scores[ood])
        b = auroc(their_scores[0], their_scores[ood])
        assert abs(a - b) < 1e-3, (name, ood, a, b)
        assert 0.5 < a <= 1.0
    # the scores agree too; pytorch-ood's Mahalanobis covariance is not divided by N - 1
    scale = len(out.cal_y) - 1 if name == "mahalanobis" else 1.0
    for mine, other in zip(ours_scores, their_scores):
        np.testing.assert_allclose(mine, other * scale, rtol=2e-3,
                                   atol=1e-4 * np.abs(mine).max())

