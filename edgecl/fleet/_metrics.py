"""Fleet metrics from per-device results: the figures of ``edgecl simulate``
(:class:`~edgecl.fleet.SimulationResult`, ``edgecl/schemas/simulate.schema.json``).

Per strategy (``strategies.<name>``):

- ``mean_online_acc``: prequential accuracy over every sample of every device.
- ``per_domain``: the same per domain name (over the devices that saw it).
- ``accuracy_over_time``: fleet accuracy in ``bins`` equal slices of each device's stream
  (``[[start_fraction, acc], ...]``).
- ``bytes_up_per_device`` / ``bytes_down_per_device``: mean bytes through the device's
  (impaired) transport: uploaded sample tensors + 64 bytes of metadata each, and signed
  update payloads + RPC overhead down. 0 for strategies without the cloud.
- ``upload_fraction``: uploaded / predicted samples.
- ``update_latency_s``: median seconds from an update's creation (learned and signed in
  the cloud) to its application on the device; ``null`` without updates.
- ``updates``: ``{"applied", "rejected", "rolled_back"}`` summed over devices.
- ``ood_auroc``: AUROC of the devices' OOD scores separating shifted samples (corrupted
  domain or novel class) from clean known-class ones; ``null`` when a stream has no
  clean or no shifted samples.
- ``forgetting``: mean over devices and recurring domains of (best accuracy on an earlier
  visit - accuracy on the last visit); ``null`` when no domain recurs.
- ``per_device``: one entry per device with its own figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecl.fleet._result import DeviceSummary, StrategySummary, UpdateCounts

BINS = 20


def _visits(domains: np.ndarray) -> list[tuple[int, int, int]]:
    """Contiguous runs ``(domain_id, start, end)``."""
    cut = np.flatnonzero(np.diff(domains)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(domains)]])
    return [(int(domains[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def forgetting(correct: np.ndarray, domains: np.ndarray) -> float | None:
    """Mean over domains visited more than once of (best earlier visit - last visit)."""
    by_domain: dict[int, list[float]] = {}
    for d, s, e in _visits(domains):
        by_domain.setdefault(d, []).append(float(correct[s:e].mean()))
    drops = [max(v[:-1]) - v[-1] for v in by_domain.values() if len(v) > 1]
    return float(np.mean(drops)) if drops else None


def _auroc(results: Sequence[dict[str, Any]]) -> float | None:
    from edgecl.ood import auroc

    pos, neg = [], []
    for r in results:
        scores = r["ood_scores"]
        if len(scores) != len(r["correct"]):
            continue
        shifted = np.asarray(r["domain_shifted"], dtype=bool)[r["domains"]] | r["novel"]
        pos.append(scores[shifted])
        neg.append(scores[~shifted])
    p = np.concatenate(pos) if pos else np.zeros(0)
    n = np.concatenate(neg) if neg else np.zeros(0)
    if len(p) == 0 or len(n) == 0:
        return None
    return round(float(auroc(n, p)), 4)


def _device_entry(r: dict[str, Any]) -> DeviceSummary:
    n = len(r["correct"])
    return DeviceSummary(
        device_id=r["device_id"], group=r["group"],
        mean_online_acc=round(float(r["correct"].mean()), 4) if n else None,
        samples=n, uploads=r["uploads"], bytes_up=r["bytes_up"], bytes_down=r["bytes_down"],
        updates_applied=r["updates_applied"], updates_rejected=r["updates_rejected"],
        rolled_back=r["rolled_back"], states_adapted=r["states_adapted"],
        failed_calls=r["failed_calls"], offline_s=r["offline_s"], pace=r["pace"],
        slow=r["slow"], forgetting=forgetting(r["correct"], r["domains"]),
        seconds=round(r["seconds"], 1))


def summarise(results: Sequence[dict[str, Any]], bins: int = BINS) -> StrategySummary:
    """The ``strategies.<name>`` entry for one strategy's device results (raw logs)."""
    correct = np.concatenate([r["correct"] for r in results])
    per_domain: dict[str, list[np.ndarray]] = {}
    for r in results:
        names = r["domain_names"]
        for d in np.unique(r["domains"]):
            per_domain.setdefault(names[d], []).append(r["correct"][r["domains"] == d])
    over_time = np.zeros(bins)
    counts = np.zeros(bins)
    for r in results:
        n = len(r["correct"])
        idx = np.minimum((np.arange(n) * bins) // max(n, 1), bins - 1)
        np.add.at(over_time, idx, r["correct"])
        np.add.at(counts, idx, 1)
    latencies = [x for r in results for x in r["update_latency_s"]]
    forget = [f for r in results if (f := forgetting(r["correct"], r["domains"])) is not None]
    n_dev = len(results)
    return StrategySummary(
        mean_online_acc=round(float(correct.mean()), 4),
        per_domain={k: round(float(np.concatenate(v).mean()), 4)
                    for k, v in sorted(per_domain.items())},
        accuracy_over_time=[(round(i / bins, 3), round(float(a / c), 4) if c else None)
                            for i, (a, c) in enumerate(zip(over_time, counts))],
        bytes_up_per_device=round(sum(r["bytes_up"] for r in results) / n_dev, 1),
        bytes_down_per_device=round(sum(r["bytes_down"] for r in results) / n_dev, 1),
        upload_fraction=round(sum(r["uploads"] for r in results) / len(correct), 4),
        update_latency_s=round(statistics.median(latencies), 3) if latencies else None,
        updates=UpdateCounts(applied=sum(r["updates_applied"] for r in results),
                             rejected=sum(r["updates_rejected"] for r in results),
                             rolled_back=sum(r["rolled_back"] for r in results)),
        ood_auroc=_auroc(results),
        forgetting=round(float(np.mean(forget)), 4) if forget else None,
        samples=len(correct),
        per_device=[_device_entry(r) for r in results],
        joiner_acc_first_200=_joiner_first(results),
    )


def _joiner_first(results: Sequence[dict[str, Any]], first: int = 200) -> float | None:
    """Accuracy of the late devices over their first ``first`` samples in every corrupted
    domain (None when no device joined late)."""
    parts = []
    for r in results:
        if not r.get("start_s"):
            continue
        d = r["domains"]
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        ends = np.r_[starts[1:], len(d)]
        parts += [r["correct"][a:min(b, a + first)] for a, b in zip(starts, ends)
                  if r["domain_shifted"][int(d[a])]]
    return round(float(np.concatenate(parts).mean()), 4) if parts else None
