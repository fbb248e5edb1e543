"""Plain-text rendering of a zoo build report."""

from __future__ import annotations

from typing import Any


def format_zoo_report(zoo: Any) -> str:
    """A table of clean and per-corruption accuracies of student and teacher."""
    r = zoo.report
    s, t = r["student"], r["teacher"]
    held = set(t["held_out"])
    lines = [
        f"zoo: {zoo.path}",
        f"params: student {r['params']['student']:,}  teacher {r['params']['teacher']:,}  "
        f"(x{r['params']['ratio']:.1f})   built in {r['build_seconds']} s",
        f"test samples: student {r['test_samples']['student']} (known classes), "
        f"teacher {r['test_samples']['teacher']}; corruption severity {r['eval_severity']}",
        "",
        f"{'domain':<16}{'student':>9}{'teacher':>9}",
        f"{'clean':<16}{s['clean_acc']:>9.3f}{t['clean_acc']:>9.3f}",
    ]
    for name in sorted(t["corruptions"]):
        mark = "  (held out from teacher training)" if name in held else ""
        lines.append(f"{name:<16}{s['corruptions'][name]:>9.3f}"
                     f"{t['corruptions'][name]:>9.3f}{mark}")
    lines += [
        "",
        f"student mean over corruptions: {s['mean_corrupted']:.3f}",
        f"teacher mean over trained corruptions: {t['mean_trained']:.3f}; "
        f"over held-out: {t['mean_held_out']:.3f}",
    ]
    fails = r.get("floors", {}).get("failures", [])
    lines.append("floors: all met" if not fails else "floors MISSED: " + "; ".join(fails))
    return "\n".join(lines)
