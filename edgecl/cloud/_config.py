"""Service configuration: a TOML file, overridden by ``EDGECL_CLOUD_<SECTION>_<KEY>``.

Every option, its default and its meaning are documented in ``cloud/edgecl-cloud.toml``.
Unknown sections or keys and values of the wrong type are a :class:`ConfigError`, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl._home import default_home
from edgecl.cloud._rollout import RolloutPolicy

ENV_PREFIX = "EDGECL_CLOUD_"


@dataclass(frozen=True)
class ServerSection:
    address: str = "127.0.0.1:50051"
    max_message_bytes: int = 4 << 20
    max_workers: int = 64
    max_streams: int = 0
    unary_workers: int = 0  # 0: min(4, max_workers // 8)
    stream_max_s: float = 300.0
    grace_s: float = 10.0
    # connections are closed (GOAWAY) after this long, so devices spread over replicas
    # that joined since; 0: never
    max_connection_age_s: float = 1800.0
    tls_cert: str = ""
    tls_key: str = ""
    # no tls_cert/tls_key: generate and serve a development CA + certificate under
    # <storage dir>/tls/ (edgecl/cloud/_tls.py); off here, on in the sample config
    tls_dev: bool = False


#: Subscribe streams open at once by default (``server.max_streams`` 0), and the most
#: allowed: an idle stream costs memory (about 20 KB), no thread.
DEFAULT_STREAMS, MAX_STREAMS = 10_000, 1_000_000
#: Weakest enrollment key the service starts with: characters, distinct characters.
MIN_KEY_CHARS, MIN_KEY_DISTINCT = 16, 8
KEY_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


@dataclass(frozen=True)
class AuthSection:
    enrollment_key: str = ""
    token_ttl_s: float = 30 * 24 * 3600.0


def check_enrollment_key(key: str) -> None:
    """:class:`ConfigError` unless ``key`` is strong enough to guard Register: at least
    :data:`MIN_KEY_CHARS` characters, :data:`MIN_KEY_DISTINCT` distinct ones, no padding."""
    if not key:
        raise ConfigError("auth.enrollment_key is required (set it in the file or with "
                          f"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY); {KEY_HINT}")
    if key != key.strip():
        raise ConfigError(f"auth.enrollment_key starts or ends with whitespace; {KEY_HINT}")
    if len(key) < MIN_KEY_CHARS or len(set(key)) < MIN_KEY_DISTINCT:
        raise ConfigError(f"auth.enrollment_key is too weak (it needs >= {MIN_KEY_CHARS} "
                          f"characters, >= {MIN_KEY_DISTINCT} distinct); {KEY_HINT}")


@dataclass(frozen=True)
class LimitsSection:
    requests_per_s: float = 50.0
    burst: float = 100.0
    max_batch_samples: int = 256
    samples_per_s: float = 100.0
    sample_burst: float = 1024.0
    max_streams_per_device: int = 4
    max_backlog: int = 20000
    max_samples_per_device: int = 100000
    max_report_keys: int = 64
    max_report_key_chars: int = 64


@dataclass(frozen=True)
class StorageSection:
    dir: str = ""  # empty: <cache root>/cloud, outside any checkout
    # the registry database: "" is <dir>/registry.sqlite; sqlite:///PATH; postgresql://...
    registry: str = ""
    # update payloads: "" (files beside SQLite, the database with PostgreSQL) or s3://...
    artifacts: str = ""
    artifacts_endpoint: str = ""  # an S3-compatible store's URL ("" : AWS)

    def path(self, home: str | None = None) -> Path:
        """The absolute storage directory (empty ``dir``: ``cloud/`` under the cache root,
        ``home`` or ``$EDGECL_HOME`` or ``~/.cache/edgecl``)."""
        return (Path(self.dir).expanduser() if self.dir
                else default_home(home) / "cloud").resolve()


@dataclass(frozen=True)
class TeacherSection:
    zoo: str = "full"
    program: str = ""
    classes: list[str] = field(default_factory=list)
    batch_size: int = 256
    threads: int = 1
    claim_s: float = 120.0  # a labeller's claim on a batch (replicas skip it meanwhile)
    labelling: bool = True  # false: this replica stores uploads, other replicas label


@dataclass(frozen=True)
class ComputeSection:
    backend: str = "local"  # "local": this process; "ray": a Ray cluster
    address: str = ""  # Ray: a running cluster's address ("" : start a local one)
    actors: int = 2  # Ray: teacher actors (each labels one batch at a time)


@dataclass(frozen=True)
class BundlesSection:
    paths: list[str] = field(default_factory=list)
    zoo_student: bool = True


@dataclass(frozen=True)
class LearningSection:
    enabled: bool = True
    group_by: str = "device"
    trigger_samples: int = 32
    trigger_seconds: float = 60.0
    window: int = 256
    workers: int = 1
    warm_start: bool = True
    segments: bool = True
    segment_threshold: float = 12.0
    parts: list[str] = field(default_factory=lambda: ["prompt", "filter", "adapter", "head"])
    steps: int = 150
    max_nfr: float = 0.2
    margin: float = 0.0
    source_z: float = 1.0
    recent_holdout: int = 8
    stable_holdout: bool = True
    selected_weight: float = 1.0
    prior_correction: bool = False
    signing_key: str = ""
    memory: bool = False
    memory_scope: str = "fleet"
    memory_capacity: int = 64
    peer_merge: str = "pool"
    lease_s: float = 300.0  # a job's lease on its target (renewed while it runs)


@dataclass(frozen=True)
class MetricsSection:
    port: int = -1
    bind: str = "127.0.0.1"  # address of /metrics: loopback only unless a token is set
    token: str = ""  # bearer token /metrics requires (empty: none, loopback only)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (of a ``host:port`` address) is reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: may resolve to anything
        return False


def check_metrics(metrics: MetricsSection) -> None:
    """:class:`ConfigError` when ``/metrics`` would answer beyond this machine without a
    token, or the token is weak."""
    token = metrics.token
    if token and (token != token.strip() or len(token) < MIN_KEY_CHARS
                  or len(set(token)) < MIN_KEY_DISTINCT):
        raise ConfigError(f"metrics.token is too weak (it needs >= {MIN_KEY_CHARS} characters,"
                          f" >= {MIN_KEY_DISTINCT} distinct, no surrounding whitespace); "
                          f"{KEY_HINT}")
    if metrics.port >= 0 and not token and not is_loopback(metrics.bind):
        raise ConfigError(f"metrics.bind = {metrics.bind!r} would serve /metrics beyond this "
                          f"machine without a token: set [metrics] token (or "
                          f"EDGECL_CLOUD_METRICS_TOKEN; scrapers then send 'Authorization: "
                          f"Bearer <token>'), or bind = \"127.0.0.1\"; {KEY_HINT}")


@dataclass(frozen=True)
class AdminSection:
    operators: list[str] = field(default_factory=list)  # "name:role:token"


@dataclass(frozen=True)
class DashboardSection:
    port: int = -1  # the web dashboard's port (0: any free port, -1: off)
    bind: str = "127.0.0.1"  # beyond loopback only with TLS ([server] tls_*)
    session_ttl_s: float = 28800.0  # a login lasts this long (8 hours)
    refresh_s: float = 2.0  # how often open pages fetch fresh data


def check_dashboard(dashboard: DashboardSection, tls: bool) -> None:
    """:class:`ConfigError` for a dashboard that would send operator tokens in the clear
    beyond this machine, or impossible session or refresh times."""
    for name, value in (("session_ttl_s", dashboard.session_ttl_s),
                        ("refresh_s", dashboard.refresh_s)):
        if not (0 < value < math.inf):
            raise ConfigError(f"dashboard.{name} must be a finite number of seconds > 0, "
                              f"got {value}")
    if dashboard.port >= 0 and not tls and not is_loopback(dashboard.bind):
        raise ConfigError(f"dashboard.bind = {dashboard.bind!r} would take operator tokens "
                          f"over plain HTTP beyond this machine: serve TLS ([server] "
                          f"tls_cert/tls_key or tls_dev; the dashboard then uses HTTPS) or "
                          f"bind = \"127.0.0.1\" behind a TLS proxy")


@dataclass(frozen=True)
class LogSection:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True)
class CloudConfig:
    """The whole service configuration (see ``cloud/edgecl-cloud.toml``)."""

    server: ServerSection = field(default_factory=ServerSection)
    auth: AuthSection = field(default_factory=AuthSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    storage: StorageSection = field(default_factory=StorageSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    bundles: BundlesSection = field(default_factory=BundlesSection)
    learning: LearningSection = field(default_factory=LearningSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    admin: AdminSection = field(default_factory=AdminSection)
    dashboard: DashboardSection = field(default_factory=DashboardSection)
    compute: ComputeSection = field(default_factory=ComputeSection)
    #: The fleet's default rollout policy; an operator's ``edgecl fleet rollout``
    #: overrides it.
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)

    def replace(self, section: str, **values: Any) -> CloudConfig:
        """A copy with ``values`` set in ``section`` (validated like the file)."""
        return _build({**_as_dict(self), section: {**_as_dict(self)[section], **values}})

    @property
    def stream_slots(self) -> int:
        """Most Subscribe streams open at once (``server.max_streams``, 0:
        :data:`DEFAULT_STREAMS`; they hold no RPC thread)."""
        return self.server.max_streams or DEFAULT_STREAMS

    @property
    def reserved_workers(self) -> int:
        """RPC threads no stream may hold (``server.unary_workers``, 0: 1/8 of them, at most
        4), kept for Register, unary calls and health checks."""
        return self.server.unary_workers or min(4, self.server.max_workers // 8)

    @property
    def stream_capacity(self) -> int:
        """Most Upload streams open at once, all devices together (each holds a thread)."""
        return self.server.max_workers - self.reserved_workers

    def validate(self) -> CloudConfig:
        """Check cross-field rules; returns self."""
        check_enrollment_key(self.auth.enrollment_key)
        if not self.auth.token_ttl_s > 0 or not math.isfinite(self.auth.token_ttl_s):
            raise ConfigError("auth.token_ttl_s must be a finite number of seconds > 0")
        if bool(self.server.tls_cert) != bool(self.server.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key go together")
        check_metrics(self.metrics)
        check_dashboard(self.dashboard, bool(self.server.tls_cert or self.server.tls_dev))
        from edgecl.cloud._admin_auth import parse_operators

        parse_operators(self.admin.operators)
        try:
            self.rollout.validate()
        except InvalidInput as exc:
            raise ConfigError(f"[rollout]: {exc}") from exc
        from edgecl.cloud._database import parse_registry_url

        parse_registry_url(self.storage.registry, Path("."))  # ConfigError if malformed
        if self.storage.artifacts and not (self.storage.artifacts.startswith("s3://")
                                           and len(self.storage.artifacts) > 5):
            raise ConfigError(f"storage.artifacts {self.storage.artifacts!r}: empty (the "
                              f"default) or s3://BUCKET[/PREFIX]")
        if self.compute.backend not in ("local", "ray"):
            raise ConfigError("compute.backend must be 'local' or 'ray'")
        if self.compute.actors < 1:
            raise ConfigError("compute.actors must be >= 1")
        if self.learning.group_by not in ("device", "group"):
            raise ConfigError("learning.group_by must be 'device' or 'group'")
        if self.learning.memory_scope not in ("fleet", "group"):
            raise ConfigError("learning.memory_scope must be 'fleet' or 'group'")
        if self.learning.memory_capacity < 1:
            raise ConfigError("learning.memory_capacity must be >= 1")
        if self.learning.peer_merge not in ("pool", "ties"):
            raise ConfigError("learning.peer_merge must be 'pool' or 'ties'")
        if self.log.format not in ("json", "text"):
            raise ConfigError("log.format must be 'json' or 'text'")
        positive = {"server.max_message_bytes": self.server.max_message_bytes,
                    "server.max_workers": self.server.max_workers,
                    "limits.requests_per_s": self.limits.requests_per_s,
                    "limits.burst": self.limits.burst,
                    "limits.max_batch_samples": self.limits.max_batch_samples,
                    "limits.samples_per_s": self.limits.samples_per_s,
                    "limits.sample_burst": self.limits.sample_burst,
                    "limits.max_streams_per_device": self.limits.max_streams_per_device,
                    "limits.max_report_keys": self.limits.max_report_keys,
                    "limits.max_report_key_chars": self.limits.max_report_key_chars,
                    "teacher.batch_size": self.teacher.batch_size,
                    "teacher.claim_s": self.teacher.claim_s,
                    "learning.lease_s": self.learning.lease_s,
                    "teacher.threads": self.teacher.threads}
        for name, value in positive.items():
            if not (0 < value < math.inf):  # also refuses nan
                raise ConfigError(f"{name} must be finite and > 0, got {value}")
        if not 0 <= self.server.max_connection_age_s < math.inf:
            raise ConfigError("server.max_connection_age_s must be finite and >= 0")
        if self.server.stream_max_s <= 0:
            raise ConfigError(f"server.stream_max_s must be > 0, got {self.server.stream_max_s}")
        if self.server.max_workers < 2:
            raise ConfigError("server.max_workers must be >= 2 (Upload streams and unary "
                              "RPCs each need a thread)")
        if not 0 <= self.server.max_streams <= MAX_STREAMS:
            raise ConfigError(f"server.max_streams must be in [0, {MAX_STREAMS}], got "
                              f"{self.server.max_streams}")
        self._validate_capacity()
        return self

    def _validate_capacity(self) -> None:
        """Rules of the thread budget, the sample bucket and the backlog bound."""
        if not 0 <= self.server.unary_workers < self.server.max_workers:
            raise ConfigError(f"server.unary_workers must be in [0, server.max_workers) so "
                              f"streams have a thread, got {self.server.unary_workers}")
        batch = self.limits.max_batch_samples
        if self.limits.sample_burst < batch:
            raise ConfigError(f"limits.sample_burst ({self.limits.sample_burst:g}) must be >= "
                              f"limits.max_batch_samples ({batch}), or a full batch never fits")
        if self.limits.max_backlog < batch:
            raise ConfigError(f"limits.max_backlog ({self.limits.max_backlog}) must be >= "
                              f"limits.max_batch_samples ({batch}), or a full batch never fits")
        quota, least = self.limits.max_samples_per_device, max(batch, 2 * self.learning.window)
        if quota and quota < least:
            raise ConfigError(f"limits.max_samples_per_device ({quota}) must be 0 (no bound) "
                              f"or >= {least} (a full batch and twice learning.window)")


def _as_dict(cfg: CloudConfig) -> dict[str, dict[str, Any]]:
    return {f.name: dataclasses.asdict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _coerce(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")


def _build(data: Mapping[str, Any]) -> CloudConfig:
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(CloudConfig):
        cls = f.default_factory()  # type: ignore[misc]
        given = data.get(f.name, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"[{f.name}] must be a table")
        known = {g.name: getattr(cls, g.name) for g in dataclasses.fields(cls)}
        unknown = set(given) - set(known)
        if unknown:
            raise ConfigError(f"unknown option(s) in [{f.name}]: {sorted(unknown)}; "
                              f"known: {sorted(known)}")
        values = {k: _coerce(f"{f.name}.{k}", v, known[k]) for k, v in given.items()}
        sections[f.name] = dataclasses.replace(cls, **values)
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; known: {sorted(sections)}")
    return CloudConfig(**sections)


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> CloudConfig:
    """Read ``path`` (TOML; None: defaults only) and apply environment overrides.

    ``EDGECL_CLOUD_AUTH_ENROLLMENT_KEY=...`` sets ``[auth] enrollment_key``; lists take
    comma-separated values. The result is validated (:meth:`CloudConfig.validate`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    sections = {f.name for f in dataclasses.fields(CloudConfig)}
    for key, value in (os.environ if env is None else env).items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX):].lower()
        section = next((s for s in sorted(sections, key=len, reverse=True)
                        if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"{key}: no section matches; sections are {sorted(sections)}")
        data.setdefault(section, {})[rest[len(section) + 1:]] = value
    return _build(data).validate()
