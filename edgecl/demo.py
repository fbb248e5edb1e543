"""``edgecl demo``: build (or reuse) the zoo and run the device runtime over a drifting stream.

Until the cloud loop lands, the demo shows the problem the product solves: the frozen
student's accuracy per domain collapses under drift while the cloud teacher's holds up,
and the device's OOD detector flags the shifted domains.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

DEMO_DOMAINS = ("gaussian_noise", "defocus_blur", "contrast", "fog", "rotate", "jpeg",
                "impulse_noise", "elastic", "zigzag", "inverse")


def run_demo(*, variant: str = "full", home: str | None = None, samples: int = 300,
             severity: int = 5, batch: int = 16, out: Any = print) -> int:
    """Run the demo and print a per-domain accuracy table; returns an exit code."""
    import torch
    from tqdm.auto import tqdm

    from edgecl.device import DeviceRuntime
    from edgecl.zoo import build_zoo
    from edgecl.zoo.report import format_zoo_report
    from edgecl.zoo.streams import continual_stream

    zoo = build_zoo(variant, home=home)
    out(format_zoo_report(zoo))
    runtime = DeviceRuntime.open(zoo.student_bundle, threads=1)
    teacher = zoo.load_teacher()
    stream = continual_stream(list(DEMO_DOMAINS), severity=severity, samples_per_domain=samples,
                              include_clean_first=True, seed=0)
    names = [d.name for d in stream.domains]
    hits = {"device": np.zeros(len(names)), "teacher": np.zeros(len(names)),
            "ood": np.zeros(len(names))}
    counts = np.zeros(len(names))
    predict_s = 0.0
    with tqdm(total=len(stream), desc="device over drifting stream", unit="img",
              leave=False) as bar:
        for images, labels, domains in stream.batches(batch):
            t0 = time.perf_counter()
            pred = runtime.predict(images)
            predict_s += time.perf_counter() - t0
            with torch.no_grad():
                teach = teacher(torch.from_numpy(images)).argmax(1).numpy()
            np.add.at(hits["device"], domains, pred.labels == labels)
            np.add.at(hits["teacher"], domains, teach == labels)
            if pred.is_ood is not None:
                np.add.at(hits["ood"], domains, pred.is_ood)
            np.add.at(counts, domains, 1)
            bar.update(len(labels))
    out("")
    out(f"drifting stream: {len(stream)} samples, {len(names)} domains, severity {severity}")
    detector = runtime.state.ood.name if runtime.state.ood is not None else "none"
    out(f"{'domain':<22}{'device (student)':>18}{'cloud teacher':>15}"
        f"{f'flagged OOD ({detector})':>24}")
    for i, name in enumerate(names):
        out(f"{name:<22}{hits['device'][i] / counts[i]:>18.3f}"
            f"{hits['teacher'][i] / counts[i]:>15.3f}{hits['ood'][i] / counts[i]:>24.3f}")
    dev, tea = hits["device"].sum() / counts.sum(), hits["teacher"].sum() / counts.sum()
    out(f"{'mean':<22}{dev:>18.3f}{tea:>15.3f}{hits['ood'].sum() / counts.sum():>24.3f}")
    out(f"device predict: {predict_s / len(stream) * 1e6:.0f} us per image "
        f"(batches of {batch}, 1 thread)")
    return 0
