"""Shared fixtures: a small exported bundle and the tiny reference zoo (built once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


class SmallEncoder:
    """Factory for a small conv encoder with batch norm in eval mode (random weights)."""

    @staticmethod
    def build(seed: int = 0):  # -> torch.nn.Module
        import torch
        from torch import nn

        torch.manual_seed(seed)
        enc = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        with torch.no_grad():  # non-trivial batch-norm statistics
            enc[1].running_mean.uniform_(-0.2, 0.2)
            enc[1].running_var.uniform_(0.5, 2.0)
        return enc.eval(), nn.Linear(16, 5)


@pytest.fixture(scope="session")
def small_model():
    """(encoder, head) torch modules of the small bundle."""
    return SmallEncoder.build()


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory, small_model) -> Path:
    """A bundle exported from ``small_model`` with normalisation baked in."""
    from edgecl.bundle import export_bundle

    enc, head = small_model
    out = tmp_path_factory.mktemp("bundles") / "small"
    rng = np.random.default_rng(0)
    export_bundle(enc, head, rng.random((1, 28, 28), dtype=np.float32), out,
                  class_names=["a", "b", "c", "d", "e"], mean=[0.13], std=[0.31],
                  real_inputs=rng.random((8, 1, 28, 28), dtype=np.float32))
    return out


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The tiny zoo variant, built once per test session in a private EDGECL_HOME."""
    from edgecl.zoo import build_zoo

    home = tmp_path_factory.mktemp("edgecl_home")
    return build_zoo("tiny", home=home, progress=False)


def images(n: int, seed: int = 0) -> np.ndarray:
    """Random valid images (N, 1, 28, 28) in [0, 1]."""
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (skipped where Debian's postgresql is not
    installed, except in CI: ``EDGECL_REQUIRE_POSTGRES=1`` makes that a failure)."""
    import os

    from tests.postgres import PostgresServer, binaries

    if binaries() is None:
        if os.environ.get("EDGECL_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required here (EDGECL_REQUIRE_POSTGRES=1)")
        pytest.skip("PostgreSQL server programs not installed (apt-get install postgresql)")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


def two_node_ray_cluster(cpus_per_node: int):
    """A local two-node Ray cluster (``ray.cluster_utils.Cluster``), shut down (with this
    process's Ray connection) when the generator ends: ``yield from`` it in a fixture."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node})
    c.add_node(num_cpus=cpus_per_node)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()
