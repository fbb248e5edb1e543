"""The fleet's domain library (``[learning] memory``): signatures, matching, one entry per
domain, least-recently-used eviction, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.cloud import DomainLibrary, DomainSignature

ENC = "a" * 64


def _feats(shift: float, n: int = 64, seed: int = 0, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, (n, dim))


def _parts(value: float) -> dict[str, np.ndarray]:
    return {"head.weight": np.full((3, 16), value, np.float32),
            "head.bias": np.zeros(3, np.float32)}


def test_the_statistic_is_about_one_within_a_domain_and_large_across():
    a, b = DomainSignature.of(_feats(0, seed=1)), DomainSignature.of(_feats(0, seed=2))
    far = DomainSignature.of(_feats(1.5, seed=3))
    assert a.statistic(b) < 4.0
    assert a.statistic(far) > 30.0
    assert a.statistic(far) == pytest.approx(far.statistic(a))


def test_one_entry_per_domain_closest_first_and_it_survives_a_restart(tmp_path):
    lib = DomainLibrary(tmp_path / "library.db", encoders=[ENC])
    first = lib.store("fleet", ENC, "dev-a", DomainSignature.of(_feats(0, seed=1)), _parts(1),
                      {"candidate_agreement": 0.8})
    other = lib.store("fleet", ENC, "dev-a", DomainSignature.of(_feats(3, seed=1)), _parts(2),
                      {})
    # the same domain learned again (another device): replaces the entry, not a second one
    again = lib.store("fleet", ENC, "dev-b", DomainSignature.of(_feats(0, seed=4)), _parts(5),
                      {})
    assert again == first and other != first and len(lib) == 2
    query = DomainSignature.of(_feats(0, n=24, seed=9))
    (m,) = lib.match("fleet", ENC, query)
    assert m.entry.id == first and m.entry.origin == "dev-b"
    assert float(m.entry.parts["head.weight"][0, 0]) == 5.0
    assert lib.match("group-1", ENC, query) == []  # another scope sees nothing
    assert lib.match("fleet", ENC, DomainSignature.of(_feats(8, n=24))) == []
    lib.close()
    reopened = DomainLibrary(tmp_path / "library.db", encoders=[ENC])
    assert [x.entry.id for x in reopened.match("fleet", ENC, query)] == [first]
    reopened.close()


def test_the_least_recently_used_entry_is_evicted_beyond_capacity(tmp_path):
    lib = DomainLibrary(tmp_path / "library.db", encoders=[ENC], capacity=2)
    ids = [lib.store("fleet", ENC, "d", DomainSignature.of(_feats(3 * k, seed=k)), _parts(k),
                     {}) for k in range(2)]
    lib.record_match(ids[0])  # used after the second was stored
    lib.store("fleet", ENC, "d", DomainSignature.of(_feats(9, seed=5)), _parts(9), {})
    kept = {e.id for e in lib.entries("fleet", ENC)}
    assert len(kept) == 2 and ids[0] in kept and ids[1] not in kept
    lib.close()


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        DomainLibrary(tmp_path / "l.db", encoders=[ENC], capacity=0)
    with pytest.raises(ConfigError):
        DomainLibrary(tmp_path / "l.db", encoders=[ENC], threshold=0)


def test_the_cost_benchmark_runs_and_reports_bytes_and_match_time(tiny_zoo):
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "tools/bench_library.py", "--variant", "tiny",
                          "--home", str(tiny_zoo.path.parent.parent), "--entries", "6",
                          "--queries", "12", "--json"], capture_output=True, text=True,
                         timeout=300, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["entries"] == 6 and figures["file_bytes_per_entry"] >= figures["parts_bytes"]
    assert 0 < figures["match_ms_p50"] <= figures["match_ms_p99"]
