"""The ``edge`` benchmark bundle: a 3x224x224 depthwise-separable encoder, random weights."""

from __future__ import annotations

import os
from pathlib import Path

from edgecl._exceptions import BundleError
from edgecl._home import default_home
from edgecl.bundle import load_bundle

EDGE_VERSION = 5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def edge_bundle(home: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Path of the cached ``edge`` bundle, exporting it first if needed (needs torch)."""
    path = Path(home or default_home()) / "bench" / f"edge-v{EDGE_VERSION}"
    if not force:
        try:
            load_bundle(path)
            return path
        except BundleError:
            pass
    import torch

    from edgecl.bundle import export_bundle
    from edgecl.zoo.models import EdgeEncoder

    encoder, head = edge_modules()
    example = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    export_bundle(encoder, head, example, path, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  n_random=4, name="edge-bench", overwrite=True,
                  class_names=[f"class{i}" for i in range(head.out_features)],
                  extra={"weights": "random (seed 0)", "encoder": EdgeEncoder.__name__,
                         "ood": "detectors fitted on random inputs with round-robin labels: "
                                "for timing only"})
    import numpy as np

    from edgecl.zoo.build import calibrate_student

    rng = np.random.default_rng(2)
    calibrate_student(path, rng.random((200, 3, 224, 224), dtype=np.float32),
                      np.arange(200) % head.out_features)
    return path


def edge_modules():  # -> tuple[EdgeEncoder, torch.nn.Linear]
    """The edge encoder (eval mode, random weights with non-trivial BN stats) and a head."""
    import torch

    from edgecl.zoo.models import EdgeEncoder

    torch.manual_seed(0)
    encoder = EdgeEncoder().eval()
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    return encoder, torch.nn.Linear(encoder.feature_dim, 10)
