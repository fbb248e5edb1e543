"""The registry keeps which uploads the devices drew at random, across schema upgrades,
refuses a damaged file instead of starting empty, and never serves a corrupt sample."""

from __future__ import annotations

import sqlite3
import stat

import numpy as np
import pytest

from edgecl import InvalidInput, StorageError
from edgecl.cloud import Registry
from edgecl.cloud._registry import SCHEMA_VERSION
from edgecl.device import Outbox
from edgecl.device._sync import item_to_sample
from edgecl.wire import WireSample

SHAPE = (1, 4, 4)


def _sample(i: int, explored: bool) -> WireSample:
    return WireSample(f"s{i}", input=np.full(SHAPE, i / 10, np.float32), explored=explored)


def _label_all(reg: Registry, device: str, ids: list[str]) -> None:
    reg.set_labels([(device, sid) for sid in ids], np.zeros(len(ids), np.int64),
                   np.zeros(len(ids)))


def test_explored_flags_travel_from_the_outbox_to_the_learning_window(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    for i, flag in enumerate([1, 0, 1]):
        box.put_sync(f"s{i}", {"image": np.full(SHAPE, i / 10, np.float32)}, priority=1.0,
                     meta={"explored": flag, "label": 0})
    samples = [item_to_sample(item) for item in box.lease(10)]
    box.close()
    assert [s.explored for s in sorted(samples, key=lambda s: s.sample_id)] == [True, False,
                                                                              True]
    reg = Registry(tmp_path / "cloud")
    reg.add_samples("dev", sorted(samples, key=lambda s: s.sample_id))
    _label_all(reg, "dev", ["s0", "s1", "s2"])
    recent = reg.recent_inputs_of(["dev"], 10, SHAPE)
    assert recent.explored.tolist() == [True, False, True]
    assert np.allclose(recent.inputs[:, 0, 0, 0], [0.0, 0.1, 0.2])  # oldest first
    assert reg.recent_inputs_of(["dev"], 2, SHAPE).explored.tolist() == [False, True]


def before_alembic(conn: sqlite3.Connection) -> None:
    """Make a registry file what edgecl wrote before its schema was Alembic's."""
    conn.execute("ALTER TABLE samples DROP COLUMN claim_until_ms")
    for table in ("alembic_version", "learning_leases", "learning_runs", "artifacts"):
        conn.execute(f"DROP TABLE {table}")


def test_a_schema_1_registry_is_upgraded_in_place(tmp_path):
    reg = Registry(tmp_path)
    reg.add_samples("dev", [_sample(0, False)])
    path = reg.path
    del reg
    conn = sqlite3.connect(path)  # make it what edgecl <= 0.1 wrote: no explored column,
    conn.execute("ALTER TABLE samples DROP COLUMN explored")  # nothing of Alembic's
    before_alembic(conn)
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    reg = Registry(tmp_path)
    reg.add_samples("dev", [_sample(1, True)])
    _label_all(reg, "dev", ["s0", "s1"])
    assert reg.recent_inputs_of(["dev"], 10, SHAPE).explored.tolist() == [False, True]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(
            SCHEMA_VERSION)


def _filled(tmp_path, n: int = 3) -> Registry:
    reg = Registry(tmp_path)
    reg.register("dev", "tok", "sha", "", {})
    reg.add_samples("dev", [_sample(i, False) for i in range(n)])
    return reg


def test_a_schema_2_registry_gets_checksums_and_keeps_serving(tmp_path):
    _filled(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "registry.sqlite")  # what edgecl 0.2 wrote
    conn.execute("DROP TABLE quarantine")
    conn.execute("ALTER TABLE samples DROP COLUMN checksum")
    before_alembic(conn)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    reg = Registry(tmp_path)
    keys, _ = reg.unlabelled(10, SHAPE)
    assert [k[1] for k in keys] == ["s0", "s1", "s2"] and reg.quarantine() == []


@pytest.mark.parametrize("size", [0, 100, 4096])
def test_a_truncated_registry_is_refused_not_recreated(tmp_path, size):
    _filled(tmp_path).close()
    path = tmp_path / "registry.sqlite"
    with open(path, "r+b") as f:
        f.truncate(size)
    with pytest.raises(StorageError, match="registry.sqlite.*(empty|corrupt|readable|not an)"):
        Registry(tmp_path)
    assert path.stat().st_size == size  # left as found, for the operator


def test_a_foreign_database_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not an edgecl registry"):
        Registry(tmp_path)


def test_a_flipped_byte_in_a_sample_is_quarantined_not_served(tmp_path):
    reg = _filled(tmp_path)
    reg.close()
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    blob = bytearray(conn.execute("SELECT input FROM samples WHERE sample_id = 's1'")
                     .fetchone()[0])
    blob[5] ^= 0x40
    conn.execute("UPDATE samples SET input = ? WHERE sample_id = 's1'", (bytes(blob),))
    conn.commit()
    conn.close()
    reg = Registry(tmp_path)
    keys, _ = reg.unlabelled(10, SHAPE)
    assert [k[1] for k in keys] == ["s0", "s2"]
    assert reg.quarantine() == [("dev", "s1", "checksum mismatch")] and reg.quarantined == 1
    _label_all(reg, "dev", ["s0", "s2"])
    assert reg.recent_inputs_of(["dev"], 10, SHAPE).inputs.shape[0] == 2


def test_a_changed_label_is_not_served_to_learning(tmp_path):
    reg = _filled(tmp_path)
    _label_all(reg, "dev", ["s0", "s1", "s2"])
    with sqlite3.connect(tmp_path / "registry.sqlite") as conn:
        conn.execute("UPDATE samples SET explored = 1 WHERE sample_id = 's0'")
    assert reg.recent_inputs_of(["dev"], 10, SHAPE).inputs.shape[0] == 2
    assert [q[1] for q in reg.quarantine()] == ["s0"]


def test_non_finite_features_store_nothing_of_the_batch(tmp_path):
    reg = Registry(tmp_path)
    bad = WireSample("s9", input=np.zeros(SHAPE, np.float32),
                     features=np.array([0.0, np.nan], np.float32))
    with pytest.raises(InvalidInput, match="NaN or inf"):
        reg.add_samples("dev", [_sample(0, False), bad])
    assert reg.sample_count() == 0


def test_storage_is_private(tmp_path):
    reg = _filled(tmp_path / "store")
    for path in [tmp_path / "store", tmp_path / "store" / "artifacts"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (tmp_path / "store").glob("registry.sqlite*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    reg.close()


def test_negative_versions_and_oversized_maps_are_invalid_input(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(InvalidInput):
        reg.updates_after("dev", -1)
    with pytest.raises(InvalidInput):
        reg.register("dev", "tok", "sha", "", {f"k{i}": "v" for i in range(1000)})
    with pytest.raises(InvalidInput):
        reg.add_report("dev", 0, {"x" * 10_000: 1.0})


def test_a_device_keeps_only_its_newest_reports_and_update_events(tmp_path, monkeypatch):
    import edgecl.cloud._registry as registry_module

    monkeypatch.setattr(registry_module, "KEEP_REPORTS", 5)
    reg = Registry(tmp_path)
    for device in ("a", "b"):
        reg.register(device, device * 40, "e" * 64, "", {})
    for i in range(12):
        reg.add_report("a", i, {"n": float(i)}, [(i, "applied", "", i)])
    reg.add_report("b", 0, {"n": 0.0})
    assert [v for _, v, _ in reg.reports_of("a", 100)] == [11, 10, 9, 8, 7]
    assert [e[0] for e in reg.events_of("a", 100)] == [11, 10, 9, 8, 7]
    assert len(reg.reports_of("b", 100)) == 1  # another device's reports are its own


def test_a_device_is_served_only_released_versions_and_those_it_was_admitted_to(tmp_path):
    from edgecl.cloud import UpdateSigner
    from edgecl.wire import UpdatePayload

    reg = Registry(tmp_path)
    signer = UpdateSigner.load_or_create(tmp_path / "key.pem")

    def publish(version):
        payload = UpdatePayload(version, version - 1, "e" * 64, group="g", parts={})
        reg.publish("g", signer.sign(payload), payload)

    publish(1)  # auto: released
    reg.set_rollout_policy("g", {"mode": "staged"}, "test")
    publish(2)  # rolling
    assert reg.admit("g", 2, ["a"], 1, 0.0)
    publish(3)  # rolling: supersedes v2, admits no one yet

    def served(device, after=0, cap=None):
        return [u.version for u in reg.updates_after("g", after, device_id=device, cap=cap)]

    assert served("a") == [1, 2] and served("b") == [1]
    assert reg.rollout_cap("a", "g") == 2 and reg.rollout_cap("b", "g") == 1
    newest = reg.updates_after("g", 0, limit=1, newest_first=True, device_id="b", cap=3)
    assert [u.version for u in newest] == [1]
    assert served("a", cap=1) == [1]  # a pin below what it was admitted to wins
    assert not reg.admit("g", 2, ["b"], 2, 1.0)  # v2 was superseded: no wave for it
    assert [u.version for u in reg.updates_after("g", 0)] == [1, 2, 3]  # no device: all


def test_a_devices_kept_sample_count_follows_uploads_pruning_and_quarantine(tmp_path):
    def counted(reg):
        return reg._rows("SELECT COUNT(*) FROM samples WHERE device_id = 'dev'")[0][0]

    reg = Registry(tmp_path, max_samples_per_device=6)
    reg.register("dev", "tok", "sha", "", {})
    assert reg.sample_count("dev") == 0  # counted once, then kept
    reg.add_samples("dev", [_sample(i, False) for i in range(4)])
    reg.add_samples("dev", [_sample(i, False) for i in range(2, 5)])  # 2 duplicates
    assert reg.sample_count("dev") == counted(reg) == 5
    _label_all(reg, "dev", [f"s{i}" for i in range(5)])
    reg.add_samples("dev", [_sample(i, False) for i in range(5, 9)])  # prunes the oldest 3
    assert reg.sample_count("dev") == counted(reg) == 6
    reg.close()
    conn = sqlite3.connect(tmp_path / "registry.sqlite")  # damage one stored sample
    conn.execute("UPDATE samples SET checksum = 'bad' WHERE sample_id = 's8'")
    conn.commit()
    conn.close()
    reg = Registry(tmp_path, max_samples_per_device=6)
    assert reg.sample_count("dev") == 6
    reg.unlabelled(10, SHAPE)  # finds and quarantines it
    assert reg.quarantined == 1 and reg.sample_count("dev") == counted(reg) == 5
