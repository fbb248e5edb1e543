"""Fleet simulation: real device runtimes against the real cloud service (``edgecl[sim]``).

:func:`simulate` runs ``edgecl simulate``: N devices, each with its own drifting stream,
pace and (impaired) network, per strategy (source, device, cloud, cloud+device), with a
typed result (:class:`SimulationResult`), plots and an HTML report. :class:`SimDevice`
wires the real device components (runtime, sampler, drift detector, outbox, sync client,
update manager, adaptation worker) to a labelled stream. Cloud strategies run on a
virtual clock (:class:`CloudCostModel` models the service's compute; reproducible) unless
``clock="real"``. Devices execute on a pluggable :class:`Backend` (threads, worker
processes in light mode, or :class:`RayBackend`). ``edgecl eval loop`` is
:func:`edgecl.eval.evaluate_loop`.
"""

from __future__ import annotations

from edgecl.fleet._backend import Backend, ProcessBackend, ThreadBackend, create_backend
from edgecl.fleet._cloud import CloudProcess
from edgecl.fleet._device import SHIFT_BUDGET, SPEND_BUDGET, DeviceLog, SimDevice
from edgecl.fleet._metrics import forgetting, summarise
from edgecl.fleet._network import ImpairedTransport, NetworkProfile
from edgecl.fleet._plans import FLEET_SCENARIOS, DevicePlan, Impairments, fleet_plans
from edgecl.fleet._ray import RayBackend
from edgecl.fleet._result import (
    CloudCost,
    DeviceSummary,
    SimulationReport,
    SimulationResult,
    StrategySummary,
    UpdateCounts,
)
from edgecl.fleet._run import STRATEGIES, DeviceTask, run_device
from edgecl.fleet._virtual import CloudCostModel, DeviceDriver, VirtualClock, run_virtual
from edgecl.fleet.simulate import simulate, summary_table, write_report

__all__ = [
    "Backend",
    "CloudCost",
    "CloudCostModel",
    "CloudProcess",
    "DeviceDriver",
    "DeviceLog",
    "DevicePlan",
    "DeviceSummary",
    "DeviceTask",
    "FLEET_SCENARIOS",
    "ImpairedTransport",
    "Impairments",
    "NetworkProfile",
    "ProcessBackend",
    "RayBackend",
    "SHIFT_BUDGET",
    "SPEND_BUDGET",
    "STRATEGIES",
    "SimDevice",
    "SimulationReport",
    "SimulationResult",
    "StrategySummary",
    "ThreadBackend",
    "UpdateCounts",
    "VirtualClock",
    "create_backend",
    "fleet_plans",
    "forgetting",
    "run_device",
    "run_virtual",
    "simulate",
    "summarise",
    "summary_table",
    "write_report",
]
