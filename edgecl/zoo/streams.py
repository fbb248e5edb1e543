"""Drifting test streams built from MNIST-5k and the corruption zoo.

A :class:`Stream` yields ``(image, label, domain_id)`` one sample at a time and
also offers :meth:`Stream.batches` and :meth:`Stream.arrays`. Streams are lazy:
they hold only source indices per *segment* (a chunk of one domain with its own
seed) and corrupt a segment's images when it is reached, caching only that one.
Everything is deterministic from ``seed``, so iterating twice gives the same data.

Scenarios (see :data:`SCENARIOS` and :func:`create_stream`):

* ``continual``   -- one domain per corruption at a fixed severity, in order.
* ``gradual``     -- per corruption, severity ramps up then down (1..5..1).
* ``recurring``   -- the continual domain sequence repeated ``cycles`` times;
  domains come back with the same ``domain_id``.
* ``returning``   -- domains the source model handles (clean first of all) alternating
  with severe corruptions: the environment returns to normal between hard spells.
* ``label-shift`` -- windows whose class proportions are drawn from a
  Dirichlet over the known classes (see ``Stream.class_proportions``).
* ``open-set``    -- known classes only up to ``start``, then a
  ``novel_fraction`` of samples from unseen classes (labelled 8 or 9).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.zoo.corruptions import corrupt, list_corruptions
from edgecl.zoo.data import KNOWN_CLASSES, NOVEL_CLASSES, NUM_CLASSES, Split, load_mnist

DEFAULT_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur",
    "zoom_blur", "contrast", "brightness", "fog", "pixelate",
    "jpeg", "elastic", "rotate", "shear", "stripe",
)  # fmt: skip
#: ``returning``'s default visits: ``"clean"`` and corruptions the zoo's source model
#: handles (jpeg, elastic) alternate with severe ones (fog, impulse noise, contrast,
#: gaussian noise); clean comes back three times.
RETURNING_DOMAINS: tuple[str, ...] = (
    "clean", "fog", "clean", "impulse_noise", "jpeg", "contrast", "clean", "gaussian_noise",
    "elastic",
)  # fmt: skip
MAX_SEVERITY = 5
_CHUNK = 1000  # at most this many samples are materialised at once


@dataclass(frozen=True)
class Domain:
    """One data distribution: ``"clean"`` or ``"<corruption>@<severity>"``."""

    name: str
    corruption: str | None = None
    severity: int = 0

    @classmethod
    def of(cls, corruption: str | None, severity: int = 0, suffix: str = "") -> Domain:
        """The domain of ``corruption`` at ``severity`` (clean when ``corruption`` is None)."""
        name = "clean" if corruption is None else f"{corruption}@{severity}"
        return cls(name + suffix, corruption, severity if corruption else 0)


@dataclass(frozen=True)
class _Segment:
    domain_id: int
    indices: np.ndarray  # into Stream.source
    seed: tuple[int, int, int]  # (stream seed, segment index, 1): seeds the corruption


class Stream:
    """A lazily materialised, deterministic stream of ``(image, label, domain_id)``.

    Attributes
    ----------
    scenario, domains, seed : the scenario name, the distinct domains (indexed by domain id)
        and the seed everything derives from.
    source : the :class:`Split` that :attr:`indices` point into.
    class_proportions : ``(windows, classes)`` drawn proportions (label-shift only).
    novel_classes : labels that are novel (open-set only); see :meth:`is_novel`.
    """

    def __init__(
        self,
        scenario: str,
        domains: Sequence[Domain],
        source: Split,
        runs: Sequence[tuple[int, np.ndarray]],
        seed: int,
        *,
        class_proportions: np.ndarray | None = None,
        novel_classes: tuple[int, ...] = (),
    ) -> None:
        self.scenario, self.domains, self.source, self.seed = scenario, tuple(domains), source, seed
        self.class_proportions = class_proportions
        self.novel_classes = tuple(novel_classes)
        self._segments: list[_Segment] = []
        for domain_id, idx in runs:
            for start in range(0, len(idx), _CHUNK):
                seg_seed = (seed, len(self._segments), 1)
                self._segments.append(_Segment(domain_id, idx[start : start + _CHUNK], seg_seed))
        self._cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return sum(len(s.indices) for s in self._segments)

    def __repr__(self) -> str:
        return f"Stream({self.scenario!r}, len={len(self)}, domains={len(self.domains)})"

    @property
    def boundaries(self) -> list[int]:
        """Sample indices at which the domain id changes."""
        ids = self.domain_ids
        return (np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist()

    @property
    def domain_ids(self) -> np.ndarray:
        """Domain id of every sample (cheap: no images are materialised)."""
        return np.concatenate([np.full(len(s.indices), s.domain_id) for s in self._segments])

    @property
    def indices(self) -> np.ndarray:
        """Index into :attr:`source` of every sample (cheap)."""
        return np.concatenate([s.indices for s in self._segments])

    def is_novel(self, labels: np.ndarray | int) -> np.ndarray:
        """Boolean mask of labels belonging to :attr:`novel_classes`."""
        return np.isin(labels, self.novel_classes)

    def _images(self, k: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        seg = self._segments[k]
        images = np.array(self.source.images[seg.indices], dtype=np.float32)
        domain = self.domains[seg.domain_id]
        if domain.corruption is not None:
            rng = np.random.default_rng(np.random.SeedSequence(seg.seed))
            images = corrupt(images, domain.corruption, domain.severity, rng=rng)
            images = np.asarray(images, dtype=np.float32)
        images.setflags(write=False)
        self._cache = (k, images)
        return images

    def _chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for k, seg in enumerate(self._segments):
            labels = np.asarray(self.source.labels[seg.indices], dtype=np.int64)
            yield self._images(k), labels, np.full(len(labels), seg.domain_id, dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, int]]:
        for images, labels, ids in self._chunks():
            for i in range(len(labels)):
                yield images[i].copy(), int(labels[i]), int(ids[i])

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(images (B,1,28,28), labels (B,), domain_ids (B,))``; the last may be short."""
        return self._batches(_positive("size", size))

    def _batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        buf: list[tuple[np.ndarray, ...]] = []
        held = 0
        for chunk in self._chunks():
            buf.append(chunk)
            held += len(chunk[1])
            while held >= size:
                cat = [np.concatenate(parts) for parts in zip(*buf)]
                yield tuple(a[:size] for a in cat)  # type: ignore[misc]
                buf, held = [tuple(a[size:] for a in cat)], held - size
        if held:
            yield tuple(np.concatenate(parts) for parts in zip(*buf))  # type: ignore[misc]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole stream materialised as ``(images, labels, domain_ids)``."""
        parts = list(self._chunks())
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


# -- validation and sampling helpers ------------------------------------------------------


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _severity(severity: object) -> int:
    ok = isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)
    if not ok or severity not in range(1, MAX_SEVERITY + 1):
        raise ConfigError(f"severity must be an integer in 1..{MAX_SEVERITY}, got {severity!r}")
    return int(severity)  # type: ignore[arg-type]


def _corruptions(names: Sequence[str] | str | None) -> tuple[str, ...]:
    names = DEFAULT_CORRUPTIONS if names is None else (names,) if isinstance(names, str) else names
    valid = list_corruptions()
    if not names or any(n not in valid for n in names):
        raise ConfigError(f"corruptions must be a non-empty list from {valid}, got {names!r}")
    return tuple(names)


def _optional_domain(corruption: str | None, severity: int, suffix: str = "") -> Domain:
    if corruption is None:
        if severity != 0:
            raise ConfigError(f"severity={severity!r} given without a corruption")
        return Domain.of(None, suffix=suffix)
    return Domain.of(_corruptions([corruption])[0], _severity(severity), suffix)


def _source(source: Split | None, classes: tuple[int, ...] = KNOWN_CLASSES) -> Split:
    source = load_mnist().test.only(classes) if source is None else source
    if not isinstance(source, Split) or len(source) == 0:
        raise ConfigError("source must be a non-empty edgecl.zoo.data.Split")
    return source


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices from ``pool``: without replacement while the pool lasts, then again."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    reps = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


class _DomainTable:
    """Assigns one id per distinct :class:`Domain`, so recurring domains keep their id."""

    def __init__(self) -> None:
        self.domains: list[Domain] = []

    def __call__(self, domain: Domain) -> int:
        if domain not in self.domains:
            self.domains.append(domain)
        return self.domains.index(domain)


def _schedule(
    scenario: str, plan: Sequence[tuple[Domain, int]], source: Split, seed: int
) -> Stream:
    """A stream visiting ``(domain, n_samples)`` in order, each run sampled from ``source``."""
    table, pool = _DomainTable(), np.arange(len(source))
    runs = [(table(d), _draw(_rng(seed, i, 0), pool, n)) for i, (d, n) in enumerate(plan)]
    return Stream(scenario, table.domains, source, runs, seed)


# -- scenarios -----------------------------------------------------------------------------


def continual_stream(
    corruptions: Sequence[str] | None = None,
    *,
    severity: int = 5,
    samples_per_domain: int = 500,
    source: Split | None = None,
    seed: int = 0,
    include_clean_first: bool = False,
) -> Stream:
    """One domain per corruption at fixed ``severity``, visited once in order.

    Parameters
    ----------
    corruptions : names from :func:`list_corruptions`; default :data:`DEFAULT_CORRUPTIONS`.
    include_clean_first : start with a clean domain of ``samples_per_domain`` samples.
    """
    n, sev = _positive("samples_per_domain", samples_per_domain), _severity(severity)
    plan = [(Domain.of(None), n)] if include_clean_first else []
    plan += [(Domain.of(c, sev), n) for c in _corruptions(corruptions)]
    return _schedule("continual", plan, _source(source), _seed(seed))


def gradual_stream(
    corruptions: Sequence[str] | None = None,
    *,
    severities: Sequence[int] = (1, 2, 3, 4, 5, 4, 3, 2, 1),
    samples_per_severity: int = 100,
    source: Split | None = None,
    seed: int = 0,
) -> Stream:
    """Per corruption, severity follows ``severities`` (ramp up then down); each
    ``(corruption, severity)`` pair is one domain, reused when the ramp comes back down."""
    n = _positive("samples_per_severity", samples_per_severity)
    sevs = [_severity(s) for s in severities]
    if not sevs:
        raise ConfigError("severities must be non-empty")
    plan = [(Domain.of(c, s), n) for c in _corruptions(corruptions) for s in sevs]
    return _schedule("gradual", plan, _source(source), _seed(seed))


def recurring_stream(
    corruptions: Sequence[str] | None = None,
    *,
    cycles: int = 3,
    severity: int = 5,
    samples_per_domain: int = 200,
    source: Split | None = None,
    seed: int = 0,
) -> Stream:
    """The continual domain sequence repeated ``cycles`` times; a returning domain keeps its id
    but gets freshly drawn samples."""
    n, sev = _positive("samples_per_domain", samples_per_domain), _severity(severity)
    once = [(Domain.of(c, sev), n) for c in _corruptions(corruptions)]
    return _schedule("recurring", once * _positive("cycles", cycles), _source(source), _seed(seed))


def returning_stream(
    domains: Sequence[str] | None = None,
    *,
    severity: int = 5,
    samples_per_domain: int = 800,
    source: Split | None = None,
    seed: int = 0,
) -> Stream:
    """Visit ``domains`` in order (default :data:`RETURNING_DOMAINS`), ``samples_per_domain``
    each; ``"clean"`` is the uncorrupted source distribution, any other name a corruption at
    ``severity``. A domain visited again keeps its id and gets freshly drawn samples."""
    n, sev = _positive("samples_per_domain", samples_per_domain), _severity(severity)
    names = tuple(RETURNING_DOMAINS if domains is None else domains)
    if not names:
        raise ConfigError("domains must be non-empty")
    corrupted = _corruptions([d for d in names if d != "clean"]) if any(
        d != "clean" for d in names) else ()
    it = iter(corrupted)
    plan = [(Domain.of(None) if d == "clean" else Domain.of(next(it), sev), n) for d in names]
    return _schedule("returning", plan, _source(source), _seed(seed))


def label_shift_stream(
    *,
    windows: int = 10,
    samples_per_window: int = 300,
    dirichlet_alpha: float = 0.3,
    corruption: str | None = None,
    severity: int = 0,
    source: Split | None = None,
    seed: int = 0,
) -> Stream:
    """Windows (domains ``"labelshift-w<i>"``) whose class proportions are drawn from
    ``Dirichlet(alpha)`` over the classes of ``source``; small alpha = strongly imbalanced.
    ``Stream.class_proportions[w, c]`` is the proportion of class ``c`` drawn for window ``w``."""
    w, n = _positive("windows", windows), _positive("samples_per_window", samples_per_window)
    seed = _seed(seed)
    if not isinstance(dirichlet_alpha, (int, float)) or not dirichlet_alpha > 0:
        raise ConfigError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha!r}")
    base, src = _optional_domain(corruption, severity), _source(source)
    classes = np.unique(src.labels)
    props = np.zeros((w, max(NUM_CLASSES, int(classes.max()) + 1)))
    domains, runs = [], []
    for i in range(w):
        rng = _rng(seed, i, 0)
        props[i, classes] = rng.dirichlet(np.full(len(classes), float(dirichlet_alpha)))
        counts = rng.multinomial(n, props[i, classes])
        idx = [_draw(rng, np.flatnonzero(src.labels == c), k) for c, k in zip(classes, counts)]
        domains.append(Domain(f"labelshift-w{i}", base.corruption, base.severity))
        runs.append((i, rng.permutation(np.concatenate(idx))))
    return Stream("label-shift", domains, src, runs, seed, class_proportions=props)


def open_set_stream(
    *,
    novel_fraction: float = 0.3,
    samples: int = 2000,
    start: float = 0.5,
    novel_classes: Sequence[int] = NOVEL_CLASSES,
    corruption: str | None = None,
    severity: int = 0,
    source: Split | None = None,
    novel_source: Split | None = None,
    seed: int = 0,
) -> Stream:
    """Known classes only for the first ``start`` fraction (domain 0), then exactly
    ``round(novel_fraction * rest)`` samples at random positions come from ``novel_classes``
    (domain 1, ``"<base>+novel"``); novel samples keep their true digit label."""
    n, seed, novel = _positive("samples", samples), _seed(seed), tuple(map(int, novel_classes))
    if not 0.0 <= novel_fraction <= 1.0 or not 0.0 <= start < 1.0 or not novel:
        raise ConfigError("need 0 <= novel_fraction <= 1, 0 <= start < 1 and some novel_classes")
    known, extra = _source(source), _source(novel_source, novel).only(novel)
    known = known.only(tuple(int(c) for c in np.setdiff1d(known.labels, novel)))
    if len(extra) == 0 or len(known) == 0:
        raise ConfigError(f"source has no known samples or novel_source none of {novel}")
    images = np.concatenate([known.images, extra.images])
    src = Split(images, np.concatenate([known.labels, extra.labels]))
    known_pool, novel_pool = np.arange(len(known)), np.arange(len(known), len(src))
    head = round(start * n)
    n_novel = round(novel_fraction * (n - head))
    rng = _rng(seed, 1, 0)
    tail = np.concatenate(
        [_draw(rng, novel_pool, n_novel), _draw(rng, known_pool, n - head - n_novel)]
    )
    domains = [
        _optional_domain(corruption, severity),
        _optional_domain(corruption, severity, "+novel"),
    ]
    runs = [(0, _draw(_rng(seed, 0, 0), known_pool, head)), (1, rng.permutation(tail))]
    return Stream(
        "open-set", domains, src, [r for r in runs if len(r[1])], seed, novel_classes=novel
    )


SCENARIOS: dict[str, Callable[..., Stream]] = {
    "continual": continual_stream,
    "gradual": gradual_stream,
    "recurring": recurring_stream,
    "returning": returning_stream,
    "label-shift": label_shift_stream,
    "open-set": open_set_stream,
}


def create_stream(scenario: str, **kwargs: object) -> Stream:
    """Build the stream of a named scenario; raises :class:`ConfigError` for an unknown name or
    bad arguments."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; valid: {sorted(SCENARIOS)}")
    factory = SCENARIOS[scenario]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for scenario {scenario!r}: {exc}") from exc
    return factory(**kwargs)
