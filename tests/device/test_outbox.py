"""Outbox: round trip, bounds, leases, non-blocking puts, crash durability, concurrency."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecl import ConfigError, EdgeclError, InvalidInput, StorageError
from edgecl.device._outbox import (
    Outbox,
    OutboxItem,
    OutboxStats,
    decode_arrays,
    encode_arrays,
)
from tests.device.outbox_writer import sample_arrays

WRITER = Path(__file__).with_name("outbox_writer.py")


def arrays(i: int) -> dict[str, np.ndarray]:
    return {"image": np.full((1, 4, 4), i, np.float32), "features": np.arange(3) + i}


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "outbox.db"


def test_round_trip_priority_order_and_stats(db):
    with Outbox(db, store=("image", "features")) as box:
        data = {f"id{i}": sample_arrays(i) for i in range(5)}
        prios = [0.3, 0.9, 0.1, 0.5, 0.7]
        for i, ((sid, arrs), p) in enumerate(zip(data.items(), prios)):
            extra = {"ignored": np.zeros(2)}  # not in store: not persisted
            meta = {"domain": "fog", "label": np.int64(3), "ood": p}
            assert box.put_sync(sid, {**arrs, **extra}, priority=p, meta=meta,
                                created_at=1000.0 + i)
        items = box.lease(10)
        assert [it.sample_id for it in items] == ["id1", "id4", "id3", "id0", "id2"]
        for it in items:
            assert isinstance(it, OutboxItem) and it.attempts == 1
            assert set(it.arrays) == {"image", "features"}
            for name, a in data[it.sample_id].items():
                assert it.arrays[name].dtype == a.dtype and np.array_equal(it.arrays[name], a)
            assert it.meta == {"domain": "fog", "label": 3, "ood": it.priority}
            assert it.created_at == 1000.0 + int(it.sample_id[2:])
        assert box.lease(10) == []  # all leased
        s = box.stats()
        assert isinstance(s, OutboxStats)
        assert (s.count, s.stored, s.enqueued, s.acked, s.dropped, s.evicted) == (5, 5, 5, 0,
                                                                                   0, 0)
        assert s.bytes > 5 * (16 * 4 + 16)
        assert box.ack(["id1", "id4", "nope", "id1"]) == 2
        s = box.stats()
        assert (s.count, s.acked) == (3, 2)
    with Outbox(db, store=("image", "features")) as box:  # counters survive a restart
        s2 = box.stats()
        assert (s2.count, s2.bytes, s2.stored, s2.acked, s2.enqueued) == (
            s.count, s.bytes, s.stored, s.acked, s.enqueued)
        assert len(box.lease(10)) == 3  # leases of a previous process are released


def test_codec_round_trips_exactly_and_rejects_corruption():
    arrs = {"a": np.arange(12, dtype=">i4").reshape(3, 4), "b": np.array([], np.float64),
            "c": np.array([[1 + 2j]], np.complex64), "d": np.array(True),
            "e": np.asfortranarray(np.random.default_rng(0).random((3, 5), np.float32))}
    out = decode_arrays(encode_arrays(arrs))
    for k, a in arrs.items():
        assert out[k].dtype == a.dtype and out[k].shape == a.shape
        assert np.array_equal(out[k], a) and out[k].flags.writeable
    blob = bytearray(encode_arrays(arrs))
    blob[-1] ^= 0xFF
    for bad in (bytes(blob), b"", b"garbage" * 10, encode_arrays(arrs)[:-3]):
        with pytest.raises(StorageError, match="corrupt outbox record"):
            decode_arrays(bad)


def _ids(box: Outbox) -> set[str]:
    con = sqlite3.connect(box.path)
    try:
        return {r[0] for r in con.execute("SELECT sample_id FROM outbox")}
    finally:
        con.close()


@pytest.mark.parametrize("bound", ["count", "bytes"])
def test_bounds_keep_the_highest_priorities(db, bound):
    prios = np.random.default_rng(1).permutation(30).astype(float)
    with Outbox(db, store=("image",)) as probe:
        probe.put_sync("x0", arrays(0), priority=0.0)
        item_bytes = probe.stats().bytes
    db.unlink()
    kw = ({"max_count": 10} if bound == "count" else
          {"max_bytes": 10 * item_bytes + item_bytes // 2})
    with Outbox(db, store=("image",), **kw) as box:
        for i, p in enumerate(prios):
            box.put(f"x{i}", arrays(i), priority=p)
        box.flush(timeout=10)
        s = box.stats()
        keep = {f"x{i}" for i in np.argsort(prios)[-10:]}
        assert _ids(box) == keep
        assert s.count == 10 and s.bytes == 10 * item_bytes
        assert s.evicted + s.dropped == 20 and s.stored == 10 + s.evicted
        # the split is fixed by the insertion order: a new item is dropped iff it ranks
        # below the 10 it would compete with
        expect_dropped = sum(
            1 for i in range(10, 30) if prios[i] < np.sort(prios[:i])[-10])
        assert s.dropped == expect_dropped
        assert s.enqueued == 30


def test_eviction_ties_oldest_first_and_spares_leased_items(db):
    with Outbox(db, store=("image",), max_count=3) as box:
        for i in range(3):
            box.put_sync(f"t{i}", arrays(i), priority=1.0, created_at=100.0 + i)
        assert box.put_sync("new", arrays(9), priority=1.0, created_at=200.0)
        assert _ids(box) == {"t1", "t2", "new"}  # equal priority: the oldest goes
        assert not box.put_sync("old", arrays(9), priority=1.0, created_at=50.0)
        leased = box.lease(3)
        assert [it.sample_id for it in leased] == ["t1", "t2", "new"]  # ties: oldest first
        assert not box.put_sync("top", arrays(9), priority=9.0)  # nothing evictable
        box.release(["t1"])
        assert box.put_sync("top", arrays(9), priority=9.0)
        assert _ids(box) == {"t2", "new", "top"}
        s = box.stats()
        assert (s.evicted, s.dropped, s.stored) == (2, 2, 5)


def test_oversized_item_is_dropped(db):
    with Outbox(db, store=("image",), max_bytes=1000) as box:
        big = {"image": np.zeros(1000, np.uint8)}
        assert not box.put("big", big, priority=1.0)
        assert not box.put_sync("big", big, priority=1.0)
        assert box.stats().dropped == 2 and box.stats().count == 0
    with Outbox(db, store=("image",), max_bytes=1000) as box:  # drops were saved on close
        assert box.stats().dropped == 2


def test_duplicate_sample_id_is_stored_once(db):
    with Outbox(db, store=("image",)) as box:
        assert box.put_sync("dup", arrays(1), priority=0.5)
        assert box.put_sync("dup", arrays(2), priority=0.9)  # no-op, already stored
        assert box.put("dup", arrays(3), priority=0.9)
        box.flush(timeout=5)
        s = box.stats()
        assert (s.count, s.stored, s.duplicates, s.dropped) == (1, 1, 2, 0)
        [item] = box.lease(5)
        assert item.priority == 0.5 and np.array_equal(item.arrays["image"],
                                                       arrays(1)["image"])


def test_at_least_once_leases(db):
    with Outbox(db, store=("image",)) as box:
        for i in range(4):
            box.put_sync(f"l{i}", arrays(i), priority=float(i))
        first = box.lease(2, lease_seconds=0.2)
        assert [(it.sample_id, it.attempts) for it in first] == [("l3", 1), ("l2", 1)]
        time.sleep(0.3)  # not acked: the lease expires
        again = box.lease(2, lease_seconds=30)
        assert [(it.sample_id, it.attempts) for it in again] == [("l3", 2), ("l2", 2)]
        assert np.array_equal(again[0].arrays["image"], first[0].arrays["image"])
        assert [it.sample_id for it in box.lease(5, lease_seconds=30)] == ["l1", "l0"]
        assert box.lease(5) == []  # everything is leased
        box.release(["l0", "l3", "unknown"])
        assert [(it.sample_id, it.attempts) for it in box.lease(5)] == [("l3", 3),
                                                                         ("l0", 2)]
        assert box.ack(["l0", "l1", "l2", "l3"]) == 4
        assert box.stats().count == 0 and box.lease(5) == []
        assert box.stats().acked == 4


def test_put_never_blocks_on_a_slow_writer(db):
    gate = threading.Event()
    with Outbox(db, store=("image",), queue_size=8) as box:
        write = box._write_items

        def stuck(batch):  # the writer hangs on its first batch until released
            gate.wait(20)
            write(batch)

        box._write_items = stuck
        image = {"image": np.zeros(784, np.float32)}
        try:
            t0 = time.perf_counter()
            results = [box.put(f"n{i}", image, priority=1.0) for i in range(1000)]
            elapsed = time.perf_counter() - t0
            with pytest.raises(TimeoutError):
                box.flush(timeout=0.05)
        finally:
            gate.set()
        accepted = sum(results)
        assert elapsed < 1.0  # blocking would take the 20 s of the gate
        assert 8 <= accepted <= 8 + 64  # the queue plus at most one batch in the writer
        assert box.stats().dropped == 1000 - accepted
        assert box.stats().enqueued == accepted
        box.flush(timeout=10)
        assert box.stats().count == accepted


def test_full_outbox_keeps_accepting(db):
    with Outbox(db, store=("image",), max_count=5) as box:
        for i in range(5):
            box.put_sync(f"h{i}", arrays(i), priority=10.0 + i)
        assert box.put("low", arrays(9), priority=1.0)  # queued, dropped by the writer
        assert box.put("high", arrays(9), priority=99.0)
        box.flush(timeout=5)
        assert not box.put_sync("low2", arrays(9), priority=1.0)
        s = box.stats()
        assert _ids(box) == {"h1", "h2", "h3", "h4", "high"}
        assert (s.count, s.dropped, s.evicted, s.enqueued) == (5, 2, 1, 8)


def test_writer_survives_errors(db, caplog):
    gate = threading.Event()
    with Outbox(db, store=("image",)) as box:
        insert, write = box._insert, box._write_items

        def failing_insert(rec, delta, now):
            if rec[0] == "boom":
                raise sqlite3.OperationalError("disk I/O error (simulated)")
            return insert(rec, delta, now)

        def gated_write(batch):  # hold the writer so the rest pile up into one batch
            gate.wait(10)
            write(batch)

        box._insert, box._write_items = failing_insert, gated_write
        try:
            for sid in ("a", "b", "boom", "c", "d"):
                assert box.put(sid, arrays(0), priority=1.0)
        finally:
            gate.set()
        box.flush(timeout=10)
        assert box._thread.is_alive()
        assert box.put("e", arrays(0), priority=1.0)
        box.flush(timeout=10)
        s = box.stats()
        assert _ids(box) == {"a", "b", "c", "d", "e"}
        assert (s.errors, s.stored, s.enqueued) == (1, 5, 6)
    assert "lost sample 'boom'" in caplog.text


def test_put_copies_arrays(db):
    with Outbox(db, store=("image",)) as box:
        img = {"image": np.ones(5, np.float32)}
        box.put("c", img, priority=1.0)
        img["image"][:] = 7
        box.flush(timeout=5)
        assert np.array_equal(box.lease(1)[0].arrays["image"], np.ones(5, np.float32))


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_id": ""}, "sample_id"),
    ({"sample_id": "x" * 129}, "sample_id"),
    ({"sample_id": 7}, "sample_id"),
    ({"arrays": {"image": [1.0, 2.0]}}, "numpy array"),
    ({"arrays": {"image": np.array([1.0, np.nan])}}, "NaN or inf"),
    ({"arrays": {"image": np.array([np.inf], np.float32)}}, "NaN or inf"),
    ({"arrays": {"image": np.array(["a"])}}, "unsupported dtype"),
    ({"arrays": {"features": np.ones(2)}}, "missing array"),
    ({"arrays": np.ones(2)}, "mapping"),
    ({"priority": float("nan")}, "priority"),
    ({"priority": "high"}, "priority"),
    ({"meta": {"x": [1, 2]}}, "meta"),
    ({"meta": {"x": float("inf")}}, "meta"),
    ({"meta": {1: "a"}}, "meta"),
])
def test_invalid_inputs(db, kwargs, match):
    args = {"sample_id": "ok", "arrays": {"image": np.ones(3, np.float32)},
            "priority": 1.0, **kwargs}
    with Outbox(db, store=("image",)) as box:
        for put in (box.put, box.put_sync):
            with pytest.raises(InvalidInput, match=match):
                put(args["sample_id"], args["arrays"], priority=args["priority"],
                    meta=args.get("meta"))
        assert box.stats().enqueued == 0


@pytest.mark.parametrize("kwargs", [{"max_count": 0}, {"max_bytes": -1},
                                    {"queue_size": 0}, {"store": ()},
                                    {"synchronous": "OFF"}])
def test_bad_config(db, kwargs):
    with pytest.raises(ConfigError):
        Outbox(db, **kwargs)


def test_closed_outbox(db):
    box = Outbox(db, store=("image",))
    box.put("q", arrays(0), priority=1.0)
    box.close()
    box.close()  # idempotent
    assert not box.put("late", arrays(1), priority=1.0)  # never raises on the hot path
    with pytest.raises(ConfigError, match="closed"):
        box.lease(1)
    with Outbox(db, store=("image",)) as again:  # close drained the queue
        assert again.stats().count == 1


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_committed_samples_survive_sigkill(db, synchronous):
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), synchronous],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        while len(committed) < 200 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed.append(line.strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert len(committed) == 200, proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with Outbox(db, store=("image", "features")) as box:
        items = {it.sample_id: it for it in box.lease(100_000)}
        for sid in committed:
            i = int(sid[1:])
            assert sid in items, sid
            expect = sample_arrays(i)
            for name, a in expect.items():
                got = items[sid].arrays[name]
                assert got.dtype == a.dtype and np.array_equal(got, a), sid
            assert items[sid].meta == {"i": i}
        assert box.stats().errors == 0 and box.stats().count == len(items)


def test_concurrent_puts_and_uploader_add_up(db):
    n_threads, per_thread = 8, 200
    box = Outbox(db, store=("image",), max_count=300, queue_size=256)
    acked: list[str] = []
    stop = threading.Event()

    def producer(t: int) -> None:
        rng = np.random.default_rng(t)
        for i in range(per_thread):
            box.put(f"p{t}-{i}", arrays(i), priority=float(rng.random()))
            if i % 10 == 0:
                time.sleep(0.001)

    def uploader() -> None:
        while not stop.is_set():
            items = box.lease(16)
            ids = [it.sample_id for it in items]
            if ids and box.ack(ids) != len(ids):
                raise AssertionError("ack lost items")
            acked.extend(ids)
            if not ids:
                time.sleep(0.001)

    up = threading.Thread(target=uploader)
    up.start()
    producers = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    box.flush(timeout=20)
    stop.set()
    up.join()
    s = box.stats()
    stored = _ids(box)
    box.close()
    print(s)
    total = n_threads * per_thread
    assert len(acked) == len(set(acked)) == s.acked
    assert not stored & set(acked)
    assert len(stored) == s.count <= 300
    assert (s.duplicates, s.errors) == (0, 0)
    assert s.stored == s.acked + s.evicted + s.count
    assert total == s.acked + s.count + s.evicted + s.dropped
    overflow = total - s.enqueued  # refused by put: queue full
    assert s.enqueued == s.stored + (s.dropped - overflow)  # the rest reached the writer


def test_corrupt_record_is_removed_on_lease(db):
    with Outbox(db, store=("image",)) as box:
        for i in range(3):
            box.put_sync(f"r{i}", arrays(i), priority=float(i))
        con = sqlite3.connect(db)
        con.execute("UPDATE outbox SET arrays = x'00ff' WHERE sample_id = 'r2'")
        con.commit()
        con.close()
        assert [it.sample_id for it in box.lease(5)] == ["r1", "r0"]
        s = box.stats()
        assert (s.errors, s.count) == (1, 2)


def test_garbage_file_is_a_clear_error(db):
    db.write_bytes(b"this is not an sqlite database" * 200)
    with pytest.raises(StorageError, match="corrupt or unreadable outbox database"):
        Outbox(db)


def test_foreign_sqlite_file_is_refused(db):
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="not an edgecl outbox"):
        Outbox(db)


def test_newer_schema_is_refused(db):
    Outbox(db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="schema version 99 is newer"):
        Outbox(db)
    assert issubclass(StorageError, EdgeclError)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="outbox database"):
        Outbox(tmp_path / "no" / "such" / "dir.db")


def test_a_truncated_outbox_is_refused_not_emptied(db):
    with Outbox(db) as box:
        for i in range(300):
            box.put(f"s{i}", {"image": np.full(4, i, np.float32)}, priority=1.0)
    with open(db, "r+b") as f:
        f.truncate(0)
    with pytest.raises(StorageError, match="empty"):
        Outbox(db)
    assert db.stat().st_size == 0  # left as found, never recreated


def test_an_empty_sqlite_file_is_not_taken_for_a_new_outbox(db):
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE t (x); DROP TABLE t;")
    con.close()
    assert db.stat().st_size > 0
    with pytest.raises(StorageError, match="not an edgecl outbox"):
        Outbox(db)


def test_a_half_truncated_outbox_is_refused(db):
    with Outbox(db) as box:
        for i in range(300):
            box.put(f"s{i}", {"image": np.full(256, i, np.float32)}, priority=1.0)
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    with pytest.raises(StorageError, match="corrupt or unreadable"):
        Outbox(db)


def test_outbox_files_are_private(db):
    with Outbox(db) as box:
        box.put_sync("s0", {"image": np.zeros(4, np.float32)}, priority=1.0)
        for path in db.parent.glob(db.name + "*"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
