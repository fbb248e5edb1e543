"""``edgecl bench cloud`` on PostgreSQL with two replicas and idle update streams: the
figures the scale-out floors are read from (docs/results.md) come out whole and valid."""

from __future__ import annotations

import pytest

from edgecl.bench.cloud import bench_cloud
from tests.schema_checks import check_result


@pytest.mark.slow
def test_bench_cloud_on_postgresql_with_replicas_and_subscribers(tiny_zoo, postgres_url):
    out = bench_cloud(variant="tiny", home=str(tiny_zoo.path.parent.parent),
                      concurrency=(4,), uploads_per_device=3, batch=4, teacher_rounds=1,
                      teacher_samples=64, registry=postgres_url, replicas=2,
                      subscribers=60, subscriber_rounds=1)
    check_result(out, ("machine",), ("subscribers",))
    assert out.replicas == 2 and out.registry.startswith("postgresql (postgresql://")
    assert out.uploads_per_s["c4"] > 0 and out.replica_rss_mb > 0
    subs = out.subscribers
    assert subs["held"] == subs["opened"] == 60 and subs["refused"] == {}
    assert subs["upload_p99_ms_with"] > 0 and subs["upload_p99_ms_without"] > 0


def test_several_replicas_need_a_shared_registry(tiny_zoo):
    from edgecl import ConfigError

    with pytest.raises(ConfigError, match="postgresql"):
        bench_cloud(variant="tiny", home=str(tiny_zoo.path.parent.parent), replicas=2)
