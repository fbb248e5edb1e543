"""Drifting streams: shapes, laziness/determinism, and each scenario's drift pattern."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl._exceptions import ConfigError
from edgecl.zoo.data import KNOWN_CLASSES, NOVEL_CLASSES, load_mnist
from edgecl.zoo.streams import (
    DEFAULT_CORRUPTIONS,
    SCENARIOS,
    Domain,
    Stream,
    continual_stream,
    create_stream,
    gradual_stream,
    label_shift_stream,
    open_set_stream,
    recurring_stream,
)

CHEAP = ["gaussian_noise", "contrast", "inverse"]
SMALL = {
    "continual": dict(corruptions=CHEAP, samples_per_domain=20, include_clean_first=True),
    "gradual": dict(corruptions=CHEAP[:2], severities=(1, 3, 5, 3, 1), samples_per_severity=6),
    "recurring": dict(corruptions=CHEAP[:2], cycles=3, samples_per_domain=10),
    "label-shift": dict(windows=4, samples_per_window=25, corruption="contrast", severity=2),
    "open-set": dict(samples=90, novel_fraction=0.4, start=0.3),
}
EXPECTED_LEN = {"continual": 80, "gradual": 60, "recurring": 60, "label-shift": 100, "open-set": 90}


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def _hist(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=10) / len(labels)


@pytest.fixture(scope="module", params=sorted(SMALL))
def stream(request: pytest.FixtureRequest) -> Stream:
    return create_stream(request.param, **SMALL[request.param])


def test_registry_has_all_scenarios() -> None:
    assert set(SCENARIOS) == {"continual", "gradual", "recurring", "returning", "label-shift",
                              "open-set"}
    assert len(DEFAULT_CORRUPTIONS) == 15 and len(set(DEFAULT_CORRUPTIONS)) == 15


def test_length_shapes_dtypes_and_domain_ids(stream: Stream) -> None:
    assert len(stream) == EXPECTED_LEN[stream.scenario]
    images, labels, ids = stream.arrays()
    assert images.shape == (len(stream), 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == ids.shape == (len(stream),)
    assert labels.dtype == ids.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert ids.min() >= 0 and ids.max() < len(stream.domains)
    assert all(isinstance(d, Domain) for d in stream.domains)
    np.testing.assert_array_equal(ids, stream.domain_ids)
    image, label, domain_id = next(iter(stream))
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert type(label) is int and type(domain_id) is int


def test_arrays_equal_iteration_and_batches(stream: Stream) -> None:
    images, labels, ids = stream.arrays()
    samples = list(stream)
    np.testing.assert_array_equal(np.stack([s[0] for s in samples]), images)
    np.testing.assert_array_equal([s[1] for s in samples], labels)
    np.testing.assert_array_equal([s[2] for s in samples], ids)
    batches = list(stream.batches(7))
    assert [len(b[1]) for b in batches[:-1]] == [7] * (len(batches) - 1)
    assert 1 <= len(batches[-1][1]) <= 7
    for got, want in zip((np.concatenate(p) for p in zip(*batches)), (images, labels, ids)):
        np.testing.assert_array_equal(got, want)


def test_boundaries_are_where_domain_ids_change(stream: Stream) -> None:
    ids = stream.domain_ids
    assert stream.boundaries == [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]


@pytest.mark.parametrize("scenario", sorted(SMALL))
def test_deterministic_from_seed(scenario: str) -> None:
    a = create_stream(scenario, seed=3, **SMALL[scenario]).arrays()
    b = create_stream(scenario, seed=3, **SMALL[scenario]).arrays()
    c = create_stream(scenario, seed=4, **SMALL[scenario]).arrays()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_same_object_twice_and_chunked_segments_are_consistent() -> None:
    s = label_shift_stream(windows=2, samples_per_window=2300, dirichlet_alpha=50.0, seed=1)
    first = s.arrays()
    second = list(s.batches(999))
    np.testing.assert_array_equal(first[0], np.concatenate([b[0] for b in second]))
    assert s.boundaries == [2300]  # chunking a window into segments adds no boundary


def test_continual_boundaries_and_corruption() -> None:
    s = continual_stream(CHEAP, samples_per_domain=15, include_clean_first=True, seed=2)
    assert s.boundaries == [15, 30, 45]
    assert [d.name for d in s.domains] == ["clean", *(f"{c}@5" for c in CHEAP)]
    images, labels, ids = s.arrays()
    np.testing.assert_array_equal(ids, np.repeat(np.arange(4), 15))
    clean = s.source.images[s.indices]
    np.testing.assert_array_equal(labels, s.source.labels[s.indices])
    np.testing.assert_array_equal(images[:15], clean[:15])
    for k in range(1, 4):
        part = slice(15 * k, 15 * (k + 1))
        diff = np.abs(images[part] - clean[part]).reshape(15, -1).max(axis=1)
        assert (diff > 0.05).all(), s.domains[k].name


def test_continual_default_corruptions() -> None:
    s = continual_stream(samples_per_domain=2)
    assert [d.corruption for d in s.domains] == list(DEFAULT_CORRUPTIONS)
    assert len(s) == 30 and len(s.boundaries) == 14


def test_gradual_severity_ramps_up_then_down() -> None:
    sevs = (1, 2, 3, 4, 5, 4, 3, 2, 1)
    s = gradual_stream(CHEAP[:2], samples_per_severity=2)
    per_sample = [s.domains[i] for i in s.domain_ids[::2]]
    assert [d.corruption for d in per_sample] == [CHEAP[0]] * 9 + [CHEAP[1]] * 9
    assert [d.severity for d in per_sample] == list(sevs) * 2
    assert len(s.domains) == 10  # each (corruption, severity) pair is one domain


def test_recurring_domains_come_back_with_same_id() -> None:
    s = recurring_stream(CHEAP, cycles=3, samples_per_domain=4)
    ids = s.domain_ids
    assert len(s.domains) == 3
    np.testing.assert_array_equal(ids, np.tile(np.repeat(np.arange(3), 4), 3))
    assert len(s.boundaries) == 8
    idx = s.indices.reshape(3, 12)
    assert not np.array_equal(idx[0], idx[1])  # fresh samples on each visit


def test_label_shift_windows_are_imbalanced() -> None:
    s = label_shift_stream(windows=6, samples_per_window=300, dirichlet_alpha=0.3)
    labels = s.source.labels[s.indices].reshape(6, 300)
    hists = [_hist(w) for w in labels]
    assert max(_tv(p, q) for p in hists for q in hists) > 0.3
    assert set(np.unique(labels)) <= set(KNOWN_CLASSES)
    assert s.class_proportions is not None and s.class_proportions.shape == (6, 10)
    np.testing.assert_allclose(s.class_proportions.sum(axis=1), 1.0)
    for h, p in zip(hists, s.class_proportions):
        assert _tv(h, p) < 0.15
    assert [d.name for d in s.domains] == [f"labelshift-w{i}" for i in range(6)]
    assert s.boundaries == [300 * i for i in range(1, 6)]


def test_label_shift_large_alpha_is_near_uniform() -> None:
    s = label_shift_stream(windows=4, samples_per_window=300, dirichlet_alpha=1000.0)
    uniform = np.zeros(10)
    uniform[list(KNOWN_CLASSES)] = 1 / len(KNOWN_CLASSES)
    for w in s.source.labels[s.indices].reshape(4, 300):
        assert _tv(_hist(w), uniform) < 0.12


def test_open_set_novel_only_after_start() -> None:
    s = open_set_stream(samples=1000, novel_fraction=0.3, start=0.4, seed=5)
    labels = s.source.labels[s.indices]
    novel = s.is_novel(labels)
    assert s.novel_classes == NOVEL_CLASSES
    assert not novel[:400].any()
    assert abs(novel[400:].mean() - 0.3) <= 0.08
    assert set(np.unique(labels[novel])) == set(NOVEL_CLASSES)
    assert s.boundaries == [400]
    assert [d.name for d in s.domains] == ["clean", "clean+novel"]
    pool = load_mnist().test.only(NOVEL_CLASSES)  # novel images are real held-out digits
    flat = pool.images.reshape(len(pool), -1)
    for image in s.arrays()[0][novel][:20]:
        assert (np.abs(flat - image.reshape(-1)).max(axis=1) == 0).any()


@pytest.mark.parametrize(
    ("scenario", "kwargs"),
    [
        ("continual", dict(samples_per_domain=0)),
        ("continual", dict(samples_per_domain=2.5)),
        ("continual", dict(corruptions=["not_a_corruption"])),
        ("continual", dict(corruptions=[])),
        ("continual", dict(severity=6)),
        ("continual", dict(seed=-1)),
        ("continual", dict(no_such_arg=1)),
        ("gradual", dict(severities=(1, 0))),
        ("recurring", dict(cycles=0)),
        ("label-shift", dict(windows=0)),
        ("label-shift", dict(dirichlet_alpha=0.0)),
        ("label-shift", dict(corruption="fog", severity=0)),
        ("label-shift", dict(severity=3)),
        ("open-set", dict(novel_fraction=1.5)),
        ("open-set", dict(start=1.0)),
        ("open-set", dict(samples=-3)),
    ],
)
def test_bad_arguments_raise_config_error(scenario: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        create_stream(scenario, **kwargs)


def test_unknown_scenario_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="label-shift") as info:
        create_stream("nope")
    assert all(name in str(info.value) for name in SCENARIOS)
    assert isinstance(info.value, ValueError)


def test_bad_batch_size() -> None:
    s = continual_stream(CHEAP[:1], samples_per_domain=3)
    with pytest.raises(ConfigError):
        s.batches(0)


def test_returning_stream_alternates_and_reuses_the_clean_domain() -> None:
    from edgecl.zoo.streams import returning_stream

    s = returning_stream(["clean", "fog", "clean", "jpeg"], samples_per_domain=30, seed=1)
    assert [d.name for d in s.domains] == ["clean", "fog@5", "jpeg@5"]
    assert s.domain_ids.tolist() == [0] * 30 + [1] * 30 + [0] * 30 + [2] * 30
    images, _, _ = s.arrays()
    # the second clean visit is fresh draws, uncorrupted
    assert not np.array_equal(images[:30], images[60:90])
    assert s.boundaries == [30, 60, 90]
    with pytest.raises(ConfigError):
        returning_stream([], samples_per_domain=10)
    with pytest.raises(ConfigError):
        returning_stream(["clean", "no-such"], samples_per_domain=10)
