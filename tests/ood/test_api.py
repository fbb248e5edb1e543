"""Public surface of edgecl.ood: sorted ``__all__``, runnable docs, numpy-only import."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

import edgecl.ood
from edgecl import ConfigError
from edgecl.ood import Detector, create_detector, list_detectors, register_detector


def test_all_is_sorted_and_resolves():
    assert edgecl.ood.__all__ == sorted(edgecl.ood.__all__)
    for name in edgecl.ood.__all__:
        assert getattr(edgecl.ood, name) is not None, name


@pytest.mark.parametrize("module", ["edgecl.ood", "edgecl.ood._logits", "edgecl.ood._knn",
                                    "edgecl.ood._mahalanobis", "edgecl.ood._vim",
                                    "edgecl.ood._hdc", "edgecl.ood._metrics",
                                    "edgecl.ood._registry"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


def test_import_needs_numpy_only():
    code = ("import sys, edgecl.ood; print(sorted(m for m in ('torch', 'scipy', 'sklearn', "
            "'onnxruntime', 'edgecl.zoo', 'edgecl.device') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_register_detector_rules():
    class Twice(Detector):
        name = "msp"  # taken

        def hyperparameters(self):
            return {}

        _fit = _score = _arrays = _set_arrays = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="taken"):
        register_detector(Twice)
    with pytest.raises(ConfigError, match="not a Detector"):
        register_detector(int)  # type: ignore[arg-type]
    cls = type(create_detector("msp"))
    assert register_detector(cls) is cls  # idempotent
    assert "msp" in list_detectors()
