"""Build any adaptation method (or ``align+<method>``) for a runtime's current state."""

from __future__ import annotations

from typing import Any

from edgecl._exceptions import ConfigError
from edgecl.adapt._align import FeatureAlign
from edgecl.adapt._base import TestTimeAdapter
from edgecl.adapt._chain import Aligned
from edgecl.adapt._guard import CollapseGuard
from edgecl.adapt._registry import create_adapter, list_adapters

_NEEDS_HEAD = ("tent", "eata", "cotta")


def _single(runtime: Any, name: str, hyperparameters: dict[str, Any]) -> TestTimeAdapter:
    state = runtime.state
    if name == "align":
        stats = runtime.source_stats
        if stats is None:
            raise ConfigError("the bundle has no feature statistics (feature_stats.npz); "
                              "calibrate it with edgecl.ood.calibrate_bundle")
        return FeatureAlign(state.head, stats, adapter=state.adapter, detector=state.ood,
                            **hyperparameters)
    if name in _NEEDS_HEAD:
        extra: dict[str, Any] = {}
        if name == "cotta":
            extra = {"encoder": runtime.encode,
                     "value_range": tuple(runtime.bundle.input_spec.value_range)}
        return create_adapter(name, head=state.head, adapter=state.adapter,
                              **{**extra, **hyperparameters})
    return create_adapter(name, **hyperparameters)


def adapter_for(runtime: Any, name: str, *, guard: bool = False,
                **hyperparameters: Any) -> TestTimeAdapter:
    """The method ``name`` (any of :func:`list_adapters`, or ``"align+<method>"``) set up
    for ``runtime``'s current state: its head and adapter, the bundle's source feature
    statistics, its OOD detector as alignment gate, its encoder for CoTTA's views.

    ``hyperparameters`` go to the method (for a combination: to the second method).
    ``guard=True`` wraps the result in a :class:`CollapseGuard`.
    """
    first, plus, rest = name.partition("+")
    if plus and first != "align":
        raise ConfigError(f"combinations are 'align+<method>', got {name!r}")
    known = list_adapters()
    for part in ([first, rest] if plus else [first]):
        if part not in known:
            raise ConfigError(f"unknown adaptation method {part!r}; known: {known}")
    method = (Aligned(_single(runtime, "align", {}), _single(runtime, rest, hyperparameters))
              if plus else _single(runtime, first, hyperparameters))
    return CollapseGuard(method) if guard else method
