"""Publish an earlier version's content (or the bundle's own state) as a target's next
version: an operator's rollback, or the revert of a rollout whose gate failed. Devices
only ever move to higher versions, so going back is a new version, signed like any."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edgecl._exceptions import InvalidInput
from edgecl.cloud._errors import FailedPrecondition, NotFound
from edgecl.cloud._learner import BaseState
from edgecl.cloud._registry import Registry
from edgecl.cloud._signing import UpdateSigner
from edgecl.wire import UpdatePayload, payload_from_bytes

#: Metric of a republished update: the version whose content it carries again.
ROLLBACK_METRIC = "rollback_of"


def republish(registry: Registry, signer: UpdateSigner, bundle_dir: Callable[[str], Path],
              target: str, to_version: int, reason: str = "") -> int:
    """Publish ``to_version``'s content (0: the bundle's own state) as ``target``'s next
    version, released to every device at once (``reason`` kept with its rollout); the new
    version. ``bundle_dir(sha)``
    finds the bundle of an encoder (:class:`KeyError` when it is no longer served)."""
    records = registry.update_records(target, 1)
    if not records:
        raise NotFound(f"nothing was published for {target!r}: nothing to roll back")
    latest = records[0]
    if not 0 <= to_version < latest.version:
        raise InvalidInput(f"to_version must be an earlier version of {target!r}: 0 (the "
                           f"bundle's own state) to {latest.version - 1}, got {to_version}")
    newest = payload_from_bytes(registry.artifacts.get(latest.artifact))
    if to_version == 0:
        try:
            directory = bundle_dir(latest.encoder_sha256)
        except KeyError:
            raise FailedPrecondition(f"{target!r} runs encoder {latest.encoder_sha256[:12]}"
                                     f"..., which this service no longer serves") from None
        bundle = BaseState.from_bundle(directory)
        parts = {"head.weight": bundle.head_weight, "head.bias": bundle.head_bias}
        encoder = latest.encoder_sha256
    else:
        old = registry.update_record(target, to_version)
        if old is None:
            raise NotFound(f"{target!r} has no version {to_version}")
        payload = payload_from_bytes(registry.artifacts.get(old.artifact))
        parts, encoder = dict(payload.parts), payload.encoder_sha256
    payload = UpdatePayload(
        version=latest.version + 1, base_version=latest.version, encoder_sha256=encoder,
        parts=parts, metrics={ROLLBACK_METRIC: float(to_version)},
        created_ms=int(time.time() * 1000), device_id=newest.device_id, group=newest.group)
    registry.publish(target, signer.sign(payload), payload, release=True, reason=reason)
    return payload.version
