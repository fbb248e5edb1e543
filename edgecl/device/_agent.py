"""DeviceAgent: the long-running process of a real device (``edgecl device run``).

It wires the runtime, sampling (a :class:`SampleCollector` with input-drift detection),
the outbox, the sync client, the update manager, an optional adaptation worker and the
reporter, feeds them frames from the configured source, and applies the config an
operator sets (budget, sampling policy, adaptation on/off and method, report interval)
without a restart. :meth:`DeviceAgent.close` (SIGTERM in the CLI) stops taking frames,
hands every selected sample to the outbox, flushes the outbox to the cloud within
``flush_timeout_s`` (what is left stays in the outbox, on disk, for the next start),
sends a last report and stops. ``device/app.py`` stays the minimal embedding example.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.device._adaptation import AdaptationWorker
from edgecl.device._agent_config import AgentConfig
from edgecl.device._collector import SampleCollector
from edgecl.device._frames import callable_frames, directory_frames, stream_frames
from edgecl.device._outbox import Outbox
from edgecl.device._reporter import DeviceReporter
from edgecl.device._runtime import DeviceRuntime
from edgecl.device._sampling import SamplingPolicy, create_policy
from edgecl.device._sync import SyncClient
from edgecl.device._updates import UpdateManager
from edgecl.device._verify import UpdateVerifier

log = logging.getLogger("edgecl.device")
_END = object()


class DeviceAgent:
    """Runs one device from an :class:`AgentConfig` (see the module).

    Examples
    --------
    >>> agent = DeviceAgent(load_agent_config("device/device.toml"))  # doctest: +SKIP
    >>> agent.run(stop_event)      # until the source ends or stop_event is set  # doctest: +SKIP
    >>> agent.close()              # flushes the outbox, last report  # doctest: +SKIP
    """

    def __init__(self, config: AgentConfig) -> None:
        from edgecl.ood import InputDriftMonitor

        self.config = config.validate()
        self.state_dir = Path(config.state_dir).expanduser()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runtime = DeviceRuntime.open(Path(config.bundle).expanduser(),
                                          threads=config.threads, max_batch=config.max_batch)
        self.outbox = Outbox(self.state_dir / "outbox.db")
        self._lock = threading.RLock()  # a config change waits for the batch in predict
        self.frames = self.errors = 0
        self.manager: UpdateManager | None = None
        self.client: SyncClient | None = None
        self.reporter: DeviceReporter | None = None
        if config.server:
            self.manager = UpdateManager(self.runtime, UpdateVerifier(config.public_key),
                                         state_dir=self.state_dir / "updates")
            root = Path(config.tls_ca).read_bytes() if config.tls_ca else None
            self.client = SyncClient(
                self.outbox, config.server, device_id=config.name,
                enrollment_key=config.enrollment_key,
                encoder_sha256=self.runtime.bundle.encoder_sha256, group=config.group,
                on_update=self.manager, state_path=self.state_dir / "sync.json",
                root_cert=root)
            self.reporter = DeviceReporter(self.client, self.runtime, manager=self.manager,
                                           outbox=self.outbox,
                                           interval_s=config.report_interval_s,
                                           apply_config=self.apply_config)
        self.sampling, self.budget = config.sampling, config.budget
        self.collector = SampleCollector(
            self.outbox, self._policy(config.sampling, config.budget), store=("image",),
            input_drift=InputDriftMonitor(), device_id=config.name,
            on_shift=self.manager.domain_changed if self.manager is not None else None)
        self.method = config.adaptation
        self.worker: AdaptationWorker | None = None
        self._start_worker(config.adaptation)

    # -- parts that desired config changes -------------------------------------------------
    def _policy(self, name: str, budget: float) -> SamplingPolicy:
        kwargs: dict[str, Any] = {"fraction": budget}
        if name != "random":
            kwargs["num_classes"] = len(self.runtime.class_names)
        return create_policy(name, **kwargs)

    def _start_worker(self, method: str) -> None:
        if not method:
            return
        if self.runtime.source_stats is None and method.startswith("align"):
            log.warning("adaptation off: the bundle has no source statistics for 'align'")
            return
        directory = self.config.adaptation_dir or str(self.state_dir / "adaptation")
        self.worker = AdaptationWorker(self.runtime, method, state_dir=directory)

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def applied(self) -> dict[str, str]:
        """The config the agent runs with now, as a report carries it."""
        return {"budget": f"{self.budget:g}", "sampling": self.sampling,
                "adaptation": "on" if self.worker is not None else "off",
                "adaptation_method": self.method}

    def apply_config(self, values: dict[str, str]) -> dict[str, str]:
        """Apply an operator's desired config (empty: this config file's values) between
        two batches; what cannot be applied keeps its current value (logged)."""
        c = self.config
        with self._lock:
            sampling = values.get("sampling", c.sampling)
            try:
                budget = float(values.get("budget", c.budget))
                if (sampling, budget) != (self.sampling, self.budget):
                    self.collector.policy = self._policy(sampling, budget)
                    self.sampling, self.budget = sampling, budget
            except (ValueError, ConfigError) as exc:
                log.warning("desired sampling not applied", extra={"error": str(exc)})
            method = values.get("adaptation_method", c.adaptation)
            wanted = values.get("adaptation", "on" if c.adaptation else "off") == "on"
            if not wanted or method != self.method:
                self._stop_worker()
            if wanted and self.worker is None and method:
                try:
                    self._start_worker(method)
                    self.method = method
                except ConfigError as exc:
                    log.warning("desired adaptation not applied", extra={"error": str(exc)})
            return self.applied()

    # -- running ---------------------------------------------------------------------------
    def start(self) -> DeviceAgent:
        """Start syncing and reporting (when a server is configured)."""
        if self.client is not None:
            self.client.start()
        if self.reporter is not None:
            self.reporter.start()
        return self

    def step(self, frames: np.ndarray) -> None:
        """Predict one batch and hand it to the manager, the reporter and the sampler; a
        batch the runtime refuses is counted as errors, never raised."""
        for i in range(0, len(frames), self.config.max_batch):
            batch = frames[i:i + self.config.max_batch]
            with self._lock:
                try:
                    pred = (self.worker.predict(batch) if self.worker is not None
                            else self.runtime.predict(batch))
                except InvalidInput as exc:
                    self.errors += len(batch)
                    if self.reporter is not None:
                        self.reporter.error(len(batch))
                    log.warning("frames refused", extra={"error": str(exc)})
                    continue
                if self.manager is not None:
                    self.manager.observe(batch, pred)
                if self.reporter is not None:
                    self.reporter.observe(pred)
                self.collector.offer(batch, pred)
            self.frames += len(batch)

    def source(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """The configured frame source."""
        c = self.config
        if c.source == "directory":
            return directory_frames(c.source_path, stop, poll_s=c.poll_s, after=c.source_after)
        if c.source == "stdin":
            return stream_frames()
        return callable_frames(c.source_callable)

    def run(self, stop: threading.Event, frames: Iterator[np.ndarray] | None = None) -> int:
        """Take frames until the source ends or ``stop`` is set; frames processed. The
        source is read on its own thread, so a blocked read never delays a stop."""
        pending: queue.Queue[Any] = queue.Queue(maxsize=8)
        source = frames if frames is not None else self.source(stop)

        def pull() -> None:
            try:
                for batch in source:
                    while not stop.is_set():
                        try:
                            pending.put(batch, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except Exception:
                log.exception("the frame source failed")
            finally:
                pending.put(_END)

        threading.Thread(target=pull, name="edgecl-frames", daemon=True).start()
        before = self.frames
        while not stop.is_set():
            try:
                item = pending.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                break
            self.step(item)
        return self.frames - before

    def close(self) -> dict[str, Any]:
        """Stop cleanly: every selected sample into the outbox, the outbox flushed to the
        cloud within ``flush_timeout_s``, a last report; a summary of the run."""
        self.collector.close()
        flushed = True
        if self.client is not None:
            flushed = self.client.flush(self.config.flush_timeout_s)
        if self.reporter is not None:
            self.reporter.stop(final_report=True)
        if self.client is not None:
            self.client.stop()
        self._stop_worker()
        self.outbox.flush()
        summary = {"frames": self.frames, "errors": self.errors,
                   "selected": self.collector.stats().stored,
                   "outbox_left": self.outbox.stats().count, "flushed": flushed,
                   "cloud_version": self.manager.cloud_version if self.manager else 0,
                   "config": self.applied()}
        if self.client is not None:
            summary["uploaded"] = self.client.stats().uploaded
        self.outbox.close()
        return summary
