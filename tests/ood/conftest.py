"""Shared data for the OOD tests: synthetic Gaussian clusters and tiny-zoo student outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from edgecl.heads import LinearHead

D, C = 16, 4  # feature dimension and number of classes of the synthetic data


@dataclass(frozen=True)
class Synthetic:
    """ID calibration data, fresh ID data and a shifted OOD set, with a matching head."""

    head: LinearHead
    cal_f: np.ndarray
    cal_z: np.ndarray
    cal_y: np.ndarray
    id_f: np.ndarray
    id_z: np.ndarray
    ood_f: np.ndarray
    ood_z: np.ndarray


def clusters(per_class: int = 500, seed: int = 0) -> Synthetic:
    """Class k is N(5 e_k, S) in 16-d; OOD is N(3.5 * (e_5 + ... + e_16) / sqrt(3), S).

    ``S`` is diagonal with standard deviations falling from 1.0 to 0.25 (a decaying spectrum
    like real features; with isotropic noise ViM's residual subspace would be arbitrary).

    The head is the nearest-mean classifier ``z_k = mu_k . f - |mu_k|^2 / 2``.
    """
    rng = np.random.default_rng(seed)
    means = np.zeros((C, D))
    means[np.arange(C), np.arange(C)] = 5.0
    shift = np.zeros(D)
    shift[C:] = 3.5 * 2.0 / np.sqrt(D - C)
    noise = np.linspace(1.0, 0.25, D)
    head = LinearHead(means, -0.5 * (means**2).sum(axis=1))

    def draw(n: int, centre: np.ndarray) -> np.ndarray:
        return (centre + rng.normal(size=(n, D)) * noise).astype(np.float32)

    cal_y = np.repeat(np.arange(C), per_class)
    cal_f = draw(cal_y.size, means[cal_y])
    id_y = np.repeat(np.arange(C), per_class)
    id_f = draw(id_y.size, means[id_y])
    ood_f = draw(per_class * 2, shift)
    return Synthetic(head, cal_f, head.logits(cal_f), cal_y, id_f, head.logits(id_f),
                     ood_f, head.logits(ood_f))


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    return clusters()


@dataclass(frozen=True)
class StudentOutputs:
    """Features and logits of the tiny zoo's student on the reference splits."""

    head: LinearHead
    encoder_sha256: str
    cal: tuple[np.ndarray, np.ndarray]
    cal_y: np.ndarray
    clean: tuple[np.ndarray, np.ndarray]
    novel: tuple[np.ndarray, np.ndarray]
    corrupted: tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="session")
def student_outputs(tiny_zoo) -> StudentOutputs:
    from edgecl.device import DeviceRuntime
    from edgecl.zoo import KNOWN_CLASSES, NOVEL_CLASSES, corrupt, load_mnist

    rt = DeviceRuntime.open(tiny_zoo.student_bundle)
    data = load_mnist()

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred = rt.predict(images, return_features=True)
        return pred.features, pred.logits

    cal = data.calibration.only(KNOWN_CLASSES)
    clean = data.test.only(KNOWN_CLASSES)
    return StudentOutputs(
        head=rt.state.head,
        encoder_sha256=rt.bundle.encoder_sha256,
        cal=run(cal.images),
        cal_y=np.asarray(cal.labels),
        clean=run(clean.images),
        novel=run(data.test.only(NOVEL_CLASSES).images),
        corrupted=run(corrupt(clean.images, "rotate", 4, 0)),
    )
