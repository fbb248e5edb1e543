"""The fleet report: readable plots (titles, labels, legends off the data, named domains),
the strategies paragraph and links that resolve, on a small synthetic simulation."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.text import Text

from edgecl.fleet import (
    STRATEGIES,
    Impairments,
    SimulationReport,
    SimulationResult,
    summarise,
)
from edgecl.fleet import write_report as fleet_write_report
from edgecl.fleet._report import (
    FIGURES,
    accuracy_figure,
    strategy_styles,
    timeline_figure,
    write_report,
)
from edgecl.fleet._run import uses_cloud

DOMAINS = [["clean", "fog@5", "gaussian_noise@5"], ["clean", "contrast@5", "fog@5"]]


def _device(i: int, strategy: str, n: int = 120, batch: int = 10) -> dict[str, Any]:
    """One device result shaped like :func:`edgecl.fleet.run_device`'s."""
    rng = np.random.default_rng(i)
    cloud = uses_cloud(strategy)
    updates = [4.0 + 3.0 * k + 0.1 * i for k in range(3)] if cloud else []
    return {
        "device_id": f"d{i:03d}", "group": f"group-{i % 2}", "strategy": strategy,
        "correct": rng.random(n) < 0.6, "domains": np.repeat(np.arange(3), n // 3),
        "domain_names": DOMAINS[i % 2], "domain_shifted": [False, True, True],
        "novel": np.zeros(n, bool), "ood_scores": rng.random(n).astype(np.float32),
        "batch_times": np.arange(1, n // batch + 1) * 1.0, "batch": batch,
        "uploads": 12 if cloud else 0, "bytes_up": 9000 + 500 * i if cloud else 0,
        "bytes_down": 4000 if cloud else 0, "failed_calls": 0,
        "updates_applied": len(updates), "updates_rejected": 0, "rolled_back": 0,
        "update_latency_s": [0.5] * len(updates), "update_times": updates,
        "states_adapted": 3 if "device" in strategy else 0, "offline_s": 0.0,
        "pace": 10.0, "slow": False, "seconds": 12.0}


@pytest.fixture(scope="module")
def typed() -> tuple[SimulationResult, dict[str, list[dict[str, Any]]]]:
    """A simulation result as :func:`edgecl.fleet.simulate` builds it, and its raw logs."""
    raw = {s: [_device(i, s) for i in range(3)] for s in STRATEGIES}
    result = SimulationResult(
        scenario="mixed", devices=3, samples_per_device=120, steps=12, batch=10, seed=0,
        pace=10.0, budget=0.2, domains_per_device=2, backend="threads",
        cloud_mode="subprocess", groups="declared", impairments=Impairments(),
        strategies={s: summarise(raw[s]) for s in STRATEGIES}, seconds=1.0)
    return result, raw


@pytest.fixture(scope="module")
def sim(typed) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The result as the report functions get it (its JSON-ready dict)."""
    return typed[0].to_dict(), typed[1]


@pytest.fixture(scope="module")
def figures(sim) -> dict[str, Any]:
    figs = {stem: draw(*sim) for stem, draw in FIGURES}
    for fig in figs.values():
        fig.canvas.draw()  # runs the layout: legends and labels take their places
    return figs


def _texts(fig: Any) -> set[str]:
    return {t.get_text() for t in fig.findobj(Text)}


def test_every_axes_has_a_title_and_axis_labels(figures):
    for stem, fig in figures.items():
        assert fig.axes, stem
        for ax in fig.axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), stem


def test_legends_sit_off_the_data_and_inside_the_figure(figures):
    for stem, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None, stem
            box = legend.get_window_extent(renderer)
            assert not box.overlaps(ax.get_window_extent(renderer)), stem
            assert fig.bbox.contains(box.x1 - 1, box.y0 + 1), f"{stem}: legend cut off"


def test_strategy_legend_colours_are_the_drawn_colours(sim, figures):
    result, _ = sim
    styles = strategy_styles(result["strategies"])
    for stem in ("accuracy_over_time", "update_timeline"):
        ax = figures[stem].axes[0]
        drawn = {line.get_label(): line for line in ax.get_lines() if line.get_label() in styles}
        legend = ax.get_legend()
        shown = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)
                 if t.get_text() in styles}
        expected = list(result["strategies"]) if stem == "accuracy_over_time" else [
            s for s in result["strategies"] if uses_cloud(s)]
        assert list(shown) == expected and set(drawn) == set(expected), stem
        for name, handle in shown.items():
            color, marker = styles[name]
            assert to_rgba(handle.get_color()) == to_rgba(drawn[name].get_color()) \
                == to_rgba(color), (stem, name)
            assert handle.get_marker() == drawn[name].get_marker() == marker, (stem, name)
    # the timeline draws each strategy's updates of every device as one artist
    timeline = figures["update_timeline"].axes[0]
    for line in timeline.get_lines():
        assert len(line.get_xdata()) == 3 * 3


def test_bytes_legend_colours_are_the_bar_colours(figures):
    ax = figures["bytes_per_device"].axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    for bars, handle, label in zip(ax.containers, legend.legend_handles, labels):
        assert label == bars.get_label()
        assert {to_rgba(p.get_facecolor()) for p in bars} == {to_rgba(handle.get_facecolor())}


def test_domains_are_named_in_the_time_plots(figures):
    names = {n for dev in DOMAINS for n in dev}
    assert set(DOMAINS[0]) <= _texts(figures["accuracy_over_time"])  # the first device's
    assert names <= _texts(figures["update_timeline"])  # every device's, in the legend


def test_the_timeline_without_a_cloud_strategy_still_says_what_it_shows(sim):
    result, raw = sim
    local = {k: v for k, v in raw.items() if not uses_cloud(k)}
    fig = timeline_figure({**result, "strategies": {k: result["strategies"][k]
                                                    for k in local}}, local)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert any("no strategy" in t for t in _texts(fig))
    assert accuracy_figure(result, raw).axes[0].get_legend() is not None


def test_the_html_explains_the_strategies_and_links_only_files_beside_it(typed, tmp_path):
    result, raw = typed
    paths = fleet_write_report(result, raw, tmp_path / "report")
    index = Path(paths["html"])
    page = index.read_text()
    paragraph = re.search(r'<p class="strategies">(.*?)</p>', page, re.S)
    assert paragraph is not None
    for name in STRATEGIES:
        assert f"<code>{name}</code>:" in paragraph.group(1)
    assert "20%" in paragraph.group(1) and "teacher" in paragraph.group(1)
    assert "_metrics" not in page and "edgecl.fleet._" not in page
    links = re.findall(r'(?:href|src)="([^"]+)"', page)
    local = [x for x in links if not x.startswith(("data:", "http:", "https:", "#"))]
    assert local == ["result.json"]
    for link in local:
        assert (index.parent / link).is_file(), link
    assert page.count("<img") == 3 and all(Path(p).is_file() for p in paths["plots"])


def test_the_json_beside_the_report_is_what_simulate_writes(typed, tmp_path):
    result, raw = typed
    paths = write_report(result.to_dict(), raw, tmp_path)
    assert Path(paths["json"]) == tmp_path / "result.json"
    simulated = dataclasses.replace(result, report=SimulationReport(
        html=paths["html"], plots=paths["plots"], json=paths["json"]))
    assert json.loads(Path(paths["json"]).read_text()) == json.loads(simulated.to_json())
