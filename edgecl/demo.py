"""``edgecl demo``: a small fleet under drift, every strategy, in a few minutes.

Builds (or reuses) the reference zoo, then simulates six devices in two groups (two sites
whose cameras see the same corruptions) against the real cloud service on a virtual clock
(the same table on a busy laptop and an idle server):
the student as shipped (``source``), on-device test-time adaptation (``device``), the
cloud teacher's signed updates (``cloud``) and both (``cloud+device``). Prints the summary,
the accuracy per domain and where the HTML report and its JSON result (``result.json``
beside ``index.html``, as ``edgecl simulate --json`` writes it) are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecl.fleet._virtual import CloudCostModel

#: The default demo fleet; the cloud learns one update per group, quickly (a window of its
#: last 256 uploads, 60 Adam steps, after every 16 new labelled ones). On the virtual clock
#: (reproducible): devices sync every 0.5 simulated seconds (the sync client uploads as it
#: goes) and a learning job costs 2 simulated seconds (what one took on the 2-core machine
#: of docs/results.md: median 2.02 s).
DEMO = {"devices": 6, "scenario": "mixed", "steps": 80, "batch": 10, "pace": 10.0,
        "fraction": 0.2, "domains": 3, "seed": 0, "sync_s": 0.5,
        "cloud_cost": CloudCostModel(job_s=2.0, workers=2),
        "service_settings": {"learning_window": 256, "learning_trigger_samples": 16,
                             "learning_steps": 60}}


def run_demo(*, variant: str = "full", home: str | None = None,
             report_dir: str | None = None, out: Any = print,
             **overrides: Any) -> int:
    """Run the demo fleet (``overrides`` change :data:`DEMO` settings); returns 0."""
    from edgecl.fleet import simulate, summary_table
    from edgecl.fleet._report import HTML_NAME, JSON_NAME
    from edgecl.zoo import build_zoo
    from edgecl.zoo.report import format_zoo_report

    zoo = build_zoo(variant, home=home)
    out(format_zoo_report(zoo))
    settings = {**DEMO, **overrides}
    report = Path(report_dir) if report_dir else zoo.path.parent.parent / "demo-report"
    out(f"\nsimulating {settings['devices']} devices ({settings['scenario']} drift, "
        f"{settings['steps'] * settings['batch']} samples each at {settings['pace']:g}/s, "
        f"upload budget {settings['fraction']:.0%}) against the real cloud service ...")
    result = simulate(variant=variant, home=home, report_dir=report, **settings)
    s = result.strategies
    out("")
    out(summary_table(result))
    domains = sorted({d for v in s.values() for d in v.per_domain})
    out("")
    out(f"{'domain':<22}" + "".join(f"{name:>14}" for name in s))
    for d in domains:
        out(f"{d:<22}" + "".join(f"{v.per_domain.get(d, float('nan')):>14.3f}"
                                 for v in s.values()))
    if "cloud" in s and "source" in s:
        gain = 100 * (s["cloud"].mean_online_acc - s["source"].mean_online_acc)
        out(f"\ncloud vs source: {gain:+.1f} points of mean online accuracy "
            f"({result.seconds:.0f} s)")
    out(f"report: {report / HTML_NAME}")
    out(f"JSON result: {report / JSON_NAME}")
    return 0
