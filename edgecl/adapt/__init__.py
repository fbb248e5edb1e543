"""Test-time adaptation on the device, without labels and without torch (numpy only).

Methods share one contract (:class:`TestTimeAdapter`) and live in a registry::

    >>> from edgecl.adapt import list_adapters
    >>> list_adapters()
    ['adanpc', 'lame']

Wrap any of them in a :class:`CollapseGuard` to reset it when its predictions degenerate.
"""

from __future__ import annotations

from edgecl.adapt._adanpc import AdaNPC
from edgecl.adapt._base import TestTimeAdapter
from edgecl.adapt._guard import CollapseEvent, CollapseGuard
from edgecl.adapt._lame import LAME, affinity, lame
from edgecl.adapt._registry import create_adapter, list_adapters, register_adapter

register_adapter(LAME)
register_adapter(AdaNPC)

__all__ = [
    "AdaNPC",
    "CollapseEvent",
    "CollapseGuard",
    "LAME",
    "TestTimeAdapter",
    "affinity",
    "create_adapter",
    "lame",
    "list_adapters",
    "register_adapter",
]
