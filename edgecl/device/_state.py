"""ModelState: everything predict uses besides the frozen encoder, immutable and versioned."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads import FeatureNorm, Head, LowRankAdapter


@runtime_checkable
class OODScorer(Protocol):
    """What a state needs from an OOD detector (see :mod:`edgecl.ood`)."""

    name: str
    threshold: float | None

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Per-sample OOD score, higher = more out-of-distribution."""
        ...


@dataclass(frozen=True)
class ModelState:
    """An immutable snapshot of the trainable parts: prompt, adapter and head.

    A runtime holds exactly one reference to its current state; ``predict`` reads it once,
    so one call never mixes two versions. Change a state with :meth:`evolve`, which
    validates and returns a new object.

    Attributes
    ----------
    version : int
        Monotonic version; 0 is the bundle as exported.
    encoder_sha256 : str
        sha256 of the ONNX encoder this state was made for.
    head : Head
        The classifier on (adapted) features.
    adapter : LowRankAdapter or None
        Optional residual feature correction applied before the head.
    prompt : ndarray or None
        Optional additive visual prompt, shaped like one input sample, in raw input space.
    input_filter : ndarray or None
        Optional depthwise filter ``(C, k, k)`` (odd ``k``) applied to every input before
        the prompt is added: the convolutional part of the visual prompt (it can undo
        blur, noise or a contrast change, which an additive prompt cannot).
    ood : OODScorer or None
        Optional fitted OOD detector whose score and decision every prediction carries.
    feature_norm : FeatureNorm or None
        Optional per-dimension affine map of encoder features applied before the adapter
        (test-time feature alignment, see :class:`edgecl.adapt.FeatureAlign`). OOD
        detectors score the features before it, so alignment does not hide a shift.
    """

    version: int
    encoder_sha256: str
    head: Head
    adapter: LowRankAdapter | None = None
    prompt: np.ndarray | None = None
    ood: OODScorer | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_filter: np.ndarray | None = None
    feature_norm: FeatureNorm | None = None

    def __post_init__(self) -> None:
        if self.feature_norm is not None and \
                self.feature_norm.feature_dim != self.head.feature_dim:
            raise ConfigError(f"feature_norm works on {self.feature_norm.feature_dim} "
                              f"features, head takes {self.head.feature_dim}")
        if self.adapter is not None and self.adapter.feature_dim != self.head.feature_dim:
            raise ConfigError(f"adapter works on {self.adapter.feature_dim} features, head "
                              f"takes {self.head.feature_dim}")
        if self.ood is not None and getattr(self.ood, "threshold", None) is None:
            raise ConfigError(f"OOD detector {getattr(self.ood, 'name', '?')} is not fitted")
        if self.prompt is not None:
            prompt = np.array(self.prompt, dtype=np.float32, copy=True)
            if not np.isfinite(prompt).all():
                raise ConfigError("prompt contains NaN or inf")
            prompt.setflags(write=False)
            object.__setattr__(self, "prompt", prompt)
        if self.input_filter is not None:
            filt = np.array(self.input_filter, dtype=np.float32, copy=True)
            if filt.ndim != 3 or filt.shape[1] != filt.shape[2] or filt.shape[1] % 2 == 0:
                raise ConfigError(f"input_filter must be (C, k, k) with odd k, got {filt.shape}")
            if not np.isfinite(filt).all():
                raise ConfigError("input_filter contains NaN or inf")
            filt.setflags(write=False)
            object.__setattr__(self, "input_filter", filt)

    def check_compatible(self, input_shape: tuple[int, ...], feature_dim: int,
                         encoder_sha256: str) -> None:
        """Raise :class:`ConfigError` unless this state fits the given encoder."""
        if self.encoder_sha256 != encoder_sha256:
            raise ConfigError("state was made for another encoder "
                              f"({self.encoder_sha256[:12]} != {encoder_sha256[:12]})")
        if self.head.feature_dim != feature_dim:
            raise ConfigError(f"head takes {self.head.feature_dim} features, encoder gives "
                              f"{feature_dim}")
        if self.prompt is not None and self.prompt.shape != tuple(input_shape):
            raise ConfigError(f"prompt has shape {self.prompt.shape}, inputs are {input_shape}")
        if self.input_filter is not None and (
                self.input_filter.shape[0] != input_shape[0]
                or self.input_filter.shape[1] > min(input_shape[1:])):
            raise ConfigError(f"input_filter {self.input_filter.shape} does not fit inputs "
                              f"{input_shape}")

    def evolve(self, **changes: Any) -> ModelState:
        """A new state with ``changes`` applied (``version`` defaults to this one + 1)."""
        changes.setdefault("version", self.version + 1)
        return dataclasses.replace(self, **changes)
