"""A damaged fleet memory never serves: a corrupt entry, a signature of the wrong
dimension, an entry for an encoder the service no longer serves are skipped with a logged
reason."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np

from edgecl.cloud import DomainLibrary, DomainSignature

ENC, OLD = "a" * 64, "b" * 64


def _sig(shift: float = 0.0, dim: int = 16, seed: int = 0) -> DomainSignature:
    return DomainSignature.of(np.random.default_rng(seed).normal(shift, 1.0, (48, dim)))


def _parts() -> dict[str, np.ndarray]:
    return {"head.weight": np.ones((3, 16), np.float32), "head.bias": np.zeros(3, np.float32)}


def test_a_corrupt_entry_is_skipped_and_logged_never_served(tmp_path, caplog):
    path = tmp_path / "library.db"
    lib = DomainLibrary(path, encoders=[ENC])
    bad = lib.store("fleet", ENC, "d", _sig(0), _parts(), {})
    good = lib.store("fleet", ENC, "d", _sig(5), _parts(), {})
    lib.close()
    with sqlite3.connect(path) as db:  # flip bytes of the stored parts (a disk error)
        blob = bytearray(db.execute("SELECT parts FROM domains WHERE id = ?",
                                    (bad,)).fetchone()[0])
        blob[len(blob) // 2] ^= 0xFF
        db.execute("UPDATE domains SET parts = ? WHERE id = ?", (bytes(blob), bad))
        # and a second kind of damage: arrays that are not arrays, checksum matching
        db.execute("INSERT INTO domains SELECT NULL, scope, encoder, origin, dim, count, "
                   "signature, X'00', metrics, checksum, created_ms, used_ms, matches "
                   "FROM domains WHERE id = ?", (good,))
    lib = DomainLibrary(path, encoders=[ENC])
    with caplog.at_level(logging.WARNING, logger="edgecl.cloud"):
        served = {e.id for e in lib.entries("fleet", ENC)}
        assert lib.match("fleet", ENC, _sig(0, seed=3)) == []
    assert served == {good}
    assert bad in lib.skipped and "checksum" in lib.skipped[bad]
    assert any("skipping entry" in r.getMessage() for r in caplog.records)
    lib.close()


def test_a_signature_of_the_wrong_dimension_is_skipped(tmp_path, caplog):
    lib = DomainLibrary(tmp_path / "library.db", encoders=[ENC])
    entry = lib.store("fleet", ENC, "d", _sig(0, dim=8), _parts(), {})
    with caplog.at_level(logging.WARNING, logger="edgecl.cloud"):
        assert lib.match("fleet", ENC, _sig(0, dim=16)) == []
    assert "dimension" in lib.skipped[entry]
    assert any("dimension" in r.getMessage() for r in caplog.records)
    lib.close()


def test_entries_for_an_encoder_no_longer_served_are_dropped(tmp_path, caplog):
    path = tmp_path / "library.db"
    lib = DomainLibrary(path, encoders=[ENC, OLD])
    lib.store("fleet", OLD, "d", _sig(0), _parts(), {})
    kept = lib.store("fleet", ENC, "d", _sig(0), _parts(), {})
    lib.close()
    with caplog.at_level(logging.WARNING, logger="edgecl.cloud"):
        lib = DomainLibrary(path, encoders=[ENC])  # the old encoder is retired
    assert len(lib) == 1 and [e.id for e in lib.entries("fleet", ENC)] == [kept]
    assert lib.entries("fleet", OLD) == []
    assert any("does not serve" in r.getMessage() for r in caplog.records)
    lib.close()
