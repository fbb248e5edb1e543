"""Simulated devices against the real cloud service (needs ``edgecl[sim]``).

:class:`SimDevice` wires the real device components (runtime, sampler, drift detector,
outbox, sync client, update manager) to a labelled stream; :func:`evaluate_loop` runs
``edgecl eval loop``.
"""

from __future__ import annotations

from edgecl.fleet._device import DeviceLog, SimDevice
from edgecl.fleet.loop_eval import evaluate_loop

__all__ = ["DeviceLog", "SimDevice", "evaluate_loop"]
