"""`edgecl bench cloud` runs end to end on tiny settings and reports every key."""

from __future__ import annotations

from edgecl.bench.cloud import bench_cloud


def test_bench_cloud_reports_throughput_latency_and_teacher_ratio(tiny_zoo):
    out = bench_cloud(variant="tiny", home=str(tiny_zoo.path.parent.parent),
                      concurrency=(1, 3), uploads_per_device=3, batch=4, teacher_rounds=1,
                      teacher_samples=64)
    for key in ("uploads_per_s", "rpc_p50_ms", "rpc_p99_ms"):
        assert set(out[key]) == {"c1", "c3"} and all(v > 0 for v in out[key].values())
    assert out["rpc_p99_ms"]["c3"] >= out["rpc_p50_ms"]["c3"]
    assert out["teacher_ratio"] > 0 and out["teacher_samples_per_s_raw"] > 0
