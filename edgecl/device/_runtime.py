"""DeviceRuntime: a frozen ONNX encoder, numpy heads, validated and thread-safe predict."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from edgecl._exceptions import BundleError, ConfigError, EdgeclError, InvalidInput, require
from edgecl.bundle import STATS_FILE, FeatureStats, ModelBundle, load_bundle, read_feature_stats
from edgecl.device._filter import depthwise_conv2d
from edgecl.device._prediction import Prediction
from edgecl.device._state import ModelState
from edgecl.device._validate import InputValidator


def _load_detectors(bundle: ModelBundle, names: tuple[str, ...] | None = None
                    ) -> dict[str, Any]:
    from edgecl.ood import OOD_FILE

    if OOD_FILE not in bundle.manifest.files:
        return {}
    from edgecl.ood import load_detectors

    return load_detectors(bundle.path / OOD_FILE, encoder_sha256=bundle.encoder_sha256,
                          names=names)


class StateConflict(ConfigError):
    """A compare-and-swap found another state than expected (someone swapped first)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in place on a copy of ``logits``."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


#: Sessions shared by runtimes opened with ``share_session=True``, by (encoder, threads).
_SHARED_SESSIONS: dict[tuple[str, int | None], Any] = {}
_SHARED_LOCK = threading.Lock()


class DeviceRuntime:
    """Runs a bundle on a device: no torch, only onnxruntime and numpy.

    Many threads may call :meth:`predict` at once. The trainable parts live in one
    immutable :class:`ModelState` reference, replaced atomically by :meth:`swap_state`.

    Examples
    --------
    >>> rt = DeviceRuntime.open("bundle_dir", threads=1)          # doctest: +SKIP
    >>> pred = rt.predict(images)                                 # doctest: +SKIP
    >>> pred.labels, pred.confidence, pred.state_version          # doctest: +SKIP
    """

    def __init__(self, bundle: ModelBundle, session: Any, *, max_batch: int = 1024,
                 ood: str | None = None) -> None:
        self.bundle = bundle
        self._source_stats: FeatureStats | None = None
        self._detectors: dict[str, Any] = {}
        self._all_loaded = False
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self._output_names = [session.get_outputs()[0].name]
        self._validator = InputValidator(bundle.input_spec, max_batch=max_batch)
        self._swap_lock = threading.Lock()
        self._state = ModelState(version=0, encoder_sha256=bundle.encoder_sha256,
                                 head=bundle.head, ood=self._detector(ood))

    @classmethod
    def open(cls, bundle_dir: str | os.PathLike[str], *, threads: int | None = None,
             max_batch: int = 1024, verify_hashes: bool = True,
             ood: str | None = "default", share_session: bool = False) -> DeviceRuntime:
        """Load and verify a bundle and start an onnxruntime session for its encoder.

        ``threads`` pins onnxruntime's intra-op threads (default: onnxruntime's choice).
        ``ood`` names the OOD detector (from the bundle's ``ood.npz``) whose score every
        prediction carries: ``"default"`` uses ``vim`` (else ``mahalanobis``) when the bundle has
        detectors,
        ``None`` disables OOD scoring. ``share_session``: runtimes of the same encoder (and
        ``threads``) in one process share one onnxruntime session, which is thread-safe
        (a simulator with many devices, an app with several cameras): one set of weights
        and one memory arena instead of one per runtime.
        """
        ort = require("onnxruntime", "device")
        bundle = load_bundle(bundle_dir, verify_hashes=verify_hashes)
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        key = (bundle.encoder_sha256, threads)
        with _SHARED_LOCK:
            session = _SHARED_SESSIONS.get(key) if share_session else None
            if session is None:
                try:
                    session = ort.InferenceSession(str(bundle.encoder_onnx), sess_options=opts,
                                                   providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own untyped errors
                    raise BundleError(f"onnxruntime cannot load the encoder ({exc})",
                                      path=str(bundle.encoder_onnx)) from exc
                if share_session:
                    _SHARED_SESSIONS[key] = session
        if ood == "default":
            from edgecl.ood._calibrate import DEFAULT_DETECTOR, FALLBACK_DETECTOR

            found = _load_detectors(bundle, (DEFAULT_DETECTOR, FALLBACK_DETECTOR))
            ood = next((d for d in (DEFAULT_DETECTOR, FALLBACK_DETECTOR) if d in found), None)
        return cls(bundle, session, max_batch=max_batch, ood=ood)

    @property
    def detectors(self) -> dict[str, Any]:
        """All OOD detectors stored in the bundle (restored on first use), by name."""
        if not self._all_loaded:
            self._detectors = {**_load_detectors(self.bundle), **self._detectors}
            self._all_loaded = True
        return self._detectors

    def _detector(self, name: str | None) -> Any:
        if name is None:
            return None
        if name not in self._detectors and not self._all_loaded:
            self._detectors.update(_load_detectors(self.bundle, (name,)))
        if name not in self._detectors:
            raise ConfigError(f"no OOD detector {name!r} in this bundle; it has "
                              f"{sorted(self.detectors) or 'none (run calibrate_bundle)'}")
        return self._detectors[name]

    def use_detector(self, name: str | None) -> ModelState:
        """Swap in a state that scores with the bundle's detector ``name`` (None: no scoring)."""
        with self._swap_lock:
            state = self._state
        return self.swap_state(state.evolve(ood=self._detector(name)))

    @property
    def source_stats(self) -> FeatureStats | None:
        """The bundle's source feature statistics (``feature_stats.npz``), or None when the
        bundle was not calibrated; what :class:`edgecl.adapt.FeatureAlign` aligns to."""
        if STATS_FILE not in self.bundle.manifest.files:
            return None
        if self._source_stats is None:  # read once: adapters ask again at every rebase
            self._source_stats = read_feature_stats(self.bundle.path / STATS_FILE,
                                                    encoder_sha256=self.bundle.encoder_sha256)
        return self._source_stats

    @property
    def state(self) -> ModelState:
        """The current model state (one atomic read)."""
        return self._state

    @property
    def onnx_session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (read-only use, e.g. benchmarks)."""
        return self._session

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in output order."""
        return self.bundle.class_names

    def predict(self, images: np.ndarray, *, return_features: bool = False) -> Prediction:
        """Classify one image ``(C, H, W)`` or a batch ``(N, C, H, W)``.

        Raises :class:`~edgecl.InvalidInput` for input that does not match the bundle's
        input spec; the runtime keeps serving.
        """
        return self.predict_with(self._state, images, return_features=return_features)

    def predict_with(self, state: ModelState, images: np.ndarray, *,
                     return_features: bool = False) -> Prediction:
        """Like :meth:`predict`, but with ``state`` instead of the current one (e.g. a
        candidate update on a canary buffer); the current state is not touched."""
        x = self._validator.check(images)
        if state.input_filter is not None:
            x = depthwise_conv2d(x, state.input_filter)
        if state.prompt is not None:
            x = x + state.prompt
        feats = raw = self.encode_checked(x)
        if state.feature_norm is not None:
            feats = state.feature_norm.apply(feats)
        if state.adapter is not None:
            feats = state.adapter.apply(feats)
        logits = state.head.logits(feats)
        # softmax, keeping its intermediate results: the largest logit m and the sum s of
        # exp(z - m); the top probability is exactly 1/s, and logsumexp(z) = m + log s
        top = logits.max(axis=1, keepdims=True)
        probs = logits - top
        np.exp(probs, out=probs)
        total = probs.sum(axis=1, keepdims=True)
        probs /= total
        confidence = np.reciprocal(total.ravel())
        labels = probs.argmax(axis=1)
        ood_score = is_ood = None
        if state.ood is not None:
            trusted = getattr(state.ood, "score_trusted", None)
            if state.feature_norm is None:
                ood_score = (trusted(feats, logits, probs, confidence=confidence,
                                     logit_max=top.ravel())
                             if trusted is not None else state.ood.score(feats, logits))
            else:  # score as if unaligned: alignment must not hide the shift it corrects
                plain = raw if state.adapter is None else state.adapter.apply(raw)
                ood_score = state.ood.score(plain, state.head.logits(plain))
            is_ood = ood_score > state.ood.threshold
        return Prediction(
            labels=labels,
            probabilities=probs,
            confidence=confidence,
            logits=logits,
            state_version=state.version,
            features=feats if return_features else None,
            encoder_features=raw if return_features else None,
            ood_score=ood_score,
            is_ood=is_ood,
        )

    def encode(self, images: np.ndarray, *, batch: int | None = None) -> np.ndarray:
        """Validated raw encoder features ``(N, D)`` (no prompt, no adapter), run ``batch``
        images at a time when given (bounded memory for large sets, e.g. calibration)."""
        if batch is None or len(images) <= batch:
            return self.encode_checked(self._validator.check(images))
        if batch < 1:
            raise InvalidInput(f"batch must be >= 1, got {batch}")
        return np.concatenate([self.encode_checked(self._validator.check(images[i:i + batch]))
                               for i in range(0, len(images), batch)])

    def encode_checked(self, x: np.ndarray) -> np.ndarray:
        """Encoder features for an already validated ``(N, C, H, W)`` float32 batch."""
        try:
            return self._session.run(self._output_names, {self._input_name: x})[0]
        except Exception as exc:
            raise EdgeclError(f"encoder inference failed: {exc}") from exc

    def swap_state(self, new_state: ModelState, *,
                   if_version: int | None = None) -> ModelState:
        """Atomically make ``new_state`` current and return the previous one.

        The new state must fit this encoder and have a higher version. In-flight
        predictions finish with the state they started with. With ``if_version`` the swap
        happens only if the current state still has that version (compare-and-swap);
        otherwise :class:`StateConflict` is raised and nothing changes.
        """
        spec = self.bundle.input_spec
        new_state.check_compatible(spec.shape, self.bundle.manifest.feature_dim,
                                   self.bundle.encoder_sha256)
        with self._swap_lock:
            old = self._state
            if if_version is not None and old.version != if_version:
                raise StateConflict(f"the state changed meanwhile (version {old.version}, "
                                    f"expected {if_version})")
            if new_state.version <= old.version:
                raise ConfigError(f"state version {new_state.version} is not newer than "
                                  f"the current {old.version}")
            self._state = new_state
        return old
