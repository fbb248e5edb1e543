"""The simulation report: PNG plots and one self-contained HTML page embedding them."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np


def _plots(result: dict[str, Any], raw: dict[str, list[dict[str, Any]]], out: Path
           ) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = result["strategies"]
    paths = []
    # accuracy over time, domain boundaries of the first device marked
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for name, s in strategies.items():
        pts = [(x, y) for x, y in s["accuracy_over_time"] if y is not None]
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    first = next(iter(raw.values()))[0]
    n = len(first["domains"])
    for cut in np.flatnonzero(np.diff(first["domains"])) + 1:
        ax.axvline(100 * cut / n, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("progress through each device's stream (%); dashed: domain changes of "
                  f"{first['device_id']}")
    ax.set_ylabel("fleet online accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{result['scenario']}: {result['devices']} devices")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    paths.append(out / "accuracy_over_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # bytes per device
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = list(strategies)
    x = np.arange(len(names))
    up = [strategies[k]["bytes_up_per_device"] / 1e3 for k in names]
    down = [strategies[k]["bytes_down_per_device"] / 1e3 for k in names]
    ax.bar(x - 0.2, up, 0.4, label="up")
    ax.bar(x + 0.2, down, 0.4, label="down")
    for i, k in enumerate(names):
        per = [d["bytes_up"] / 1e3 for d in strategies[k]["per_device"]]
        ax.scatter(np.full(len(per), i - 0.2), per, s=8, color="black", zorder=3)
    ax.set_xticks(x, names)
    ax.set_ylabel("kB per device (dots: each device, up)")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "bytes_per_device.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # update timeline of the cloud strategies
    cloud = {k: v for k, v in raw.items() if any(r["update_times"] for r in v)}
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.25 * result["devices"] + 1.5)))
    marks = ["|", "x", "+", "."]
    for j, (name, results) in enumerate(cloud.items()):
        for i, r in enumerate(results):
            ax.scatter(r["update_times"], np.full(len(r["update_times"]), i + 0.15 * j),
                       marker=marks[j % len(marks)], s=30, label=name if i == 0 else None)
    ax.set_xlabel("seconds since the device started")
    ax.set_ylabel("device")
    ax.set_title("cloud updates applied")
    if cloud:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "update_timeline.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def write_report(result: dict[str, Any], raw: dict[str, list[dict[str, Any]]],
                 out: str | Path) -> dict[str, Any]:
    """Write the plots and ``index.html`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, raw, out)
    s = result["strategies"]
    head = ("<tr><th>strategy</th><th>mean online acc</th><th>kB up / device</th>"
            "<th>kB down / device</th><th>upload fraction</th><th>updates applied / "
            "rejected / rolled back</th><th>median update latency (s)</th>"
            "<th>OOD AUROC</th><th>forgetting</th></tr>")
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td><b>{v['mean_online_acc']:.3f}</b></td>"
        f"<td>{v['bytes_up_per_device'] / 1e3:.1f}</td>"
        f"<td>{v['bytes_down_per_device'] / 1e3:.1f}</td><td>{v['upload_fraction']:.3f}</td>"
        f"<td>{v['updates']['applied']} / {v['updates']['rejected']} / "
        f"{v['updates']['rolled_back']}</td><td>{_cell(v['update_latency_s'])}</td>"
        f"<td>{_cell(v['ood_auroc'])}</td><td>{_cell(v['forgetting'])}</td></tr>"
        for k, v in s.items())
    domains = sorted({d for v in s.values() for d in v["per_domain"]})
    dom_rows = "".join(
        f"<tr><td>{html.escape(k)}</td>" + "".join(
            f"<td>{_cell(v['per_domain'].get(d))}</td>" for d in domains) + "</tr>"
        for k, v in s.items())
    dom_head = "<tr><th>strategy</th>" + "".join(
        f"<th>{html.escape(d)}</th>" for d in domains) + "</tr>"
    images = "".join(
        f'<h2>{p.stem.replace("_", " ")}</h2><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">' for p in plots)
    cfg = html.escape(", ".join(f"{k}={result[k]}" for k in (
        "scenario", "devices", "samples_per_device", "batch", "seed", "backend", "cloud_mode")))
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgecl simulation: {html.escape(result['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}
</style></head><body><h1>edgecl fleet simulation</h1><p>{cfg}; {result['seconds']} s</p>
<h2>summary</h2><table>{head}{rows}</table>
<h2>accuracy per domain</h2><table>{dom_head}{dom_rows}</table>{images}
<p>Schema of the JSON: <code>edgecl.fleet._metrics</code>.</p></body></html>"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return {"html": str(index), "plots": [str(p) for p in plots]}
