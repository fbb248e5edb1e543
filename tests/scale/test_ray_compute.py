"""The service's labelling and learning on a real two-node Ray cluster
(``ray.cluster_utils.Cluster``): two teacher actors label, each sample exactly once, and
learning jobs train as Ray tasks, one per target at a time, and are validated."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from edgecl.wire import WireSample, batch_to_proto
from tests.cloud.conftest import inputs, register, start_server
from tests.conftest import two_node_ray_cluster

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    yield from two_node_ray_cluster(2)


@pytest.mark.slow
def test_labelling_actors_and_learning_tasks_on_a_ray_cluster(tiny_zoo, tmp_path, cluster):
    srv = start_server(tiny_zoo, tmp_path, compute_backend="ray",
                       compute_address=cluster.address, compute_actors="2",
                       learning_enabled="true", learning_trigger_samples="48",
                       learning_steps="20", teacher_batch_size="32",
                       limits_requests_per_s="1000", limits_burst="1000")
    try:
        assert srv.compute is not None and len(srv.compute.teacher.actors) == 2
        devices = [register(srv, f"ray-{i}") for i in range(3)]
        for k in range(8):
            for i, dev in enumerate(devices):
                x = inputs(16, seed=100 * i + k)
                dev.upload([batch_to_proto([WireSample(f"s{k}-{j}", input=x[j])
                                            for j in range(16)])])
        deadline = time.monotonic() + 120
        while srv.registry.unlabelled_count() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.wait_idle(120)
        stats = srv.registry.sample_stats()
        assert stats["samples"] == 3 * 8 * 16 and stats["unlabelled"] == 0
        assert stats["max_label_count"] == 1
        # both actors labelled, in worker processes, not here
        by_pid = srv.compute.teacher.batches_by_pid
        assert len(by_pid) == 2 and os.getpid() not in by_pid
        assert sum(by_pid.values()) >= 3 * 8 * 16 // 32  # batches of at most 32
        # every learning job trained in a Ray task; one per target at a time
        tasks = srv.compute.learning.tasks_by_pid
        assert sum(tasks.values()) >= 3 and os.getpid() not in tasks
        runs = srv.registry.learning_runs()
        assert {r[0] for r in runs} == {"ray-0", "ray-1", "ray-2"}
        for target in ("ray-0", "ray-1", "ray-2"):
            spans = [(s, e) for t, _, s, e, _ in runs if t == target]
            assert all(e is not None for _, e in spans)
            assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))
        # each came back from its task and was validated: published or rejected, recorded
        assert {r[4] for r in runs} <= {"published", "rejected"}
        recorded = sum(srv.registry.latest_version(d.device_id) for d in devices) + len(
            srv.registry.rejections())
        assert recorded >= len(runs)
    finally:
        srv.stop(grace=1.0)
