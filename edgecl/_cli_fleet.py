"""``edgecl fleet ...``: the operator's commands over the FleetAdmin API (tables for
people, ``--json`` for scripts). Imports the cloud package only when a command runs."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecl._exceptions import ConfigError

#: name -> help of the commands that call the service.
COMMANDS = {
    "devices": "registered devices, newest seen first",
    "device": "one device: its target's updates and its reports",
    "updates": "a target's updates, their rollout states and rejected candidates",
    "rollout": "show a target's rollout, or set its policy (--mode, operator role)",
    "pause": "admit no more devices to a target's rollout (operator role)",
    "resume": "continue a paused or halted rollout, or approve a manual one (operator role)",
    "abort": "end a target's rollout; --revert gives its devices the released content "
             "back (operator role)",
    "rollback": "publish an earlier version's content as the next one (operator role)",
    "pin": "serve a device, or a target's devices, no version above one (operator role)",
    "config": "show desired vs reported device config, or set it for a device or group "
              "(operator role)",
}
_TARGET_HELP = "a device id, or a group when the service learns per group"


def add_fleet_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``fleet`` and its commands to the ``edgecl`` parser."""
    fl = add(sub, "fleet", "see and steer a fleet through the service's FleetAdmin API "
             "(operator token: --token or $EDGECL_ADMIN_TOKEN)"
             ).add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        fc = add(fl, name, text)
        fc.add_argument("--server", default="127.0.0.1:50051", help="the service's address")
        fc.add_argument("--token", default=None, help="operator token (default: "
                        "$EDGECL_ADMIN_TOKEN)")
        fc.add_argument("--tls-ca", default=None, help="PEM of the CA to trust (TLS)")
        fc.add_argument("--json", action="store_true", help="JSON on stdout")
        _arguments(name, fc)
        fc.set_defaults(func=cmd_fleet)
    tk = add(fl, "token", "print a new random operator token and its [admin] operators entry")
    tk.add_argument("--name", required=True, help="the operator's name")
    tk.add_argument("--role", choices=("read", "operator"), default="read", help="role")
    tk.set_defaults(func=cmd_fleet_token)


#: Numeric fields of a rollout policy the ``rollout`` command sets.
POLICY_FIELDS = (("canary_share", float), ("wave_share", float), ("wave_interval_s", float),
                 ("min_reported_share", float), ("max_rollback_rate", float),
                 ("max_confidence_drop", float), ("max_ood_rise", float), ("max_errors", int),
                 ("gate_timeout_s", float))


def _arguments(name: str, fc: argparse.ArgumentParser) -> None:
    if name in ("devices", "config"):
        fc.add_argument("--group", default="", help="only this group (config: set it for "
                        "this group)")
        if name == "devices":
            fc.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                            help="only devices with this label (repeatable)")
        else:
            fc.add_argument("--device", default="", help="set it for this device")
            fc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            dest="values", help="a value to set (repeatable): budget, "
                            "sampling, adaptation, adaptation_method, report_interval_s")
            fc.add_argument("--clear", action="store_true", help="remove the device's or "
                            "group's desired config")
    elif name == "pin":
        fc.add_argument("id", metavar="DEVICE", nargs="?", default="",
                        help="the device (or --target)")
        fc.add_argument("--target", default="", help="pin every device of this target")
        fc.add_argument("--version", type=int, default=None, help="the version")
        fc.add_argument("--clear", action="store_true", help="remove the pin")
    else:
        fc.add_argument("id", metavar="DEVICE" if name == "device" else "TARGET",
                        help="the device id" if name == "device" else _TARGET_HELP)
    if name == "rollback":
        fc.add_argument("--to", type=int, required=True, dest="to_version",
                        help="the earlier version (0: the bundle's own state)")
    if name == "abort":
        fc.add_argument("--revert", action="store_true", help="give the devices that took "
                        "the version the released content back")
    if name == "rollout":
        fc.add_argument("--mode", choices=("auto", "staged", "manual"), default=None,
                        help="set the target's policy (omit to show the rollout)")
        fc.add_argument("--fleet-default", action="store_true", help="set the fleet's "
                        "default policy instead of TARGET's (TARGET is then ignored)")
        for field, kind in POLICY_FIELDS:  # unset: RolloutPolicy's default
            fc.add_argument("--" + field.replace("_", "-"), type=kind, default=None,
                            help=f"policy: {field} (default: RolloutPolicy's)")
        fc.add_argument("--no-revert", action="store_true", help="policy: on a failed gate "
                        "halt and wait for an operator instead of reverting")
    if name in ("rollback", "pin", "pause", "resume", "abort", "rollout", "config"):
        fc.add_argument("--reason", default="", help="why (logged with your name)")


def key_values(items: list[str], what: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict; :class:`ConfigError` naming ``what`` otherwise."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def cmd_fleet(args: argparse.Namespace) -> int:
    """Run one ``edgecl fleet`` command and print its result."""
    from edgecl.cloud import AdminClient

    root = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    token = args.token or os.environ.get("EDGECL_ADMIN_TOKEN", "")
    with AdminClient(args.server, token, root_cert=root) as admin:
        out, text = _run(admin, args)
    print(json.dumps(out, indent=2) if args.json else text)
    return 0


def _run(admin: Any, args: argparse.Namespace) -> tuple[Any, str]:
    from edgecl.cloud import (
        RolloutPolicy,
        format_config,
        format_devices,
        format_rollout,
        format_updates,
    )

    command = args.fleet_command
    if command == "devices":
        out: Any = admin.devices(group=args.group, labels=key_values(args.label, "--label"))
        return out, format_devices(out)
    if command == "device":
        out = admin.device(args.id)
        events = "".join(f"\n  v{e['version']} {e['action']}"
                         + (f": {e['reason'][:100]}" if e["action"] != "applied" else "")
                         for e in out["events"][:20])
        return out, (format_devices([out["device"]]) + "\n\n" + format_updates(
            {"updates": out["updates"], "rejections": []})
            + (f"\n\nwhat it did with updates, newest first:{events}" if events else ""))
    if command == "updates":
        out = admin.updates(args.id)
        return out, format_updates(out)
    if command == "rollout":
        if args.mode is None:
            out = admin.rollout(args.id)
            return out, format_rollout(out)
        given = {f: getattr(args, f) for f, _ in POLICY_FIELDS if getattr(args, f) is not None}
        policy = RolloutPolicy(mode=args.mode, revert_on_failure=not args.no_revert, **given)
        target = "" if args.fleet_default else args.id
        out = admin.set_rollout_policy(target, policy, reason=args.reason)
        return out, f"{target or 'the fleet'}: rollout policy {out['mode']} set"
    if command in ("pause", "resume", "abort"):
        kwargs = {"revert": args.revert} if command == "abort" else {}
        out = getattr(admin, command)(args.id, reason=args.reason, **kwargs)
        return out, format_rollout(out)
    if command == "config":
        if args.values or args.clear:
            out = admin.set_config(key_values(args.values, "--set"), device_id=args.device,
                                   group=args.group, clear=args.clear, reason=args.reason)
            return out, (f"{out['kind']} {out['name']}: desired config revision "
                         f"{out['revision']}: {out['values'] or 'cleared'}")
        out = admin.devices(group=args.group)
        if args.device:
            out = [d for d in out if d["device_id"] == args.device]
        return out, format_config(out)
    if command == "pin":
        if args.version is None and not args.clear:
            raise ConfigError("fleet pin needs --version V or --clear")
        out = admin.pin(device_id=args.id, target=args.target, version=args.version or 0,
                        clear=args.clear, reason=args.reason)
        return out, f"{out['kind']} {out['name']}: " + (
            "pin cleared" if int(out["version"]) < 0 else f"pinned to v{out['version']}")
    out = admin.rollback(args.id, args.to_version, args.reason)
    return out, (f"published v{out['version']} for {args.id} with the content of "
                 f"v{args.to_version}")


def cmd_fleet_token(args: argparse.Namespace) -> int:
    """Print a new operator token and its config entry."""
    from edgecl.cloud import new_operator_token

    token = new_operator_token()
    print(json.dumps({"name": args.name, "role": args.role, "token": token,
                      "entry": f"{args.name}:{args.role}:{token}"}))
    return 0
