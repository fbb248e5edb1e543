"""A client of the ``FleetAdmin`` service (what ``edgecl fleet`` runs).

Examples
--------
>>> admin = AdminClient("cloud.example:50051", token=os.environ["EDGECL_ADMIN_TOKEN"])
...                                                                    # doctest: +SKIP
>>> [d["device_id"] for d in admin.devices(group="site-a")]           # doctest: +SKIP
>>> admin.rollback("site-a", to_version=3, reason="v5 confuses 7s")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from edgecl._exceptions import ConfigError, EdgeclError
from edgecl._proto import admin_pb2, admin_pb2_grpc
from edgecl.cloud._rollout import RolloutPolicy


class AdminError(EdgeclError):
    """A FleetAdmin call failed; ``code`` is the gRPC status name (e.g. ``NOT_FOUND``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


class AdminClient:
    """Calls FleetAdmin at ``target`` with an operator ``token`` (``root_cert``: PEM of the
    CA to trust for TLS; None: plaintext, for loopback). Results are plain dicts (proto
    field names; 64-bit integers as strings, as protobuf's JSON mapping writes them)."""

    def __init__(self, target: str, token: str, *, root_cert: bytes | None = None,
                 timeout_s: float = 10.0) -> None:
        if not token:
            raise ConfigError("an operator token is needed (--token or EDGECL_ADMIN_TOKEN)")
        self._channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(root_cert))
                         if root_cert is not None else grpc.insecure_channel(target))
        self._stub = admin_pb2_grpc.FleetAdminStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.timeout_s = timeout_s

    def _call(self, name: str, request: Any) -> Any:
        try:
            return getattr(self._stub, name)(request, metadata=self._metadata,
                                             timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise AdminError(exc.code().name, exc.details() or "") from None

    def devices(self, group: str = "", labels: dict[str, str] | None = None,
                limit: int = 0) -> list[dict[str, Any]]:
        """Registered devices, newest seen first (see ``ListDevices``)."""
        reply = self._call("ListDevices", admin_pb2.ListDevicesRequest(
            group=group, labels=labels or {}, limit=limit))
        return [_dict(d) for d in reply.devices]

    def device(self, device_id: str) -> dict[str, Any]:
        """One device with its target's updates and its newest reports."""
        return _dict(self._call("GetDevice", admin_pb2.GetDeviceRequest(device_id=device_id)))

    def updates(self, target: str, limit: int = 0) -> dict[str, Any]:
        """A target's updates and rejected candidates, newest first."""
        return _dict(self._call("ListUpdates",
                                admin_pb2.ListUpdatesRequest(target=target, limit=limit)))

    def rollback(self, target: str, to_version: int, reason: str = "") -> dict[str, Any]:
        """Publish ``to_version``'s content (0: the bundle's) as the target's next version."""
        return _dict(self._call("Rollback", admin_pb2.RollbackRequest(
            target=target, to_version=to_version, reason=reason)))

    def pin(self, *, device_id: str = "", target: str = "", version: int = 0,
            clear: bool = False, reason: str = "") -> dict[str, Any]:
        """Serve a device (or every device of a target) no version above ``version``;
        ``clear`` removes the pin."""
        return _dict(self._call("Pin", admin_pb2.PinRequest(
            device_id=device_id, target=target, version=version, clear=clear,
            reason=reason)))

    def set_rollout_policy(self, target: str, policy: RolloutPolicy | None = None, *,
                           clear: bool = False, reason: str = "") -> dict[str, Any]:
        """Set ``target``'s rollout policy ("" : the fleet's default); ``clear`` removes
        it. Returns the policy the target now follows."""
        msg = None if policy is None else admin_pb2.RolloutPolicy(**policy.to_dict())
        return _dict(self._call("SetRolloutPolicy", admin_pb2.SetRolloutPolicyRequest(
            target=target, policy=msg, clear=clear, reason=reason)))

    def rollout(self, target: str) -> dict[str, Any]:
        """The rollout of ``target``'s newest version: state, policy, waves."""
        return _dict(self._call("GetRollout", admin_pb2.GetRolloutRequest(target=target)))

    def pause(self, target: str, reason: str = "") -> dict[str, Any]:
        """Admit no more devices to ``target``'s rollout."""
        return _dict(self._call("PauseRollout", admin_pb2.RolloutAction(target=target,
                                                                       reason=reason)))

    def resume(self, target: str, reason: str = "") -> dict[str, Any]:
        """Continue a paused or halted rollout, or approve a manual one."""
        return _dict(self._call("ResumeRollout", admin_pb2.RolloutAction(target=target,
                                                                        reason=reason)))

    def abort(self, target: str, *, revert: bool = False, reason: str = "") -> dict[str, Any]:
        """End ``target``'s rollout; ``revert`` gives its devices the released content."""
        return _dict(self._call("AbortRollout", admin_pb2.RolloutAction(
            target=target, revert=revert, reason=reason)))

    def set_config(self, values: dict[str, str] | None = None, *, device_id: str = "",
                   group: str = "", clear: bool = False, reason: str = "") -> dict[str, Any]:
        """Set (``clear``: remove) the config a device or a group should run."""
        return _dict(self._call("SetDesiredConfig", admin_pb2.SetDesiredConfigRequest(
            device_id=device_id, group=group, values=values or {}, clear=clear,
            reason=reason)))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_devices(devices: list[dict[str, Any]]) -> str:
    """A table of :meth:`AdminClient.devices` for people."""
    rows = [("device", "group", "target", "reported", "served", "latest", "pinned",
             "samples", "last seen (ms)")]
    rows += [(d["device_id"], d["group"] or "-", d["target"],
              "-" if int(d["reported_version"]) < 0 else d["reported_version"],
              d["served_version"], d["latest_version"],
              "-" if int(d["pinned_version"]) < 0 else d["pinned_version"],
              d["samples"], d["last_seen_ms"]) for d in devices]
    return _table(rows)


def format_updates(updates: dict[str, Any]) -> str:
    """A table of :meth:`AdminClient.updates` for people."""
    rows = [("version", "base", "rollout", "created (ms)", "parts", "metrics")]
    for u in updates["updates"]:
        shown = {k: round(v, 3) for k, v in sorted(u["metrics"].items())[:4]}
        rows.append((u["version"], u["base_version"], u["rollout_state"], u["created_ms"],
                     ",".join(u["parts"]), str(shown)))
    text = _table(rows)
    if updates["rejections"]:
        text += "\nrejected: " + "; ".join(f"v{r['version']} {r['reason']}"
                                           for r in updates["rejections"][:10])
    return text


def format_rollout(status: dict[str, Any]) -> str:
    """:meth:`AdminClient.rollout` for people: state, policy, one row per wave."""
    policy = status["policy"]
    head = (f"{status['target']} v{status['version']}: {status['state']}"
            f"{' (' + status['reason'] + ')' if status['reason'] else ''}\n"
            f"policy {policy['mode']}: canary {policy['canary_share']:g}, waves of "
            f"{policy['wave_share']:g} every {policy['wave_interval_s']:g} s; released "
            f"v{status['released_version']} on {status['target_devices']} devices")
    first = status["waves"][0]["started_s"] if status["waves"] else 0.0
    rows = [("wave", "devices", "reported", "applied", "refused", "started (s after wave 1)")]
    rows += [(w["wave"], w["devices"], w["reported"], w["applied"], w["refused"],
              f"{w['started_s'] - first:.1f}") for w in status["waves"]]
    return head + ("\n" + _table(rows) if status["waves"] else "")


def format_config(devices: list[dict[str, Any]]) -> str:
    """Desired vs reported config of :meth:`AdminClient.devices` for people."""
    rows = [("device", "desired rev", "reported rev", "desired", "reported")]
    rows += [(d["device_id"], d["desired_revision"], d["reported_revision"],
              _kv(d["desired_config"]), _kv(d["reported_config"])) for d in devices]
    return _table(rows)


def _kv(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def _table(rows: list[tuple[Any, ...]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)
