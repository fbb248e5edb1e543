"""Fleet memory end to end: a real service with ``[learning] memory`` on, real devices on
the virtual clock. A device that enters a domain another device's updates were learned
on gets that update (validated on its own uploads) before anything is learned for it, and
the library survives a restart of the service."""

from __future__ import annotations

import tempfile

from edgecl.wire import payload_from_bytes

ENROLL = "fleet-memory-enrollment"
CORRUPTION, SEVERITY = "gaussian_noise", 5


def _server(home: str, storage: str, memory: bool, clock, scope: str = "fleet",
            merge: str = "pool"):
    from edgecl.cloud import create_server, load_config

    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": ENROLL, "EDGECL_CLOUD_TEACHER_ZOO": "tiny",
           "EDGECL_CLOUD_STORAGE_DIR": storage, "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
           "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_CLOUD_LEARNING_TRIGGER_SAMPLES": "12",
           "EDGECL_CLOUD_LEARNING_STEPS": "40",
           "EDGECL_CLOUD_LEARNING_MEMORY": str(memory).lower(),
           "EDGECL_CLOUD_LEARNING_MEMORY_SCOPE": scope,
           "EDGECL_CLOUD_LEARNING_PEER_MERGE": merge}
    return create_server(load_config(None, env=env), home=home,
                         clock=clock).start(labelling=False)


def _plan(device_id: str, seed: int, clean_first: bool, group: str = ""):
    from edgecl.fleet import DevicePlan

    n = 400 if clean_first else 800
    return DevicePlan(device_id, group, "continual",
                      {"corruptions": [CORRUPTION], "severity": SEVERITY, "samples_per_domain": n,
                       "seed": seed, "include_clean_first": clean_first}, 800, 10.0, seed=seed)


def _fleet(tiny_zoo, storage: str, memory: bool, plans: list,
           scope: str = "fleet", merge: str = "pool") -> tuple[list, dict, int]:
    """Run ``plans`` against a fresh service; device results, the metrics of every
    published update per device and the number of library entries."""
    from edgecl.fleet import CloudCostModel, DeviceTask, VirtualClock, run_virtual

    clock = VirtualClock()
    server = _server(str(tiny_zoo.path.parent.parent), storage, memory, clock, scope, merge)
    tasks = [DeviceTask(p, "cloud", tiny_zoo.student_bundle, target=server.target,
                        public_key=server.signer.public_key, enrollment_key=ENROLL,
                        fraction=0.2, policy="uncertainty", input_drift=True,
                        revert_on_shift=True) for p in plans]
    try:
        results = run_virtual(tasks, server, clock, sync_s=5.0, cost=CloudCostModel.lockstep())
        published = {p.device_id: [payload_from_bytes(u.update.payload).metrics
                                   for u in server.registry.updates_after(p.device_id, 0, 64)]
                     for p in plans}
        entries = len(server.library) if server.library is not None else 0
    finally:
        server.stop(grace=1.0)
    return results, published, entries


def _run(tiny_zoo, storage: str, memory: bool) -> tuple[dict, dict, int]:
    """Device ``early`` sees zoom blur from the start; ``late`` sees clean images for as
    long, then the same corruption. Returns the late device's first published update's
    metrics, its result and the number of library entries."""
    results, published, entries = _fleet(tiny_zoo, storage, memory,
                                         [_plan("early", 1, False), _plan("late", 2, True)])
    first = published["late"][0] if published["late"] else {}
    return first, results[1], entries


def test_a_late_device_gets_the_update_another_device_learned_for_its_domain(tiny_zoo):
    with tempfile.TemporaryDirectory() as tmp:
        first, late, entries = _run(tiny_zoo, tmp + "/memory", memory=True)
        assert entries >= 1
        # the late device's first update is the early device's, from the library, and it
        # was validated on the late device's own uploads
        assert "library_entry" in first, first
        assert first["holdout"] >= 8 and first["candidate_agreement"] > first["source_agreement"]
        assert late["updates_applied"] >= 1
        # the library survives a restart: a fresh process over the same storage sees it
        from edgecl.cloud._library import DomainLibrary

        lib = DomainLibrary(tmp + "/memory/library.db", encoders=[tiny_zoo_encoder(tiny_zoo)])
        assert len(lib) == entries
        lib.close()
        baseline, _, none = _run(tiny_zoo, tmp + "/plain", memory=False)
        assert none == 0 and "library_entry" not in baseline


def tiny_zoo_encoder(tiny_zoo) -> str:
    from edgecl.bundle import load_bundle

    return load_bundle(tiny_zoo.student_bundle).encoder_sha256


def test_devices_in_one_domain_at_once_are_learned_together(tiny_zoo):
    """Discovered groups: two devices that register no group but see the same corruption
    at the same time learn from each other's uploads (``peers`` in the update metrics)."""
    with tempfile.TemporaryDirectory() as tmp:
        _, published, _ = _fleet(tiny_zoo, tmp + "/peers", True,
                                 [_plan("a", 1, False), _plan("b", 2, False)])
        peers = [m.get("peers", 0) for ms in published.values() for m in ms
                 if "library_entry" not in m]
        assert max(peers, default=0) >= 1, published
        _, alone, _ = _fleet(tiny_zoo, tmp + "/alone", False,
                             [_plan("a", 1, False), _plan("b", 2, False)])
        assert all(m.get("peers", 0) == 0 for ms in alone.values() for m in ms)


def test_with_ties_merging_a_device_also_learns_from_the_merge_of_its_peers_updates(tiny_zoo):
    """``peer_merge = "ties"``: the same discovered group, but each device learns from its
    own uploads only, also starting from the TIES merge of what its peers run."""
    with tempfile.TemporaryDirectory() as tmp:
        _, published, _ = _fleet(tiny_zoo, tmp + "/ties", True,
                                 [_plan("a", 1, False), _plan("b", 2, False)], merge="ties")
        learned = [m for ms in published.values() for m in ms if "library_entry" not in m]
        assert max((m.get("peers", 0) for m in learned), default=0) >= 1, published
        # with peers, it trained and validated on its own uploads only (its window); a
        # pooled job also uses its peers' uploads
        merged = [m for m in learned if m.get("peers", 0) >= 1 and "holdout_samples" in m]
        assert merged and all(m["train_samples"] + m["holdout_samples"] <= m["window_samples"]
                              for m in merged), merged


def test_with_a_group_scope_another_site_learns_nothing_from_the_library(tiny_zoo):
    """``memory_scope = "group"``: the library is shared within a device group only."""
    with tempfile.TemporaryDirectory() as tmp:
        _, published, entries = _fleet(
            tiny_zoo, tmp + "/scoped", True,
            [_plan("early", 1, False, "site-a"), _plan("late", 2, True, "site-b")],
            scope="group")
        assert entries >= 1  # site-a's domain is stored...
        # ...and never served to site-b
        assert not any("library_entry" in m for m in published["late"]), published["late"]


def test_a_fleet_with_memory_and_several_workers_repeats_exactly(tiny_zoo):
    """With fleet memory, jobs share the library and each other's domains: a service
    modelled with 4 workers still gives the same JSON run after run (its jobs run one at a
    time in the order they started; simulated time follows the model)."""
    from edgecl.fleet import CloudCostModel, simulate

    def run() -> dict:
        result = simulate(devices=4, scenario="late-joiner", steps=30, pace=10.0,
                          fraction=0.3, strategies=("cloud+memory",), variant="tiny",
                          home=str(tiny_zoo.path.parent.parent), progress=False, seed=3,
                          cloud_cost=CloudCostModel(job_s=1.0, workers=4),
                          service_settings={"learning_trigger_samples": 8})
        data = result.to_dict()
        for key in ("seconds", "wall_seconds", "peak_rss_mb"):
            data.pop(key)
        return data

    first = run()
    assert first["strategies"]["cloud+memory"]["updates"]["applied"] > 0
    assert run() == first
