"""Supervised learning of a head (and adapter) on a device: batches, new classes, removal.

Heads stay immutable: a :class:`HeadTrainer` keeps float64 working copies, steps them with
analytic gradients, and :meth:`HeadTrainer.head` / :meth:`HeadTrainer.adapter` build new
read-only objects for a new :class:`~edgecl.device.ModelState`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.heads._adapter import LowRankAdapter
from edgecl.heads._base import Head
from edgecl.heads._cosine import CosineHead, l2_normalise
from edgecl.heads._grad import loss_and_grads
from edgecl.heads._linear import LinearHead
from edgecl.heads._optim import SGD, Adam, create_optimizer


class HeadTrainer:
    """Learns a linear or cosine head, optionally with a low-rank adapter before it.

    ``train`` picks the parts that learn (``"head"``, ``"adapter"``).

    Examples
    --------
    >>> import numpy as np
    >>> trainer = HeadTrainer(LinearHead(np.zeros((2, 2)), np.zeros(2)), lr=0.5)
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]]); y = np.array([0, 1])
    >>> losses = [trainer.learn_batch(x, y) for _ in range(50)]
    >>> bool(losses[-1] < 0.1), trainer.head().logits(x.astype(np.float32)).argmax(1).tolist()
    (True, [0, 1])
    """

    def __init__(self, head: Head, adapter: LowRankAdapter | None = None, *,
                 optimizer: str = "adam", lr: float = 1e-2,
                 train: Sequence[str] = ("head", "adapter"),
                 class_names: Sequence[str] | None = None) -> None:
        if head.kind not in ("linear", "cosine"):
            raise ConfigError(f"cannot train a {head.kind!r} head")
        self.kind = head.kind
        self.scale = float(getattr(head, "scale", 1.0))
        self.params = {f"head.{k}": np.array(v, dtype=np.float64)
                       for k, v in head.arrays().items()}
        if adapter is not None:
            self.params.update({f"adapter.{k}": np.array(v, dtype=np.float64)
                                for k, v in adapter.arrays().items()})
        self.has_adapter = adapter is not None
        self.train = tuple(train)
        self.optimizer: SGD | Adam = create_optimizer(optimizer, lr=lr)
        self.class_names = list(class_names) if class_names is not None else [
            str(i) for i in range(head.num_classes)]
        if len(self.class_names) != head.num_classes:
            raise ConfigError("class_names must name every output of the head")

    # -- views -------------------------------------------------------------------------
    def _split(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        head = {k[5:]: v for k, v in self.params.items() if k.startswith("head.")}
        adapter = ({k[8:]: v for k, v in self.params.items() if k.startswith("adapter.")}
                   if self.has_adapter else None)
        return head, adapter

    @property
    def num_classes(self) -> int:
        """Current number of classes."""
        key = "head.weight" if self.kind == "linear" else "head.prototypes"
        return int(self.params[key].shape[0])

    def head(self) -> Head:
        """An immutable head with the current parameters."""
        head, _ = self._split()
        if self.kind == "linear":
            return LinearHead(head["weight"], head["bias"])
        return CosineHead(head["prototypes"], scale=self.scale)

    def adapter(self) -> LowRankAdapter | None:
        """An immutable adapter with the current parameters (None without one)."""
        _, adapter = self._split()
        return None if adapter is None else LowRankAdapter(adapter["down"], adapter["up"])

    # -- learning ----------------------------------------------------------------------
    def _check(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64)
        dim = self.params["head.weight" if self.kind == "linear" else "head.prototypes"].shape[1]
        if f.ndim != 2 or f.shape[1] != dim or len(f) == 0:
            raise InvalidInput(f"features must be a non-empty (N, {dim}) array, got {f.shape}")
        if not np.isfinite(f).all():
            raise InvalidInput("features contain NaN or inf")
        return f

    def step(self, features: np.ndarray, targets: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> float:
        """One optimiser step on cross entropy to ``targets`` ``(N, K)`` (probabilities),
        or on prediction entropy when ``targets`` is None; returns the loss before it."""
        f = self._check(features)
        head, adapter = self._split()
        loss, grads, _ = loss_and_grads(self.kind, head, adapter, f, targets=targets,
                                        weights=weights, scale=self.scale)
        keep = {k: g for k, g in grads.items() if k.split(".")[0] in self.train}
        self.optimizer.step(self.params, keep)
        return loss

    def learn_batch(self, features: np.ndarray, labels: np.ndarray,
                    weights: np.ndarray | None = None) -> float:
        """One supervised step on labelled samples; returns the loss before the step."""
        y = np.asarray(labels)
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(features) or \
                (len(y) and (y.min() < 0 or y.max() >= self.num_classes)):
            raise InvalidInput(f"labels must be {len(features)} class indices in "
                               f"[0, {self.num_classes})")
        return self.step(features, np.eye(self.num_classes)[y], weights)

    def add_class(self, name: str, shots: np.ndarray) -> int:
        """Add class ``name`` from a few feature vectors ``(k, D)``; returns its index.

        Prototype initialisation: the new row is the mean of the shots (l2-normalised for a
        cosine head; for a linear head scaled to the mean norm of the existing rows, its
        bias set so that it beats the best old class on the shots by a margin of 1), so the
        class is predicted at once and refined by later batches.
        """
        f = self._check(shots)
        if name in self.class_names:
            raise ConfigError(f"class {name!r} exists already")
        head, adapter = self._split()
        if adapter is not None:
            f = f + (f @ adapter["down"].T) @ adapter["up"].T
        if self.kind == "cosine":
            proto = l2_normalise(f).mean(axis=0)
            self.params["head.prototypes"] = np.vstack([head["prototypes"], proto])
        else:
            w, b = head["weight"], head["bias"]
            mean = f.mean(axis=0)
            row = mean * np.linalg.norm(w, axis=1).mean() / max(np.linalg.norm(mean), 1e-12)
            # bias: the new logit beats the best old one on the shots by a margin of 1, and
            # no more, so samples of the old classes (further from the shots) keep theirs
            best_old = (f @ w.T + b).max(axis=1).mean()
            bias = best_old + 1.0 - float((f @ row).mean())
            self.params["head.weight"] = np.vstack([w, row])
            self.params["head.bias"] = np.append(b, bias)
        self.class_names.append(name)
        self._reset_optimizer()
        return self.num_classes - 1

    def remove_class(self, index: int) -> str:
        """Remove the class at ``index``; returns its name. At least two classes stay."""
        if not 0 <= index < self.num_classes:
            raise InvalidInput(f"no class {index}; there are {self.num_classes}")
        if self.num_classes <= 2:
            raise ConfigError("a head needs at least two classes")
        for key in [k for k in self.params if k.startswith("head.")]:
            self.params[key] = np.delete(self.params[key], index, axis=0)
        self._reset_optimizer()
        return self.class_names.pop(index)

    def _reset_optimizer(self) -> None:
        # shapes changed: moment estimates of the old rows no longer line up
        self.optimizer = type(self.optimizer)(lr=self.optimizer.lr)
