"""The registry keeps which uploads the devices drew at random, across a schema upgrade."""

from __future__ import annotations

import sqlite3

import numpy as np

from edgecl.cloud import Registry
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


def test_a_schema_1_registry_is_upgraded_in_place(tmp_path):
    reg = Registry(tmp_path)
    reg.add_samples("dev", [_sample(0, False)])
    path = reg.path
    del reg
    conn = sqlite3.connect(path)  # make it what edgecl <= 0.1 wrote: no explored column
    conn.execute("ALTER TABLE samples DROP COLUMN explored")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    reg = Registry(tmp_path)
    reg.add_samples("dev", [_sample(1, True)])
    _label_all(reg, "dev", ["s0", "s1"])
    assert reg.recent_inputs_of(["dev"], 10, SHAPE).explored.tolist() == [False, True]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "2"
