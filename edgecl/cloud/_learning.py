"""When and on what the cloud learns: triggers, windows, teacher targets, publication.

A :class:`LearningCoordinator` is told about newly labelled uploads per *target* (a device
id, or a group name when devices share a domain). Once ``trigger_samples`` new samples
arrived (or ``trigger_seconds`` passed with at least one), it queues one learning job per
target on its worker pool (never on an RPC thread). A job takes the target's most recent
``window`` uploads of its current drift segment (devices report the segment with every
sample and fall back to their bundle state at a detected shift), asks the teacher for
soft targets over the device's classes, learns a candidate with
:class:`~edgecl.cloud.UpdateLearner` against the target's current published state, and
publishes a signed update if validation accepts it; otherwise it records the reason. The
storage behind it is the :class:`UpdateStore` protocol, which the service's registry
implements.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.cloud._identity import DEVICE_TARGET
from edgecl.cloud._learner import BaseState, LearnerConfig, LearnResult, UpdateLearner
from edgecl.cloud._library import DomainLibrary, DomainSignature
from edgecl.cloud._merge import merge_updates
from edgecl.cloud._segments import newest_segment_start
from edgecl.cloud._signing import UpdateSigner
from edgecl.cloud._validation import validate_candidate
from edgecl.wire import REVERT_METRIC, SignedUpdate, UpdatePayload

log = logging.getLogger("edgecl.cloud")

class UpdateStore(Protocol):
    """What learning needs from the registry (implemented by the service's registry)."""

    def recent_inputs(self, target: str, limit: int) -> tuple[Any, ...]:
        """The target's newest ``limit`` labelled inputs ``(N, C, H, W)`` of its current
        drift segment, oldest first, that segment (None when the uploads come from several
        devices, e.g. a group, whose segments are numbered apart), and optionally a third
        item: an
        ``(N,)`` bool mask of the uploads the devices drew at random (counted in the
        update's metrics as ``explored_samples``)."""
        ...

    def published(self, target: str) -> tuple[int, dict[str, np.ndarray], dict[str, float]]:
        """The target's latest published version, its parts and metrics (0, {}, {})."""
        ...

    def publish(self, target: str, update: SignedUpdate, payload: UpdatePayload) -> None:
        """Store a signed update; devices of ``target`` receive it."""
        ...

    def record_rejection(self, target: str, version: int, reason: str,
                         metrics: dict[str, float]) -> None:
        """Remember that a candidate for ``target`` was not published, and why."""
        ...


#: How a discovered group learns together (``LearningPolicy.peer_merge``).
PEER_MERGES = ("pool", "ties")


@dataclass(frozen=True)
class LearningPolicy:
    """When to learn and from which uploads (see :class:`LearningCoordinator`).

    ``window``: a job looks at the target's newest ``window`` uploads. ``segments``: of
    those, it learns only from the newest domain, which the cloud finds itself on the
    frozen encoder's features of the raw uploads (:func:`newest_segment_start` with
    ``segment_threshold``), so the window grows while a domain lasts and restarts when it
    changes. ``warm_start``: continue from the target's newest candidate (published or
    not; kept in memory, the published update after a restart) instead of learning each
    candidate from the bundle state; candidates are validated against the state the
    devices run either way. A job that finds the newest domain still too short to learn
    from lowers the target's trigger to the uploads that are missing. ``peer_merge``
    (with fleet memory): how a discovered group learns together, ``"pool"`` (from the
    union of its devices' uploads) or ``"ties"`` (from the target's own uploads, starting
    also from the TIES merge of the updates its peers run, :func:`merge_updates`).
    """

    trigger_samples: int = 32
    trigger_seconds: float = 60.0
    window: int = 256
    workers: int = 1
    warm_start: bool = True
    segments: bool = True
    segment_threshold: float = 12.0
    peer_merge: str = "pool"

    def __post_init__(self) -> None:
        if min(self.trigger_samples, self.window, self.workers) < 1 or self.trigger_seconds <= 0:
            raise ConfigError("trigger_samples, window and workers must be >= 1 and "
                              "trigger_seconds > 0")
        if self.segment_threshold <= 0:
            raise ConfigError("segment_threshold must be > 0")
        if self.peer_merge not in PEER_MERGES:
            raise ConfigError(f"peer_merge must be one of {PEER_MERGES}, got {self.peer_merge!r}")


TeacherFn = Callable[[np.ndarray], np.ndarray]
#: A discovered group learns from at most this many peers' uploads besides the target's.
MAX_PEERS = 8
#: With fleet memory, the newest this many uploads are also matched on their own.
TAIL_UPLOADS = 10
#: With fleet memory, a stored domain that matched but was not confirmed on a young
#: domain's few uploads is tried again after this many new ones.
RECALL_RETRY_UPLOADS = 4
_log = logging.getLogger("edgecl.cloud.learning")


class LearningCoordinator:
    """Schedules and runs learning jobs; one job per target at a time.

    ``teacher`` maps inputs ``(N, C, H, W)`` to class probabilities over
    ``teacher_classes``; targets learn over the device bundle's classes (samples the
    teacher assigns to another class are dropped).
    """

    def __init__(self, bundle_dir: Any, teacher: TeacherFn, teacher_classes: Sequence[str],
                 signer: UpdateSigner, store: UpdateStore, *,
                 config: LearnerConfig | None = None, policy: LearningPolicy | None = None,
                 on_result: Callable[[str, LearnResult], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 library: DomainLibrary | None = None,
                 scope: Callable[[str], str] = lambda target: "fleet") -> None:
        self.learner = UpdateLearner(bundle_dir, config)
        #: The fleet's domain library (None: no memory); ``scope(target)`` names the part
        #: of it a target may draw from and add to.
        self.library, self.scope = library, scope
        self._domain: dict[str, DomainSignature] = {}  # what a target's state was made for
        self._job_segment: dict[str, int | None] = {}  # device segment at the last job
        self._seen: dict[str, DomainSignature] = {}  # newest domain at a target's last job
        #: Seconds for the time trigger (a simulation passes its virtual clock).
        self.clock = clock
        #: When set, ``gate(target)`` False means no job is due for ``target`` (a
        #: simulation's service still busy in simulated time); labelled uploads keep
        #: accumulating for the next job.
        self.gate: Callable[[str], bool] | None = None
        #: Targets in the order their jobs started (a simulation times them from it).
        self.started: list[str] = []
        #: Runs a job's training: ``learn(learner, *args)`` (default: here; the service
        #: sets a Ray task runner with ``[compute] backend = "ray"``).
        self.learn: Callable[..., LearnResult] = lambda learner, *a, **k: learner.learn(*a, **k)
        self._bundle_state = BaseState.from_bundle(self.learner.bundle.path)  # version 0
        self.teacher, self.signer, self.store = teacher, signer, store
        self.policy = policy or LearningPolicy()
        self.on_result = on_result
        names = list(teacher_classes)
        missing = [c for c in self.learner.bundle.class_names if c not in names]
        if missing:
            raise ConfigError(f"the teacher does not know the device classes {missing}")
        self._columns = np.array([names.index(c) for c in self.learner.bundle.class_names])
        self._pool = ThreadPoolExecutor(self.policy.workers, thread_name_prefix="edgecl-learn")
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._first_pending: dict[str, float] = {}
        self._running: dict[str, Future[None]] = {}
        self._working: dict[str, BaseState] = {}  # newest candidate per target
        self._short: dict[str, int] = {}  # a lower trigger while a new domain is too short
        self._closed = False
        self.counts = {"jobs": 0, "published": 0, "reverted": 0, "rejected": 0, "failed": 0,
                       "recalled": 0, "deferred": 0}

    def notify(self, target: str, new_samples: int = 1) -> None:
        """Count ``new_samples`` labelled uploads for ``target``; maybe start a job."""
        with self._lock:
            self._pending[target] = self._pending.get(target, 0) + new_samples
            self._first_pending.setdefault(target, self.clock())
            self._maybe_start(target)

    def tick(self) -> None:
        """Start jobs whose time trigger has expired (call periodically)."""
        with self._lock:
            for target in list(self._pending):
                self._maybe_start(target)

    def wait_idle(self, timeout: float = 300.0) -> bool:
        """Block until no job runs or is due; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                running = [f for f in self._running.values() if not f.done()]
                due = [t for t in self._pending if self._due(t)]
                for t in due:
                    self._maybe_start(t)
            if not running and not due:
                return True
            time.sleep(0.01)
        return False

    def snapshot(self) -> dict[str, Any]:
        """What learning is doing now: job ``counts``, the targets with a job ``running``,
        labelled uploads ``pending`` per target (not yet in a job)."""
        with self._lock:
            return {"counts": dict(self.counts),
                    "running": sorted(t for t, f in self._running.items() if not f.done()),
                    "pending": dict(self._pending)}

    def close(self, wait: bool = True) -> None:
        """Stop accepting jobs; with ``wait``, finish the running ones."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    # -- internals ---------------------------------------------------------------------
    def _due(self, target: str) -> bool:
        n = self._pending.get(target, 0)
        if n <= 0 or (self.gate is not None and not self.gate(target)):
            return False
        now = self.clock()
        waited = now - self._first_pending.get(target, now)
        trigger = self._short.get(target, self.policy.trigger_samples)
        if n >= trigger or waited >= self.policy.trigger_seconds:
            return True
        return self._new_segment(target, n)

    def _new_segment(self, target: str, n: int) -> bool:
        """With fleet memory: whether the target's device reported a new drift segment since
        its last job and enough uploads came to try the library on them."""
        newest = getattr(self.store, "newest_segment", None)
        if self.library is None or newest is None or n < self.learner.config.min_holdout \
                or target not in self._job_segment:
            return False
        segment = newest(target)
        return segment is not None and segment != self._job_segment[target]

    def _maybe_start(self, target: str) -> None:
        running = self._running.get(target)
        if self._closed or (running is not None and not running.done()) or not self._due(target):
            return
        self._pending.pop(target, None)
        self._first_pending.pop(target, None)
        self._short.pop(target, None)
        self.counts["jobs"] += 1
        self.started.append(target)
        self._running[target] = self._pool.submit(self._job, target)

    def _job(self, target: str) -> None:
        claim = getattr(self.store, "claim_job", None)
        if claim is not None and not claim(target):
            # another replica runs this target's job: count these uploads toward the next
            with self._lock:
                self.counts["jobs"] -= 1
                self.counts["deferred"] += 1
                self._pending[target] = self._pending.get(target, 0) + 1
                self._first_pending.setdefault(target, self.clock())
            return
        outcome = "failed"
        done = threading.Event()
        renew = getattr(self.store, "renew_job", None)
        if renew is not None:  # keep the lease while the job runs
            period = max(0.5, float(getattr(self.store, "lease_s", 300.0)) / 3)
            threading.Thread(target=self._renew, args=(renew, target, done, period),
                             name="edgecl-learn-lease", daemon=True).start()
        try:
            result = self.run_once(target)
            outcome = "no data" if result is None else (
                "published" if result.publish else "rejected")
        except Exception:  # a failing job must not kill the pool; counted and logged
            import logging

            logging.getLogger("edgecl.cloud").exception("learning job for %s failed", target)
            with self._lock:
                self.counts["failed"] += 1
        finally:
            done.set()
            end = getattr(self.store, "end_job", None)
            if end is not None:
                end(target, outcome)

    @staticmethod
    def _renew(renew: Callable[[str], bool], target: str, done: threading.Event,
               period: float) -> None:
        while not done.wait(period):
            try:
                if not renew(target):
                    log.warning("learning job lost its lease", extra={"target": target})
                    return
            except Exception as exc:  # the database is away: the lease may lapse
                log.warning("cannot renew a learning job's lease", extra={
                    "target": target, "error": str(exc)})

    def run_once(self, target: str) -> LearnResult | None:
        """Learn for ``target`` now, publish if validated; the result (None: no data)."""
        got = self.store.recent_inputs(target, self.policy.window)
        inputs, segment = got[0], got[1]
        with self._lock:
            self._job_segment[target] = segment
        explored = np.asarray(got[2], bool) if len(got) > 2 else np.zeros(len(inputs), bool)
        if len(inputs) == 0:
            return None
        start_index = 0
        feats = (self.learner.encoder_features(inputs)
                 if self.policy.segments or self.library is not None else None)
        if self.policy.segments and feats is not None:
            start_index = newest_segment_start(feats, threshold=self.policy.segment_threshold)
            inputs, explored = inputs[start_index:], explored[start_index:]
            feats = feats[start_index:]
        probs = np.asarray(self.teacher(inputs), dtype=np.float64)
        keep = np.isin(probs.argmax(axis=1), self._columns)
        sub = probs[keep][:, self._columns]
        sub /= sub.sum(axis=1, keepdims=True)
        version, parts, published_metrics = self.store.published(target)
        bundle_state = self._bundle_state
        source_now = bundle_state.with_parts(version, {})  # the bundle's own, this version
        # a device that reports its drift segment fell back to its bundle state at the
        # change: what it runs is not the published update of another segment (a group's
        # uploads have no one segment: segment None)
        fell_back = segment is not None and not (
            version and published_metrics.get("segment", 0) == segment)
        # what the devices run: after a device-reported shift, their bundle state
        base = source_now if fell_back else bundle_state.with_parts(version, parts)
        starts = [base]
        if self.policy.warm_start:
            with self._lock:
                working = self._working.get(target)
            if working is not None and working.version == base.version:
                starts = [working]
        domain = (DomainSignature.of(feats) if self.library is not None and feats is not None
                  and len(feats) >= 2 else None)
        if domain is not None:
            recalled = self._recall(target, domain, inputs[keep], sub, explored[keep], base,
                                    version, segment, start_index)
            tail = TAIL_UPLOADS
            if recalled is None and feats is not None and len(feats) > tail:
                # a domain too young for the segmenter to split off (it needs 12 uploads
                # on each side) may already match a stored one: try the newest uploads
                newest = np.zeros(len(inputs), bool)
                newest[-tail:] = True
                k = newest[keep]
                recalled = self._recall(target, DomainSignature.of(feats[-tail:]),
                                        inputs[keep][k], sub[k], explored[keep][k], base,
                                        version, segment, len(inputs) - tail)
            if recalled is not None:
                return recalled
        x, x_probs, x_explored = inputs[keep], sub, explored[keep]
        peers: list[str] = []
        if domain is not None:
            with self._lock:
                self._seen[target] = domain
            if self.policy.peer_merge == "ties":
                merged, peers = self._merged_peers(target, domain, starts[0], version)
                if merged is not None:
                    starts.append(merged)
            else:
                x, x_probs, x_explored, peers = self._with_peers(target, domain, x, x_probs,
                                                                 x_explored)
        if (start_index > 0 or fell_back) and _differs(starts[0], bundle_state):
            # a young domain: the newest candidate was learned on another one, so learn
            # from the bundle state too and keep whichever holds out better
            starts.append(source_now)
        result = self.learn(self.learner, x, x_probs, base, start=starts,
                            source=bundle_state, explored=x_explored)
        if result.parts:
            with self._lock:
                self._working[target] = base.with_parts(version, result.parts)
        else:  # too little of the newest domain yet: learn again as soon as there is enough
            cfg = self.learner.config
            missing = cfg.min_train + cfg.min_holdout - int(keep.sum())
            if self.library is not None and int(keep.sum()) < cfg.min_holdout:
                # with fleet memory, a stored update can be tried on fewer: try it then
                missing = cfg.min_holdout - int(keep.sum())
            if missing > 0:
                with self._lock:
                    self._short[target] = min(missing, self._short.get(
                        target, self.policy.trigger_samples))
        metrics = {**result.metrics, "window_start": float(start_index),
                   "peers": float(len(peers)),
                   "window_samples": float(len(inputs)),
                   "explored_samples": float(explored.sum())}
        if segment is not None:  # devices refuse updates learned on an earlier segment
            metrics["segment"] = float(segment)
        result = dataclasses.replace(result, metrics=metrics)
        publish = result.parts if result.publish else None
        if publish is None and result.verdict.revert:
            # the state the devices run is worse than the bundle's own on this domain
            publish = {"head.weight": bundle_state.head_weight,
                       "head.bias": bundle_state.head_bias}
            metrics = {**metrics, REVERT_METRIC: 1.0}
        if publish is not None:
            payload = UpdatePayload(
                version=version + 1, base_version=version,
                encoder_sha256=self.learner.bundle.encoder_sha256, parts=publish,
                metrics=metrics, created_ms=int(time.time() * 1000),
                **_addressee(self.store, target))
            self.store.publish(target, self.signer.sign(payload), payload)
            with self._lock:
                self._working[target] = bundle_state.with_parts(version + 1, publish)
                self.counts["published"] += 1
                if not result.publish:
                    self.counts["reverted"] += 1
                    self._domain.pop(target, None)
            if result.publish and domain is not None and self.library is not None:
                self.library.store(self.scope(target), self.learner.bundle.encoder_sha256,
                                   target, domain, publish, metrics)
                with self._lock:
                    self._domain[target] = domain
            if not result.publish:
                self.store.record_rejection(target, version + 1,
                                            "reverted to source: " + result.verdict.reason,
                                            metrics)
        else:
            self.store.record_rejection(target, version + 1, result.verdict.reason, metrics)
            with self._lock:
                self.counts["rejected"] += 1
        if self.on_result is not None:
            self.on_result(target, result)
        return result

    def _with_peers(self, target: str, domain: DomainSignature, x: np.ndarray,
                    probs: np.ndarray, explored: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Discovered groups: the uploads of the other device targets of this scope whose
        newest domain matches ``domain`` and has not changed since their last job, added
        to ``x`` (up to the window; ``target``'s own first). Group targets learn alone."""
        peers = self._peers(target, domain)
        room = self.policy.window - len(x)
        if not peers or room <= 0:
            return x, probs, explored, []
        xs, ps, es, used = [x], [probs], [explored], []
        share = max(room // len(peers), 1)
        for p in peers:  # each peer's newest uploads, if they are still of this domain
            got = self.store.recent_inputs(p, share)
            if len(got[0]) < 2:
                continue
            feats = self.learner.encoder_features(got[0])
            if DomainSignature.of(feats).statistic(domain) >= self.library.threshold:
                continue  # the peer has moved on since its last job
            p_probs = np.asarray(self.teacher(got[0]), dtype=np.float64)
            keep = np.isin(p_probs.argmax(axis=1), self._columns)
            sub = p_probs[keep][:, self._columns]
            xs.append(got[0][keep])
            ps.append(sub / sub.sum(axis=1, keepdims=True))
            es.append((np.asarray(got[2], bool) if len(got) > 2
                       else np.zeros(len(got[0]), bool))[keep])
            used.append(p)
        return np.concatenate(xs), np.concatenate(ps), np.concatenate(es), used

    def _peers(self, target: str, domain: DomainSignature) -> list[str]:
        """The other device targets of ``target``'s scope whose newest domain, at their
        last job, matched ``domain`` and has not changed since (closest first)."""
        newest = getattr(self.store, "newest_segment", None)
        assert self.library is not None
        if newest is None or newest(target) is None:
            return []
        scope = self.scope(target)
        with self._lock:
            seen = dict(self._seen)
            segments = dict(self._job_segment)
        near = sorted((sig.statistic(domain), p) for p, sig in seen.items()
                      if p != target and sig.dim == domain.dim)
        return [p for stat, p in near if stat < self.library.threshold
                and self.scope(p) == scope and newest(p) == segments.get(p)][:MAX_PEERS]

    def _merged_peers(self, target: str, domain: DomainSignature, own: BaseState,
                      version: int) -> tuple[BaseState | None, list[str]]:
        """The TIES merge of the updates ``target``'s peers run that were made for
        ``domain`` (and of ``own``, if it was made for it too), as a state to learn from;
        None without such peers."""
        assert self.library is not None
        with self._lock:
            made_for = dict(self._domain)
        used, updates = [], []
        for p in self._peers(target, domain):
            sig = made_for.get(p)
            if sig is None or sig.statistic(domain) >= self.library.threshold:
                continue  # what the peer runs was made for another domain
            _, parts, _ = self.store.published(p)
            if parts:
                used.append(p)
                updates.append(parts)
        if not updates:
            return None, []
        mine = made_for.get(target)
        if mine is not None and mine.statistic(domain) < self.library.threshold:
            updates.insert(0, _parts_of(own))
        merged = merge_updates(self._bundle_state, updates)
        return self._bundle_state.with_parts(version, merged), used

    def _recall(self, target: str, domain: DomainSignature, x: np.ndarray, probs: np.ndarray,
                explored: np.ndarray, base: BaseState, version: int, segment: int | None,
                start_index: int) -> LearnResult | None:
        """Serve a stored update for ``target``'s newest domain when one matches and passes
        the publication rule on the target's uploads ``x`` (none of which it was learned
        on); learning then continues from it. None: nothing matched or passed."""
        assert self.library is not None
        cfg = self.learner.config
        with self._lock:
            known = self._domain.get(target)
        if known is not None and known.statistic(domain) < self.library.threshold:
            return None  # the target's state was made for this domain already
        if len(x) < cfg.min_holdout:
            return None
        encoder = self.learner.bundle.encoder_sha256
        matches = self.library.match(self.scope(target), encoder, domain)
        if not matches:
            return None
        labels = probs.argmax(axis=1)
        bundle_state = self._bundle_state
        current = self.learner.predict(x, base)
        source = self.learner.predict(x, bundle_state)
        unbiased = explored if explored.sum() >= cfg.min_unbiased else None
        for match in matches:
            state = bundle_state.with_parts(version + 1, match.entry.parts)
            verdict = validate_candidate(current, self.learner.predict(x, state), labels,
                                         source=source, margin=cfg.margin,
                                         max_nfr=cfg.max_nfr, source_z=cfg.source_z,
                                         source_mask=unbiased)
            _log.debug("recall %s: entry %d (statistic %.2f) on %d uploads: %s", target,
                       match.entry.id, match.statistic, len(x),
                       "accepted" if verdict.accepted else verdict.reason)
            if not verdict.accepted:
                continue
            metrics = {**verdict.metrics, "library_entry": float(match.entry.id),
                       "library_statistic": match.statistic,
                       "window_start": float(start_index), "window_samples": float(len(x))}
            if segment is not None:
                metrics["segment"] = float(segment)
            payload = UpdatePayload(
                version=version + 1, base_version=version, encoder_sha256=encoder,
                parts=match.entry.parts, metrics=metrics, created_ms=int(time.time() * 1000),
                **_addressee(self.store, target))
            self.store.publish(target, self.signer.sign(payload), payload)
            self.library.record_match(match.entry.id)
            with self._lock:
                self._working[target] = state
                self._domain[target] = domain
                self.counts["published"] += 1
                self.counts["recalled"] += 1
            return LearnResult(dict(match.entry.parts), verdict, metrics)
        if len(x) < cfg.min_train + cfg.min_holdout:
            # a match too few uploads could confirm yet: try it again on a few more rather
            # than wait for the usual trigger (the young domain is served by the bundle)
            with self._lock:
                self._short[target] = min(self._short.get(target, self.policy.trigger_samples),
                                          RECALL_RETRY_UPLOADS)
        return None


def _parts_of(state: BaseState) -> dict[str, np.ndarray]:
    """A state's parts under their wire names (those it has)."""
    named = {"prompt": state.prompt, "filter": state.input_filter,
             "adapter.down": state.adapter_down, "adapter.up": state.adapter_up,
             "head.weight": state.head_weight, "head.bias": state.head_bias,
             "norm.scale": state.norm_scale, "norm.shift": state.norm_shift}
    return {k: v for k, v in named.items() if v is not None}


def _addressee(store: Any, target: str) -> dict[str, str]:
    """Whom an update for ``target`` is addressed to: a group (``store.by_group``: no
    device id, the group name) or one device (its id); devices accept nothing else."""
    if not getattr(store, "by_group", False):
        return {"device_id": target, "group": ""}
    if target.startswith(DEVICE_TARGET):  # group mode, a device without a group
        return {"device_id": target[len(DEVICE_TARGET):], "group": ""}
    return {"device_id": "", "group": target}


def _differs(state: BaseState, bundle: BaseState) -> bool:
    """Whether ``state`` is anything but the bundle's own (a prompt, a filter, an adapter, a
    feature norm or another head)."""
    return (any(a is not None for a in (state.prompt, state.input_filter, state.adapter_down,
                                        state.norm_scale))
            or not np.array_equal(state.head_weight, bundle.head_weight)
            or not np.array_equal(state.head_bias, bundle.head_bias))
