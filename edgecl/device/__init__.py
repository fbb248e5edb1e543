"""The device runtime: a frozen ONNX encoder and numpy heads, with no torch.

Importing this package pulls in numpy and onnxruntime only (a test checks it in a fresh
process). See :class:`DeviceRuntime` for an example.
"""

from __future__ import annotations

from edgecl.device._adaptation import AdaptationStats, AdaptationWorker
from edgecl.device._agent import DeviceAgent
from edgecl.device._agent_config import AgentConfig, load_agent_config
from edgecl.device._collector import CollectorStats, SampleCollector
from edgecl.device._identity import DeviceKey
from edgecl.device._outbox import Outbox, OutboxItem, OutboxStats
from edgecl.device._prediction import Prediction
from edgecl.device._reporter import DeviceReporter, HealthCounters
from edgecl.device._runtime import DeviceRuntime, StateConflict, softmax
from edgecl.device._sampling import (
    SamplingPolicy,
    Selection,
    create_policy,
    list_policies,
    register_policy,
)
from edgecl.device._state import ModelState, OODScorer
from edgecl.device._sync import SyncClient, SyncStats
from edgecl.device._transport import GrpcTransport, Transport, TransportError
from edgecl.device._updates import CanaryPolicy, UpdateEvent, UpdateManager, UpdateOutcome
from edgecl.device._validate import InputValidator
from edgecl.device._verify import UpdateVerifier

__all__ = [
    "AdaptationStats",
    "AdaptationWorker",
    "AgentConfig",
    "CanaryPolicy",
    "CollectorStats",
    "DeviceAgent",
    "DeviceKey",
    "DeviceReporter",
    "DeviceRuntime",
    "GrpcTransport",
    "HealthCounters",
    "InputValidator",
    "ModelState",
    "OODScorer",
    "Outbox",
    "OutboxItem",
    "OutboxStats",
    "Prediction",
    "SampleCollector",
    "SamplingPolicy",
    "Selection",
    "StateConflict",
    "SyncClient",
    "SyncStats",
    "Transport",
    "TransportError",
    "UpdateEvent",
    "UpdateManager",
    "UpdateOutcome",
    "UpdateVerifier",
    "create_policy",
    "list_policies",
    "load_agent_config",
    "register_policy",
    "softmax",
]
