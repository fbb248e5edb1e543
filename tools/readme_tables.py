"""Render the Markdown tables of docs/results.md from zoo, bench and eval JSON.

    python tools/readme_tables.py zoo  $EDGECL_HOME/zoo/full-<digest>/report.json
    python tools/readme_tables.py bench bench.json          # edgecl bench device --json
    python tools/readme_tables.py ood-bench bench.json      # its per-detector overhead
    python tools/readme_tables.py ood ood.json              # edgecl eval ood --json
    python tools/readme_tables.py drift drift.json          # edgecl eval drift --json
    python tools/readme_tables.py sampling sampling.json    # edgecl eval sampling --json
    python tools/readme_tables.py loop loop.json            # edgecl eval loop --json
    python tools/readme_tables.py adapt cont.json grad.json rec.json ls.json
                                  # edgecl eval adapt --json, one file per scenario
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


def ood_bench_table(b: dict) -> str:
    rows = ["| detector | tiny: predict ms | + OOD + offer ms | added % | edge: predict ms "
            "| + OOD + offer ms | added % |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(b["tiny"]["ood"]):
        t, e = b["tiny"]["ood"][name], b["edge"]["ood"][name]
        rows.append(f"| {name} | {t['predict_ms_b1']} | {t['with_ood_ms_b1']} | "
                    f"{t['added_pct_b1']} | {e['predict_ms_b1']} | {e['with_ood_ms_b1']} | "
                    f"{e['added_pct_b1']} |")
    return "\n".join(rows)


def eval_ood_table(d: dict) -> str:
    dets = d["detectors"]
    rows = ["| detector | mean AUROC | novel classes AUROC / FPR95 "
            "| worst corruption (AUROC) |", "|---|---:|---:|---|"]
    for name, v in sorted(dets.items(), key=lambda kv: -kv[1]["mean_auroc"]):
        sets = {k: x for k, x in v.items() if isinstance(x, dict)}
        worst = min((k for k in sets if k != "novel_classes"), key=lambda k: sets[k]["auroc"])
        novel = sets["novel_classes"]
        rows.append(f"| {name} | {v['mean_auroc']:.3f} | {novel['auroc']:.3f} / "
                    f"{novel['fpr95']:.3f} | {worst} ({sets[worst]['auroc']:.3f}) |")
    return "\n".join(rows)


def eval_drift_table(d: dict) -> str:
    rows = ["| detector | severity | median delay | p90 delay | missed "
            "| false alarms / 10k clean |", "|---|---:|---:|---:|---:|---:|"]
    for name, v in d["detectors"].items():
        for sev in sorted(k for k in v if k.startswith("severity_")):
            r = v[sev]
            rows.append(f"| {name} | {sev.split('_')[1]} | {r['median_delay']} | "
                        f"{r['p90_delay']} | {r['missed']} | {v['false_alarms_per_10k']} |")
    return "\n".join(rows)


def eval_sampling_table(d: dict) -> str:
    rows = ["| policy | selected | error rate among selected | mean cosine of selected |",
            "|---|---:|---:|---:|"]
    for name, v in d["policies"].items():
        rows.append(f"| {name} | {v['selected']} ({v['selected_fraction']:.3f}) | "
                    f"{v['error_rate_selected']:.3f} | {v['mean_similarity']:.3f} |")
    return "\n".join(rows) + (
        f"\n\n{d['samples']} samples, student error rate {d['overall_error_rate']:.3f}; "
        f"error ratio uncertainty / random = **{d['error_ratio_vs_random']:.2f}** "
        f"(the most any policy could reach: {d['max_error_ratio']:.2f}); AUROC of the "
        f"sampling score for the student's errors = **{d['score_error_auroc']:.3f}**.")


def eval_loop_table(d: dict) -> str:
    strategies = {k: v for k, v in d["strategies"].items() if v is not None}
    domains = d["domains"]
    head = "| strategy | mean online acc | " + " | ".join(x.split("@")[0] for x in domains) + " |"
    rows = [head, "|---|---:|" + "---:|" * len(domains)]
    for name, v in strategies.items():
        cells = " | ".join(f"{v['per_domain'].get(x, float('nan')):.2f}" for x in domains)
        rows.append(f"| {name} | **{v['mean_online_acc']:.3f}** | {cells} |")
    for name, why in d.get("unavailable", {}).items():
        rows.append(f"| {name} | n/a | {why} |" + " |" * (len(domains) - 1))
    return "\n".join(rows)


def eval_adapt_table(*runs: dict) -> str:
    scen = [r["scenario"] for r in runs]
    first = runs[0]
    rows = ["| method | " + " | ".join(f"{s} ({r['samples']:,})" for s, r in zip(scen, runs))
            + f" | worst domain vs source ({scen[0]}) | guard resets ({scen[0]}) "
            f"| collapsed windows (all) | ms/sample ({scen[0]}) |",
            "|---|" + "---:|" * (len(runs) + 4)]
    for name in sorted(first["methods"], key=lambda k: (k != "source", k)):
        accs = " | ".join(f"{r['methods'][name]['mean_online_acc']:.3f}" for r in runs)
        m = first["methods"][name]
        collapsed = sum(r["methods"][name]["collapsed_windows"] for r in runs)
        rows.append(f"| {name} | {accs} | {100 * m['worst_domain_delta']:+.1f} pts | "
                    f"{m['guard_resets']} | {collapsed} | {m['ms_per_sample']:.3f} |")
    return "\n".join(rows)


TABLES = {"zoo": zoo_table, "bench": bench_table, "ood-bench": ood_bench_table,
          "ood": eval_ood_table, "drift": eval_drift_table, "sampling": eval_sampling_table,
          "loop": eval_loop_table, "adapt": eval_adapt_table}

if __name__ == "__main__":
    kind, paths = sys.argv[1], sys.argv[2:]
    print(TABLES[kind](*(json.load(open(p)) for p in paths)))
