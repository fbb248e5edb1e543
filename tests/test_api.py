"""Public API hygiene: sorted ``__all__`` that resolves, one exception root, runnable docs."""

from __future__ import annotations

import doctest
import importlib

import pytest

import edgecl

PACKAGES = ["edgecl", "edgecl.adapt", "edgecl.bundle", "edgecl.cloud", "edgecl.device",
            "edgecl.cloud.dashboard", "edgecl.fleet", "edgecl.heads", "edgecl.ood", "edgecl.wire",
            "edgecl.zoo"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name):
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    for attr in module.__all__:
        assert getattr(module, attr) is not None, f"{name}.{attr}"


def test_exception_hierarchy():
    for cls in (edgecl.InvalidInput, edgecl.BundleError, edgecl.ExportError,
                edgecl.ConfigError, edgecl.MissingDependency, edgecl.StorageError):
        assert issubclass(cls, edgecl.EdgeclError)
    assert issubclass(edgecl.InvalidInput, ValueError)
    assert issubclass(edgecl.MissingDependency, ImportError)


def test_missing_extra_names_the_extra():
    from edgecl._exceptions import require

    with pytest.raises(edgecl.MissingDependency, match=r"edgecl\[cloud\]"):
        require("edgecl_no_such_module", "cloud")


@pytest.mark.parametrize("name", ["edgecl.heads._linear", "edgecl.heads._cosine",
                                  "edgecl.heads._adapter", "edgecl.heads", "edgecl.device",
                                  "edgecl.device._outbox"])
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
