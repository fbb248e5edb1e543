"""The fleet simulator on Ray: a local two-node cluster (``ray.cluster_utils.Cluster``),
devices as Ray tasks and, on the virtual clock, in Ray actors; results identical to the
thread backend for the same seed."""

from __future__ import annotations

import pytest

from edgecl import ConfigError
from edgecl.fleet import simulate
from edgecl.fleet._virtual import CloudCostModel
from tests.conftest import two_node_ray_cluster
from tests.test_fleet import WALL_CLOCK_FIELDS

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    yield from two_node_ray_cluster(1)


def _comparable(result) -> dict:
    data = result.to_dict()
    for key in (*WALL_CLOCK_FIELDS, "backend"):
        data.pop(key)
    return data


def test_an_unreachable_ray_address_is_a_clear_error_within_seconds():
    """``ray.init`` waits minutes for a cluster that is not there; we refuse at once."""
    import socket
    import time

    from edgecl.fleet._ray import RayBackend

    with socket.socket() as s:  # a loopback port nothing listens at
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if ray.is_initialized():  # runs before the cluster test, so only when run alone after it
        pytest.skip("this process is connected to a cluster already")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster"):
        simulate(backend="ray", ray_address=f"127.0.0.1:{port}", progress=False,
                 home="/nonexistent/edgecl-home")
    with pytest.raises(ConfigError, match="expected host:port"):
        RayBackend(address="not-an-address")
    assert time.monotonic() - started < 30
    assert not ray.is_initialized()


def test_ray_backend_matches_threads_on_a_two_node_cluster(tiny_zoo, cluster):
    from edgecl.fleet._ray import RayBackend

    home = str(tiny_zoo.path.parent.parent)
    settings = dict(devices=3, scenario="mixed", groups=2,
                    strategies=("source", "device", "cloud"), steps=60, batch=10, pace=20.0,
                    fraction=0.3, variant="tiny", home=home, progress=False,
                    cloud_cost=CloudCostModel(job_s=1.0, workers=2),
                    service_settings={"learning_trigger_samples": 8, "learning_source_z": 0,
                                      "learning_recent_holdout": 0})
    threads = simulate(**settings)
    backend = RayBackend(address=cluster.address)
    assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
    on_ray = simulate(backend=backend, **settings)  # a backend instance, not a name
    assert on_ray.backend == "ray" and threads.backend == "threads"
    assert threads.strategies["cloud"].updates.applied > 0
    assert _comparable(on_ray) == _comparable(threads)


def test_an_unknown_backend_or_a_stray_ray_address_fails_before_anything_starts():
    with pytest.raises(ConfigError, match="backend"):
        simulate(backend="spark", progress=False, home="/nonexistent/edgecl-home")
    with pytest.raises(ConfigError, match="ray_address"):
        simulate(ray_address="127.0.0.1:1", progress=False, home="/nonexistent/edgecl-home")
