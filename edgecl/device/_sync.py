"""SyncClient: drains the outbox to the cloud and receives updates, in the background.

Predict never waits on the network: the app only writes to the outbox. The upload worker
leases items, uploads them with a deadline and acknowledges exactly the ids the server
acknowledged (the rest are released and retried), so a sample leaves the outbox only once
the cloud has it. Failures back off exponentially with jitter; an expired token triggers
re-registration. Every registration is signed by the device's own key (``device_key``,
by default ``<state_path>.key``, created at the first registration) and presents the last
token (persisted in ``state_path``): the service re-registers an existing device id only
for the key it first registered with. A sample the server
rejects as invalid is isolated and dropped (counted), never retried forever. The update
worker subscribes from the last version it handled, persisted atomically, so it resumes
there after reconnects and restarts. That cursor moves only past updates the
``on_update`` callback verified (signature, encoder, addressee, plausible version): an
unsigned, forged or unreadable message never moves it, and no message, whatever it holds,
stops the update worker (each failure is logged, counted and skipped).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl._retry import Backoff
from edgecl.bundle._files import atomic_write_bytes
from edgecl.device._identity import DeviceKey
from edgecl.device._outbox import Outbox, OutboxItem
from edgecl.device._transport import GrpcTransport, Transport, TransportError
from edgecl.wire import (
    DeviceStatus,
    RegistrationProof,
    ReportReply,
    SignedUpdate,
    WireSample,
    payload_version,
)

log = logging.getLogger("edgecl.device")


@dataclass(frozen=True)
class SyncStats:
    """Counters of a :class:`SyncClient`."""

    uploaded: int
    duplicates: int
    poison_dropped: int
    retries: int
    registrations: int
    updates_received: int
    updates_applied: int
    last_version: int
    connected: bool
    last_error: str
    updates_rejected: int = 0
    update_errors: int = 0


def item_to_sample(item: OutboxItem) -> WireSample:
    """The wire form of an outbox item (``image`` and ``features`` arrays, meta fields)."""
    meta = item.meta

    def num(key: str, default: float) -> float:
        v = meta.get(key, default)
        return float(v) if isinstance(v, (int, float)) else default

    return WireSample(
        sample_id=item.sample_id, timestamp_ms=int(item.created_at * 1000),
        input=item.arrays.get("image"), features=item.arrays.get("features"),
        priority=float(item.priority), device_label=int(num("label", -1)),
        device_entropy=num("entropy", math.nan), ood_score=num("ood_score", math.nan),
        state_version=int(num("state_version", 0)), segment=int(num("segment", 0)),
        explored=bool(meta.get("explored", False)))


class SyncClient:
    """Background uploads from an :class:`Outbox` and update delivery to ``on_update``.

    ``on_update(SignedUpdate)`` (e.g. an :class:`~edgecl.device.UpdateManager`, which the
    client tells this device's id and group) applies an update and returns something
    truthy iff it did. The client resumes after the newest *verified* update it handed
    over: one applied, or one whose outcome says ``verified`` (genuine, for this device,
    refused by a later check); anything else (False, an exception) leaves the cursor
    where it is. ``state_path`` persists that version across restarts. ``device_key`` (a
    :class:`DeviceKey` or the path of one; default ``<state_path>.key``, in memory without
    ``state_path``) signs every registration: keep it with the state, it is what lets this
    device, and only it, register its id again. ``target`` may name several service
    replicas (a list, ``"host1:50051,host2:50051"`` or ``"dns:///edgecl.internal:50051"``):
    calls are spread over them and a replica that fails is left for the others.

    Examples
    --------
    >>> client = SyncClient(outbox, "cloud.example:50051", device_id="cam-7",
    ...                     enrollment_key=key, encoder_sha256=rt.bundle.encoder_sha256,
    ...                     on_update=manager, state_path="state/sync.json")  # doctest: +SKIP
    >>> with client:                                                        # doctest: +SKIP
    ...     run_app()
    """

    def __init__(self, outbox: Outbox, target: str | Sequence[str] | Transport, *,
                 device_id: str,
                 enrollment_key: str, encoder_sha256: str, group: str = "",
                 batch_size: int = 32, chunk_size: int = 16,
                 on_update: Callable[[SignedUpdate], bool] | None = None,
                 state_path: str | os.PathLike[str] | None = None,
                 backoff: Backoff | None = None, poll_s: float = 0.05,
                 subscribe: bool = True, root_cert: bytes | None = None,
                 deadline_s: float = 10.0,
                 device_key: DeviceKey | str | os.PathLike[str] | None = None) -> None:
        if batch_size < 1 or chunk_size < 1:
            raise ConfigError("batch_size and chunk_size must be >= 1")
        self.outbox = outbox
        self.transport: Any = (
            GrpcTransport(target, root_cert=root_cert, deadline_s=deadline_s)
            if isinstance(target, str | list | tuple) else target)
        self.device_id, self.group = device_id, group
        self._key, self._sha = enrollment_key, encoder_sha256
        self.batch_size, self.chunk_size = batch_size, chunk_size
        self.on_update = on_update
        bind = getattr(on_update, "bind_device", None)
        if callable(bind):  # the manager accepts only updates addressed to this device
            bind(device_id, group)
        self.state_path = None if state_path is None else Path(state_path)
        self.poll_s, self.subscribe_updates = poll_s, subscribe
        self._backoff = backoff or Backoff()
        self._sub_backoff = Backoff(self._backoff.initial_s, self._backoff.factor,
                                    self._backoff.max_s)
        self._lock = threading.Lock()
        self._register_lock = threading.Lock()
        self._stop = threading.Event()
        self._token: str | None = None
        self._max_batch = chunk_size
        self._counts = dict(uploaded=0, duplicates=0, poison_dropped=0, retries=0,
                            registrations=0, updates_received=0, updates_applied=0,
                            updates_rejected=0, update_errors=0)
        self._connected = False
        self._last_error = ""
        self._in_flight = 0
        self.last_version, self._proof, self._counter = self._load_state()
        if device_key is None:  # beside the state, or (no state_path) in memory only
            device_key = (None if self.state_path is None
                          else self.state_path.with_name(self.state_path.name + ".key"))
        self.device_key = (device_key if isinstance(device_key, DeviceKey)
                           else DeviceKey.generate() if device_key is None
                           else DeviceKey.load_or_create(device_key))
        self._threads: list[threading.Thread] = []
        #: Called (no arguments) after each update was handed to ``on_update``, e.g. a
        #: :class:`DeviceReporter` reporting the outcome at once.
        self.update_listeners: list[Callable[[], None]] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, *, uploads: bool = True) -> SyncClient:
        """Start the upload (and update) workers; ``uploads=False`` starts only the update
        worker, for an app that uploads at moments of its choosing (:meth:`upload_now`)."""
        if self._threads:
            return self
        self._stop.clear()
        workers = [("edgecl-upload", self._upload_loop)] if uploads else []
        if self.subscribe_updates:
            workers.append(("edgecl-updates", self._update_loop))
        for name, fn in workers:
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (leased items go back to the outbox) and close the transport."""
        self._stop.set()
        try:
            self.transport.close()
        finally:
            for t in self._threads:
                t.join(timeout)
            self._threads = []

    def __enter__(self) -> SyncClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until the outbox is empty and nothing is in flight (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.outbox.flush()
            if self._drained():
                return True
            time.sleep(0.01)
        return False

    def upload_now(self, timeout: float = 60.0) -> int:
        """Upload everything in the outbox from the calling thread, in batches of
        ``batch_size`` (one Upload RPC each), retrying with backoff; returns the samples
        the service accepted. :class:`TransportError` if the outbox is not empty by
        ``timeout``. Safe beside the upload worker (leased items are never sent twice)."""
        deadline = time.monotonic() + timeout
        before = self.stats().uploaded
        self.outbox.flush()
        while not self._drained():
            if time.monotonic() > deadline:
                raise TransportError("DEADLINE_EXCEEDED", "the outbox did not drain in "
                                     f"{timeout} s: {self.stats().last_error}")
            items = self.outbox.lease(self.batch_size)
            if items:
                self._send_leased(items)  # sent, or back in the outbox
            else:  # the upload worker holds the rest: wait for it
                time.sleep(0.005)
        return self.stats().uploaded - before

    def _drained(self) -> bool:
        """Nothing queued and nothing in flight."""
        with self._lock:
            busy = self._in_flight
        return not busy and self.outbox.stats().count == 0

    def stats(self) -> SyncStats:
        """Current counters."""
        with self._lock:
            return SyncStats(last_version=self.last_version, connected=self._connected,
                             last_error=self._last_error, **self._counts)

    # -- calls usable from the app -------------------------------------------------------
    def register(self) -> str:
        """Register (or re-register, signed by the device key and presenting the last
        token) and return the token."""
        with self._lock:
            token = self._proof
            proof = self.device_key.prove(self.device_id, self._sha, self.group,
                                          last_counter=self._counter)
            self._counter = proof.counter
            self._save_state()  # a counter is never signed twice, even if the call fails
        reg = self._register_call(token, proof)
        with self._lock:
            self._token = self._proof = reg.token
            self._save_state()
            self._max_batch = max(1, min(self.chunk_size, reg.max_batch_samples or
                                         self.chunk_size))
            self._counts["registrations"] += 1
        return reg.token

    def fetch_update(self) -> SignedUpdate | None:
        """The newest update after :attr:`last_version`, or None (one synchronous call)."""
        return self.transport.fetch(self._ensure_token(), self.last_version)

    def report(self, state_version: int, stats: dict[str, float]) -> int:
        """Send device statistics; returns the newest version this device may be served."""
        return self.transport.report(self._ensure_token(), state_version, stats)

    def send_report(self, status: DeviceStatus) -> ReportReply:
        """Send a full report (:class:`~edgecl.wire.DeviceStatus`); the reply carries the
        config an operator wants this device to run. A :class:`DeviceReporter` calls it
        periodically and after every update."""
        token = self._ensure_token()
        if not hasattr(self.transport, "send_report"):  # an older transport: stats only
            return ReportReply(self.transport.report(token, status.state_version,
                                                     status.stats))
        try:
            return self.transport.send_report(token, status)
        except TransportError as exc:
            if exc.code == "UNAUTHENTICATED":  # an expired token: register again next time
                with self._lock:
                    if token == self._token:
                        self._token = None
            raise

    def _register_call(self, token: str, proof: RegistrationProof) -> Any:
        """The transport's register, presenting ``token`` and ``proof`` as far as it takes
        them (a transport written before re-registration needed proof does not)."""
        args = (self.device_id, self._key, self._sha, self.group)
        kwargs: dict[str, Any] = {}
        if token and _takes(self.transport.register, "current_token"):
            kwargs["current_token"] = token
        if _takes(self.transport.register, "proof"):
            kwargs["proof"] = proof
        return self.transport.register(*args, **kwargs)

    # -- workers -------------------------------------------------------------------------
    def _ensure_token(self) -> str:
        with self._register_lock:  # one registration at a time: a second revokes the first
            with self._lock:
                token = self._token
            return token or self.register()

    def _failed(self, exc: Exception, backoff: Backoff, token: str | None = None) -> None:
        with self._lock:
            self._connected = False
            self._last_error = str(exc)
            self._counts["retries"] += 1
            expired = isinstance(exc, TransportError) and exc.code == "UNAUTHENTICATED"
            if expired and (token is None or token == self._token):
                self._token = None
        self._stop.wait(backoff.next())

    def _upload_loop(self) -> None:
        while not self._stop.is_set():
            items = self.outbox.lease(self.batch_size)
            if not items:
                self._stop.wait(self.poll_s)
                continue
            with self._lock:
                self._in_flight += 1
            try:
                self._send_leased(items)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _send_leased(self, items: list[OutboxItem]) -> None:
        """Upload leased items; on failure they go back to the outbox and we back off."""
        token = None
        try:
            token = self._ensure_token()
            self._send(items, token)
            self._backoff.reset()
        except (TransportError, ConfigError) as exc:
            self.outbox.release([i.sample_id for i in items])
            self._failed(exc, self._backoff, token)

    def _send(self, items: list[OutboxItem], token: str) -> None:
        samples, ids = [], []
        for item in items:
            try:
                samples.append(item_to_sample(item))
                ids.append(item.sample_id)
            except (InvalidInput, ValueError, TypeError):
                self._drop([item.sample_id], "unreadable outbox item")
        if not samples:
            return
        chunks = [samples[i:i + self._max_batch] for i in range(0, len(samples),
                                                                  self._max_batch)]
        try:
            result = self.transport.upload(token, chunks)
        except TransportError as exc:
            if exc.code != "INVALID_ARGUMENT":
                raise
            self._isolate(token, samples, exc)
            return
        self.outbox.ack(result.acked_ids)
        missing = set(ids) - set(result.acked_ids)
        if missing:
            self.outbox.release(missing)
        with self._lock:
            self._connected = True
            self._counts["uploaded"] += result.accepted
            self._counts["duplicates"] += result.duplicates

    def _isolate(self, token: str, samples: list[WireSample], exc: TransportError) -> None:
        """One sample poisons the batch: upload the others one by one, drop the bad."""
        named = [s for s in samples if s.sample_id in exc.details]
        if len(samples) == 1 or len(named) == 1:
            bad = named[0] if named else samples[0]
            self._drop([bad.sample_id], exc.details)
            rest = [s for s in samples if s is not bad]
            if rest:
                result = self.transport.upload(token, [rest])
                self.outbox.ack(result.acked_ids)
                with self._lock:
                    self._counts["uploaded"] += result.accepted
                    self._counts["duplicates"] += result.duplicates
            return
        for s in samples:
            try:
                result = self.transport.upload(token, [[s]])
            except TransportError as inner:
                if inner.code != "INVALID_ARGUMENT":
                    raise
                self._drop([s.sample_id], inner.details)
                continue
            self.outbox.ack(result.acked_ids)
            with self._lock:
                self._counts["uploaded"] += result.accepted
                self._counts["duplicates"] += result.duplicates

    def _drop(self, ids: list[str], reason: str) -> None:
        self.outbox.ack(ids)
        with self._lock:
            self._counts["poison_dropped"] += len(ids)
        log.warning("dropped samples the cloud refuses", extra={"ids": ids, "reason": reason})

    def _update_loop(self) -> None:
        while not self._stop.is_set():
            token = None
            try:
                token = self._ensure_token()
                for update in self.transport.subscribe(token, self.last_version):
                    self._sub_backoff.reset()
                    self._handle(update)
                    if self._stop.is_set():
                        return
                self._stop.wait(self.poll_s)
            except Exception as exc:  # nothing a stream delivers may end this worker
                if self._stop.is_set():
                    return
                if not isinstance(exc, (TransportError, ConfigError)):
                    log.exception("update stream failed")
                    self._count("update_errors")
                self._failed(exc, self._sub_backoff, token)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def deliver(self, update: SignedUpdate) -> None:
        """Hand an update the app fetched itself (:meth:`fetch_update`, e.g. without the
        update worker) to ``on_update``, exactly as the worker would: the cursor moves only
        past a verified update, and nothing raises."""
        self._handle(update)

    def _handle(self, update: SignedUpdate) -> None:
        """Hand one update to ``on_update``; move the cursor only past a verified one.
        Never raises: a failure is logged, counted and skipped."""
        self._count("updates_received")
        if self.on_update is None:
            return
        try:
            outcome = self.on_update(update)
        except Exception:
            log.exception("update callback failed; update skipped")
            self._count("update_errors")
            return
        self._count("updates_applied" if outcome else "updates_rejected")
        for listener in list(self.update_listeners):
            try:
                listener()
            except Exception:
                log.exception("update listener failed")
        version = self._verified_version(update, outcome)
        if version is None:
            return
        with self._lock:
            if version > self.last_version:
                self.last_version = version
                self._save_state()

    @staticmethod
    def _verified_version(update: SignedUpdate, outcome: Any) -> int | None:
        """The version the cursor may move to after ``outcome``, or None."""
        if hasattr(outcome, "verified"):  # an UpdateOutcome: it says what it verified
            return int(outcome.version) if outcome.verified else None
        if not outcome:
            return None
        try:  # a plain callback said it applied the update (so it verified it)
            return payload_version(update.payload)
        except InvalidInput:
            return None

    def _load_state(self) -> tuple[int, str, int]:
        """The persisted update cursor, last token and registration counter (0, "", 0
        when none)."""
        if self.state_path is None or not self.state_path.exists():
            return 0, "", 0
        try:
            state = json.loads(self.state_path.read_text())
            return (int(state["last_version"]), str(state.get("token") or ""),
                    int(state.get("proof_counter") or 0))
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            log.warning("unreadable sync state; starting from version 0",
                        extra={"path": str(self.state_path)})
            return 0, "", 0

    def _save_state(self) -> None:
        """Persist the cursor and the token (mode 0600: the token is a credential); call
        with ``_lock`` held."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        data = {"last_version": self.last_version, "token": self._proof,
                "proof_counter": self._counter}
        atomic_write_bytes(self.state_path, json.dumps(data).encode())
        os.chmod(self.state_path, 0o600)


def _takes(register: Callable[..., Any], name: str) -> bool:
    """Whether a transport's ``register`` accepts the keyword ``name``."""
    try:
        params = inspect.signature(register).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
