"""One device cannot fill the service's disk: a per-device bound on stored samples
(``[limits] max_samples_per_device``). Past it the device's oldest labelled samples go;
when its unlabelled samples alone would pass it, its Upload is refused with a retry hint
and nothing of the batch is stored. Other devices are untouched."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from edgecl._exceptions import ConfigError
from edgecl.cloud import Registry, load_config
from edgecl.cloud._errors import QuotaExceeded
from edgecl.wire import WireSample, batch_to_proto
from tests.cloud.conftest import cloud_env, register
from tests.conftest import images

SHAPE = (1, 4, 4)


def _samples(start: int, n: int) -> list[WireSample]:
    return [WireSample(f"s{i:05d}", input=np.full(SHAPE, (i % 10) / 10, np.float32))
            for i in range(start, start + n)]


def _label(reg: Registry, device: str, samples: list[WireSample]) -> None:
    reg.set_labels([(device, s.sample_id) for s in samples], np.zeros(len(samples), np.int64),
                   np.zeros(len(samples)))


def _ids(reg: Registry, device: str) -> list[str]:
    return sorted(reg.sample_ids(device))


def test_past_the_bound_the_oldest_labelled_samples_go(tmp_path):
    reg = Registry(tmp_path, max_samples_per_device=300)
    first = _samples(0, 250)
    reg.add_samples("flood", first)
    _label(reg, "flood", first)
    reg.add_samples("calm", _samples(0, 20))
    assert reg.add_samples("flood", _samples(250, 100)) == (100, 0)
    ids = _ids(reg, "flood")
    assert len(ids) == 300 and ids[0] == "s00050" and ids[-1] == "s00349"  # oldest 50 gone
    assert reg.pruned == 50 and reg.sample_count("calm") == 20
    assert reg.add_samples("flood", _samples(300, 50)) == (0, 50)  # duplicates: no change
    assert reg.sample_count("flood") == 300


def test_unlabelled_samples_alone_past_the_bound_refuse_the_whole_batch(tmp_path):
    reg = Registry(tmp_path, max_samples_per_device=300)
    reg.add_samples("flood", _samples(0, 290))  # nothing labelled yet
    with pytest.raises(QuotaExceeded, match="max_samples_per_device"):
        reg.add_samples("flood", _samples(290, 20))
    assert reg.sample_count("flood") == 290  # nothing of the refused batch stored
    assert reg.add_samples("flood", _samples(290, 10)) == (10, 0)  # what fits still does
    _label(reg, "flood", _samples(0, 100))
    assert reg.add_samples("flood", _samples(300, 20)) == (20, 0)  # labelled ones make room
    assert reg.sample_count("flood") == 300


def test_the_bound_survives_a_restart(tmp_path):
    reg = Registry(tmp_path, max_samples_per_device=300)
    batch = _samples(0, 300)
    reg.add_samples("flood", batch)
    _label(reg, "flood", batch)
    reg.close()
    again = Registry(tmp_path, max_samples_per_device=300)  # counts read from the file
    again.add_samples("flood", _samples(300, 30))
    assert again.sample_count("flood") == 300


def test_a_bound_below_twice_the_learning_window_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="max_samples_per_device"):
        load_config(None, env=cloud_env(tmp_path, limits_max_samples_per_device="100"))
    assert load_config(None, env=cloud_env(
        tmp_path, limits_max_samples_per_device="0")).limits.max_samples_per_device == 0


def test_a_device_at_its_bound_gets_resource_exhausted_with_a_hint(tiny_zoo, tmp_path):
    from edgecl.cloud import create_server

    cfg = load_config(None, env=cloud_env(tmp_path, limits_max_samples_per_device="512",
                                          limits_samples_per_s="100000",
                                          limits_sample_burst="100000"))
    srv = create_server(cfg, home=str(tiny_zoo.path.parent.parent)).start(labelling=False)
    try:
        flood, calm = register(srv, "quota-flood"), register(srv, "quota-calm")
        x = images(600, seed=3)

        def batch(start: int, n: int):
            return batch_to_proto([WireSample(f"q{i}", input=x[i])
                                   for i in range(start, start + n)])

        acked = sum(flood.upload([batch(start, 128)]).accepted for start in range(0, 512, 128))
        assert acked == 512  # nothing labelled: the bound is all unlabelled samples
        with pytest.raises(grpc.RpcError) as info:
            flood.upload([batch(512, 64)])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_samples_per_device" in info.value.details()
        hint = dict(info.value.trailing_metadata() or ()).get("retry-after-ms")
        assert hint is not None and int(hint) > 0
        assert srv.registry.sample_count("quota-flood") == 512
        assert calm.upload([batch(0, 64)]).accepted == 64  # others are not affected
        srv.label_pending()  # the teacher catches up: the flood's labelled samples make room
        assert flood.upload([batch(512, 64)]).accepted == 64
        assert srv.registry.sample_count("quota-flood") == 512
    finally:
        srv.stop(grace=1.0)
