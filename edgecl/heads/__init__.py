"""Small numpy heads on top of a frozen encoder (no torch).

A :class:`Head` maps encoder features to class logits; a :class:`LowRankAdapter`
corrects features before the head; a :class:`FeatureNorm` re-standardises them first
(test-time alignment). Kinds live in a registry::

    >>> from edgecl.heads import list_heads
    >>> list_heads()
    ['cosine', 'linear']
"""

from __future__ import annotations

from edgecl.heads._adapter import LowRankAdapter
from edgecl.heads._base import Head
from edgecl.heads._cosine import CosineHead, l2_normalise
from edgecl.heads._grad import loss_and_grads
from edgecl.heads._linear import LinearHead
from edgecl.heads._norm import FeatureNorm
from edgecl.heads._optim import SGD, Adam, create_optimizer
from edgecl.heads._registry import create_head, head_from_spec, list_heads, register_head
from edgecl.heads._trainer import HeadTrainer

__all__ = [
    "Adam",
    "CosineHead",
    "FeatureNorm",
    "Head",
    "HeadTrainer",
    "LinearHead",
    "LowRankAdapter",
    "SGD",
    "create_head",
    "create_optimizer",
    "head_from_spec",
    "l2_normalise",
    "list_heads",
    "loss_and_grads",
    "register_head",
]
