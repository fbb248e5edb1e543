"""Cloud learning: through the device's encoder, validated before publishing, signed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecl import ConfigError, InvalidInput, UpdateRejected
from edgecl.cloud._learner import BaseState, LearnerConfig, UpdateLearner, teacher_weights
from edgecl.cloud._learning import LearningCoordinator, LearningPolicy
from edgecl.cloud._signing import UpdateSigner
from edgecl.cloud._validation import negative_flip_rate, validate_candidate
from edgecl.device import DeviceRuntime, UpdateManager, UpdateVerifier
from edgecl.device._updates import CanaryPolicy
from edgecl.zoo.data import CLASS_NAMES
from edgecl.zoo.streams import continual_stream

FAST = LearnerConfig(steps=60, batch_size=32, min_train=16, min_holdout=8)


class MemoryStore:
    """A plain in-memory UpdateStore (the service's registry implements the same)."""

    def __init__(self, inputs: np.ndarray) -> None:
        self.inputs = inputs
        self.updates: list = []
        self.rejections: list = []

    def recent_inputs(self, target, limit):
        return self.inputs[-limit:], 0

    def published(self, target):
        if not self.updates:
            return 0, {}, {}
        _, payload = self.updates[-1]
        return payload.version, payload.parts, payload.metrics

    def publish(self, target, update, payload):
        self.updates.append((update, payload))

    def record_rejection(self, target, version, reason, metrics):
        self.rejections.append((version, reason))


@pytest.fixture(scope="module")
def domain(tiny_zoo):
    x, y, _ = continual_stream(["contrast"], severity=5, samples_per_domain=400, seed=0).arrays()
    teacher = tiny_zoo.load_teacher()
    with torch.no_grad():
        probs = torch.softmax(teacher(torch.from_numpy(x)), 1).numpy()
    return x, y, probs


def _student_probs(probs, names):
    cols = [list(CLASS_NAMES).index(c) for c in names]
    p = probs[:, cols]
    return p / p.sum(axis=1, keepdims=True)


def test_teacher_weights_formula():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    np.testing.assert_allclose(teacher_weights(p, 0.8), [1.0, 0.0, 1.0 - h], atol=1e-6)


def test_validation_rule():
    t = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert negative_flip_rate(t, np.zeros(8, int), t) == pytest.approx(6 / 8)
    assert not validate_candidate(t, t, t).accepted  # no gain
    better = validate_candidate(np.zeros(8, int), t, t)
    assert better.accepted and better.metrics["candidate_agreement"] == 1.0
    flips = validate_candidate(np.array([0, 1, 0, 0, 0, 0, 0, 0]),
                               np.array([1, 0, 2, 3, 0, 1, 2, 3]), t, max_nfr=0.2)
    assert not flips.accepted and "flip" in flips.reason
    with pytest.raises(InvalidInput):
        negative_flip_rate(t, t[:3], t)


def test_learned_update_helps_the_device_and_the_mirror_matches_onnx(tiny_zoo, domain):
    x, y, probs = domain
    learner = UpdateLearner(tiny_zoo.student_bundle, FAST)
    base = BaseState.from_bundle(tiny_zoo.student_bundle)
    p = _student_probs(probs, learner.bundle.class_names)
    up = np.arange(0, 400, 4)  # a 25% upload
    result = learner.learn(x[up], p[up], base)
    assert set(result.parts) == {"prompt", "filter", "adapter.down", "adapter.up",
                                 "head.weight", "head.bias"}
    cand = base.with_parts(1, result.parts)
    rest = np.setdiff1d(np.arange(400), up)
    before = (learner.predict(x[rest], base) == y[rest]).mean()
    after = (learner.predict(x[rest], cand) == y[rest]).mean()
    assert after >= before + 0.10, (before, after)
    # what the device computes with these parts (onnxruntime + numpy) is what the cloud saw
    signer = UpdateSigner.generate()
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, ood=None)
    from edgecl.wire import UpdatePayload

    manager = UpdateManager(rt, UpdateVerifier(signer.public_key),
                            canary=CanaryPolicy(min_samples=10**9))
    manager.apply(signer.sign(UpdatePayload(1, 0, rt.bundle.encoder_sha256,
                                            parts=result.parts), fp16=False))
    agree = (rt.predict(x[rest]).labels == learner.predict(x[rest], cand)).mean()
    assert agree >= 0.99


def test_norm_part_is_estimated_shipped_and_applied_like_the_mirror(tiny_zoo, domain):
    x, _, probs = domain
    learner = UpdateLearner(tiny_zoo.student_bundle, FAST.replace(
        parts=("norm", "adapter", "head")))
    base = BaseState.from_bundle(tiny_zoo.student_bundle)
    p = _student_probs(probs, learner.bundle.class_names)
    up = np.arange(0, 400, 4)
    result = learner.learn(x[up], p[up], base)
    d = base.head_weight.shape[1]
    assert result.parts["norm.scale"].shape == (d,) and result.parts["norm.shift"].shape == (d,)
    # the norm maps the uploads' features to the bundle's source statistics
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, ood=None)
    feats = rt.encode(x[up]) * result.parts["norm.scale"] + result.parts["norm.shift"]
    np.testing.assert_allclose(feats.mean(0), rt.source_stats.mean, atol=0.05)
    signer = UpdateSigner.generate()
    from edgecl.wire import UpdatePayload

    manager = UpdateManager(rt, UpdateVerifier(signer.public_key),
                            canary=CanaryPolicy(min_samples=10**9))
    state = manager.apply(signer.sign(UpdatePayload(1, 0, rt.bundle.encoder_sha256,
                                                    parts=result.parts), fp16=False))
    assert state.feature_norm is not None
    cand = base.with_parts(1, result.parts)
    rest = np.setdiff1d(np.arange(400), up)
    assert (rt.predict(x[rest]).labels == learner.predict(x[rest], cand)).mean() >= 0.99
    half = {"norm.scale": result.parts["norm.scale"]}
    with pytest.raises(UpdateRejected, match="together"):
        manager.apply(signer.sign(UpdatePayload(2, 1, rt.bundle.encoder_sha256, parts=half)))


def test_learning_refuses_bad_input_and_too_little_data(tiny_zoo, domain):
    x, _, probs = domain
    learner = UpdateLearner(tiny_zoo.student_bundle, FAST)
    base = BaseState.from_bundle(tiny_zoo.student_bundle)
    p = _student_probs(probs, learner.bundle.class_names)
    with pytest.raises(InvalidInput):
        learner.learn(x[:10, :, :5], p[:10], base)
    with pytest.raises(InvalidInput):
        learner.learn(x[:10], p[:9], base)
    bad = x[:40].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInput):
        learner.learn(bad, p[:40], base)
    few = learner.learn(x[:12], p[:12], base)
    assert not few.publish and "too few" in few.verdict.reason
    with pytest.raises(ConfigError):
        LearnerConfig(parts=("prompt", "bogus"))
    with pytest.raises(ConfigError):
        LearnerConfig(filter_size=4)


def test_coordinator_learns_publishes_signed_updates_and_records_rejections(tiny_zoo, domain):
    x, _, _ = domain
    teacher = tiny_zoo.load_teacher()

    def teacher_fn(inputs):
        with torch.no_grad():
            return torch.softmax(teacher(torch.from_numpy(inputs)), 1).numpy()

    store = MemoryStore(x[:160])
    signer = UpdateSigner.generate()
    coord = LearningCoordinator(tiny_zoo.student_bundle, teacher_fn, CLASS_NAMES, signer,
                                store, config=FAST,
                                policy=LearningPolicy(trigger_samples=50, window=160))
    coord.notify("dev-1", 49)
    assert coord.wait_idle(60) and coord.counts["jobs"] == 0  # below the trigger
    coord.notify("dev-1", 1)
    assert coord.wait_idle(120)
    assert coord.counts["jobs"] == 1 and coord.counts["failed"] == 0
    assert coord.counts["published"] + coord.counts["rejected"] == 1
    if store.updates:
        update, payload = store.updates[-1]
        verified = UpdateVerifier(signer.public_key).verify(update)
        assert verified.version == 1 and verified.encoder_sha256 == payload.encoder_sha256
        assert "candidate_agreement" in verified.metrics
    else:
        assert store.rejections[-1][1]
    with pytest.raises(ConfigError, match="classes"):
        LearningCoordinator(tiny_zoo.student_bundle, teacher_fn, ["a", "b"], signer, store)
    coord.close()


def _teacher_fn(zoo):
    teacher = zoo.load_teacher()

    def fn(inputs):
        with torch.no_grad():
            return torch.softmax(teacher(torch.from_numpy(inputs)), 1).numpy()
    return fn


def test_coordinator_learns_from_the_newest_domain_only(tiny_zoo):
    old, _, _ = continual_stream(["gaussian_noise"], severity=5, samples_per_domain=120,
                                 seed=3).arrays()
    new, _, _ = continual_stream(["fog"], severity=5, samples_per_domain=80, seed=4).arrays()
    store = MemoryStore(np.concatenate([old, new]))
    signer = UpdateSigner.generate()
    seen = []
    coord = LearningCoordinator(tiny_zoo.student_bundle, _teacher_fn(tiny_zoo), CLASS_NAMES,
                                signer, store, config=FAST, policy=LearningPolicy(window=256),
                                on_result=lambda t, r: seen.append(r))
    result = coord.run_once("dev-1")
    assert result is not None and seen == [result]
    assert abs(result.metrics["window_start"] - 120) <= 3
    assert abs(result.metrics["window_samples"] - 80) <= 3
    whole = LearningCoordinator(tiny_zoo.student_bundle, _teacher_fn(tiny_zoo), CLASS_NAMES,
                                signer, store, config=FAST,
                                policy=LearningPolicy(window=256, segments=False))
    assert whole.run_once("dev-1").metrics["window_samples"] == 200
    coord.close()
    whole.close()


def test_warm_start_continues_from_the_newest_candidate_and_validates_against_the_device(
        tiny_zoo, domain):
    x, _, _ = domain
    store = MemoryStore(x[:120])
    coord = LearningCoordinator(tiny_zoo.student_bundle, _teacher_fn(tiny_zoo), CLASS_NAMES,
                                UpdateSigner.generate(), store, config=FAST,
                                policy=LearningPolicy(window=256))
    calls = []
    learn = coord.learner.learn

    def spy(inputs, probs, base, **kwargs):
        calls.append((base, kwargs["start"][0]))  # the warm start comes first
        assert kwargs["source"].version == 0 and kwargs["source"].prompt is None
        return learn(inputs, probs, base, **kwargs)

    coord.learner.learn = spy  # the real learner runs; only its arguments are recorded
    first = coord.run_once("dev-1")
    store.inputs = x[:240]
    second = coord.run_once("dev-1")
    (base1, start1), (base2, start2) = calls
    assert base1.version == start1.version == 0 and base1.prompt is None
    # the second job starts from the first candidate, published or not
    assert np.array_equal(start2.head_weight, first.parts["head.weight"])
    if first.publish:  # ...and is validated against what the device now runs
        assert base2.version == 1
        assert np.array_equal(base2.head_weight, first.parts["head.weight"])
    else:
        assert base2.version == 0 and base2.prompt is None
    assert second.metrics["window_samples"] == 240
    coord.close()


def test_holdout_comes_from_the_random_draws_first():
    from edgecl.cloud._learner import _split

    rng = np.random.default_rng(0)
    audit = np.zeros(100, bool)
    audit[::4] = True  # 25 random draws
    hold, train = _split(rng, 100, 20, audit)
    assert audit[hold].all() and len(hold) == 20
    assert sorted(np.concatenate([hold, train]).tolist()) == list(range(100))
    hold, train = _split(rng, 100, 40, audit)  # fewer draws than needed: topped up
    assert audit[hold].sum() == 25 and len(hold) == 40 and not audit[train].any()
    hold, _ = _split(rng, 100, 20, None)
    assert audit[hold].sum() < 20  # without the mask: a random share of all
    with pytest.raises(InvalidInput, match="audit"):
        _split(rng, 100, 20, np.ones(99, bool))


def test_a_new_domain_too_short_to_learn_from_lowers_the_trigger(tiny_zoo):
    old, _, _ = continual_stream(["gaussian_noise"], severity=5, samples_per_domain=120,
                                 seed=3).arrays()
    new, _, _ = continual_stream(["contrast"], severity=5, samples_per_domain=40,
                                 seed=4).arrays()
    store = MemoryStore(np.concatenate([old, new[:14]]))
    coord = LearningCoordinator(tiny_zoo.student_bundle, _teacher_fn(tiny_zoo), CLASS_NAMES,
                                UpdateSigner.generate(), store, config=FAST,
                                policy=LearningPolicy(trigger_samples=50, window=256))
    result = coord.run_once("dev-1")
    assert not result.parts and "too few" in result.verdict.reason
    assert abs(result.metrics["window_start"] - 120) <= 3
    missing = coord._short["dev-1"]
    assert 0 < missing < 50
    coord.notify("dev-1", missing - 1)
    assert coord.wait_idle(60) and coord.counts["jobs"] == 0
    store.inputs = np.concatenate([old, new])
    coord.notify("dev-1", 1)  # enough of the new domain by now: learn without waiting for 50
    assert coord.wait_idle(120) and coord.counts["jobs"] == 1
    assert "dev-1" not in coord._short
    coord.close()


def test_uncertainty_picks_weigh_selected_weight_relative_to_the_random_draws(tiny_zoo,
                                                                                domain):
    x, _, probs = domain
    x = x[:80]
    learner = UpdateLearner(tiny_zoo.student_bundle, FAST)
    base = BaseState.from_bundle(tiny_zoo.student_bundle)
    p = _student_probs(probs, learner.bundle.class_names)[:80]
    explored = np.zeros(80, bool)
    explored[::2] = True

    def parts(weight, mask):
        cfg = LearnerConfig(steps=20, batch_size=32, min_train=16, min_holdout=8,
                            selected_weight=weight)
        return learner.learn(x, p, base, explored=mask, config=cfg)

    plain = parts(2.0, None).parts
    neutral = parts(1.0, explored).parts  # weight 1: the mark changes nothing
    assert all(np.array_equal(plain[k], neutral[k]) for k in plain)
    doubled = parts(2.0, explored).parts
    assert any(not np.allclose(plain[k], doubled[k]) for k in plain)
    # weight 0: only the random draws train; too few of them here
    only_random = parts(0.0, np.arange(80) < 10)
    assert not only_random.publish and "too few" in only_random.verdict.reason
    with pytest.raises(InvalidInput, match="explored"):
        parts(2.0, np.ones(79, bool))
    with pytest.raises(ConfigError):
        LearnerConfig(selected_weight=-1.0)


def test_prior_correction_gives_training_the_class_mix_of_the_random_draws():
    from edgecl.cloud._learner import _prior_weights

    labels = np.array([0] * 60 + [1] * 20 + [2] * 20)  # the picks favour class 0
    drawn = np.zeros(100, bool)
    drawn[[0, 1, 60, 61, 80, 81]] = True  # the random draws: an even mix
    w = _prior_weights(labels, drawn, 3)
    share = np.array([w[labels == c].sum() for c in range(3)]) / w.sum()
    assert share[0] < 0.45 and abs(share[1] - share[2]) < 1e-9  # was 0.6
    assert np.all((w >= 0.25) & (w <= 4.0))
    assert np.allclose(_prior_weights(labels, np.ones(100, bool), 3), 1.0)  # all random


def test_a_candidate_must_beat_the_source_too_and_win_a_sign_test():
    t = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    source = t.copy()
    current = np.zeros(8, int)  # a bad update on this domain
    worse_than_source = np.array([0, 1, 2, 3, 0, 1, 0, 0])  # beats current, not source
    v = validate_candidate(current, worse_than_source, t, source=source)
    assert not v.accepted and v.revert and "source" in v.reason
    assert v.metrics["source_agreement"] == 1.0
    # one win more than the source on 8 samples is a coin flip: not enough with z = 1
    src = np.array([0, 1, 2, 3, 0, 1, 2, 0])
    one_better = t.copy()
    v = validate_candidate(np.zeros(8, int), one_better, t, source=src, source_z=1.0)
    assert not v.accepted and "not clearly better than source" in v.reason
    assert validate_candidate(np.zeros(8, int), one_better, t, source=src).accepted  # z = 0
    # a clear gain over a poor source passes
    poor = np.array([0, 0, 0, 0, 0, 0, 0, 3])
    v = validate_candidate(poor, t, t, source=poor, source_z=1.0)
    assert v.accepted and not v.revert
    # negative flips count against the source as well as against the current state
    flips_source = np.array([1, 1, 2, 3, 0, 1, 2, 3])  # fixes nothing the source missed
    v = validate_candidate(np.full(8, 9), flips_source, t, source=np.array(
        [0, 0, 0, 0, 0, 0, 2, 3]), max_nfr=0.05)
    assert not v.accepted and "against source" in v.reason


def test_stable_holdout_keeps_every_upload_on_its_side_as_the_window_grows():
    from edgecl.cloud._learner import _content_keys, _stable_split

    x = np.random.default_rng(0).random((400, 1, 4, 4)).astype(np.float32)
    seen_train: set[bytes] = set()
    for n in (10, 24, 40, 80, 120, 200, 400):
        hold, train = _stable_split(_content_keys(x[:n]), 0.25, 8)
        assert len(hold) >= min(8, n) and sorted([*hold, *train]) == list(range(n))
        hold_b = {x[i].tobytes() for i in hold}
        assert not hold_b & seen_train  # an upload trained on is never held out later
        seen_train |= {x[i].tobytes() for i in train}
    assert 0.18 < len(hold) / 400 < 0.32  # about the fraction once the window is large
    # the same content gets the same key wherever it sits in the window
    keys = _content_keys(x[:50])
    assert np.array_equal(_content_keys(x[:50][::-1]), keys[::-1])
    assert ((keys >= 0) & (keys < 1)).all()


def test_the_service_reverts_a_device_whose_update_is_worse_than_source(tiny_zoo, domain):
    """A published update that breaks clean inputs: the next job on clean uploads finds
    the source better than what the device runs and publishes the bundle's state."""
    from edgecl.wire import REVERT_METRIC

    clean, _, _ = continual_stream(["gaussian_noise"], severity=1, samples_per_domain=160,
                                   seed=5).arrays()
    store = MemoryStore(clean)
    bundle = BaseState.from_bundle(tiny_zoo.student_bundle)
    signer = UpdateSigner.generate()
    coord = LearningCoordinator(tiny_zoo.student_bundle, _teacher_fn(tiny_zoo), CLASS_NAMES,
                                signer, store, config=FAST.replace(steps=5),
                                policy=LearningPolicy(window=256, segments=False))
    from edgecl.wire import UpdatePayload

    broken = np.roll(bundle.head_weight, 1, axis=0)  # every class predicted as the next
    payload = UpdatePayload(version=1, base_version=0,
                            encoder_sha256=coord.learner.bundle.encoder_sha256,
                            parts={"head.weight": broken, "head.bias": bundle.head_bias},
                            metrics={"segment": 0.0}, device_id="dev-1")
    store.publish("dev-1", signer.sign(payload), payload)
    result = coord.run_once("dev-1")
    assert not result.publish and result.verdict.revert
    assert result.metrics["source_agreement"] > result.metrics["current_agreement"] + 0.5
    _, last = store.updates[-1]
    assert last.version == 2 and last.metrics[REVERT_METRIC] == 1.0
    assert np.array_equal(last.parts["head.weight"], bundle.head_weight)
    assert set(last.parts) == {"head.weight", "head.bias"}
    assert coord.counts["reverted"] == 1 and "reverted to source" in store.rejections[-1][1]
    # the device applies it on top of its bundle: it serves the bundle's predictions again
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, ood=None)
    reference = rt.predict(clean).labels
    manager = UpdateManager(rt, UpdateVerifier(signer.public_key),
                            canary=CanaryPolicy(max_disagreement=1.0))
    for update, _ in store.updates:
        assert manager(update)
    assert np.array_equal(rt.predict(clean).labels, reference)
    assert rt.state.metadata["serving_cloud"] is False
    coord.close()


def test_a_stored_domain_not_yet_confirmed_is_tried_again_after_a_few_uploads(tiny_zoo, domain,
                                                                             tmp_path):
    """Fleet memory: a match that a young domain's few uploads cannot confirm (here a
    stored update that is wrong on them) makes the next job due after
    ``RECALL_RETRY_UPLOADS`` new ones, not after the usual trigger; without a match the
    trigger is what the learner still needs."""
    from edgecl.cloud._learning import RECALL_RETRY_UPLOADS
    from edgecl.cloud._library import DomainLibrary, DomainSignature

    x, _, _ = domain
    store = MemoryStore(x[:12])
    bundle = BaseState.from_bundle(tiny_zoo.student_bundle)
    library = DomainLibrary(tmp_path / "library.db", encoders=[bundle_sha(tiny_zoo)])
    policy = LearningPolicy(window=256, trigger_samples=24)
    coords = {memory: LearningCoordinator(
        tiny_zoo.student_bundle, _teacher_fn(tiny_zoo), CLASS_NAMES, UpdateSigner.generate(),
        store, config=FAST, policy=policy, library=library if memory else None)
        for memory in (True, False)}
    feats = coords[True].learner.encoder_features(x[:12])
    wrong = {"head.weight": -bundle.head_weight, "head.bias": -bundle.head_bias}
    library.store("fleet", bundle_sha(tiny_zoo), "other-device", DomainSignature.of(feats),
                  wrong, {})
    try:
        for memory, coord in coords.items():
            coord.run_once("dev-1")
            assert coord.counts["recalled"] == 0 and not store.updates  # never served
            coord.notify("dev-1", RECALL_RETRY_UPLOADS - 1)
            assert coord.counts["jobs"] == 0
            coord.notify("dev-1", 1)
            assert coord.counts["jobs"] == (1 if memory else 0), memory
            assert coord.wait_idle(120)
        assert coords[True].counts["recalled"] == 0 and not store.updates
    finally:
        for coord in coords.values():
            coord.close()
        library.close()


def bundle_sha(tiny_zoo) -> str:
    from edgecl.bundle import load_bundle

    return load_bundle(tiny_zoo.student_bundle).encoder_sha256
