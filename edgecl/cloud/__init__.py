"""The cloud teacher service: gRPC API, registry, teacher labelling, update learning.

Needs ``edgecl[cloud]`` (torch, grpcio-health-checking, grpcio-reflection,
prometheus-client, cryptography). Build a server with :func:`create_server` and a
:class:`CloudConfig` (:func:`load_config` reads ``cloud/edgecl-cloud.toml``), or run
``edgecl serve --config cloud/edgecl-cloud.toml``.
"""

from __future__ import annotations

from edgecl.cloud._admin_auth import Operator, new_operator_token
from edgecl.cloud._admin_client import (
    AdminClient,
    AdminError,
    format_config,
    format_devices,
    format_rollout,
    format_updates,
)
from edgecl.cloud._config import CloudConfig, load_config
from edgecl.cloud._learner import BaseState, LearnerConfig, LearnResult, UpdateLearner
from edgecl.cloud._learning import LearningCoordinator, LearningPolicy, UpdateStore
from edgecl.cloud._library import DomainEntry, DomainLibrary, DomainMatch, DomainSignature
from edgecl.cloud._registry import RecentUploads, Registry
from edgecl.cloud._rollout import GateResult, RolloutController, RolloutPolicy, judge_gate
from edgecl.cloud._segments import newest_segment_start
from edgecl.cloud._server import CloudServer, configure_logging, create_server, serve
from edgecl.cloud._signing import UpdateSigner, key_id, rotate_signing_key
from edgecl.cloud._teacher import Teacher, TeacherPool
from edgecl.cloud._validation import Verdict, negative_flip_rate, validate_candidate

__all__ = [
    "AdminClient",
    "AdminError",
    "BaseState",
    "CloudConfig",
    "CloudServer",
    "DomainEntry",
    "DomainLibrary",
    "DomainMatch",
    "DomainSignature",
    "GateResult",
    "LearnResult",
    "LearnerConfig",
    "LearningCoordinator",
    "LearningPolicy",
    "Operator",
    "RecentUploads",
    "Registry",
    "RolloutController",
    "RolloutPolicy",
    "Teacher",
    "TeacherPool",
    "UpdateLearner",
    "UpdateSigner",
    "UpdateStore",
    "Verdict",
    "configure_logging",
    "create_server",
    "format_config",
    "format_devices",
    "format_rollout",
    "format_updates",
    "judge_gate",
    "key_id",
    "load_config",
    "negative_flip_rate",
    "new_operator_token",
    "newest_segment_start",
    "rotate_signing_key",
    "serve",
    "validate_candidate",
]
