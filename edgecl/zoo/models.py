"""Reference architectures (torch): the small student, the large teacher, the edge benchmark.

- :class:`StudentEncoder` + a linear head: a small CNN (<= 100k parameters) with batch
  norm, frozen on the device after training on clean data.
- :class:`Teacher`: >= 10x the student's parameters, with group norm only (no batch
  statistics), trained with broad augmentation in the cloud.
- :class:`EdgeEncoder`: a depthwise-separable CNN of 2-4M parameters on 3x224x224 inputs,
  random weights, used only to benchmark the runtime at an edge-realistic size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class StudentEncoder(nn.Module):
    """Three conv blocks and global average pooling: images -> ``channels[-1]`` features."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            *_conv_bn(1, c1), nn.MaxPool2d(2),
            *_conv_bn(c1, c2), nn.MaxPool2d(2),
            *_conv_bn(c2, c3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.feature_dim = c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class Teacher(nn.Module):
    """A wider CNN with group norm and a two-layer classifier: images -> logits."""

    def __init__(self, width: int = 32, hidden: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GroupNorm(8, 4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(4 * w * 9, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def _dw_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin), nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
    )


class EdgeEncoder(nn.Module):
    """MobileNet-style depthwise-separable encoder for 3x224x224 images (2.9M params, ~0.3 GMAC)."""

    def __init__(self) -> None:
        super().__init__()
        plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 512, 2),
                (512, 1024, 2), (1024, 1024, 1), (1024, 1024, 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU6())
        self.blocks = nn.Sequential(*[_dw_separable(a, b, s) for a, b, s in plan])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x)))
