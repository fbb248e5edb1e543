"""SampleCollector: predictions -> drift detector + sampling policy -> durable outbox."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.device import DeviceRuntime, Outbox, SampleCollector, create_policy
from edgecl.ood import InputDriftMonitor, KSWindowDetector
from edgecl.zoo import KNOWN_CLASSES, corrupt, load_mnist


def _feed_one_batch_at_a_time(collector, rt, stream, size):
    """Offer ``stream`` in batches of ``size``, each processed before the next, so a
    detected shift lands where it happened; then close the collector."""
    for start in range(0, len(stream), size):
        frames = stream[start:start + size]
        assert collector.offer(frames, rt.predict(frames, return_features=True))
        collector.flush()
    collector.close()


def _stream_rows(stream, items):
    """Position in ``stream`` of each leased outbox item's image."""
    return np.array([int(np.flatnonzero((stream == it.arrays["image"]).all(axis=(1, 2, 3)))[0])
                     for it in items])


def test_collector_selects_within_budget_and_detects_the_shift(tiny_zoo, tmp_path):
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    test = load_mnist().test.only(KNOWN_CLASSES)
    clean = test.images[:480]
    shifted = corrupt(test.images[:480], "gaussian_noise", 5, 0)
    stream = np.concatenate([clean, shifted])
    outbox = Outbox(tmp_path / "outbox.db", store=("image", "features"))
    collector = SampleCollector(outbox, create_policy("uncertainty", fraction=0.05,
                                                      ood_warmup=256),
                                drift=KSWindowDetector(), device_id="dev1")
    for start in range(0, len(stream), 16):
        frames = stream[start:start + 16]
        assert collector.offer(frames, rt.predict(frames, return_features=True))
    collector.flush()
    collector.close()
    outbox.flush()
    stats = collector.stats()
    assert stats.processed == len(stream) // 16 and stats.skipped == 0
    assert 1 <= stats.selected <= 0.05 * len(stream) + 4
    assert outbox.stats().count == stats.stored == stats.selected
    items = outbox.lease(1000)
    for item in items:
        assert item.sample_id.startswith("dev1-")
        row = int(np.flatnonzero((stream == item.arrays["image"]).all(axis=(1, 2, 3)))[0])
        pred = rt.predict(stream[row], return_features=True)
        np.testing.assert_allclose(item.arrays["features"], pred.features[0], atol=1e-5)
        assert item.meta["label"] == int(pred.labels[0])
    # the clean part raises no alarm; the noise is detected within a few windows
    assert collector.shifts, "gaussian noise at severity 5 must be detected"
    first = collector.shifts[0].index
    assert 480 <= first <= 480 + 128
    # the budget is spread over time (a fraction of recent samples), and within each phase
    # the policy sends the most uncertain samples, not a random few
    rows = np.array([int(np.flatnonzero((stream == it.arrays["image"]).all(axis=(1, 2, 3)))[0])
                     for it in items])
    assert (rows >= 480).sum() >= 5 and (rows < 480).sum() >= 5
    scores = rt.predict(clean).ood_score
    picked = rows[rows < 480]
    assert np.median(scores[picked]) > np.quantile(scores, 0.75)
    outbox.close()


def test_collector_requires_features_when_storing_them(tiny_zoo, tmp_path):
    rt = DeviceRuntime.open(tiny_zoo.student_bundle)
    with Outbox(tmp_path / "o.db") as outbox:
        collector = SampleCollector(outbox, create_policy("random", fraction=0.5))
        frames = load_mnist().test.images[:4]
        with pytest.raises(ConfigError, match="return_features"):
            collector.offer(frames, rt.predict(frames))
        collector.close()
    with pytest.raises(ConfigError, match="store"):
        SampleCollector(outbox, create_policy("random"), store=("logits",))


def test_collector_spends_the_reserve_after_an_input_shift(tiny_zoo, tmp_path):
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    train = load_mnist().train.only(KNOWN_CLASSES)
    images = train.images[np.random.default_rng(0).permutation(len(train.images))[:2400]]
    stream = np.concatenate([images[:2000], corrupt(images[2000:], "contrast", 5, 0)])
    outbox = Outbox(tmp_path / "outbox.db", store=("image",))
    policy = create_policy("uncertainty", fraction=0.05, burst=64.0, fill_gain=0.0,
                           reserve=0.5, shift_fraction=0.5, shift_span=100, num_classes=8,
                           w_ood=0.0, memory=0)
    collector = SampleCollector(outbox, policy, input_drift=InputDriftMonitor(),
                                store=("image",), device_id="dev1")
    _feed_one_batch_at_a_time(collector, rt, stream, 16)
    outbox.flush()
    assert [s.detector.startswith("input:") for s in collector.shifts] == [True]
    at = collector.shifts[0].index
    assert 2000 <= at < 2100
    rows = _stream_rows(stream, outbox.lease(1000))
    stable = ((rows >= 500) & (rows < 2000)).sum() / 1500
    after = ((rows > at) & (rows <= at + 116)).sum() / 116
    assert stable < 0.035 and after > 0.3, (stable, after)  # half held back, then spent
    assert len(rows) <= 0.05 * len(stream) + 64
    outbox.close()


def test_a_shift_starts_a_new_segment_and_calls_back_before_selecting(tiny_zoo, tmp_path):
    """Samples carry the segment they were seen in, and ``on_shift`` (an update manager's
    revert in an app) runs at the shift: a bad callback does not stop sampling."""
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    train = load_mnist().train.only(KNOWN_CLASSES)
    images = train.images[:900]
    stream = np.concatenate([images[:600], corrupt(images[600:], "fog", 5, 0)])
    outbox = Outbox(tmp_path / "outbox.db", store=("image",))
    calls: list[tuple[str, int]] = []

    def on_shift(reason: str, segment: int) -> None:
        calls.append((reason, segment))
        raise RuntimeError("an app bug")

    collector = SampleCollector(outbox, create_policy("random", fraction=0.2, seed=0),
                                input_drift=InputDriftMonitor(), store=("image",),
                                device_id="dev1", on_shift=on_shift)
    _feed_one_batch_at_a_time(collector, rt, stream, 20)
    outbox.flush()
    assert len(collector.shifts) == 1 and collector.segment == 1
    assert len(calls) == 1 and calls[0][0].startswith("domain shift (input:")
    assert calls[0][1] == 1
    at = collector.shifts[0].index
    items = outbox.lease(1000)
    rows = _stream_rows(stream, items)
    segments = np.array([int(it.meta["segment"]) for it in items])
    batch_end = (at // 20 + 1) * 20  # the shift's batch is sampled in the new segment
    assert (segments[rows < (at // 20) * 20] == 0).all()
    assert (segments[rows >= batch_end] == 1).all() and (rows >= batch_end).sum() > 20
    outbox.close()
