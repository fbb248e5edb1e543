"""TIES merging of updates learned on one domain by several devices.

Each update is turned into deltas against what the bundle does without it: the prompt
against no prompt, the input filter against the identity, the rank-r adapter as the
linear map ``up @ down`` it adds to the features, the head against the bundle's head.
TIES (Yadav et al., 2023, "TIES-Merging: Resolving Interference When Merging Models")
then keeps each delta's largest ``density`` share of entries, elects a sign per entry
(the sign of their sum) and averages the kept entries that agree with it. The merged
adapter map is factored back to rank ``r`` (truncated SVD); a feature norm, if present,
is averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecl._exceptions import InvalidInput
from edgecl.cloud._learner import BaseState

#: The share of each delta's entries TIES keeps (the paper's default).
TIES_DENSITY = 0.2


def ties(deltas: Sequence[np.ndarray], density: float = TIES_DENSITY) -> np.ndarray:
    """TIES merge of same-shaped ``deltas``: trim, elect sign, disjoint mean."""
    if not deltas:
        raise InvalidInput("ties needs at least one delta")
    stack = np.stack([np.asarray(d, np.float64) for d in deltas])
    if not np.isfinite(stack).all():
        raise InvalidInput("deltas must be finite")
    if not 0.0 < density <= 1.0:
        raise InvalidInput(f"density must be in (0, 1], got {density}")
    flat = stack.reshape(len(stack), -1)
    keep = max(1, round(density * flat.shape[1]))
    trimmed = np.zeros_like(flat)
    for i, row in enumerate(flat):
        top = np.argpartition(np.abs(row), -keep)[-keep:]
        trimmed[i, top] = row[top]
    sign = np.sign(trimmed.sum(axis=0))
    agree = (np.sign(trimmed) == sign) & (trimmed != 0)
    count = agree.sum(axis=0)
    merged = np.where(count > 0, (trimmed * agree).sum(axis=0) / np.maximum(count, 1), 0.0)
    return merged.reshape(stack.shape[1:])


def merge_updates(bundle: BaseState, updates: Sequence[dict[str, np.ndarray]],
                  density: float = TIES_DENSITY) -> dict[str, np.ndarray]:
    """The TIES merge of ``updates`` (parts as on the wire) relative to ``bundle``; one
    update is returned as it is (there is nothing to resolve)."""
    if not updates:
        raise InvalidInput("merge_updates needs at least one update")
    if len(updates) == 1:
        return {k: np.asarray(v, np.float32) for k, v in updates[0].items()}
    names = set().union(*updates)
    out: dict[str, np.ndarray] = {}
    if "prompt" in names:
        ref = next(u["prompt"] for u in updates if "prompt" in u)
        out["prompt"] = ties([u.get("prompt", np.zeros_like(ref)) for u in updates], density)
    if "filter" in names:
        ref = next(u["filter"] for u in updates if "filter" in u)
        identity = np.zeros_like(ref)
        identity[:, ref.shape[-2] // 2, ref.shape[-1] // 2] = 1.0
        out["filter"] = identity + ties([u.get("filter", identity) - identity
                                         for u in updates], density)
    if "adapter.up" in names:
        maps = [u["adapter.up"].astype(np.float64) @ u["adapter.down"].astype(np.float64)
                if "adapter.up" in u else None for u in updates]
        dim = next(m for m in maps if m is not None).shape[0]
        rank = next(u["adapter.up"] for u in updates if "adapter.up" in u).shape[1]
        merged = ties([np.zeros((dim, dim)) if m is None else m for m in maps], density)
        u_, s_, vt = np.linalg.svd(merged)
        root = np.sqrt(s_[:rank])
        out["adapter.up"] = u_[:, :rank] * root
        out["adapter.down"] = root[:, None] * vt[:rank]
    for name, base in (("head.weight", bundle.head_weight), ("head.bias", bundle.head_bias)):
        if name in names:
            out[name] = base + ties([u.get(name, base) - base for u in updates], density)
    for name in ("norm.scale", "norm.shift"):
        present = [u[name] for u in updates if name in u]
        if present:
            out[name] = np.mean(present, axis=0)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}
