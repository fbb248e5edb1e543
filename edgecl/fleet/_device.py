"""A simulated device: the real runtime, sampler, outbox, sync client and update manager.

Nothing here is a stand-in: :class:`SimDevice` wires the same components an app embeds
(``DeviceRuntime``, a sampling policy, a drift detector, a durable ``Outbox``, a
``SyncClient`` over real gRPC, an ``UpdateManager``) and feeds them a labelled stream, so
it can score itself prequentially (predict first, then learn).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._retry import Backoff
from edgecl.device import (
    AdaptationWorker,
    CanaryPolicy,
    DeviceReporter,
    DeviceRuntime,
    Outbox,
    SyncClient,
    UpdateManager,
    UpdateVerifier,
    create_policy,
)
from edgecl.device._updates import CLOUD_VERSION
from edgecl.ood import InputDriftMonitor, create_drift_detector

#: Uncertainty-policy settings that spend the upload budget (short score history, shallow
#: token bucket that pushes the threshold down when budget goes unspent, looser
#: near-duplicate filter) and explore with half of it: the cloud learns from ~the whole
#: budget, and from a representative share of it. The score is the device's predictive
#: entropy alone (``w_ood=0``): under drift every sample of a new domain is out of
#: distribution, and ranking by the OOD score sends its most atypical tail, from which
#: updates generalise worse than from random uploads (``edgecl eval loop``, docs/results.md).
SPEND_BUDGET: dict[str, Any] = {"history": 512, "burst": 16.0, "fill_gain": 8.0,
                                "max_similarity": 0.995, "explore": 0.5, "w_ood": 0.0}

#: With a drift signal (``input_drift``): hold 40% of the budget back while the input
#: statistics are stable and spend it on the 200 samples after a detected change, at 40%
#: of them (a bucket deep enough for one domain's savings, no fill gain so they are kept).
#: The first updates for a new domain then come sooner and from more of its samples;
#: measured with ``edgecl eval loop`` (docs/results.md).
SHIFT_BUDGET: dict[str, Any] = {**SPEND_BUDGET, "burst": 128.0, "fill_gain": 0.0,
                                "reserve": 0.4, "shift_fraction": 0.4, "shift_span": 200}


@dataclass
class DeviceLog:
    """What a simulated device saw and did."""

    correct: list[bool] = field(default_factory=list)
    uploads: int = 0
    shifts: list[int] = field(default_factory=list)
    update_latency_s: list[float] = field(default_factory=list)
    update_bytes: list[int] = field(default_factory=list)
    update_times: list[float] = field(default_factory=list)  # wall clock, when applied
    ood_scores: list[float] = field(default_factory=list)


class SimDevice:
    """One device of a simulation, talking to a real cloud service at ``target``.

    ``policy`` / ``fraction``: the sampling policy and upload budget; ``drift``: the drift
    detector on OOD scores (None: no segments); ``revert_on_shift``: serve the bundle
    state at a shift detected by either detector (OOD-score drift or ``input_drift``)
    until the cloud's update for the new domain arrives (uploads then carry a new
    segment, so the cloud learns from the new domain and knows what the device runs);
    ``target=None`` runs the device alone (no uploads, no updates); ``adapt`` names a
    test-time adaptation method (e.g. ``"align"``) that an :class:`AdaptationWorker` runs
    beside predict (drained after every step, so a simulation is reproducible);
    ``network`` (a :class:`~edgecl.fleet.NetworkProfile`) impairs its connection;
    ``lockstep``: upload only in :meth:`sync` (from the calling thread), so that with an
    in-process server a run is reproducible (otherwise the client uploads in the
    background, as on a real device, and learning runs beside the stream);
    ``subscribe=False``: no update worker, the caller fetches and delivers updates (the
    virtual clock of :mod:`edgecl.fleet._virtual`).
    """

    def __init__(self, bundle_dir: str | Path, target: str | None, *, device_id: str,
                 enrollment_key: str = "", public_key: bytes | None = None,
                 policy: str = "uncertainty", fraction: float = 0.1, drift: str | None = "ks",
                 revert_on_shift: bool = True, threads: int = 1, seed: int = 0,
                 workdir: str | Path | None = None, group: str = "",
                 collapse_ratio: float = 0.35,
                 policy_options: dict[str, Any] | None = None, adapt: str | None = None,
                 adapt_every: int = 32, network: Any = None, lockstep: bool = False,
                 input_drift: bool = False, subscribe: bool = True) -> None:
        self.device_id = device_id
        self.rt = DeviceRuntime.open(bundle_dir, threads=threads, share_session=True)
        self.log = DeviceLog()
        self.cloud = target is not None
        self.revert_on_shift = revert_on_shift
        self.lockstep = lockstep
        self.segment = 0
        self._seq = 0
        self._scored_version = 0
        self._drift_start = 0
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory()
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.drift = create_drift_detector(drift) if drift else None
        self.input_drift = InputDriftMonitor() if input_drift else None
        kwargs: dict[str, Any] = {"fraction": fraction, "seed": seed} if policy == "random" \
            else {"fraction": fraction, "num_classes": len(self.rt.class_names), "seed": seed,
                  **(SHIFT_BUDGET if input_drift else SPEND_BUDGET)}
        self.policy = create_policy(policy, **{**kwargs, **(policy_options or {})})
        self.manager: UpdateManager | None = None
        self.client: SyncClient | None = None
        self.reporter: DeviceReporter | None = None
        self.outbox: Outbox | None = None
        self._acked_at: list[tuple[float, int]] = []
        self.worker = (AdaptationWorker(self.rt, adapt, publish_every=adapt_every,
                                        batch_samples=adapt_every) if adapt else None)
        if self.cloud:
            assert public_key is not None
            self.manager = UpdateManager(
                self.rt, UpdateVerifier(public_key), collapse_ratio=collapse_ratio,
                canary=CanaryPolicy(max_disagreement=1.0))
            self.outbox = Outbox(self.workdir / f"{device_id}-outbox.db")
            self.transport: Any = target
            if network is not None:  # a NetworkProfile: impair the real gRPC transport
                from edgecl.device import GrpcTransport
                from edgecl.fleet._network import ImpairedTransport

                self.transport = ImpairedTransport(GrpcTransport(target), network)
            self.client = SyncClient(
                self.outbox, self.transport, device_id=device_id, enrollment_key=enrollment_key,
                encoder_sha256=self.rt.bundle.encoder_sha256, group=group,
                on_update=self._on_update, backoff=Backoff(0.05, 2.0, 2.0, seed=seed),
                poll_s=0.01, subscribe=subscribe).start(uploads=not lockstep)
            # health and update outcomes for staged rollouts (the caller reports: report())
            self.reporter = DeviceReporter(self.client, self.rt, manager=self.manager,
                                           outbox=self.outbox)

    def _on_update(self, update: Any) -> bool:
        assert self.manager is not None
        applied = self.manager(update)
        if applied:
            now = time.time()
            from edgecl.wire import payload_from_bytes

            created = payload_from_bytes(update.payload).created_ms / 1000.0
            # latency: from the last upload acknowledged before the update was made
            acked = [t for t, _ in self._acked_at if t <= created]
            self.log.update_latency_s.append(now - (acked[-1] if acked else created))
            self.log.update_times.append(now)
            self.log.update_bytes.append(len(update.payload) + len(update.signature)
                                         + len(update.key_id))
        return applied

    def step(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Predict a batch (scored against ``labels``), then detect drift and sample."""
        pred = self.rt.predict(images, return_features=True)
        correct = pred.labels == labels
        self.log.correct.extend(correct.tolist())
        if pred.ood_score is not None:
            self.log.ood_scores.extend(pred.ood_score.tolist())
        if self.manager is not None:
            self.manager.observe(images, pred)
        if self.reporter is not None:
            self.reporter.observe(pred)
        if self.worker is not None:
            self.worker.offer(pred, images)
            self.worker.wait_idle()
        if self.drift is not None and pred.ood_score is not None:
            scoring = int(self.rt.state.metadata.get(CLOUD_VERSION, 0))
            if scoring != self._scored_version:
                # a cloud state scores differently: re-baseline rather than call it drift
                # (a local feature norm does not change OOD scores)
                self.drift.reset()
                self._scored_version = scoring
                self._drift_start = len(self.log.correct) - len(images)
            shifts = self.drift.update_many(pred.ood_score)
            if shifts:
                self.segment += len(shifts)
                self.log.shifts.extend(self._drift_start + s.index for s in shifts)
                self.policy.notify_shift()
                if self.revert_on_shift and self.manager is not None:
                    self.manager.domain_changed("drift detected", self.segment)
        if self.input_drift is not None:
            changes = self.input_drift.update(images)  # index = position in the stream
            if changes:
                self.log.shifts.extend(c.index for c in changes)
                self.policy.notify_shift()
                if self.revert_on_shift and self.manager is not None:
                    # do no harm: an update learned for the old inputs is not trusted on
                    # the new ones; serve the bundle until the cloud confirms one
                    self.segment += len(changes)
                    self.manager.domain_changed("input change detected", self.segment)
        if self.outbox is not None:
            sel = self.policy.select(entropy=pred.entropy(), ood_score=pred.ood_score,
                                     features=pred.features)
            explored = sel.explored_mask()
            for k, i in enumerate(sel.indices):
                self._seq += 1
                meta = {"label": int(pred.labels[i]), "segment": self.segment,
                        "state_version": int(pred.state_version),
                        "entropy": float(pred.entropy()[i]), "explored": int(explored[k])}
                if pred.ood_score is not None:
                    meta["ood_score"] = float(pred.ood_score[i])
                self.outbox.put_sync(f"{self.device_id}-{self._seq}", {"image": images[i]},
                                     priority=float(sel.scores[i]), meta=meta)
            self.log.uploads += len(sel.indices)
        return correct

    def sync(self, server: Any = None, timeout: float = 300.0) -> None:
        """Upload everything queued; with an in-process ``server``, also wait until it
        labelled and learned, and until its newest update reached this device."""
        if self.client is None:
            return
        if self.lockstep:
            self.client.upload_now(timeout)
        else:
            self.client.flush(timeout)
        self._acked_at.append((time.time(), self.log.uploads))
        if server is None:
            return
        if not getattr(server, "labelling", True):  # the caller labels: all of it at once
            server.label_pending()
        server.wait_idle(timeout)
        latest = server.registry.latest_version(self.device_id)
        deadline = time.monotonic() + timeout
        while self.client.stats().last_version < latest and time.monotonic() < deadline:
            time.sleep(0.005)

    def report(self) -> bool:
        """Send a health report now (what a staged rollout's gates read); whether it went."""
        return self.reporter is not None and self.reporter.report_now() is not None

    def close(self) -> None:
        """Stop the adaptation worker and the sync client, close the outbox."""
        if self.worker is not None:
            self.worker.close()
        if self.client is not None:
            self.client.stop()
        if self.outbox is not None:
            self.outbox.close()
        if self._tmp is not None:
            self._tmp.cleanup()
