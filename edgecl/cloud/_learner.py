"""Learn a visual prompt, a low-rank feature adapter and head deltas for one device (or a
group) from its uploads and their teacher labels, through the device's exact encoder.

The encoder is the bundle's ``encoder.pt2`` (a torch.export program of the very graph the
device runs as ONNX), frozen; gradients flow through it to the prompt. Loss: soft-label
distillation from the teacher, each sample weighted by the teacher's confidence
``w = 1 - H(p_teacher) / ln C``; samples whose normalised teacher entropy exceeds
``max_teacher_entropy`` (or whose teacher label is not one of the device's classes) are
dropped. Part of the uploads is held out; the candidate is published only if it agrees
with the teacher there more than the device's current state does (by ``margin``) and its
negative flip rate against the current state stays under ``max_nfr``
(see :func:`edgecl.cloud.validate_candidate`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.bundle import STATS_FILE, load_bundle, read_feature_stats
from edgecl.cloud._validation import Verdict, validate_candidate

PARTS = ("prompt", "filter", "adapter", "head", "norm")
DEFAULT_PARTS = ("prompt", "filter", "adapter", "head")
PROMPT_KINDS = ("full", "padding")


@dataclass(frozen=True)
class LearnerConfig:
    """Hyperparameters of :class:`UpdateLearner` (all documented in the service config).

    Attributes
    ----------
    parts : which parts to learn, from ``("prompt", "filter", "adapter", "head", "norm")``;
        ``norm`` is not trained but estimated: the feature alignment of
        :class:`edgecl.adapt.FeatureAlign`, from the uploads' encoder features to the
        bundle's source statistics, fixed while the other parts learn on top of it.
    prompt : ``"full"`` (an additive input-shaped tensor) or ``"padding"`` (only a border
        of ``padding_width`` pixels is learned).
    filter_size : odd size ``k`` of the depthwise input filter (the convolutional part of
        the prompt, initialised to the identity).
    rank : rank of the residual feature adapter ``f + B (A f)``.
    steps, batch_size, lr : Adam steps over the training uploads.
    prompt_l2 : L2 penalty on the prompt (keeps it small where data are scarce).
    shift_px : augmentation: every training view is the upload shifted by up to this many
        pixels each way (0 turns it off); uploads are few, shifts keep their corruption.
    holdout_fraction : share of uploads held out for validation (at least ``min_holdout``).
    stable_holdout : hold out the uploads whose content hash falls below
        ``holdout_fraction`` (at least ``min_holdout``) rather than a random share, so an
        upload keeps its side from one job to the next: the state a device
        runs is then compared with candidates and with the source on uploads it was not
        trained on (at random, its own training uploads make it look better than it is).
    source_z : evidence a candidate needs against the bundle's source state: among the
        held-out uploads where the two differ, the candidate's wins minus the source's
        must exceed ``source_z * sqrt(wins + losses)`` (a sign test; 0 turns it into a
        plain comparison). The source is what the device falls back to, so it is not
        replaced on a coin flip where it is good already.
    min_unbiased : with ``explored`` marks, the source is judged (compared with the
        candidate and with the running state) on the held-out uploads the devices drew at
        random once there are at least this many: the uploads picked for their
        uncertainty are those the source gets wrong, so on them every candidate looks
        better than the source than it is (measured: a candidate that beat the source
        0.80 to 0.60 on all held-out uploads served 0.68 where the source served 0.80).
    recent_holdout : the newest this many held-out uploads stand for the domain as it is
        now: a candidate must not agree with the teacher less often than the source
        there, and a device whose state does is told to revert (0 turns it off).
    holdout_from_explored : with ``explored`` marks, hold out the random draws first. It
        makes validation unbiased but takes the most representative uploads out of
        training, which costs more (measured in docs/results.md, "The cloud-device loop").
    max_teacher_entropy : drop samples whose teacher entropy / ln C exceeds this.
    selected_weight : loss weight of the uploads a device selected for their uncertainty,
        relative to those it drew at random (``explored``); uploads without that mark
        weigh 1.
    prior_correction : with ``explored`` marks, re-weight every upload by its teacher
        class's share among the random draws over its share among all uploads (clipped to
        [1/4, 4]), so that training sees the stream's class mix, not the picks'.
    margin, max_nfr : publication rule, see :func:`validate_candidate`.
    seed : seeds the split, the initialisation and the batches (deterministic learning).
    threads : torch intra-op threads.
    """

    parts: tuple[str, ...] = DEFAULT_PARTS
    prompt: str = "full"
    padding_width: int = 3
    filter_size: int = 5
    rank: int = 8
    steps: int = 150
    batch_size: int = 64
    lr: float = 0.02
    prompt_l2: float = 1e-3
    shift_px: int = 2
    holdout_fraction: float = 0.25
    holdout_from_explored: bool = False
    stable_holdout: bool = True
    source_z: float = 1.0
    recent_holdout: int = 8
    min_unbiased: int = 4
    min_holdout: int = 8
    min_train: int = 16
    max_teacher_entropy: float = 0.8
    selected_weight: float = 1.0
    prior_correction: bool = False
    margin: float = 0.0
    max_nfr: float = 0.2
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.parts or any(p not in PARTS for p in self.parts):
            raise ConfigError(f"parts must be a non-empty subset of {PARTS}, got {self.parts}")
        if self.prompt not in PROMPT_KINDS:
            raise ConfigError(f"prompt must be one of {PROMPT_KINDS}, got {self.prompt!r}")
        if self.filter_size % 2 == 0:
            raise ConfigError(f"filter_size must be odd, got {self.filter_size}")
        for name in ("padding_width", "filter_size", "rank", "steps", "batch_size", "min_holdout",
                     "min_train", "threads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError("holdout_fraction must be in (0, 1)")
        if not 0.0 < self.max_teacher_entropy <= 1.0:
            raise ConfigError("max_teacher_entropy must be in (0, 1]")
        if not 0.0 <= self.selected_weight < float("inf"):
            raise ConfigError("selected_weight must be finite and >= 0")
        if not 0.0 <= self.source_z < float("inf"):
            raise ConfigError("source_z must be finite and >= 0")
        if self.recent_holdout < 0:
            raise ConfigError("recent_holdout must be >= 0")
        if self.lr <= 0 or self.prompt_l2 < 0 or not 0 <= self.max_nfr <= 1:
            raise ConfigError("lr must be > 0, prompt_l2 >= 0 and max_nfr in [0, 1]")

    def replace(self, **changes: Any) -> LearnerConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class BaseState:
    """The device state an update is learned against (numpy arrays, float32).

    ``prompt`` ``(C, H, W)`` or None; ``input_filter`` ``(C, k, k)`` or None;
    ``adapter_down`` ``(r, D)`` / ``adapter_up`` ``(D, r)`` or None; ``head_weight``
    ``(K, D)``, ``head_bias`` ``(K,)``; ``norm_scale`` / ``norm_shift`` ``(D,)`` or None
    (the feature norm applied before the adapter).
    """

    version: int
    head_weight: np.ndarray
    head_bias: np.ndarray
    prompt: np.ndarray | None = None
    input_filter: np.ndarray | None = None
    adapter_down: np.ndarray | None = None
    adapter_up: np.ndarray | None = None
    norm_scale: np.ndarray | None = None
    norm_shift: np.ndarray | None = None

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path) -> BaseState:
        """Version 0: the bundle's linear head, no prompt, no adapter."""
        head = load_bundle(bundle_dir).head
        arrays = head.arrays()
        if set(arrays) != {"weight", "bias"}:
            raise ConfigError(f"the learner needs a linear head, the bundle has {head.kind}")
        return cls(version=0, head_weight=np.asarray(arrays["weight"], np.float32),
                   head_bias=np.asarray(arrays["bias"], np.float32))

    def with_parts(self, version: int, parts: dict[str, np.ndarray]) -> BaseState:
        """The state after applying an update's ``parts`` (names as on the wire)."""
        keys = {"prompt": "prompt", "filter": "input_filter", "adapter.down": "adapter_down",
                "adapter.up": "adapter_up", "head.weight": "head_weight",
                "head.bias": "head_bias", "norm.scale": "norm_scale",
                "norm.shift": "norm_shift"}
        changes = {keys[k]: np.asarray(v, np.float32) for k, v in parts.items()}
        return dataclasses.replace(self, version=version, **changes)


@dataclass(frozen=True)
class LearnResult:
    """A learned candidate: its parts (wire names), the verdict and the figures behind it."""

    parts: dict[str, np.ndarray]
    verdict: Verdict
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def publish(self) -> bool:
        """Whether the candidate passed validation."""
        return self.verdict.accepted


def teacher_weights(teacher_probs: np.ndarray, max_entropy: float) -> np.ndarray:
    """``1 - H(p) / ln C`` per sample, 0 where that normalised entropy exceeds ``max_entropy``."""
    p = np.clip(np.asarray(teacher_probs, np.float64), 1e-12, 1.0)
    h = -(p * np.log(p)).sum(axis=1) / math.log(p.shape[1])
    return np.where(h <= max_entropy, 1.0 - h, 0.0)


class UpdateLearner:
    """Learns updates for devices running one bundle (needs ``edgecl[cloud]``).

    Examples
    --------
    >>> learner = UpdateLearner("bundle_dir")                           # doctest: +SKIP
    >>> result = learner.learn(inputs, teacher_probs, BaseState.from_bundle("bundle_dir"))
    ...                                                                  # doctest: +SKIP
    >>> result.publish, result.metrics["candidate_agreement"]           # doctest: +SKIP
    """

    def __init__(self, bundle_dir: str | Path, config: LearnerConfig | None = None) -> None:
        import torch

        self.config = config or LearnerConfig()
        self.bundle = load_bundle(bundle_dir)
        self._torch = torch
        self._encoder = torch.export.load(str(self.bundle.path / "encoder.pt2")).module()
        self.input_shape = tuple(self.bundle.input_spec.shape)
        self.num_classes = len(self.bundle.class_names)
        self.source_stats = None
        if STATS_FILE in self.bundle.manifest.files:
            self.source_stats = read_feature_stats(self.bundle.path / STATS_FILE,
                                                   encoder_sha256=self.bundle.encoder_sha256)
        if "norm" in self.config.parts and self.source_stats is None:
            raise ConfigError("learning the norm part needs the bundle's feature statistics "
                              "(feature_stats.npz; run edgecl.ood.calibrate_bundle)")

    # -- the mirror of the device's predict path ------------------------------------------
    def _features(self, x: Any, prompt: Any, kernel: Any = None) -> Any:
        if kernel is not None:
            k = kernel.shape[-1]
            x = self._torch.nn.functional.conv2d(x, kernel[:, None], padding=k // 2,
                                                 groups=x.shape[1])
        return self._encoder(x if prompt is None else x + prompt)

    def _logits(self, feats: Any, down: Any, up: Any, weight: Any, bias: Any,
                norm: tuple[Any, Any] | None = None) -> Any:
        if norm is not None and norm[0] is not None:
            feats = feats * norm[0] + norm[1]
        if down is not None and up is not None:
            feats = feats + (feats @ down.T) @ up.T
        return feats @ weight.T + bias

    def encoder_features(self, inputs: np.ndarray) -> np.ndarray:
        """The frozen encoder's features of raw ``inputs`` (no prompt, no filter):
        ``(N, D)`` float32, a signal no update changes."""
        x, _ = self._check(inputs, np.zeros((len(inputs), self.num_classes)))
        torch = self._torch
        with torch.no_grad():
            out = [self._encoder(torch.from_numpy(x[i:i + 512])).numpy()
                   for i in range(0, len(x), 512)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predict(self, inputs: np.ndarray, state: BaseState) -> np.ndarray:
        """Labels the device would predict for ``inputs`` in ``state`` (torch mirror)."""
        torch = self._torch
        t = lambda a: None if a is None else torch.from_numpy(np.array(a, np.float32))  # noqa: E731
        with torch.no_grad():
            out = []
            for i in range(0, len(inputs), 512):
                x = t(inputs[i:i + 512])
                feats = self._features(x, t(state.prompt), t(state.input_filter))
                logits = self._logits(feats, t(state.adapter_down), t(state.adapter_up),
                                      t(state.head_weight), t(state.head_bias),
                                      (t(state.norm_scale), t(state.norm_shift)))
                out.append(logits.argmax(dim=1).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    # -- learning ---------------------------------------------------------------------------
    def learn(self, inputs: np.ndarray, teacher_probs: np.ndarray, base: BaseState,
              *, start: BaseState | Sequence[BaseState] | None = None,
              source: BaseState | None = None, explored: np.ndarray | None = None,
              config: LearnerConfig | None = None) -> LearnResult:
        """Learn a candidate from ``inputs`` ``(N, C, H, W)`` and the teacher's class
        probabilities ``(N, K)`` over the device's classes.

        ``base`` is the state the device runs (the candidate replaces it and is validated
        against it); learning starts from ``start`` (default ``base``), e.g. an earlier
        candidate that was not published; given several starts, one candidate is learned
        from each (same split and batches) and the one that agrees most with the teacher on
        the held-out uploads is validated (``start_choice`` in the metrics). ``source`` is
        the bundle's own state: given, the candidate must beat it too, and a verdict whose
        ``revert`` is set says the source beats ``base``. ``explored`` (optional) marks
        the uploads the device drew at random rather than for their uncertainty; see
        :class:`LearnerConfig` (``selected_weight``, ``prior_correction``,
        ``holdout_from_explored``) for what the learner does with them."""
        cfg = config or self.config
        x, p_t = self._check(inputs, teacher_probs)
        torch = self._torch
        torch.set_num_threads(cfg.threads)
        rng = np.random.default_rng(cfg.seed)
        drawn = None if explored is None else np.asarray(explored, bool)
        if drawn is not None and drawn.shape != (len(x),):
            raise InvalidInput(f"explored must be a boolean mask of length {len(x)}, "
                               f"got {drawn.shape}")
        if cfg.stable_holdout:
            hold, train = _stable_split(_content_keys(x), cfg.holdout_fraction,
                                        cfg.min_holdout)
        else:
            n_hold = max(cfg.min_holdout, round(cfg.holdout_fraction * len(x)))
            hold, train = _split(rng, len(x), n_hold,
                                 drawn if cfg.holdout_from_explored else None)
            hold = np.sort(hold)  # time order: the newest held-out uploads come last
        unheld = train
        w_all = teacher_weights(p_t, cfg.max_teacher_entropy)
        if drawn is not None:
            w_all = np.where(drawn, w_all, cfg.selected_weight * w_all)
            if cfg.prior_correction:
                w_all = w_all * _prior_weights(p_t.argmax(axis=1), drawn, p_t.shape[1])
        train = train[w_all[train] > 0]
        if len(train) < cfg.min_train or len(hold) < cfg.min_holdout:
            verdict = Verdict(False, f"too few usable samples ({len(train)} to train, "
                              f"{len(hold)} held out; need {cfg.min_train} and "
                              f"{cfg.min_holdout})")
            return LearnResult({}, verdict, {"train_samples": float(len(train))})
        started = time.perf_counter()
        starts = [base] if start is None else [start] if isinstance(start, BaseState) \
            else list(start)
        if not starts:
            raise InvalidInput("start must name at least one state")
        teacher_labels = p_t[hold].argmax(axis=1)
        best: tuple[float, int, dict[str, np.ndarray], np.ndarray] | None = None
        for k, first in enumerate(starts):
            parts = self._train(first, x, p_t, w_all, train, unheld, cfg, copy.deepcopy(rng))
            pred = self.predict(x[hold], base.with_parts(base.version + 1, parts))
            agreement = float(np.mean(pred == teacher_labels))
            if best is None or agreement > best[0]:
                best = (agreement, k, parts, pred)
        assert best is not None
        _, choice, parts, cand_pred = best
        verdict = validate_candidate(
            self.predict(x[hold], base), cand_pred, teacher_labels,
            source=None if source is None else self.predict(x[hold], source),
            margin=cfg.margin, max_nfr=cfg.max_nfr, source_z=cfg.source_z,
            recent=cfg.recent_holdout,
            source_mask=None if drawn is None or drawn[hold].sum() < cfg.min_unbiased
            else drawn[hold])
        metrics = {**verdict.metrics, "train_samples": float(len(train)),
                   "holdout_samples": float(len(hold)), "start_choice": float(choice),
                   "learn_seconds": time.perf_counter() - started}
        return LearnResult(parts, verdict, metrics)

    def _train(self, start: BaseState, x: np.ndarray, p_t: np.ndarray, w_all: np.ndarray,
               train: np.ndarray, unheld: np.ndarray, cfg: LearnerConfig,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Adam on the training uploads from ``start``; the learned parts (wire names)."""
        torch = self._torch
        params = self._init_params(start, cfg, rng)
        if "norm" in cfg.parts:
            params["norm_scale"], params["norm_shift"] = self._estimate_norm(x[unheld])
        learned = [p for p in params.values() if p is not None and p.requires_grad]
        opt = torch.optim.Adam(learned, lr=cfg.lr)
        xt = torch.from_numpy(x[train])
        pt = torch.from_numpy(p_t[train].astype(np.float32))
        wt = torch.from_numpy(w_all[train].astype(np.float32))
        gen = torch.Generator().manual_seed(cfg.seed)
        mask = self._prompt_mask(cfg)
        for _ in range(cfg.steps):
            idx = torch.randperm(len(train), generator=gen)[:cfg.batch_size]
            prompt = None if params["prompt"] is None else params["prompt"] * mask
            batch = _shift(torch, xt[idx], cfg.shift_px, gen) if cfg.shift_px else xt[idx]
            feats = self._features(batch, prompt, params["filter"])
            logits = self._logits(feats, params["down"], params["up"], params["weight"],
                                  params["bias"], (params["norm_scale"], params["norm_shift"]))
            logp = torch.log_softmax(logits, dim=1)
            kl = (pt[idx] * (torch.log(pt[idx].clamp_min(1e-12)) - logp)).sum(dim=1)
            loss = (wt[idx] * kl).sum() / wt[idx].sum().clamp_min(1e-6)
            if prompt is not None and cfg.prompt_l2 > 0:
                loss = loss + cfg.prompt_l2 * (prompt ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self._parts(params, mask, cfg)

    def _estimate_norm(self, inputs: np.ndarray) -> tuple[Any, Any]:
        """The feature norm mapping these inputs' raw encoder features to the source
        statistics (per dimension mean and variance), as fixed tensors."""
        from edgecl.heads import FeatureNorm

        torch = self._torch
        assert self.source_stats is not None
        with torch.no_grad():
            feats = torch.cat([self._encoder(torch.from_numpy(inputs[i:i + 512]))
                               for i in range(0, len(inputs), 512)]).double().numpy()
        norm = FeatureNorm.align(mean=feats.mean(axis=0), var=feats.var(axis=0),
                                 source_mean=self.source_stats.mean,
                                 source_var=self.source_stats.var)
        return torch.from_numpy(norm.scale.copy()), torch.from_numpy(norm.shift.copy())

    def _check(self, inputs: np.ndarray, teacher_probs: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(inputs, dtype=np.float32)
        p = np.asarray(teacher_probs, dtype=np.float64)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise InvalidInput(f"inputs must be (N, {', '.join(map(str, self.input_shape))}), "
                               f"got {x.shape}")
        if p.shape != (len(x), self.num_classes):
            raise InvalidInput(f"teacher_probs must be ({len(x)}, {self.num_classes}), "
                               f"got {p.shape}")
        if not (np.isfinite(x).all() and np.isfinite(p).all()):
            raise InvalidInput("inputs and teacher_probs must be finite")
        return x, p

    def _init_params(self, base: BaseState, cfg: LearnerConfig,
                     rng: np.random.Generator) -> dict[str, Any]:
        torch = self._torch

        def param(a: np.ndarray | None, learn: bool) -> Any:
            if a is None:
                return None
            return torch.tensor(np.asarray(a, np.float32), requires_grad=learn)

        dim = base.head_weight.shape[1]
        prompt = base.prompt
        if prompt is None and "prompt" in cfg.parts:
            prompt = np.zeros(self.input_shape, np.float32)
        kernel = base.input_filter
        k = cfg.filter_size
        if "filter" in cfg.parts and (kernel is None or kernel.shape[-1] != k):
            kernel = np.zeros((self.input_shape[0], k, k), np.float32)
            kernel[:, k // 2, k // 2] = 1.0  # the identity filter
        down, up = base.adapter_down, base.adapter_up
        if "adapter" in cfg.parts and (down is None or down.shape[0] != cfg.rank):
            down = rng.normal(0.0, 1.0 / math.sqrt(dim), (cfg.rank, dim)).astype(np.float32)
            up = np.zeros((dim, cfg.rank), np.float32)
        return {"prompt": param(prompt, "prompt" in cfg.parts),
                "filter": param(kernel, "filter" in cfg.parts),
                "down": param(down, "adapter" in cfg.parts),
                "up": param(up, "adapter" in cfg.parts),
                "weight": param(base.head_weight, "head" in cfg.parts),
                "bias": param(base.head_bias, "head" in cfg.parts),
                "norm_scale": param(base.norm_scale, False),
                "norm_shift": param(base.norm_shift, False)}

    def _prompt_mask(self, cfg: LearnerConfig) -> Any:
        mask = np.ones(self.input_shape, np.float32)
        if cfg.prompt == "padding":
            w = cfg.padding_width
            mask[:, w:-w, w:-w] = 0.0
        return self._torch.from_numpy(mask)

    def _parts(self, params: dict[str, Any], mask: Any, cfg: LearnerConfig
               ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "prompt" in cfg.parts:
            out["prompt"] = (params["prompt"] * mask).detach().numpy().copy()
        if "filter" in cfg.parts:
            out["filter"] = params["filter"].detach().numpy().copy()
        if "adapter" in cfg.parts:
            out["adapter.down"] = params["down"].detach().numpy().copy()
            out["adapter.up"] = params["up"].detach().numpy().copy()
        if "head" in cfg.parts:
            out["head.weight"] = params["weight"].detach().numpy().copy()
            out["head.bias"] = params["bias"].detach().numpy().copy()
        if "norm" in cfg.parts:
            out["norm.scale"] = params["norm_scale"].detach().numpy().copy()
            out["norm.shift"] = params["norm_shift"].detach().numpy().copy()
        return out


def _prior_weights(labels: np.ndarray, drawn: np.ndarray, k: int) -> np.ndarray:
    """Per sample: its class's (smoothed) share among the random draws over its share
    among all samples, clipped to [1/4, 4]."""
    share_drawn = (np.bincount(labels[drawn], minlength=k) + 1.0) / (drawn.sum() + k)
    share_all = (np.bincount(labels, minlength=k) + 1.0) / (len(labels) + k)
    return np.clip(share_drawn / share_all, 0.25, 4.0)[labels]


def _content_keys(x: np.ndarray) -> np.ndarray:
    """A pseudo-random but fixed number in [0, 1) per sample, from its bytes."""
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(),
                                    "little") / 2.0 ** 64 for row in x])


def _stable_split(keys: np.ndarray, fraction: float, minimum: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and training indices by key: every sample whose key is below ``fraction``
    is held out (topped up to ``minimum`` by the next keys). As a window grows, an upload
    trained on is never held out later, so no state is judged on its own training data."""
    order = np.argsort(keys, kind="stable")
    n_hold = max(int(np.sum(keys < fraction)), min(minimum, len(keys)))
    return np.sort(order[:n_hold]), np.sort(order[n_hold:])


def _split(rng: np.random.Generator, n: int, n_hold: int, audit: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and training indices: ``n_hold`` drawn at random, from the ``audit``
    samples first (topped up from the others when there are fewer)."""
    order = rng.permutation(n)
    if audit is not None:
        mask = np.asarray(audit, bool)
        if mask.shape != (n,):
            raise InvalidInput(f"audit must be a boolean mask of length {n}, got {mask.shape}")
        order = np.concatenate([order[mask[order]], order[~mask[order]]])
    return order[:n_hold], order[n_hold:]


def _shift(torch: Any, x: Any, px: int, gen: Any) -> Any:
    """Each image translated by a random integer offset in [-px, px]^2, zero-filled."""
    h, w = x.shape[-2:]
    pad = torch.nn.functional.pad(x, (px, px, px, px))
    offsets = torch.randint(0, 2 * px + 1, (len(x), 2), generator=gen).tolist()
    return torch.stack([pad[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
