"""Staged rollouts end to end: a real server, 20 real devices (runtime, update manager,
sync client, reporter) over gRPC on loopback, operators through FleetAdmin.

The canary share takes a version first; the next wave waits for the canary's health
reports; a bad version (devices refuse it) halts the rollout after the canary, the
devices that took it get the released content back, the rest never see it; a fleet-wide
rollback reaches every unpinned device; a pinned device never moves; desired config
reaches every device and is reported back.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgecl.cloud import AdminClient, AdminError, RolloutPolicy, judge_gate
from edgecl.cloud._registry_rollouts import DeviceHealth
from edgecl.cloud._rollout import cohort_order, cohort_size
from edgecl.wire import UpdatePayload
from tests.cloud.conftest import start_server, wait_for
from tests.fleet_devices import Device

OPERATOR = "olga-operator-token-0123456789ab"
READER = "rita-read-only-token-0123456789ab"
GROUP = "line-1"
N_DEVICES = 20


def _publish(srv, version, head_weight, head_bias):
    sha = next(iter(srv.bundles))
    payload = UpdatePayload(version, version - 1, sha, group=GROUP,
                            parts={"head.weight": head_weight, "head.bias": head_bias},
                            metrics={"candidate_agreement": 0.9})
    return srv.publish_update(GROUP, srv.signer.sign(payload))


@pytest.fixture(scope="module")
def fleet(tiny_zoo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rollout")
    srv = start_server(tiny_zoo, tmp / "cloud", learning_group_by="group",
                       admin_operators=f"olga:operator:{OPERATOR},rita:read:{READER}")
    devices = [Device(tiny_zoo.student_bundle, srv.target, srv.signer.public_key,
                      f"arm-{i:02d}", tmp, GROUP) for i in range(N_DEVICES)]
    for d in devices:
        d.client.register()
        d.predict()
    yield srv, devices
    for d in devices:
        d.close()
    srv.stop(grace=1.0)


def test_a_staged_rollout_gates_waves_halts_a_bad_version_and_obeys_operators(fleet):
    srv, devices = fleet
    by_id = {d.id: d for d in devices}
    order = cohort_order(GROUP, list(by_id))
    canary = order[:cohort_size(N_DEVICES, 0.2)]
    assert len(canary) == 4
    policy = RolloutPolicy(mode="staged", canary_share=0.2, wave_share=0.4,
                           wave_interval_s=1.0, min_reported_share=1.0, max_rollback_rate=0.25,
                           max_confidence_drop=0.2, max_ood_rise=0.5, max_errors=0,
                           gate_timeout_s=120.0, revert_on_failure=True)
    with AdminClient(srv.target, OPERATOR) as admin:
        assert admin.set_rollout_policy(GROUP, policy, reason="line 1 goes staged")[
            "mode"] == "staged"
        config = admin.set_config({"budget": "0.05", "report_interval_s": "2"}, group=GROUP)
    held = by_id[canary[0]]  # this canary device says nothing until the test lets it
    for d in devices:
        d.client.start()
        if d is not held:
            d.reporter.start()
    base = held.rt.state.head
    w, b = np.asarray(base.weight, np.float32), np.asarray(base.bias, np.float32)
    good = w + np.random.default_rng(0).normal(0, 1e-3, w.shape).astype(np.float32)

    # v1 (good): the canary takes it; the next wave waits for the held device's report
    _publish(srv, 1, good, b)
    wait_for(lambda: all(by_id[c].version == 1 for c in canary), what="the canary to apply v1")
    for d in devices:
        d.predict()
    time.sleep(3.0)  # three ticks and three wave intervals: still held
    with AdminClient(srv.target, READER) as admin:
        status = admin.rollout(GROUP)
    assert status["state"] == "rolling" and len(status["waves"]) == 1, status
    assert status["waves"][0]["devices"] == 4 and status["waves"][0]["reported"] == 3
    assert all(by_id[i].version == 0 for i in order[4:]), "a wave started before its gate"
    held.reporter.start()  # its report lets the gate pass
    wait_for(lambda: all(d.version == 1 for d in devices), timeout=60,
          what="every device to take v1 wave by wave")
    for d in devices:
        d.predict()
    wait_for(lambda: srv.registry.rollout(GROUP, 1).state == "released", timeout=30,
          what="v1 to be released")
    with AdminClient(srv.target, READER) as admin:
        waves = admin.rollout(GROUP)["waves"]
    assert [w["devices"] for w in waves] == [4, 8, 8]
    assert all(w["applied"] == w["devices"] and w["refused"] == 0 for w in waves)
    assert [w["started_s"] for w in waves] == sorted(w["started_s"] for w in waves)

    # a device pinned to v1 never moves again
    pinned = by_id[order[-1]]
    with AdminClient(srv.target, OPERATOR) as admin:
        admin.pin(device_id=pinned.id, version=1, reason="field trial")

    # v2 (bad: one class for everything): the canary refuses it, the rollout halts and
    # reverts; no other device ever sees v2
    bad_w = np.zeros_like(w)
    bad_b = np.full_like(b, -10.0)
    bad_b[3] = 10.0
    _publish(srv, 2, bad_w, bad_b)
    wait_for(lambda: srv.registry.rollout(GROUP, 2).state == "aborted", timeout=60,
          what="the bad version's rollout to halt")
    row = srv.registry.rollout(GROUP, 2)
    assert "wave 1 gate failed" in row.reason and "rollback rate" in row.reason, row.reason
    wait_for(lambda: all(d.version == 3 for d in devices if d is not pinned), timeout=60,
          what="the revert (v3) to reach every unpinned device")
    assert all(by_id[c].seen(2) for c in canary)  # the canary was offered v2, refused it
    assert not any(by_id[i].seen(2) for i in order[4:]), "v2 went past the canary"
    for d in devices:
        if d is not pinned:  # v3 is v1's content again
            # float16 on the wire
            np.testing.assert_allclose(d.rt.state.head.weight, good, atol=2e-3)
    with AdminClient(srv.target, READER) as admin:
        updates = {u["version"]: u for u in admin.updates(GROUP)["updates"]}
    assert updates["2"]["rollout_state"] == "aborted"
    assert updates["3"]["rollout_state"] == "released"
    assert updates["3"]["metrics"]["rollback_of"] == 1.0
    with AdminClient(srv.target, READER) as admin:  # a canary device's history

        def history():
            return [(e["version"], e["action"]) for e in admin.device(canary[1])["events"]]

        wait_for(lambda: history()[:1] == [("3", "applied")], what="v3 in its history")
        assert history()[:3] == [("3", "applied"), ("2", "rejected"), ("1", "applied")]
        assert "canary" in admin.device(canary[1])["events"][1]["reason"]

    # a fleet-wide rollback to the bundle's own state reaches every unpinned device
    with AdminClient(srv.target, OPERATOR) as admin:
        assert admin.rollback(GROUP, to_version=0, reason="back to factory")["version"] == "4"
    wait_for(lambda: all(d.version == 4 for d in devices if d is not pinned), timeout=60,
          what="the rollback to reach every device")
    assert pinned.version == 1 and not pinned.seen(2) and not pinned.seen(3)
    np.testing.assert_allclose(devices[1].rt.state.head.weight, w, atol=2e-3)

    # desired config reached every device, which reported it back
    revision = int(config["revision"])

    def reported():
        with AdminClient(srv.target, READER) as admin:
            listed = admin.devices(group=GROUP)
        return len(listed) == N_DEVICES and all(
            int(x["reported_revision"]) == revision and x["reported_config"]["budget"] == "0.05"
            and x["desired_config"]["budget"] == "0.05" for x in listed)

    wait_for(reported, timeout=30, what="every device to report the desired config")
    assert all(d.applied_config["budget"] == "0.05" for d in devices)
    assert all(d.reporter.interval_s == 2.0 for d in devices)


def test_bad_operator_input_gets_the_right_status_and_changes_nothing(fleet):
    srv, devices = fleet
    before_policy = srv.registry.stored_rollout_policy(GROUP)
    before_config = srv.registry.desired_config("group", GROUP)
    before_rollout = srv.registry.rollout(GROUP)
    impossible = [RolloutPolicy(mode="staged", canary_share=0.0),
                  RolloutPolicy(mode="staged", wave_share=1.5),
                  RolloutPolicy(mode="staged", max_rollback_rate=-0.1),
                  RolloutPolicy(mode="staged", wave_interval_s=float("nan")),
                  RolloutPolicy(mode="staged", wave_interval_s=10, gate_timeout_s=5),
                  RolloutPolicy(mode="sometimes")]
    with AdminClient(srv.target, OPERATOR) as admin:
        for policy in impossible:
            with pytest.raises(AdminError) as err:
                admin.set_rollout_policy(GROUP, policy)
            assert err.value.code == "INVALID_ARGUMENT", policy
        cases = [("set_rollout_policy", ("nowhere", RolloutPolicy()), {}, "NOT_FOUND"),
                 ("rollout", ("nowhere",), {}, "NOT_FOUND"),
                 ("pause", (GROUP,), {}, "FAILED_PRECONDITION"),  # nothing rolling
                 ("resume", (GROUP,), {}, "FAILED_PRECONDITION"),
                 ("abort", (GROUP,), {}, "FAILED_PRECONDITION"),
                 ("set_config", ({"budget": "2"},), {"group": GROUP}, "INVALID_ARGUMENT"),
                 ("set_config", ({"colour": "red"},), {"group": GROUP}, "INVALID_ARGUMENT"),
                 ("set_config", ({"adaptation": "maybe"},), {"group": GROUP},
                  "INVALID_ARGUMENT"),
                 ("set_config", ({"budget": "0.1"},), {"device_id": "ghost"}, "NOT_FOUND"),
                 ("set_config", ({"budget": "0.1"},), {"group": "ghosts"}, "NOT_FOUND"),
                 ("pin", (), {"device_id": devices[0].id, "version": 99}, "INVALID_ARGUMENT"),
                 ("rollback", (GROUP, 99), {}, "INVALID_ARGUMENT")]
        for call, args, kwargs, code in cases:
            with pytest.raises(AdminError) as err:
                getattr(admin, call)(*args, **kwargs)
            assert err.value.code == code, (call, args, kwargs, err.value)
    mutating = [("set_rollout_policy", (GROUP, RolloutPolicy()), {}),
                ("pause", (GROUP,), {}), ("resume", (GROUP,), {}), ("abort", (GROUP,), {}),
                ("set_config", ({"budget": "0.5"},), {"group": GROUP})]
    for token, code in ((READER, "PERMISSION_DENIED"),
                        (devices[0].client.register(), "UNAUTHENTICATED")):
        with AdminClient(srv.target, token) as admin:
            for call, args, kwargs in mutating:
                with pytest.raises(AdminError) as err:
                    getattr(admin, call)(*args, **kwargs)
                assert err.value.code == code, (token[:4], call)
    assert srv.registry.stored_rollout_policy(GROUP) == before_policy
    assert srv.registry.desired_config("group", GROUP) == before_config
    assert srv.registry.rollout(GROUP) == before_rollout


def test_the_gate_judges_with_numbers():
    policy = RolloutPolicy(mode="staged", min_reported_share=0.5, max_rollback_rate=0.25,
                           max_confidence_drop=0.05, max_ood_rise=0.1, max_errors=2)

    def h(outcome, before=0.9, after=0.9, ood=(0.0, 0.0), errors=0.0):
        return DeviceHealth("d", 1, outcome, {"confidence": before, "ood_rate": ood[0]},
                            {"confidence": after, "ood_rate": ood[1]}, errors)

    assert judge_gate(policy, [h(""), h(""), h("applied")]).verdict == "wait"  # 1 of 3
    passed = judge_gate(policy, [h("applied"), h("applied", 0.8, 0.78), h("")])
    assert passed.verdict == "pass" and passed.confidence_drop == pytest.approx(0.01)
    # one refusal in four reporting: 25 % is not over 25 %
    assert judge_gate(policy, [h("applied")] * 3 + [h("refused")]).verdict == "pass"
    # two refusals out of eight admitted fail at once, whoever has not reported yet
    early = judge_gate(policy, [h("refused")] * 3 + [h("")] * 5)
    assert early.verdict == "fail" and early.refused == 3
    drop = judge_gate(policy, [h("applied", 0.9, 0.8), h("applied", 0.9, 0.86)])
    assert drop.verdict == "fail" and drop.confidence_drop == pytest.approx(0.07)
    ood = judge_gate(policy, [h("applied", ood=(0.05, 0.2))])
    assert ood.verdict == "fail" and ood.ood_rise == pytest.approx(0.15)
    errors = judge_gate(policy, [h("applied", errors=2), h("applied", errors=1)])
    assert errors.verdict == "fail" and errors.errors == 3


def test_the_gate_compares_with_devices_without_the_version_when_it_can():
    policy = RolloutPolicy(mode="staged", max_confidence_drop=0.05, max_ood_rise=0.1)
    # every device's inputs got harder: the same drop before/after, but not vs control
    health = [DeviceHealth(f"d{i}", 1, "applied", {"confidence": 0.9, "ood_rate": 0.0},
                           {"confidence": 0.8, "ood_rate": 0.32}, 0.0) for i in range(2)]
    assert judge_gate(policy, health).verdict == "fail"  # before/after blames the version
    fair = judge_gate(policy, health, (3, {"confidence": 0.82, "ood_rate": 0.3}))
    assert fair.verdict == "pass", fair.reason
    assert fair.confidence_drop == pytest.approx(0.02)
    assert fair.ood_rise == pytest.approx(0.02) and "vs 3 devices without it" in fair.reason
    worse = judge_gate(policy, health, (3, {"confidence": 0.9, "ood_rate": 0.3}))
    assert worse.verdict == "fail" and worse.confidence_drop == pytest.approx(0.1)


def test_the_readme_operator_commands_run_as_written(tiny_zoo, tmp_path, monkeypatch, capsys):
    """Every ``edgecl fleet`` line of README's "Operate the fleet", in order, against a
    real service whose group site-a has eight devices and four versions."""
    import shlex
    from pathlib import Path

    from edgecl.cli import main
    from tests.cloud.conftest import register

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Operate the fleet"):]
    section = section[:section.index("\n## ")]
    lines = [ln.strip() for ln in section.splitlines() if ln.startswith("    edgecl fleet")]
    assert len(lines) >= 9
    srv = start_server(tiny_zoo, tmp_path, learning_group_by="group",
                       admin_operators=f"olga:operator:{OPERATOR}")
    monkeypatch.setenv("EDGECL_ADMIN_TOKEN", OPERATOR)
    try:
        for i in range(8):
            register(srv, f"cam-{i}", group="site-a")
        sha = next(iter(srv.bundles))
        head = np.zeros((10, 16), np.float32)

        def publish(version):
            payload = UpdatePayload(version, version - 1, sha, group="site-a",
                                    parts={"head.weight": head + version,
                                           "head.bias": np.zeros(10, np.float32)})
            srv.publish_update("site-a", srv.signer.sign(payload))

        for v in range(1, 5):
            publish(v)
        for line in lines:
            argv = [*shlex.split(line)[1:], "--server", srv.target]
            assert main(argv) == 0, line
            if "--mode staged" in line:
                publish(5)  # a version to roll out, pause, resume and abort
        out = capsys.readouterr().out
        assert "site-a v5: rolling" in out and "budget=0.02" in out
        assert srv.registry.rollout("site-a", 5).state == "aborted"
        assert srv.registry.pin_of("device", "cam-7") == 3
        assert srv.registry.desired_config("group", "site-a")[1] == {
            "budget": "0.02", "report_interval_s": "300"}
        newest = srv.registry.update_records("site-a", 1)[0]
        assert newest.metrics == {"rollback_of": 3.0}
    finally:
        srv.stop(grace=1.0)
