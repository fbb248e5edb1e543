"""Test-time adaptation on the device, without labels and without torch (numpy only).

Methods share one contract (:class:`TestTimeAdapter`) and live in a registry::

    >>> from edgecl.adapt import list_adapters
    >>> list_adapters()
    ['adanpc', 'align', 'cotta', 'eata', 'lame', 'tent']

:func:`adapter_for` builds one (or a combination ``"align+<method>"``) for a runtime's
current state. Parametric methods (:class:`ParametricAdapter`: align, tent, eata, cotta)
produce a new model state that :class:`edgecl.device.AdaptationWorker` publishes beside
predict; output-only methods (LAME, AdaNPC) post-process predictions. Wrap any of them in
a :class:`CollapseGuard` to reset it when its predictions degenerate.
"""

from __future__ import annotations

from edgecl.adapt._adanpc import AdaNPC
from edgecl.adapt._align import FeatureAlign
from edgecl.adapt._base import ParametricAdapter, TestTimeAdapter
from edgecl.adapt._chain import Aligned
from edgecl.adapt._cotta import CoTTA, augment
from edgecl.adapt._entropy import EATA, HeadTTA, Tent
from edgecl.adapt._factory import adapter_for
from edgecl.adapt._guard import CollapseEvent, CollapseGuard
from edgecl.adapt._lame import LAME, affinity, lame
from edgecl.adapt._registry import create_adapter, list_adapters, register_adapter

for _cls in (LAME, AdaNPC, FeatureAlign, Tent, EATA, CoTTA):
    register_adapter(_cls)

__all__ = [
    "AdaNPC",
    "Aligned",
    "CoTTA",
    "CollapseEvent",
    "CollapseGuard",
    "EATA",
    "FeatureAlign",
    "HeadTTA",
    "LAME",
    "ParametricAdapter",
    "Tent",
    "TestTimeAdapter",
    "adapter_for",
    "affinity",
    "augment",
    "create_adapter",
    "lame",
    "list_adapters",
    "register_adapter",
]
