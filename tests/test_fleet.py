"""The fleet simulator: plans, impaired networks, metrics, backends and a real run."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edgecl import ConfigError
from edgecl.cli import main
from edgecl.fleet import (
    CloudCostModel,
    DeviceTask,
    Impairments,
    NetworkProfile,
    ProcessBackend,
    ThreadBackend,
    fleet_plans,
    forgetting,
    simulate,
    summarise,
    summary_table,
)
from tests.schema_checks import check_json, check_result


def test_plans_give_each_device_its_own_stream_and_groups_share_theirs():
    plans = fleet_plans("continual", 4, samples=500, seed=1)
    orders = {tuple(p.stream["corruptions"]) for p in plans}
    assert len(orders) == 4 and all(p.group == "" for p in plans)
    assert fleet_plans("continual", 4, samples=500, seed=1) == plans  # reproducible
    mixed = fleet_plans("mixed", 4, samples=500, seed=1, groups=2)
    assert [p.group for p in mixed] == ["group-0", "group-1", "group-0", "group-1"]
    assert mixed[0].stream["corruptions"] == mixed[2].stream["corruptions"]
    assert mixed[0].stream["corruptions"] != mixed[1].stream["corruptions"]
    assert mixed[0].stream["seed"] != mixed[2].stream["seed"]  # own samples
    imp = Impairments(latency_ms=20, bandwidth_kbps=80, offline_fraction=0.5, offline_s=4,
                      slow_fraction=0.25)
    plans = fleet_plans("label-shift", 4, samples=400, seed=0, pace=20, impairments=imp)
    assert sum(p.network.offline_s == 4 for p in plans) == 2
    assert sum(p.slow for p in plans) == 1 and min(p.pace for p in plans) == 10
    assert all(p.network.latency_s == 0.02 and p.network.bandwidth_bps == 10_000
               for p in plans)
    for scenario in ("gradual", "recurring", "label-shift", "open-set"):
        stream = fleet_plans(scenario, 1, samples=300, seed=0)[0].build_stream()
        assert 0 < len(stream) <= 300 + 60
    with pytest.raises(ConfigError):
        fleet_plans("nope", 2, samples=10)
    with pytest.raises(ConfigError):
        NetworkProfile(offline=((5.0, 1.0),))


def test_forgetting_and_summary_keys():
    domains = np.array([0] * 4 + [1] * 4 + [0] * 4)
    correct = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    assert forgetting(correct, domains) == pytest.approx(0.75)
    assert forgetting(correct[:8], domains[:8]) is None
    result = {"device_id": "d0", "group": "", "correct": correct, "domains": domains,
              "domain_names": ["clean", "fog@5"], "domain_shifted": [False, True],
              "novel": np.zeros(12, bool), "ood_scores": np.r_[np.zeros(4), np.ones(4),
                                                               np.zeros(4)],
              "uploads": 3, "bytes_up": 300, "bytes_down": 40, "failed_calls": 0,
              "updates_applied": 1, "updates_rejected": 0, "rolled_back": 0,
              "update_latency_s": [0.5], "update_times": [1.0], "states_adapted": 0,
              "offline_s": 0.0, "pace": 10.0, "slow": False, "seconds": 1.0}
    s = summarise([result], bins=4)
    assert s.mean_online_acc == pytest.approx(7 / 12, abs=1e-4)
    assert s.per_domain == {"clean": pytest.approx(5 / 8), "fog@5": 0.5}
    assert s.ood_auroc == 1.0 and s.forgetting == pytest.approx(0.75)
    assert s.upload_fraction == 0.25 and s.bytes_up_per_device == 300
    assert [b for b, _ in s.accuracy_over_time] == [0.0, 0.25, 0.5, 0.75]
    assert s.updates.applied == 1 and s.per_device[0].device_id == "d0"


def test_process_backend_matches_threads(tiny_zoo):
    plans = fleet_plans("continual", 3, samples=120, seed=2)
    tasks = [DeviceTask(p, s, str(tiny_zoo.student_bundle)) for p in plans
             for s in ("source", "device")]
    threads = ThreadBackend().run(tasks)
    procs = ProcessBackend(processes=2).run(tasks)
    assert [r["device_id"] for r in procs] == [r["device_id"] for r in threads]
    for a, b in zip(threads, procs):
        np.testing.assert_array_equal(a["correct"], b["correct"])
        assert a["strategy"] == b["strategy"]
    assert any(r["states_adapted"] > 0 for r in threads if r["strategy"] == "device")


def test_simulate_a_fleet_with_an_offline_device(tiny_zoo, tmp_path):
    home = str(tiny_zoo.path.parent.parent)
    imp = Impairments(latency_ms=5, offline_fraction=0.5, offline_s=3.0)
    # real time: a 12 s stream and short learning jobs, so that updates arrive in time
    # on a loaded machine too
    result = simulate(devices=2, scenario="mixed", strategies=("source", "cloud"), steps=30,
                      batch=10, pace=25.0, fraction=0.3, variant="tiny", home=home,
                      impairments=imp, report_dir=tmp_path / "report", progress=False,
                      clock="real",
                      # the tiny zoo's teacher is weak at severity 5: judge candidates
                      # against the source without the sign test, so that updates flow
                      # (this test is about the impaired network, not the publication rule)
                      service_settings={"learning_trigger_samples": 8, "learning_source_z": 0,
                                        "learning_recent_holdout": 0, "learning_steps": 30})
    check_result(result, ("impairments",), ("strategies", "cloud"),
                 ("strategies", "cloud", "updates"), ("strategies", "cloud", "per_device", 0),
                 ("report",), optional={"report", "json"})
    assert result.report is not None and result.report.html.endswith("index.html")
    assert set(result.strategies) == {"source", "cloud"} and result.devices == 2
    cloud = result.strategies["cloud"]
    offline = [d for d in cloud.per_device if d.offline_s > 0]
    online = [d for d in cloud.per_device if d.offline_s == 0]
    assert len(offline) == 1 and offline[0].failed_calls > 0
    assert online[0].failed_calls == 0
    # every device predicted its whole stream, offline or not
    assert all(d.samples == 300 for d in cloud.per_device)
    assert cloud.bytes_up_per_device > 0 and cloud.upload_fraction > 0
    assert result.strategies["source"].bytes_up_per_device == 0
    assert cloud.updates.applied > 0
    assert (tmp_path / "report" / "index.html").read_text().count("<img") == 3


def test_simulate_cli_writes_the_json(tiny_zoo, tmp_path, capsys):
    home = str(tiny_zoo.path.parent.parent)
    out = tmp_path / "sim.json"
    assert main(["simulate", "--variant", "tiny", "--home", home, "--devices", "2",
                 "--steps", "8", "--strategies", "source,device", "--quiet",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    check_json("simulate", result, ("strategies", "device"), optional={"cloud_cost"})
    assert set(result["strategies"]) == {"source", "device"}
    assert result["scenario"] == "continual" and result["devices"] == 2
    assert "device" in capsys.readouterr().out
    with pytest.raises(ConfigError):
        simulate(strategies=("teacher",), progress=False)


# -- the virtual clock ---------------------------------------------------------------------
WALL_CLOCK_FIELDS = ("seconds", "wall_seconds", "peak_rss_mb")
SIM = dict(devices=4, scenario="mixed", groups=2, strategies=("source", "cloud"), steps=60,
           batch=10, pace=20.0, fraction=0.3, variant="tiny", progress=False,
           impairments=Impairments(latency_ms=200, bandwidth_kbps=64, offline_fraction=0.25,
                                   offline_s=5.0, slow_fraction=0.25),
           service_settings={"learning_trigger_samples": 8, "learning_source_z": 0,
                             "learning_recent_holdout": 0},
           cloud_cost=CloudCostModel(job_s=2.0))  # 30 simulated seconds: quick jobs


def _without_wall_clock(result) -> dict:
    data = result.to_dict()
    for key in WALL_CLOCK_FIELDS:
        data.pop(key)
    return data


def test_the_virtual_clock_gives_the_same_json_on_a_busy_machine(tiny_zoo):
    """The same small fleet twice, the second time with every core kept busy by
    CPU-burning processes: every accuracy, byte count, update count and simulated latency
    is the same; only the wall-clock measurements differ."""
    import os
    import subprocess
    import sys

    home = str(tiny_zoo.path.parent.parent)
    idle = simulate(home=home, **SIM)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(os.cpu_count() or 2)]
    try:
        busy = simulate(home=home, **SIM)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert idle.clock == "virtual" and idle.cloud_cost is not None
    cloud = idle.strategies["cloud"]
    assert cloud.updates.applied > 0 and cloud.update_latency_s is not None
    assert cloud.update_latency_s >= idle.cloud_cost.job_s  # learning takes simulated time
    assert any(d.failed_calls > 0 for d in cloud.per_device)  # the offline device missed rounds
    assert idle.simulated_seconds >= 600 / 20.0  # the slow device's stream takes longer
    assert _without_wall_clock(idle) == _without_wall_clock(busy)
    assert idle.wall_seconds > 0 and idle.peak_rss_mb > 0


def test_a_staged_rollout_is_simulated_and_its_waves_reported(tiny_zoo, tmp_path):
    """Six devices in two groups of three under a staged policy (a canary of two, then a
    wave): each version reaches a group's canary first, the next wave a round later at the
    earliest (devices report once per round), the report and the JSON list every wave."""
    from edgecl.cloud import RolloutPolicy

    home = str(tiny_zoo.path.parent.parent)
    policy = RolloutPolicy(mode="staged", canary_share=0.34, wave_share=0.33,
                           wave_interval_s=0.0, min_reported_share=0.5, max_rollback_rate=1.0,
                           max_confidence_drop=1.0, max_ood_rise=1.0, gate_timeout_s=60.0)
    # learning every 24 uploads: a version can finish its rollout before the next one
    settings = {**SIM, "devices": 6, "steps": 60, "strategies": ("cloud",),
                "impairments": Impairments(),
                "service_settings": {**SIM["service_settings"], "learning_trigger_samples": 24}}
    result = simulate(home=home, rollout=policy, report_dir=tmp_path / "report", **settings)
    check_result(result, ("strategies", "cloud"), ("report",),
                 optional={"report", "json", "cloud_cost", "rollouts"})
    rollouts = result.strategies["cloud"].rollouts
    assert rollouts, "no rollout recorded"
    staged = [r for r in rollouts if r.waves]
    assert staged and all(r.waves[0].devices == 2 for r in staged)  # ceil(0.34 * 3)
    for r in staged:
        starts = [w.started_s for w in r.waves]
        assert all(b - a >= 2.5 for a, b in itertools.pairwise(starts))  # a round apart
        assert sum(w.devices for w in r.waves) <= 3
    assert any(r.state == "released" and sum(w.devices for w in r.waves) == 3 for r in staged)
    assert result.strategies["cloud"].updates.applied > 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "rollout waves: cloud" in page and "wave 2:" in page
    assert "rollouts (cloud):" in summary_table(result)
    auto = simulate(home=home, **{**settings, "steps": 10})
    assert auto.strategies["cloud"].rollouts is None  # auto: nothing staged to report
    assert "rollouts" not in auto.to_dict()["strategies"]["cloud"]


@pytest.mark.parametrize("bad", [dict(clock="sundial"), dict(devices=0), dict(pace=0.0),
                                 dict(pace=-1.0), dict(sync_s=0.0),
                                 dict(cloud="127.0.0.1:1", public_key=b"k" * 32),
                                 dict(rollout={"mode": "staged", "canary_share": 0}),
                                 dict(rollout={"mode": "staged"}, clock="real")])
def test_bad_simulation_settings_fail_before_anything_starts(bad):
    with pytest.raises(ConfigError):
        simulate(progress=False, variant="tiny", home="/nonexistent/edgecl-home", **bad)


def test_the_modelled_service_runs_one_job_per_worker_and_per_target_at_a_time():
    """The virtual clock's service model: a second target's job takes an idle worker at
    once; a target waits for its own previous job; all workers busy, nothing starts; one
    worker runs the jobs that start together one after another."""
    from edgecl.fleet._virtual import ServiceSchedule

    two = ServiceSchedule(CloudCostModel(job_s=2.0, label_per_s=10.0, workers=2))
    ready = two.label(1.0, 5)  # five labels at 10/s from 1.0 s
    assert ready == pytest.approx(1.5)
    assert two.run(["a"], ready) == {"a": pytest.approx(3.5)}
    assert two.may_start("b", 2.0) and not two.may_start("a", 2.0)
    assert two.run(["b"], two.label(2.0, 0)) == {"b": pytest.approx(4.0)}
    assert not two.may_start("c", 3.0)  # both workers busy
    assert two.may_start("c", 3.5) and two.may_start("a", 3.5)
    # labelling queues behind earlier labelling (done at 2.0 s): 20 more take 2 s
    assert two.label(1.6, 20) == pytest.approx(4.0)
    # the real service runs the modelled workers' jobs in threads, but one at a time when
    # jobs share state (fleet memory), so a run repeats exactly
    from edgecl.fleet._virtual import learning_threads

    assert learning_threads(two.cost, memory=False) == 2
    assert learning_threads(two.cost, memory=True) == 1
    one = ServiceSchedule(CloudCostModel(job_s=2.0, label_per_s=float("inf"), workers=1))
    assert one.run(["a", "b"], 1.0) == {"a": pytest.approx(3.0), "b": pytest.approx(5.0)}
    assert not one.may_start("c", 4.0) and one.may_start("c", 5.0)
