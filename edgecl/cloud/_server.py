"""Building, running and stopping the cloud service (``edgecl serve``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.bundle import ModelBundle, load_bundle
from edgecl.cloud._auth import AuthInterceptor, StreamCaps, TokenBucket
from edgecl.cloud._config import CloudConfig, is_loopback
from edgecl.cloud._identity import DEVICE_TARGET
from edgecl.cloud._learner import LearnerConfig
from edgecl.cloud._learning import LearningCoordinator, LearningPolicy
from edgecl.cloud._metrics import Metrics
from edgecl.cloud._registry import Registry
from edgecl.cloud._republish import republish
from edgecl.cloud._rollout import RolloutController
from edgecl.cloud._rpc_server import AsyncRpcServer
from edgecl.cloud._servicer import Backlog, EdgeCloudServicer
from edgecl.cloud._signing import UpdateSigner
from edgecl.cloud._teacher import Teacher, TeacherPool
from edgecl.wire import SignedUpdate, UpdatePayload, payload_from_bytes

log = logging.getLogger("edgecl.cloud")
#: Seconds a stop may take beyond ``grace`` for the batch being labelled and running
#: learning jobs; whatever is left then is abandoned (labelled after the next start).
STOP_SLACK_S = 3.0


def warn_if_plaintext(address: str, tls: bool) -> bool:
    """Log a WARNING when serving plaintext beyond loopback; whether it warned."""
    host = address.rsplit(":", 1)[0]
    if tls or is_loopback(host):
        return False
    log.warning("serving PLAINTEXT on a non-loopback address: enrollment key, tokens and "
                "uploads travel unencrypted; set [server] tls_cert and tls_key (or tls_dev "
                "= true for a development certificate)",
                extra={"address": address})
    return True


class _JsonFormatter(logging.Formatter):
    _skip = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self._skip})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Structured (JSON lines) or plain logs on stderr for the ``edgecl`` loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("edgecl")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def connection_options(server: Any) -> list[tuple[str, int]]:
    """gRPC keepalive (the devices' pings every 60 s are allowed) and the maximum
    connection age of ``[server]``."""
    options = [("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000),
               ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
               ("grpc.keepalive_permit_without_calls", 1)]
    if server.max_connection_age_s > 0:
        options += [("grpc.max_connection_age_ms", int(server.max_connection_age_s * 1000)),
                    ("grpc.max_connection_age_grace_ms",
                     int((server.stream_max_s + server.grace_s) * 1000))]
    return options


class _RegistryStore:
    """The learning coordinator's view of the registry for one bundle."""

    def __init__(self, registry: Registry, bundle: ModelBundle, by_group: bool,
                 metrics: Metrics) -> None:
        self.registry, self.bundle, self.by_group, self.metrics = (registry, bundle, by_group,
                                                                   metrics)
        self.lease_s = 300.0  # [learning] lease_s

    def recent_inputs(self, target: str, limit: int) -> tuple[Any, ...]:
        got = self.registry.recent_inputs_of(self.registry.devices_in(target, self.by_group),
                                             limit, tuple(self.bundle.input_spec.shape),
                                             latest_segment=not self.by_group)
        # a group's devices number their drift segments each on its own: no one segment
        return got._replace(segment=None) if self.by_group else got

    def published(self, target: str) -> tuple[int, dict[str, np.ndarray], dict[str, float]]:
        latest = self.registry.latest_version(target)
        if latest == 0:
            return 0, {}, {}
        stored = self.registry.updates_after(target, latest - 1, limit=1)
        payload = payload_from_bytes(stored[0].update.payload)
        return latest, payload.parts, payload.metrics

    def newest_segment(self, target: str) -> int | None:
        """The drift segment a device target's newest upload reports (None for a group,
        whose devices number their segments each on its own)."""
        return None if self.by_group else self.registry.newest_segment(target)

    def group_of(self, target: str) -> str:
        """The device group ``target`` belongs to (its fleet-memory scope)."""
        if self.by_group:
            return target if not target.startswith(DEVICE_TARGET) else ""
        device = self.registry.device(target)
        return "" if device is None else device.group

    def claim_job(self, target: str) -> bool:
        """Whether this replica may run ``target``'s job now (one over all replicas)."""
        return self.registry.claim_learning(target, self.lease_s)

    def renew_job(self, target: str) -> bool:
        return self.registry.renew_learning(target, self.lease_s)

    def end_job(self, target: str, outcome: str) -> None:
        self.registry.end_learning(target, outcome)

    def publish(self, target: str, update: SignedUpdate, payload: UpdatePayload) -> None:
        self.registry.publish(target, update, payload)
        self.metrics.updates.labels("published").inc()
        log.info("published update", extra={"target": target, "version": payload.version,
                                             "bytes": len(update.payload)})

    def record_rejection(self, target: str, version: int, reason: str,
                         metrics: dict[str, float]) -> None:
        self.registry.record_rejection(target, version, reason, metrics)
        self.metrics.updates.labels("rejected").inc()
        log.info("update not published", extra={"target": target, "reason": reason})


class CloudServer:
    """The gRPC service with its registry, teacher pool and learning, not yet started.

    ``teacher`` may be given (tests, embedding); otherwise it is built from the config.
    ``port`` is the bound port (an ephemeral one when the address ends in ``:0``).
    """

    def __init__(self, config: CloudConfig, *, teacher: Teacher | None = None,
                 home: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from edgecl._proto import admin_pb2, admin_pb2_grpc, edgecl_pb2, edgecl_pb2_grpc
        from edgecl.cloud._admin import AdminServicer
        from edgecl.cloud._admin_auth import AdminInterceptor, parse_operators

        self.config = config.validate()
        #: Seconds for the learning time trigger (a simulation passes its virtual clock).
        self.clock = clock
        self._deferred: dict[str, int] | None = None  # labels counted during label_pending
        self.metrics = Metrics()
        self.storage_dir = config.storage.path(home)
        log.info("start-up: opening the registry", extra={"storage": str(self.storage_dir)})
        self.registry = Registry(
            self.storage_dir, max_samples_per_device=config.limits.max_samples_per_device,
            url=config.storage.registry, artifacts=config.storage.artifacts,
            artifacts_endpoint=config.storage.artifacts_endpoint)
        log.info("start-up: loading bundles", extra={"paths": list(config.bundles.paths),
                                                      "zoo_student": config.bundles.zoo_student})
        self.bundles = self._load_bundles(home)
        shapes = {tuple(b.input_spec.shape) for b in self.bundles.values()}
        if len(shapes) != 1:
            raise ConfigError(f"all served bundles must share one input shape, got {shapes}")
        if teacher is None:
            log.info("start-up: loading the teacher (the zoo's is built on first use: "
                     "minutes)" if not config.teacher.program else
                     "start-up: loading the teacher",
                     extra={"program": config.teacher.program,
                            "zoo": "" if config.teacher.program else config.teacher.zoo})
        #: Where labelling and learning run ([compute]): None in this process.
        self.compute: Any = None
        if teacher is None and config.compute.backend == "ray":
            from edgecl.cloud._compute import RayCompute

            self.compute = RayCompute(config.compute.address, config.compute.actors, (
                config.teacher.zoo, config.teacher.program, config.teacher.classes,
                config.teacher.threads, home))
        self.teacher = teacher or (self.compute.teacher if self.compute else Teacher.from_config(
            config.teacher.zoo, config.teacher.program, config.teacher.classes,
            config.teacher.threads, home=home))
        self.signing_key = Path(config.learning.signing_key or
                                self.storage_dir / "signing_key.pem").expanduser().resolve()
        self.signer = UpdateSigner.load_or_create(self.signing_key)
        log.info("start-up: update signing key ready",
                 extra={"public_key": f"{self.signing_key}.pub"})
        self.servicer = EdgeCloudServicer(
            self.registry, self.bundles, enrollment_key=config.auth.enrollment_key,
            max_batch_samples=config.limits.max_batch_samples,
            max_message_bytes=config.server.max_message_bytes,
            group_by=config.learning.group_by, metrics=self.metrics,
            max_streams=config.stream_slots, stream_max_s=config.server.stream_max_s,
            token_ttl_s=config.auth.token_ttl_s, signer=self.signer,
            samples=TokenBucket(config.limits.samples_per_s, config.limits.sample_burst),
            backlog=Backlog(self.registry.unlabelled_count, config.limits.max_backlog,
                            lambda: self.teacher_pool.rate),
            max_report_keys=config.limits.max_report_keys,
            max_report_key_chars=config.limits.max_report_key_chars)
        self.stream_caps = StreamCaps(config.limits.max_streams_per_device,
                                      config.stream_capacity)
        self.metrics.track(queue_depth=self.registry.unlabelled_count,
                           streams=lambda: self.servicer.streams.open,
                           open_streams=lambda: self.stream_caps.open,
                           label_rate=lambda: self.teacher_pool.rate)
        self.library: Any = None  # the fleet's domain library ([learning] memory)
        self.learning = self._learning() if config.learning.enabled else {}
        self.teacher_pool = TeacherPool(self.registry, self.teacher, shapes.pop(),
                                        batch_size=config.teacher.batch_size,
                                        on_labelled=self._on_labelled, metrics=self.metrics,
                                        claim_s=config.teacher.claim_s,
                                        workers=(config.compute.actors if self.compute
                                                 else 1))
        limit = config.server.max_message_bytes
        #: Operators by the sha256 of their token (``[admin] operators``).
        self.operators = parse_operators(config.admin.operators)
        admin_auth = AdminInterceptor(self.operators, TokenBucket(config.limits.requests_per_s,
                                                                  config.limits.burst))
        #: The operator of an operator token (:class:`Unauthenticated` otherwise).
        self.identify_operator = admin_auth.identify
        # grpc.aio: the unary RPCs and Upload on max_workers threads, Subscribe streams on
        # the event loop (their registry reads on a few threads of their own)
        self._grpc = AsyncRpcServer(
            futures.ThreadPoolExecutor(config.server.max_workers,
                                       thread_name_prefix="edgecl-rpc"),
            streams=futures.ThreadPoolExecutor(min(8, config.server.max_workers),
                                               thread_name_prefix="edgecl-stream"),
            interceptors=[AuthInterceptor(self.registry,
                                          TokenBucket(config.limits.requests_per_s,
                                                      config.limits.burst), self.metrics,
                                          self.stream_caps),
                          admin_auth],
            options=[("grpc.max_receive_message_length", limit),
                     ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0), *connection_options(config.server)],
            maximum_concurrent_rpcs=config.server.max_workers * 4 + config.stream_slots)
        edgecl_pb2_grpc.add_EdgeCloudServicer_to_server(self.servicer, self._grpc)
        self.registry.on_served_change.append(self.servicer.notifier.bump)
        self.registry.default_rollout_policy = (None if config.rollout.mode == "auto"
                                                else config.rollout.to_dict())
        #: Moves staged rollouts (ticked every second, or by a simulation's rounds).
        # wave times are stored: wall-clock seconds survive a restart (monotonic ones do
        # not survive a reboot); a simulation's virtual clock is used as it is
        self.rollouts = RolloutController(
            self.registry, self._devices_of, self._revert,
            clock=time.time if clock is time.monotonic else clock)
        self.admin = AdminServicer(self.registry, self.signer, self.servicer,
                                   lambda sha: self.bundles[sha].path, self._devices_of)
        admin_pb2_grpc.add_FleetAdminServicer_to_server(self.admin, self._grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        service = edgecl_pb2.DESCRIPTOR.services_by_name["EdgeCloud"].full_name
        admin_service = admin_pb2.DESCRIPTOR.services_by_name["FleetAdmin"].full_name
        reflection.enable_server_reflection(
            (service, admin_service, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc)
        self._service_names = (service, "")
        self._serving = health_pb2.HealthCheckResponse.SERVING
        self._not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        address = config.server.address
        self.host = address.rsplit(":", 1)[0]
        #: The CA certificate devices must trust when serving a development certificate.
        self.tls_ca_path: Path | None = None
        tls_files = self._tls_files()
        if tls_files is not None:
            creds = grpc.ssl_server_credentials([(tls_files[1].read_bytes(),
                                                  tls_files[0].read_bytes())])
            self.port = self._grpc.add_secure_port(address, creds)
        else:
            self.port = self._grpc.add_insecure_port(address)
        if self.port == 0:
            raise ConfigError(f"cannot bind {address}")
        self.tls = tls_files is not None
        self._tls_served = tls_files
        self.dashboard: Any = None  # the web dashboard, when [dashboard] port >= 0
        warn_if_plaintext(address, self.tls)
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.labelling = False  # whether the teacher pool labels in the background
        self.unfinished: list[str] = []  # work a stop abandoned at its deadline
        self._unlabelled_left = 0
        self._ticker = threading.Thread(target=self._tick, name="edgecl-tick", daemon=True)

    # -- construction helpers ------------------------------------------------------------
    def _tls_files(self) -> tuple[Path, Path] | None:
        """(certificate chain, private key) to serve TLS with, or None for plaintext:
        ``[server] tls_cert``/``tls_key`` when set, else with ``tls_dev`` a development
        CA and certificate under ``<storage>/tls/`` (generated once, a loud WARNING)."""
        server = self.config.server
        if server.tls_cert:
            return Path(server.tls_cert).expanduser(), Path(server.tls_key).expanduser()
        if not server.tls_dev:
            return None
        from edgecl.cloud._tls import dev_hosts, ensure_dev_certificate

        dev = ensure_dev_certificate(self.storage_dir / "tls", dev_hosts(self.host))
        self.tls_ca_path = dev.ca
        log.warning("serving TLS with a DEVELOPMENT certificate from a self-signed edgecl CA: "
                    "not for production (set [server] tls_cert and tls_key to real "
                    "certificates). Devices must trust the CA file tls_ca "
                    "(SyncClient(..., root_cert=Path(tls_ca).read_bytes())) and connect by "
                    "one of the certificate's hosts",
                    extra={"tls_ca": str(dev.ca), "hosts": list(dev.hosts),
                           "generated": dev.generated})
        return dev.cert, dev.key

    def _load_bundles(self, home: str | None) -> dict[str, ModelBundle]:
        paths = list(self.config.bundles.paths)
        if self.config.bundles.zoo_student:
            from edgecl.cloud._zoo import zoo_student_bundle

            paths.append(str(zoo_student_bundle(self.config.teacher.zoo or "full", home)))
        if not paths:
            raise ConfigError("no bundles to serve: set bundles.paths or bundles.zoo_student")
        bundles = [load_bundle(p) for p in paths]
        return {b.encoder_sha256: b for b in bundles}

    def _learning(self) -> dict[str, LearningCoordinator]:
        lc = self.config.learning
        cfg = LearnerConfig(parts=tuple(lc.parts), steps=lc.steps, max_nfr=lc.max_nfr,
                            margin=lc.margin, selected_weight=lc.selected_weight,
                            prior_correction=lc.prior_correction, source_z=lc.source_z,
                            recent_holdout=lc.recent_holdout,
                            stable_holdout=lc.stable_holdout,
                            threads=self.config.teacher.threads)
        policy = LearningPolicy(trigger_samples=lc.trigger_samples,
                                trigger_seconds=lc.trigger_seconds, window=lc.window,
                                workers=lc.workers, warm_start=lc.warm_start,
                                segments=lc.segments,
                                segment_threshold=lc.segment_threshold,
                                peer_merge=lc.peer_merge)
        if lc.memory:
            from edgecl.cloud._library import DomainLibrary

            self.library = DomainLibrary(self.storage_dir / "library.db",
                                         encoders=self.bundles, capacity=lc.memory_capacity,
                                         threshold=lc.segment_threshold)
        stores = {sha: _RegistryStore(self.registry, b, lc.group_by == "group", self.metrics)
                  for sha, b in self.bundles.items()}
        for store in stores.values():
            store.lease_s = lc.lease_s
        coordinators = {sha: LearningCoordinator(
                    b.path, self.teacher.probabilities, self.teacher.classes, self.signer,
                    stores[sha], config=cfg, policy=policy, clock=self.clock,
                    library=self.library,
                    scope=(stores[sha].group_of if lc.memory_scope == "group"
                           else lambda target: "fleet"))
                for sha, b in self.bundles.items()}
        if self.compute is not None:  # each job's training as a Ray task
            for coordinator in coordinators.values():
                coordinator.learn = self.compute.learning.learn
        return coordinators

    def _on_labelled(self, per_device: dict[str, int]) -> None:
        if self._deferred is not None:  # label_pending: notify once everything is labelled
            for device_id, n in per_device.items():
                self._deferred[device_id] = self._deferred.get(device_id, 0) + n
            return
        for device_id, n in per_device.items():
            device = self.registry.device(device_id)
            coordinator = None if device is None else self.learning.get(device.encoder_sha256)
            if coordinator is not None and device is not None:
                coordinator.notify(self.servicer.target_of(device), n)

    def _tick(self) -> None:
        while not self._stopped.wait(1.0):
            for coordinator in self.learning.values():
                coordinator.tick()
            self.rollouts.tick()

    def _devices_of(self, target: str) -> list[str]:
        """Registered devices whose updates are published to ``target``."""
        ids = self.registry.devices_in(target, self.config.learning.group_by == "group")
        if len(ids) == 1:  # a device target: named by the target, maybe not registered
            return [d for d in ids if self.registry.device(d) is not None]
        return ids  # a group's: read from the devices table

    def _revert(self, target: str, version: int, reason: str) -> None:
        """Give the devices that took ``version`` the released content back."""
        released = self.registry.released_version(target)
        new = republish(self.registry, self.signer, lambda sha: self.bundles[sha].path,
                        target, released, reason=f"revert of v{version}: {reason}")
        log.warning("rollout reverted", extra={"target": target, "version": version,
                                               "to_version": released, "published": new})

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def target(self) -> str:
        """``host:port`` clients connect to."""
        return f"{self.host}:{self.port}"

    def start(self, *, labelling: bool = True) -> CloudServer:
        """Start serving RPCs, labelling and learning (``labelling=False``: the caller
        drives labelling (:meth:`label_pending`) and learning time triggers
        (:meth:`wait_idle`) itself, e.g. a lockstep simulation)."""
        if self.config.dashboard.port >= 0:  # bound first: a taken port fails the start
            from edgecl.cloud.dashboard import Dashboard

            try:
                self.dashboard = Dashboard(self, self._tls_served)
            except OSError as exc:
                raise ConfigError(f"the dashboard cannot listen on "
                                  f"{self.config.dashboard.bind}:{self.config.dashboard.port}: "
                                  f"{exc}") from exc
        self._grpc.start()
        self.labelling = labelling
        if labelling:
            if self.config.teacher.labelling:  # else other replicas label
                self.teacher_pool.start()
            self._ticker.start()
        for name in self._service_names:
            self.health.set(name, self._serving)
        if self.config.metrics.port >= 0:
            self.metrics_port = self.metrics.serve(self.config.metrics.port,
                                                   self.config.metrics.bind,
                                                   self.config.metrics.token)
        if self.dashboard is not None:
            self.dashboard.start()
        log.info("serving", extra={"target": self.target, "tls": self.tls,
                                   "dashboard": self.dashboard and self.dashboard.url,
                                   "tls_ca": self.tls_ca_path and str(self.tls_ca_path),
                                   "metrics_port": self.metrics_port,
                                   "metrics_bind": self.config.metrics.bind})
        return self

    def label_pending(self) -> int:
        """Label every stored unlabelled sample now, from the calling thread, in as few
        batches as the teacher takes (for a server started with ``labelling=False``: the
        learning jobs those labels trigger then see exactly what was uploaded before, which
        makes a lockstep simulation reproducible). Learning hears of the new labels only
        once all are labelled, so no job starts on half of them. Returns the number
        labelled."""
        total = 0
        self._deferred = {}
        try:
            while n := self.teacher_pool.step():
                total += n
        finally:
            deferred, self._deferred = self._deferred, None
            self._on_labelled(deferred)
        return total

    def wait_labelled(self, n: int, timeout: float = 60.0) -> bool:
        """Block until at least ``n`` stored samples carry a teacher label (True) or
        ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        while self.registry.labelled_count() < n:
            if time.monotonic() >= deadline:
                return False
            self.registry.wait_changed(0.05)
        return True

    def publish_update(self, target: str, update: SignedUpdate) -> int:
        """Publish a signed update for ``target`` (a device id, or a group with
        ``learning.group_by = "group"``) and wake its subscribers; returns its version.

        The version must be newer than the target's latest (:class:`InvalidInput`).
        """
        payload = payload_from_bytes(update.payload)
        self.registry.publish(target, update, payload)
        log.info("published update", extra={"target": target, "version": payload.version})
        return payload.version

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until every stored sample is labelled and no learning job is due or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            if not self.teacher_pool.wait_idle(left):
                return False
            if not all(c.wait_idle(max(0.0, deadline - time.monotonic()))
                       for c in self.learning.values()):
                return False
            if self.registry.sample_stats()["unlabelled"] == 0:
                return True
        return False

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop within ``grace`` (+ :data:`STOP_SLACK_S`): refuse new RPCs, give
        in-flight ones ``grace`` seconds, finish the batch being labelled and running
        learning jobs (what is left of them then is abandoned), flush. Unlabelled samples
        stay stored and are labelled after the next start."""
        with self._stop_lock:  # a second SIGTERM while stopping waits for the first
            if self._stopped.is_set():
                return
            self._stop(self.config.server.grace_s if grace is None else grace)

    def _stop(self, grace: float) -> None:
        for name in self._service_names:
            self.health.set(name, self._not_serving)
        self.servicer.stopping.set()
        self.servicer.notifier.bump()  # idle update streams end now, cleanly
        deadline = time.monotonic() + grace + STOP_SLACK_S
        self._grpc.stop(grace).wait(grace + 1.0)
        left = self._finish_work(deadline)
        if self.dashboard is not None:
            self.dashboard.close()
        self.metrics.close()
        self.registry.close()
        if self.compute is not None:
            self.compute.close()
        if self.library is not None:
            self.library.close()
        log.info("stopped", extra={"target": self.target, "unfinished": left,
                                   "unlabelled_left": self._unlabelled_left})
        self._stopped.set()

    def _finish_work(self, deadline: float) -> list[str]:
        """Stop labelling and learning by ``deadline``; names of what did not finish."""
        left = []
        if not self.teacher_pool.stop(drain=False, timeout=deadline - time.monotonic()):
            left.append("teacher")
        for sha, coordinator in self.learning.items():
            coordinator.close(wait=False)  # queued jobs are cancelled
            running = [f for f in coordinator._running.values() if not f.done()]
            if futures.wait(running, max(0.0, deadline - time.monotonic())).not_done:
                left.append(f"learning:{sha[:12]}")
        try:
            self._unlabelled_left = self.registry.unlabelled_count()
        except Exception:  # a registry in trouble: the count is only for the log
            self._unlabelled_left = -1
        self.unfinished = left
        return left

    def wait(self) -> None:
        """Block until :meth:`stop` completes."""
        self._stopped.wait()

    def __enter__(self) -> CloudServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def create_server(config: CloudConfig, **kwargs: Any) -> CloudServer:
    """Build (not start) the service for ``config``; see :class:`CloudServer`."""
    return CloudServer(config, **kwargs)


def serve(config: CloudConfig, *, home: str | None = None) -> int:
    """Run the service until SIGTERM/SIGINT, then stop gracefully; returns an exit code."""
    configure_logging(config.log.level, config.log.format)
    server = create_server(config, home=home).start()
    print(json.dumps({"serving": server.target, "tls": server.tls,
                      "tls_ca": server.tls_ca_path and str(server.tls_ca_path),
                      "metrics_port": server.metrics_port,
                      "dashboard": server.dashboard and server.dashboard.url,
                      "storage": str(server.storage_dir),
                      "public_key": f"{server.signing_key}.pub"}), flush=True)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal received, stopping", extra={"signal": signum})
        threading.Thread(target=server.stop, name="edgecl-stop").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    if server.unfinished:  # a learning job or batch past the deadline: exit without it
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)  # what it had not committed is lost like after a crash: nothing acked
    return 0
