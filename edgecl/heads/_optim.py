"""SGD and Adam over dicts of numpy arrays (the trainable parts of heads and adapters)."""

from __future__ import annotations

import numpy as np

from edgecl._exceptions import ConfigError


class SGD:
    """Stochastic gradient descent with momentum and L2 weight decay."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        if not lr > 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ConfigError("need lr > 0, 0 <= momentum < 1, weight_decay >= 0")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._velocity: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` (keys present in both)."""
        for name, g in grads.items():
            if self.weight_decay:
                g = g + self.weight_decay * params[name]
            if self.momentum:
                v = self._velocity.get(name)
                v = g if v is None else self.momentum * v + g
                self._velocity[name] = v
                g = v
            params[name] -= self.lr * g


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction; the Tent default is ``lr=1e-3``."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        b1, b2 = betas
        if not lr > 0 or not (0 <= b1 < 1 and 0 <= b2 < 1) or not eps > 0 or weight_decay < 0:
            raise ConfigError("need lr > 0, betas in [0, 1), eps > 0, weight_decay >= 0")
        self.lr, self.b1, self.b2, self.eps, self.weight_decay = lr, b1, b2, eps, weight_decay
        self._m: dict[str, np.ndarray] = {}
        self._v: dict[str, np.ndarray] = {}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` (keys present in both)."""
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for name, g in grads.items():
            if self.weight_decay:
                g = g + self.weight_decay * params[name]
            m = self.b1 * self._m.get(name, 0.0) + (1 - self.b1) * g
            v = self.b2 * self._v.get(name, 0.0) + (1 - self.b2) * g * g
            self._m[name], self._v[name] = m, v
            params[name] -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def reset(self) -> None:
        """Forget the moment estimates."""
        self._m, self._v, self.t = {}, {}, 0


def create_optimizer(name: str, **kwargs: float) -> SGD | Adam:
    """``"sgd"`` or ``"adam"`` with its hyperparameters."""
    if name == "sgd":
        return SGD(**kwargs)
    if name == "adam":
        return Adam(**kwargs)  # type: ignore[arg-type]
    raise ConfigError(f"unknown optimizer {name!r}; use 'sgd' or 'adam'")


