"""The simulation report: PNG plots, the JSON result and one self-contained HTML page.

Each plot has its own function returning a :class:`~matplotlib.figure.Figure` (Agg
canvas, constrained layout), so it can be inspected without writing files. Strategies keep
one colour and marker in every plot (:func:`strategy_styles`), domains one background
colour (:func:`domain_colors`); legends sit outside the axes and are built from the very
artists drawn.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.fleet._device import SPEND_BUDGET
from edgecl.fleet._metrics import _visits
from edgecl.fleet._run import uses_cloud

Raw = dict[str, list[dict[str, Any]]]

#: Colour and marker of each strategy, the same in every plot.
STRATEGY_STYLES: dict[str, tuple[str, str]] = {
    "source": ("tab:gray", "s"), "device": ("tab:green", "^"),
    "cloud": ("tab:blue", "o"), "cloud+device": ("tab:purple", "D"),
    "cloud+memory": ("tab:cyan", "P")}
_SPARE_STYLES = (("tab:red", "v"), ("tab:brown", "P"), ("tab:pink", "X"), ("tab:olive", "*"))
#: Background colours of domains (``clean`` is always the lightest grey).
_DOMAIN_PALETTE = ("#fde0c5", "#c6e2f5", "#d5f0c8", "#f2d0ea", "#fff3b0", "#d9d2f0",
                   "#c8eee8", "#f5c9c9", "#e6dccd", "#e0e0a8")
_CLEAN = "#eeeeee"
_UP, _DOWN = "tab:orange", "tab:cyan"
#: The report's files in its directory, beside the PNG plots.
HTML_NAME, JSON_NAME = "index.html", "result.json"


def strategy_styles(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{strategy: (colour, marker)}``: fixed for known strategies, spares for others."""
    spare = iter(_SPARE_STYLES * 8)
    return {n: STRATEGY_STYLES.get(n) or next(spare) for n in names}


def _runs(r: dict[str, Any]) -> list[tuple[str, int, int]]:
    """The device's contiguous domain runs ``(name, start, end)`` in samples."""
    names = r["domain_names"]
    return [(names[d], s, e) for d, s, e in _visits(np.asarray(r["domains"]))]


def domain_colors(raw: Raw) -> dict[str, str]:
    """``{domain name: background colour}`` over every device, in order of appearance."""
    names = dict.fromkeys(n for rs in raw.values() for r in rs for n, _, _ in _runs(r))
    others = [n for n in names if n != "clean"]
    colors = {n: _DOMAIN_PALETTE[i % len(_DOMAIN_PALETTE)] for i, n in enumerate(others)}
    return {n: _CLEAN if n == "clean" else colors[n] for n in names}


def _figure(size: tuple[float, float]) -> Any:
    """A figure with an Agg canvas and constrained layout, outside pyplot's registry."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(ax: Any, handles: Sequence[Any], title: str) -> Any:
    """A legend of ``handles`` (labels from the artists) right of the axes, off the data."""
    return ax.legend(handles=list(handles), labels=[h.get_label() for h in handles],
                     title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0.0, fontsize=8, title_fontsize=8)


def _first_device(raw: Raw) -> dict[str, Any] | None:
    return next((rs[0] for rs in raw.values() if rs), None)


def _name_domains(ax: Any, raw: Raw) -> None:
    """Shade the first device's domains (x in % of its stream) and name them on top."""
    first = _first_device(raw)
    if first is None:
        return
    colors, n = domain_colors(raw), max(len(first["domains"]), 1)
    runs = [(name, 100 * s / n, 100 * e / n) for name, s, e in _runs(first)]
    for k, (name, x0, x1) in enumerate(runs):
        ax.axvspan(x0, x1, color=colors[name], lw=0, zorder=0)
        if k:
            ax.axvline(x0, color="0.45", ls="--", lw=0.8, zorder=1)
    top = ax.secondary_xaxis("top")
    top.set_xticks([(x0 + x1) / 2 for _, x0, x1 in runs], [name for name, _, _ in runs],
                   fontsize=8, rotation=0 if len(runs) <= 5 else 90)
    top.tick_params(length=0)
    same = all(_runs(r) == _runs(first) for rs in raw.values() for r in rs)
    top.set_xlabel(f"domains of device {first['device_id']}"
                   + ("" if same else " (other devices see other orders)"), fontsize=8)


def accuracy_figure(result: dict[str, Any], raw: Raw) -> Any:
    """Fleet online accuracy per slice of the streams, one line per strategy, on the first
    device's domains (points at the middle of each slice)."""
    fig = _figure((9.5, 4.8))
    ax = fig.add_subplot()
    _name_domains(ax, raw)
    styles = strategy_styles(result["strategies"])
    lines = []
    for name, s in result["strategies"].items():
        bins = max(len(s["accuracy_over_time"]), 1)
        pts = [(100 * (x + 0.5 / bins), y) for x, y in s["accuracy_over_time"] if y is not None]
        color, marker = styles[name]
        lines += ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker,
                         ms=4, lw=1.5, label=name, zorder=3)
    ax.set(xlim=(0, 100), ylim=(0, 1), xlabel="position in each device's stream (%)",
           ylabel="online accuracy (fraction correct)",
           title=f"fleet online accuracy over time: {result['scenario']}, "
                 f"{result['devices']} devices")
    _legend(ax, lines, "strategy")
    return fig


def bytes_figure(result: dict[str, Any], raw: Raw | None = None) -> Any:
    """Mean kB uploaded and downloaded per device, per strategy, with every device's dot."""
    fig = _figure((8, 4.2))
    ax = fig.add_subplot()
    strategies = result["strategies"]
    names = list(strategies)
    x = np.arange(len(names))
    up = ax.bar(x - 0.2, [strategies[k]["bytes_up_per_device"] / 1e3 for k in names], 0.4,
                color=_UP, label="uploaded (mean)")
    down = ax.bar(x + 0.2, [strategies[k]["bytes_down_per_device"] / 1e3 for k in names], 0.4,
                  color=_DOWN, label="downloaded (mean)")
    px, py = [], []
    for i, k in enumerate(names):
        for d in strategies[k]["per_device"]:
            px += [i - 0.2, i + 0.2]
            py += [d["bytes_up"] / 1e3, d["bytes_down"] / 1e3]
    dots = ax.scatter(px, py, s=12, color="black", zorder=3, label="one device")
    ax.set_xticks(x, names)
    ax.set(xlabel="strategy", ylabel="kB per device (1 kB = 1000 bytes)",
           title="network traffic per device")
    _legend(ax, [up, down, dots], "traffic")
    return fig


def _domain_seconds(r: dict[str, Any]) -> list[tuple[str, float, float]]:
    """The device's domain runs in seconds since it started (from its batch end times)."""
    t = np.concatenate([[0.0], np.asarray(r["batch_times"], dtype=float)])
    b = max(int(r["batch"]), 1)
    last = len(t) - 1
    return [(name, float(t[min(s // b, last)]), float(t[min((e - 1) // b + 1, last)]))
            for name, s, e in _runs(r)]


def timeline_figure(result: dict[str, Any], raw: Raw) -> Any:
    """When each device applied cloud updates (one row per device, one marker style per
    cloud strategy), over the domain the device was seeing then (background)."""
    cloud = [k for k in raw if uses_cloud(k) and raw[k]]
    rows = raw[cloud[0]] if cloud else []
    fig = _figure((9.5, max(2.8, 0.32 * len(rows) + 1.8)))
    ax = fig.add_subplot()
    ax.set(xlabel="time since the device started (s)", ylabel="device",
           title="cloud updates applied on each device")
    if not cloud:
        ax.text(0.5, 0.5, "no strategy of this run uses the cloud", ha="center",
                va="center", transform=ax.transAxes)
        return fig
    colors = domain_colors(raw)
    for i, r in enumerate(rows):
        spans = _domain_seconds(r)
        ax.broken_barh([(x0, x1 - x0) for _, x0, x1 in spans], (i - 0.45, 0.9),
                       facecolors=[colors[n] for n, _, _ in spans], zorder=0)
    styles = strategy_styles(cloud)
    marks = []
    for j, name in enumerate(cloud):
        offset = 0.25 * (j - (len(cloud) - 1) / 2)
        xs = [t for r in raw[name] for t in r["update_times"]]
        ys = [i + offset for i, r in enumerate(raw[name]) for _ in r["update_times"]]
        color, marker = styles[name]
        marks += ax.plot(xs, ys, ls="none", color=color, marker=marker, ms=6, label=name,
                         zorder=3)
    if len(rows) <= 40:
        ax.set_yticks(range(len(rows)), [r["device_id"] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(left=0)
    _timeline_legend(ax, marks, colors)
    return fig


def _timeline_legend(ax: Any, marks: list[Any], colors: dict[str, str]) -> None:
    """Strategies (their markers) and domains (their backgrounds), right of the axes."""
    from matplotlib.patches import Patch

    patches = [Patch(facecolor=c, edgecolor="0.6", label=n) for n, c in colors.items()]
    _legend(ax, [*marks, *patches], "strategy / domain")


#: The plots of a report: file stem and the function that draws it.
FIGURES: tuple[tuple[str, Callable[[dict[str, Any], Raw], Any]], ...] = (
    ("accuracy_over_time", accuracy_figure), ("bytes_per_device", bytes_figure),
    ("update_timeline", timeline_figure))


def _plots(result: dict[str, Any], raw: Raw, out: Path) -> list[Path]:
    """Draw and save every plot of :data:`FIGURES` as PNG into ``out``."""
    paths = []
    for stem, draw in FIGURES:
        paths.append(out / f"{stem}.png")
        draw(result, raw).savefig(paths[-1], dpi=110)
    return paths


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def strategies_paragraph(result: dict[str, Any]) -> str:
    """One HTML paragraph saying what each strategy of ``result`` does."""
    budget = result.get("budget")
    share = f"up to {budget:.0%}" if isinstance(budget, int | float) else "a budgeted share"
    notes = {
        "source": "the bundle as shipped: never adapted, never talks to the cloud",
        "device": "unlabelled test-time adaptation on the device only (by default "
                  "<code>align</code>: encoder features re-standardised to the bundle's "
                  "source statistics), no cloud",
        "cloud": f"the device uploads {share} of its samples, the most uncertain ones "
                 f"(predictive entropy) with {SPEND_BUDGET['explore']:.0%} of the budget on "
                 "random ones, through its impaired network; the cloud's teacher labels "
                 "them, the cloud learns (by default) a visual prompt, an input filter, a "
                 "low-rank feature adapter and head deltas through the device's exact encoder, "
                 "validates the candidate on held-out uploads, signs it and sends it down; "
                 "the device verifies the signature, tries it on its recent inputs and "
                 "hot-swaps it (rolling back on a collapse)",
        "cloud+memory": "the cloud with fleet memory: a domain the fleet has seen gets "
                        "the update learned for it at once, validated on the device's "
                        "uploads",
        "cloud+device": "both: the device adapts on its own until a cloud update "
                        "arrives, then serves that update and its local adaptation stands "
                        "down until it reverts to the bundle's state"}
    parts = [f"<code>{html.escape(k)}</code>: {notes[k]}" for k in result["strategies"]
             if k in notes]
    return ('<p class="strategies"><b>Strategies.</b> ' + "; ".join(parts) + ".</p>"
            if parts else "")


def _tables(result: dict[str, Any]) -> str:
    """The summary table and the accuracy-per-domain table."""
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
    return (f"<h2>summary</h2><table>{head}{rows}</table>"
            f"<h2>accuracy per domain</h2><table>{dom_head}{dom_rows}</table>"
            + _rollout_tables(result))


def _rollout_tables(result: dict[str, Any]) -> str:
    """One table per strategy whose service rolled versions out in stages: each version's
    state and waves (devices admitted, simulated second, applied, refused)."""
    out = ""
    for name, v in result["strategies"].items():
        if not v.get("rollouts"):
            continue
        rows = "".join(
            f"<tr><td>{html.escape(r['target'])}</td><td>{r['version']}</td>"
            f"<td>{html.escape(r['state'])}</td><td>" + "<br>".join(
                f"wave {w['wave']}: {w['devices']} devices at {w['started_s']:g} s, "
                f"{w['applied']} applied, {w['refused']} refused" for w in r["waves"])
            + f"</td><td>{html.escape(r['reason'][:200])}</td></tr>" for r in v["rollouts"])
        out += (f"<h2>rollout waves: {html.escape(name)}</h2><table><tr><th>target</th>"
                f"<th>version</th><th>state</th><th>waves</th><th>why</th></tr>{rows}</table>")
    return out


def _page(result: dict[str, Any], plots: list[Path], json_name: str) -> str:
    """The HTML page: settings, strategies, tables, embedded plots, the JSON's name."""
    images = "".join(
        f'<h2>{p.stem.replace("_", " ")}</h2><img alt="{p.stem.replace("_", " ")}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in plots)
    cfg = html.escape(", ".join(f"{k}={result[k]}" for k in (
        "scenario", "devices", "samples_per_device", "batch", "seed", "backend", "cloud_mode")
        if k in result))
    groups = f"<p>groups: {html.escape(str(result['groups']))}</p>" if "groups" in result \
        else ""
    name = html.escape(json_name)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgecl simulation: {html.escape(result['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}
</style></head><body><h1>edgecl fleet simulation</h1><p>{cfg}; {result['seconds']} s</p>
{groups}{strategies_paragraph(result)}
{_tables(result)}{images}
<p>JSON result: <a href="{name}">{name}</a></p></body></html>"""


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic | np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_report(result: dict[str, Any], raw: Raw, out: str | Path) -> dict[str, Any]:
    """Write the plots, :data:`JSON_NAME` and :data:`HTML_NAME` into ``out``; returns their
    paths (``html``, ``plots``, ``json``).

    The JSON is ``result`` with ``report`` set to these paths: what ``edgecl simulate
    --json`` writes for the same run.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, raw, out)
    index, result_json = out / HTML_NAME, out / JSON_NAME
    report = {"html": str(index), "plots": [str(p) for p in plots], "json": str(result_json)}
    result_json.write_text(json.dumps({**result, "report": report}, indent=2, sort_keys=True,
                                      default=_jsonable), encoding="utf-8")
    index.write_text(_page(result, plots, result_json.name), encoding="utf-8")
    return report
