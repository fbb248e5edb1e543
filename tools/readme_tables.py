"""Render README tables from a zoo report and an ``edgecl bench device --json`` output.

    python tools/readme_tables.py zoo  $EDGECL_HOME/zoo/full-<digest>/report.json
    python tools/readme_tables.py bench bench.json
"""

from __future__ import annotations

import json
import sys


def zoo_table(report: dict) -> str:
    s, t = report["student"], report["teacher"]
    held = set(t["held_out"])
    rows = ["| domain (severity 5) | student (8 classes) | teacher (10 classes) |",
            "|---|---:|---:|",
            f"| clean | {s['clean_acc']:.3f} | {t['clean_acc']:.3f} |"]
    for name in sorted(t["corruptions"]):
        tag = " (held out)" if name in held else ""
        rows.append(f"| {name}{tag} | {s['corruptions'][name]:.3f} | "
                    f"{t['corruptions'][name]:.3f} |")
    rows.append(f"| **mean, teacher-trained types** | | **{t['mean_trained']:.3f}** |")
    rows.append(f"| **mean, held-out types** | | **{t['mean_held_out']:.3f}** |")
    rows.append(f"| mean, all corruptions | {s['mean_corrupted']:.3f} | |")
    n = report["test_samples"]
    return "\n".join(rows) + (
        f"\n\nTest samples: {n['student']} (student, known classes) / {n['teacher']} "
        f"(teacher); build time {report['build_seconds']} s on "
        f"{report['machine']['cpus']} cores.")


def bench_table(b: dict) -> str:
    rows = ["| metric | tiny (zoo student, 1x28x28) | edge (2.9M params, 3x224x224) |",
            "|---|---:|---:|"]
    for key in ("sdk_ms_b1", "ort_ms_b1", "torch_ms_b1", "overhead_b1", "added_us_b1",
                "sdk_p99_ms_b1", "ort_p99_ms_b1", "sdk_ms_b32", "ort_ms_b32", "torch_ms_b32",
                "overhead_b32"):
        rows.append(f"| `{key}` | {b['tiny'][key]} | {b['edge'][key]} |")
    m = b["machine"]
    return "\n".join(rows) + (
        f"\n\n`rss_mb` = **{b['rss_mb']}** (peak RSS of a fresh device-only process serving "
        f"`edge` at batch 1; {b['rss_mb_b32']} MB when it also serves batch 32). "
        f"{b['calls']} timed calls after {b['warmup']} warm-up, {b['threads']} intra-op "
        f"thread(s) for onnxruntime and torch; {m['cpus']} x {m['cpu_model']}, "
        f"onnxruntime {m['onnxruntime']}, torch {m['torch']}.")


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    data = json.load(open(path))
    print(zoo_table(data) if kind == "zoo" else bench_table(data))
