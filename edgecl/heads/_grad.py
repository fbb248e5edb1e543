"""Analytic gradients of the numpy heads and the feature adapter (no autograd, no torch).

Parameters are plain dicts of float64 arrays: ``{"weight", "bias"}`` for a linear head,
``{"prototypes"}`` for a cosine head (its ``scale`` is fixed), ``{"down", "up"}`` for the
low-rank adapter ``g = f + up (down f)``. Objectives on the logits: soft-label cross
entropy (hard labels are one-hot targets) and prediction entropy (Tent/EATA), each a
weighted mean over the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import InvalidInput

_EPS = 1e-12


def softmax64(z: np.ndarray) -> np.ndarray:
    """Row softmax in float64."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- heads -------------------------------------------------------------------------------

def head_forward(kind: str, p: dict[str, np.ndarray], f: np.ndarray,
                 scale: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits of a ``"linear"`` or ``"cosine"`` head and what backward needs."""
    if kind == "linear":
        return f @ p["weight"].T + p["bias"], {"f": f}
    if kind == "cosine":
        fn = np.maximum(np.linalg.norm(f, axis=1, keepdims=True), _EPS)
        pn = np.maximum(np.linalg.norm(p["prototypes"], axis=1, keepdims=True), _EPS)
        u, q = f / fn, p["prototypes"] / pn
        return scale * u @ q.T, {"u": u, "q": q, "fn": fn, "pn": pn, "scale": scale}
    raise InvalidInput(f"no gradients for head kind {kind!r}")


def head_backward(kind: str, p: dict[str, np.ndarray], cache: dict[str, Any],
                  dz: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gradients of the parameters and of the features, given ``dz = dL/dlogits``."""
    if kind == "linear":
        return {"weight": dz.T @ cache["f"], "bias": dz.sum(axis=0)}, dz @ p["weight"]
    u, q, s = cache["u"], cache["q"], cache["scale"]
    dq = s * dz.T @ u
    dp = (dq - q * np.einsum("kd,kd->k", dq, q)[:, None]) / cache["pn"]
    du = s * dz @ q
    df = (du - u * np.einsum("nd,nd->n", du, u)[:, None]) / cache["fn"]
    return {"prototypes": dp}, df


# -- adapter -----------------------------------------------------------------------------

def adapter_forward(p: dict[str, np.ndarray], f: np.ndarray) -> tuple[np.ndarray, Any]:
    """``g = f + (f down^T) up^T``."""
    h = f @ p["down"].T
    return f + h @ p["up"].T, (f, h)


def adapter_backward(p: dict[str, np.ndarray], cache: Any,
                     dg: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gradients of ``down``, ``up`` and of the input features."""
    f, h = cache
    dh = dg @ p["up"]
    return {"down": dh.T @ f, "up": dg.T @ h}, dg + dh @ p["down"]


# -- objectives --------------------------------------------------------------------------

def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise InvalidInput(f"weights must be {n} finite non-negative numbers")
    return w / max(w.sum(), _EPS)


def cross_entropy(z: np.ndarray, targets: np.ndarray,
                  weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Weighted mean of ``-sum t log softmax(z)`` and its gradient w.r.t. ``z``."""
    p = softmax64(z)
    w = _weights(weights, len(z))
    loss = -(targets * np.log(np.maximum(p, _EPS))).sum(axis=1)
    return float(w @ loss), w[:, None] * (p - targets)


def entropy(z: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Weighted mean prediction entropy ``H(softmax z)`` and its gradient w.r.t. ``z``:
    ``dH/dz_k = -p_k (log p_k + H)``."""
    p = softmax64(z)
    logp = np.log(np.maximum(p, _EPS))
    h = -(p * logp).sum(axis=1)
    w = _weights(weights, len(z))
    return float(w @ h), w[:, None] * (-p * (logp + h[:, None]))


def loss_and_grads(kind: str, head: dict[str, np.ndarray], adapter: dict[str, np.ndarray] | None,
                   features: np.ndarray, *, targets: np.ndarray | None = None,
                   weights: np.ndarray | None = None, scale: float = 1.0
                   ) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """Loss, gradients (``"head.<name>"``, ``"adapter.<name>"``) and logits of a batch.

    With ``targets`` ``(N, K)`` the objective is cross entropy, without it the prediction
    entropy (test-time adaptation).
    """
    f = np.asarray(features, dtype=np.float64)
    a_cache = None
    g = f
    if adapter is not None:
        g, a_cache = adapter_forward(adapter, f)
    z, h_cache = head_forward(kind, head, g, scale)
    if targets is not None:
        loss, dz = cross_entropy(z, np.asarray(targets, dtype=np.float64), weights)
    else:
        loss, dz = entropy(z, weights)
    hg, dg = head_backward(kind, head, h_cache, dz)
    grads = {f"head.{k}": v for k, v in hg.items()}
    if adapter is not None:
        ag, _ = adapter_backward(adapter, a_cache, dg)
        grads.update({f"adapter.{k}": v for k, v in ag.items()})
    return loss, grads, z
