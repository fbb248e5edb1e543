"""`edgecl bench cloud` / `bench swap` / `bench soak` run end to end on tiny settings and
report every key (checked against their JSON Schemas)."""

from __future__ import annotations

import dataclasses

from edgecl.bench.cloud import bench_cloud
from tests.schema_checks import check_result


def test_bench_cloud_reports_throughput_latency_and_teacher_ratio(tiny_zoo):
    out = bench_cloud(variant="tiny", home=str(tiny_zoo.path.parent.parent),
                      concurrency=(1, 3), uploads_per_device=3, batch=4, teacher_rounds=1,
                      teacher_samples=64)
    check_result(out, ("machine",))
    for table in (out.uploads_per_s, out.rpc_p50_ms, out.rpc_p99_ms):
        assert set(table) == {"c1", "c3"} and all(v > 0 for v in table.values())
    assert out.rpc_p99_ms["c3"] >= out.rpc_p50_ms["c3"]
    assert out.teacher_ratio > 0 and out.teacher_samples_per_s_raw > 0


def test_bench_swap_reports_swap_latency_and_predict_tail(tiny_zoo):
    from edgecl.bench.swap import bench_swap

    out = bench_swap(tiny_zoo.student_bundle, calls=200, block=50, swaps_per_s=100.0)
    check_result(out, optional={"bundle"})
    check_result(dataclasses.replace(out, bundle="zoo student"), optional={"bundle"})
    assert out.swaps >= 1 and out.apply_ms_p50 > 0 and out.swap_us_p50 > 0
    assert out.calls_per_mode == 100
    assert out.predict_p99_ms_swapping >= out.predict_p50_ms_swapping > 0


def test_bench_soak_loses_no_acknowledged_sample(tiny_zoo):
    from edgecl.bench.soak import bench_soak

    out = bench_soak(devices=3, minutes=0.1, variant="tiny",
                     home=str(tiny_zoo.path.parent.parent), rss_every_s=1.0)
    data = check_result(out, ("machine",))
    assert out.drained and out.acked == out.stored == out.samples_put > 0
    assert out.lost == 0 and out.errors == {}
    assert out.rss_peak_mb >= out.rss_final_mb > 0 and len(data["rss_mb"]) >= 2
