"""The registry keeps one contract on SQLite and on a real PostgreSQL server, and on
PostgreSQL several registries (service replicas) share one fleet: sample numbers, claims
on unlabelled samples, exactly-once labels, published versions, wake-ups, migrations."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgecl import InvalidInput
from edgecl.cloud import Registry
from edgecl.cloud._signing import UpdateSigner
from edgecl.wire import UpdatePayload, WireSample, payload_from_bytes

SHAPE = (1, 4, 4)


def _samples(prefix: str, n: int, start: int = 0) -> list[WireSample]:
    return [WireSample(f"{prefix}{i}", input=np.full(SHAPE, i / 100, np.float32),
                       segment=i // 10) for i in range(start, start + n)]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_registry(request, tmp_path):
    """A function that opens a registry (again) on one database of the parametrised kind."""
    url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened: list[Registry] = []

    def make(**kwargs) -> Registry:
        reg = Registry(tmp_path / f"storage{len(opened)}" if url else tmp_path, url=url,
                       **kwargs)
        opened.append(reg)
        return reg

    yield make
    for reg in opened:
        reg.close()


def _publish(reg: Registry, signer: UpdateSigner, target: str, version: int) -> None:
    payload = UpdatePayload(version, version - 1, "sha", device_id=target,
                            parts={"prompt": np.full((1, 4, 4), version, np.float32)},
                            metrics={"gain": 0.1 * version})
    reg.publish(target, signer.sign(payload), payload)


def test_one_contract_on_both_databases(open_registry):
    reg = open_registry(max_samples_per_device=30)
    reg.register("cam-1", "tok-1", "sha", "lab", {"site": "north"})
    assert reg.device_for_token("tok-1").device_id == "cam-1"
    assert reg.add_samples("cam-1", _samples("s", 20)) == (20, 0)
    assert reg.add_samples("cam-1", _samples("s", 5)) == (0, 5)  # duplicates
    keys, x = reg.unlabelled(8, SHAPE)
    assert [k[1] for k in keys] == [f"s{i}" for i in range(8)] and x.shape == (8, *SHAPE)
    assert reg.set_labels(keys, np.arange(8) % 3, np.full(8, 0.25)) == {"cam-1": 8}
    assert reg.set_labels(keys, np.zeros(8, int), np.zeros(8)) == {}  # never twice
    assert reg.teacher_labels("cam-1")["s3"] == (0, 0.25)
    recent = reg.recent_inputs_of(["cam-1"], 5, SHAPE)
    assert recent.inputs.shape == (5, *SHAPE) and np.isclose(recent.inputs[-1].max(), 0.07)
    # the per-device bound drops the oldest labelled samples, never unlabelled ones
    assert reg.add_samples("cam-1", _samples("t", 15)) == (15, 0)
    assert reg.sample_count("cam-1") == 30 and reg.pruned == 5
    assert reg.label_counts("cam-1").get("s0") is None and reg.unlabelled_count() == 27
    # updates, rollouts, pins, reports, desired config
    signer = UpdateSigner.generate()
    for v in (1, 2):
        _publish(reg, signer, "cam-1", v)
    with pytest.raises(InvalidInput, match="not newer"):
        _publish(reg, signer, "cam-1", 2)
    assert reg.latest_version("cam-1") == 2
    stored = reg.updates_after("cam-1", 0)
    assert [s.version for s in stored] == [1, 2]
    assert payload_from_bytes(stored[1].update.payload).metrics["gain"] == pytest.approx(0.2)
    reg.set_pin("device", "cam-1", 1, "olga")
    assert reg.served_cap("cam-1", "cam-1") == 1
    for i in range(3):
        reg.add_report("cam-1", 2, {"confidence": 0.5 + i / 10},
                       events=[(2, "applied", "", 1000 + i)], config=(i, {"budget": "0.1"}))
    assert [r[2]["confidence"] for r in reg.reports_of("cam-1", 2)] == [0.7, 0.6]
    assert reg.events_of("cam-1", 10)[0] == (2, "applied", "", 1002)
    assert reg.reported_config("cam-1") == (2, {"budget": "0.1"})
    r1 = reg.set_desired_config("group", "lab", {"budget": "0.05"}, "olga")
    r2 = reg.set_desired_config("device", "cam-1", {"sampling": "entropy"}, "olga")
    assert r2 == r1 + 1
    assert reg.desired_for("cam-1", "lab") == (r2, {"budget": "0.05", "sampling": "entropy"})
    reg.set_rollout_policy("cam-1", {"mode": "manual"}, "olga")
    _publish(reg, signer, "cam-1", 3)
    assert reg.rollout("cam-1").state == "awaiting"
    assert reg.revoke_device("cam-1") and reg.device_for_token("tok-1") is None


def test_a_registry_opened_again_keeps_everything(open_registry):
    reg = open_registry()
    reg.register("cam-1", "tok-1", "sha", "", {})
    reg.add_samples("cam-1", _samples("s", 12))
    reg.close()
    again = open_registry() if reg.db.shared is False else Registry(
        reg.dir, url=reg.where.url)
    try:
        assert again.sample_count("cam-1") == 12 and again.identify("tok-1") is not None
        again.add_samples("cam-1", _samples("s", 3, start=12))
        seqs = [r[0] for r in again._rows("SELECT seq FROM samples ORDER BY seq")]
        assert len(set(seqs)) == 15 and seqs == sorted(seqs)
    finally:
        again.close()


# -- several replicas on one PostgreSQL database ------------------------------------------
@pytest.fixture
def replicas(postgres_url, tmp_path):
    """Three registries (one per replica) on one new PostgreSQL database, opened at once
    (each migrates if it must: the schema is made exactly once)."""
    regs: list[Registry] = [None] * 3  # type: ignore[list-item]
    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            regs[i] = Registry(tmp_path / f"replica{i}", url=postgres_url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    yield regs
    for reg in regs:
        reg.close()


def test_replicas_number_samples_uniquely_and_label_each_exactly_once(replicas):
    for i, reg in enumerate(replicas):
        reg.register(f"cam-{i}", f"tok-{i}", "sha", "", {})

    def upload(i: int) -> None:
        for batch in range(10):  # each device uploads through every replica in turn
            replicas[(i + batch) % 3].add_samples(f"cam-{i}", _samples(f"b{batch}-", 20))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [r[0] for r in replicas[0]._rows("SELECT seq FROM samples")]
    assert len(seqs) == 600 and len(set(seqs)) == 600
    labelled: list[list[tuple[str, str]]] = [[], [], []]
    claimed_twice: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def label(i: int) -> None:
        while True:
            keys, _ = replicas[i].unlabelled(32, SHAPE)
            if not keys:
                return
            with lock:
                claimed_twice.extend(k for k in keys if k in seen)
                seen.update(keys)
            done = replicas[i].set_labels(keys, np.zeros(len(keys), int), np.zeros(len(keys)))
            labelled[i].extend(keys[:sum(done.values())])

    threads = [threading.Thread(target=label, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claimed_twice == []  # claims kept the labellers apart
    assert sum(len(x) for x in labelled) == 600 and all(labelled)  # all three worked
    stats = replicas[1].sample_stats()
    assert stats["labelled"] == 600 and stats["max_label_count"] == 1


def test_a_dead_labellers_claim_expires_and_another_takes_the_samples(replicas):
    replicas[0].register("cam-0", "tok-0", "sha", "", {})
    replicas[0].add_samples("cam-0", _samples("s", 10))
    keys, _ = replicas[0].unlabelled(10, SHAPE, claim_s=0.5)  # then the replica "dies"
    assert len(keys) == 10
    assert replicas[1].unlabelled(10, SHAPE)[0] == []  # still claimed
    time.sleep(0.6)
    taken, _ = replicas[1].unlabelled(10, SHAPE)
    assert sorted(taken) == sorted(keys)
    # a late answer from the first labeller changes nothing once the second labelled
    replicas[1].set_labels(taken, np.ones(10, int), np.zeros(10))
    assert replicas[0].set_labels(keys, np.zeros(10, int), np.zeros(10)) == {}
    assert set(replicas[2].teacher_labels("cam-0").values()) == {(1, 0.0)}


def test_two_replicas_publishing_one_version_store_it_once(replicas):
    signer = UpdateSigner.generate()
    outcomes: list[str] = []
    for _ in range(5):
        version = replicas[0].latest_version("cam-9") + 1
        threads = [threading.Thread(target=_race, args=(r, signer, version, outcomes))
                   for r in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert outcomes.count("published") == 5 and outcomes.count("refused") == 10
    versions = [r.version for r in replicas[2].updates_after("cam-9", 0)]
    assert versions == [1, 2, 3, 4, 5]
    assert replicas[1].rollout("cam-9", 5).state == "released"


def _race(reg: Registry, signer: UpdateSigner, version: int, outcomes: list[str]) -> None:
    try:
        _publish(reg, signer, "cam-9", version)
        outcomes.append("published")
    except InvalidInput:
        outcomes.append("refused")


def test_a_publication_in_one_replica_wakes_update_streams_in_another(replicas):
    woke = threading.Event()
    time.sleep(0.3)  # the listeners have subscribed
    replicas[2].on_served_change.append(woke.set)
    replicas[0].register("cam-0", "tok-0", "sha", "", {})
    replicas[0].add_samples("cam-0", _samples("s", 1))
    assert not woke.wait(1.0)  # uploads wake no update stream
    _publish(replicas[0], UpdateSigner.generate(), "cam-0", 1)
    assert woke.wait(5.0)
    woke.clear()
    replicas[1].set_pin("device", "cam-0", 1, "olga")  # so does an operator's pin
    assert woke.wait(5.0)


def test_update_payloads_live_in_the_shared_database(replicas):
    signer = UpdateSigner.generate()
    _publish(replicas[0], signer, "cam-3", 1)
    got = replicas[2].updates_after("cam-3", 0)[0].update
    assert payload_from_bytes(got.payload).version == 1
    assert not (replicas[2].dir / "artifacts").exists()


def test_a_replica_reconnects_after_the_database_drops_its_connections(replicas):
    import psycopg

    replicas[0].register("cam-0", "tok-0", "sha", "", {})
    replicas[0].add_samples("cam-0", _samples("s", 2))
    url = replicas[0].where.url
    with psycopg.connect(url, autocommit=True) as admin:  # as a restart or a cut would
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "datname = current_database() AND pid <> pg_backend_pid()")
    from edgecl import StorageError

    try:  # the call on the dead connection fails cleanly (devices retry it)...
        replicas[0].add_samples("cam-0", _samples("t", 2))
    except StorageError:
        pass
    # ...and the next one runs on a new connection: nothing is stuck
    assert replicas[0].add_samples("cam-0", _samples("u", 2)) == (2, 0)
    assert replicas[0].sample_count("cam-0") in (4, 6)  # "t" stored or cleanly refused
