"""Reference zoo: MNIST-5k data, distribution shifts, drifting streams, student/teacher models.

Data, corruptions and streams need only numpy/scipy/Pillow; building models
(:func:`build_zoo`, :func:`edge_bundle`) needs ``edgecl[cloud]`` and is imported lazily.
"""

from __future__ import annotations

from typing import Any

from edgecl._home import default_home
from edgecl.zoo.corruptions import corrupt, list_corruptions
from edgecl.zoo.data import (
    CLASS_NAMES,
    KNOWN_CLASSES,
    NOVEL_CLASSES,
    MnistSplits,
    Split,
    load_mnist,
)
from edgecl.zoo.recipe import RECIPES, TEACHER_HELD_OUT, ZooRecipe, get_recipe

_LAZY = {"build_zoo": "edgecl.zoo.build", "Zoo": "edgecl.zoo.build",
         "edge_bundle": "edgecl.zoo.edge"}

__all__ = [
    "CLASS_NAMES",
    "KNOWN_CLASSES",
    "MnistSplits",
    "NOVEL_CLASSES",
    "RECIPES",
    "Split",
    "TEACHER_HELD_OUT",
    "Zoo",
    "ZooRecipe",
    "build_zoo",
    "corrupt",
    "default_home",
    "edge_bundle",
    "get_recipe",
    "list_corruptions",
    "load_mnist",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # these pull in torch
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgecl.zoo' has no attribute {name!r}")
