"""Entropy minimisation on the device's head and adapter: Tent and EATA (numpy only).

The encoder is a frozen ONNX graph, so the parameters that adapt are the head's (and the
low-rank adapter's when the state has one), as methods.md prescribes. Prequential: a batch
is predicted with the parameters before its step.

- Tent (Wang et al., ICLR 2021): one Adam step (lr 1e-3) per batch on the mean entropy.
- EATA (Niu et al., ICML 2022): only reliable (``H < E0 = 0.4 ln C``) and non-redundant
  (``|cos(pbar, p)| < eps`` against a moving mean prediction ``pbar``) samples, weighted by
  ``exp(-(H - E0))``; a Fisher-weighted anchor ``alpha * sum F (theta - theta0)^2`` against
  forgetting, with ``F`` from source features when :meth:`EATA.seed` gave some.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.adapt._base import ParametricAdapter
from edgecl.heads import Head, HeadTrainer, LowRankAdapter
from edgecl.heads._grad import adapter_forward, head_forward, loss_and_grads, softmax64

_PARTS = ("head", "adapter")


class HeadTTA(ParametricAdapter):
    """Shared machinery: working copies of the head/adapter parameters and an optimiser."""

    def __init__(self, head: Head, adapter: LowRankAdapter | None = None, *,
                 lr: float = 1e-3, optimizer: str = "adam",
                 train: tuple[str, ...] = ("head", "adapter")) -> None:
        if not set(train) <= set(_PARTS) or not train:
            raise ConfigError(f"train must name parts from {_PARTS}, got {train!r}")
        self.source_head, self.source_adapter = head, adapter
        self.lr, self.optimizer_name, self.train = lr, optimizer, tuple(train)
        HeadTrainer(head, adapter, optimizer=optimizer, lr=lr, train=self.train)  # validates
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "optimizer": self.optimizer_name, "train": self.train}

    def reset(self) -> None:
        self.trainer = HeadTrainer(self.source_head, self.source_adapter,
                                   optimizer=self.optimizer_name, lr=self.lr,
                                   train=self.train)

    def state_changes(self) -> dict[str, Any]:
        return {"head": self.trainer.head(), "adapter": self.trainer.adapter()}

    def _parts(self, params: dict[str, np.ndarray] | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        p = self.trainer.params if params is None else params
        head = {k[5:]: v for k, v in p.items() if k.startswith("head.")}
        adapter = ({k[8:]: v for k, v in p.items() if k.startswith("adapter.")}
                   if self.trainer.has_adapter else None)
        return head, adapter

    def logits(self, features: np.ndarray,
               params: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Logits of raw features under the current (or the given) parameters."""
        head, adapter = self._parts(params)
        g = features if adapter is None else adapter_forward(adapter, features)[0]
        return head_forward(self.trainer.kind, head, g, self.trainer.scale)[0]

    def _grads(self, features: np.ndarray, weights: np.ndarray | None = None,
               targets: np.ndarray | None = None) -> dict[str, np.ndarray]:
        head, adapter = self._parts()
        _, grads, _ = loss_and_grads(self.trainer.kind, head, adapter, features,
                                     targets=targets, weights=weights,
                                     scale=self.trainer.scale)
        return {k: g for k, g in grads.items() if k.split(".")[0] in self.train}


def entropy_of(probs: np.ndarray) -> np.ndarray:
    """Per-row entropy (nats)."""
    return -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)


class Tent(HeadTTA):
    """Tent: minimise the mean prediction entropy, one step per batch."""

    name = "tent"

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, _ = self.check(features, logits)
        z = self.logits(f)
        self.trainer.optimizer.step(self.trainer.params, self._grads(f))
        return softmax64(z)


class EATA(HeadTTA):
    """EATA: entropy minimisation on reliable, non-redundant samples, Fisher-anchored."""

    name = "eata"

    def __init__(self, head: Head, adapter: LowRankAdapter | None = None, *,
                 lr: float = 1e-3, optimizer: str = "adam",
                 train: tuple[str, ...] = ("head", "adapter"), e0_factor: float = 0.4,
                 redundancy_eps: float = 0.4, fisher_alpha: float = 2000.0,
                 pbar_momentum: float = 0.9) -> None:
        if not 0 < e0_factor <= 1 or not 0 < redundancy_eps <= 1 or fisher_alpha < 0 or \
                not 0 <= pbar_momentum < 1:
            raise ConfigError("need e0_factor, redundancy_eps in (0, 1], fisher_alpha >= 0, "
                              "pbar_momentum in [0, 1)")
        self.e0_factor, self.redundancy_eps = e0_factor, redundancy_eps
        self.fisher_alpha, self.pbar_momentum = fisher_alpha, pbar_momentum
        self.fisher: dict[str, np.ndarray] = {}
        super().__init__(head, adapter, lr=lr, optimizer=optimizer, train=train)
        self.anchor = {k: v.copy() for k, v in self.trainer.params.items()}

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "e0_factor": self.e0_factor,
                "redundancy_eps": self.redundancy_eps, "fisher_alpha": self.fisher_alpha,
                "pbar_momentum": self.pbar_momentum}

    def reset(self) -> None:
        super().reset()
        self.pbar: np.ndarray | None = None
        self.kept = self.seen = 0

    def seed(self, features: np.ndarray, batch: int = 64) -> None:
        """Estimate the Fisher information (squared gradients of the cross entropy to the
        model's own predictions, averaged over batches) on source features."""
        f, _ = self.check(features, np.zeros((len(features), 1)))
        totals: dict[str, np.ndarray] = {}
        batches = 0
        for start in range(0, len(f), batch):
            part = f[start:start + batch]
            z = self.logits(part)
            grads = self._grads(part, targets=np.eye(z.shape[1])[z.argmax(axis=1)])
            for k, g in grads.items():
                totals[k] = totals.get(k, 0.0) + g * g
            batches += 1
        self.fisher = {k: v / batches for k, v in totals.items()}

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, _ = self.check(features, logits)
        z = self.logits(f)
        p = softmax64(z)
        self.seen += len(f)
        h = entropy_of(p)
        e0 = self.e0_factor * np.log(p.shape[1])
        keep = h < e0
        if self.pbar is not None:
            cos = (p @ self.pbar) / np.maximum(
                np.linalg.norm(p, axis=1) * np.linalg.norm(self.pbar), 1e-12)
            keep &= np.abs(cos) < self.redundancy_eps
        if keep.any():
            self.kept += int(keep.sum())
            mean_kept = p[keep].mean(axis=0)
            self.pbar = mean_kept if self.pbar is None else (
                self.pbar_momentum * self.pbar + (1 - self.pbar_momentum) * mean_kept)
            coef = np.where(keep, np.exp(-(h - e0)), 0.0)
            # loss_and_grads normalises weights to sum 1; EATA averages over the kept samples
            grads = {k: g * coef.sum() / keep.sum() for k, g in self._grads(f, coef).items()}
            for k, fisher in self.fisher.items():
                if k in grads:
                    grads[k] = grads[k] + 2.0 * self.fisher_alpha * fisher * (
                        self.trainer.params[k] - self.anchor[k])
            self.trainer.optimizer.step(self.trainer.params, grads)
        return p

