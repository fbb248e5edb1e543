"""Fleet memory end to end: a real service with ``[learning] memory`` on, real devices on
the virtual clock. A device that enters a domain another device's updates were learned
on gets that update (validated on its own uploads) before anything is learned for it, and
the library survives a restart of the service."""

from __future__ import annotations

import tempfile

from edgecl.wire import payload_from_bytes

ENROLL = "fleet-memory-enrollment"


def _server(home: str, storage: str, memory: bool, clock):
    from edgecl.cloud import create_server, load_config

    env = {"EDGECL_CLOUD_AUTH_ENROLLMENT_KEY": ENROLL, "EDGECL_CLOUD_TEACHER_ZOO": "tiny",
           "EDGECL_CLOUD_STORAGE_DIR": storage, "EDGECL_CLOUD_SERVER_ADDRESS": "127.0.0.1:0",
           "EDGECL_CLOUD_METRICS_PORT": "-1", "EDGECL_CLOUD_LEARNING_TRIGGER_SAMPLES": "12",
           "EDGECL_CLOUD_LEARNING_STEPS": "40",
           "EDGECL_CLOUD_LEARNING_MEMORY": str(memory).lower()}
    return create_server(load_config(None, env=env), home=home,
                         clock=clock).start(labelling=False)


def _run(tiny_zoo, storage: str, memory: bool) -> tuple[dict, dict, int]:
    """Device ``early`` sees zoom blur from the start; ``late`` sees clean images for as
    long, then the same corruption. Returns the late device's published update metrics,
    its result and the number of library entries."""
    from edgecl.fleet import CloudCostModel, DevicePlan, DeviceTask, VirtualClock, run_virtual

    home = str(tiny_zoo.path.parent.parent)
    clock = VirtualClock()
    server = _server(home, storage, memory, clock)
    early = DevicePlan("early", "", "continual", {"corruptions": ["zoom_blur"], "severity": 3,
                                                  "samples_per_domain": 800, "seed": 1},
                       800, 10.0, seed=1)
    late = DevicePlan("late", "", "continual", {"corruptions": ["zoom_blur"], "severity": 3,
                                                "samples_per_domain": 400, "seed": 2,
                                                "include_clean_first": True}, 800, 10.0,
                      seed=2)
    tasks = [DeviceTask(p, "cloud", tiny_zoo.student_bundle, target=server.target,
                        public_key=server.signer.public_key, enrollment_key=ENROLL,
                        fraction=0.2, policy="uncertainty", input_drift=True,
                        revert_on_shift=True) for p in (early, late)]
    try:
        results = run_virtual(tasks, server, clock, sync_s=5.0, cost=CloudCostModel.lockstep())
        stored = server.registry.updates_after("late", 0, limit=64)
        entries = len(server.library) if server.library is not None else 0
    finally:
        server.stop(grace=1.0)
    first = payload_from_bytes(stored[0].update.payload).metrics if stored else {}
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
