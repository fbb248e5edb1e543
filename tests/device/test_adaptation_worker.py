"""AdaptationWorker: adapts beside predict, publishes states by compare-and-swap, rolls
back, persists and restores; feature norms never hide a shift from the OOD detector."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.cloud._signing import UpdateSigner
from edgecl.device import AdaptationWorker, DeviceRuntime, StateConflict
from edgecl.device._adaptation import STATE_FILE
from edgecl.device._updates import CanaryPolicy, UpdateManager
from edgecl.device._verify import UpdateVerifier
from edgecl.heads import FeatureNorm, LinearHead
from edgecl.wire import UpdatePayload


@pytest.fixture(scope="module")
def shifted(tiny_zoo):
    """Images of one strongly corrupted domain and their labels."""
    from edgecl.zoo.streams import continual_stream

    x, y, _ = continual_stream(["gaussian_noise"], samples_per_domain=600, seed=3).arrays()
    return x, y


@pytest.fixture()
def rt(tiny_zoo):
    return DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)


def _feed(worker, x, batch=8):
    preds = [worker.predict(x[i:i + batch]) for i in range(0, len(x), batch)]
    assert worker.wait_idle(30)
    return preds


def test_worker_publishes_aligned_states_off_the_predict_path(rt, shifted):
    x, y = shifted
    source_acc = (rt.predict(x[300:]).labels == y[300:]).mean()
    with AdaptationWorker(rt, "align", publish_every=64) as worker:
        preds = _feed(worker, x[:300])
        assert worker.stats.errors == 0, worker.stats.last_error
        assert worker.stats.published >= 3 and worker.stats.samples == 300
        state = rt.state
        assert state.feature_norm is not None and state.metadata["adapted_by"].endswith("align")
        # predictions always come from one whole state; later ones from adapted states
        assert preds[0].state_version == 0 and preds[-1].state_version > 0
        adapted_acc = (rt.predict(x[300:]).labels == y[300:]).mean()
    assert adapted_acc >= source_acc + 0.05


def test_predict_keeps_serving_while_the_worker_publishes(rt, shifted):
    x, _ = shifted
    errors, versions = [], set()
    worker = AdaptationWorker(rt, "align", publish_every=16, batch_samples=16)

    def client(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(150):
                i = int(rng.integers(0, len(x) - 4))
                versions.add(worker.predict(x[i:i + 4]).state_version)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worker.close()
    assert errors == [] and worker.stats.errors == 0
    assert len(versions) > 5  # many states were swapped in while predicting


def test_a_cloud_swap_wins_and_the_worker_rebases_on_it(rt, shifted):
    x, _ = shifted
    worker = AdaptationWorker(rt, "align", publish_every=32)
    _feed(worker, x[:64])
    published = rt.state
    assert published.feature_norm is not None
    head = rt.state.head.arrays()
    cloud_head = LinearHead(head["weight"] * 1.01, head["bias"])
    cloud = published.evolve(head=cloud_head, feature_norm=None,
                             metadata={"cloud_version": 7})
    rt.swap_state(cloud)
    _feed(worker, x[64:200])
    worker.close()
    assert worker.stats.rebases == 1
    assert rt.state.head is cloud_head and rt.state.metadata["cloud_version"] == 7
    assert rt.state.feature_norm is not None  # re-adapted on top of the cloud state
    with pytest.raises(StateConflict):
        rt.swap_state(rt.state.evolve(), if_version=rt.state.version - 1)


def test_rollback_and_revert(rt, shifted):
    x, _ = shifted
    worker = AdaptationWorker(rt, "align", publish_every=128)  # one state per _feed
    _feed(worker, x[:128])
    first_norm = rt.state.feature_norm
    _feed(worker, x[128:256])
    assert rt.state.feature_norm is not first_norm
    state = worker.rollback()
    assert state.feature_norm is first_norm and rt.state is state
    reverted = worker.revert()
    assert reverted.feature_norm is None and rt.state is reverted
    worker.close()


def test_adapted_state_is_persisted_and_restored(tiny_zoo, shifted, tmp_path):
    x, _ = shifted
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    with AdaptationWorker(rt, "align", publish_every=64, state_dir=tmp_path) as worker:
        _feed(worker, x[:256])
    saved = rt.state.feature_norm
    assert (tmp_path / STATE_FILE).exists()
    rt2 = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    w2 = AdaptationWorker(rt2, "align", state_dir=tmp_path, start=False)
    assert w2.stats.restored.startswith("restored")
    np.testing.assert_array_equal(rt2.state.feature_norm.scale, saved.scale)
    probe = x[300:340]
    np.testing.assert_array_equal(rt2.predict(probe).labels, rt.predict(probe).labels)
    # a corrupt file is skipped with a reason; the device serves the bundle state
    (tmp_path / STATE_FILE).write_bytes(b"PK\x03\x04 truncated")
    rt3 = DeviceRuntime.open(tiny_zoo.student_bundle, threads=1)
    w3 = AdaptationWorker(rt3, "align", state_dir=tmp_path, start=False)
    assert w3.stats.restored.startswith("skipped") and rt3.state.feature_norm is None
    assert len(rt3.predict(probe)) == 40


def test_full_queue_skips_instead_of_blocking_and_bad_use_is_refused(rt, shifted):
    x, _ = shifted
    worker = AdaptationWorker(rt, "align", batch_samples=4, queue_batches=1, start=False)
    results = [worker.offer(rt.predict(x[i:i + 4], return_features=True))
               for i in range(0, 12, 4)]
    assert results == [True, False, False] and worker.stats.skipped_batches == 2
    with pytest.raises(ConfigError, match="return_features"):
        worker.offer(rt.predict(x[:2]))
    with pytest.raises(ConfigError, match="outputs only"):
        AdaptationWorker(rt, "lame", start=False)


def test_feature_norm_does_not_hide_a_shift_from_the_ood_detector(rt, shifted):
    x, _ = shifted
    d = rt.bundle.manifest.feature_dim
    plain = rt.predict(x[:64])
    rng = np.random.default_rng(0)
    rt.swap_state(rt.state.evolve(feature_norm=FeatureNorm(rng.uniform(0.5, 2, d),
                                                           rng.normal(0, 1, d))))
    normed = rt.predict(x[:64], return_features=True)
    np.testing.assert_allclose(normed.ood_score, plain.ood_score, rtol=1e-5, atol=1e-5)
    assert not np.allclose(normed.logits, plain.logits)
    np.testing.assert_allclose(normed.encoder_features, rt.encode(x[:64]), rtol=1e-6)


def test_a_cloud_update_clears_the_local_feature_norm(rt):
    signer = UpdateSigner.generate()
    d = rt.bundle.manifest.feature_dim
    rt.swap_state(rt.state.evolve(feature_norm=FeatureNorm(np.ones(d), np.zeros(d))))
    w = rt.state.head.arrays()
    update = signer.sign(UpdatePayload(version=1, base_version=0,
                                       encoder_sha256=rt.bundle.encoder_sha256,
                                       parts={"head.weight": w["weight"],
                                              "head.bias": w["bias"]}))
    m = UpdateManager(rt, UpdateVerifier(signer.public_key),
                      canary=CanaryPolicy(min_samples=10**9))
    assert m.apply(update).feature_norm is None


def test_worker_stands_down_while_a_cloud_update_serves(rt, shifted):
    from edgecl.device._updates import SERVING_CLOUD

    x, _ = shifted
    worker = AdaptationWorker(rt, "align", publish_every=32)
    cloud = rt.state.evolve(metadata={"cloud_version": 3, SERVING_CLOUD: True})
    rt.swap_state(cloud)
    _feed(worker, x[:128])
    assert rt.state is cloud and worker.stats.deferred_batches > 0
    reverted = cloud.evolve(metadata={"cloud_version": 3, SERVING_CLOUD: False})
    rt.swap_state(reverted)  # the device went back to the bundle's parts: adapt again
    _feed(worker, x[128:256])
    worker.close()
    assert rt.state.feature_norm is not None and rt.state.metadata["cloud_version"] == 3
