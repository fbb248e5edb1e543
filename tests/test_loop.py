"""`edgecl eval loop` end to end on tiny settings: real service, real device, every key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecl.cli import main
from tests.schema_checks import check_json


def test_eval_loop_runs_and_reports_every_strategy(tiny_zoo, capsys):
    home = str(tiny_zoo.path.parent.parent)
    assert main(["eval", "loop", "--variant", "tiny", "--home", home, "--json",
                 "--samples-per-domain", "120", "--corruptions", "contrast,fog"]) == 0
    out = json.loads(capsys.readouterr().out)
    check_json("eval-loop", out, ("strategies", "source"), ("strategies", "device"),
               ("strategies", "cloud"), optional={"gap_closed"})
    s = out["strategies"]
    assert set(s) == {"source", "device", "cloud", "cloud+device", "cloud_random", "teacher"}
    for name in s:
        assert 0.0 <= s[name]["mean_online_acc"] <= 1.0
        assert set(s[name]["per_domain"]) == {"contrast@5", "fog@5"}
    assert out["samples"] == 240
    assert 0 < out["upload_fraction"] <= (0.1 * 240 + 16) / 240  # budget + bucket depth
    assert s["cloud"]["upload_fraction"] == out["upload_fraction"]
    assert "unavailable" not in out
    assert s["device"]["method"] == "align" and s["device"]["states_published"] > 0
    assert s["cloud+device"]["upload_fraction"] > 0
    assert out["scenario"] == "continual"
    for name in s:  # per strategy: worst domain and worst start of a domain vs source
        rec = s[name]
        deltas = [rec["per_domain"][d] - s["source"]["per_domain"][d] for d in rec["per_domain"]]
        assert rec["worst_domain_delta"] == pytest.approx(min(deltas), abs=1e-3)
        assert set(rec["first_200"]) == set(rec["per_domain"])
        assert -1.0 <= rec["first_200_worst_delta"] <= 1.0
    assert s["source"]["worst_domain_delta"] == 0 == s["source"]["first_200_worst_delta"]


def test_loop_scenarios_build_the_streams_they_name():
    from edgecl import ConfigError
    from edgecl.eval.loop import LOOP_SCENARIOS, build_loop_stream

    assert set(LOOP_SCENARIOS) == {"continual", "returning", "recurring", "gradual"}
    ret = build_loop_stream("returning", samples_per_domain=20)
    names = [ret.domains[d].name for d in ret.domain_ids[::20]]
    assert names[0] == "clean" and names.count("clean") == 3 and len(names) == 9
    rec = build_loop_stream("recurring", samples_per_domain=20)
    assert len(rec) == 5 * 3 * 20 and len(rec.domains) == 5
    gra = build_loop_stream("gradual", domains=("fog",), samples_per_domain=10)
    assert [gra.domains[d].name for d in gra.domain_ids[::10]] == [
        f"fog@{k}" for k in (1, 2, 3, 4, 5, 4, 3, 2, 1)]
    assert len(build_loop_stream("continual", domains=("fog", "contrast"),
                                 samples_per_domain=30)) == 60
    with pytest.raises(ConfigError, match="unknown loop scenario"):
        build_loop_stream("sideways")


def test_the_lockstep_cloud_loop_is_reproducible(tiny_zoo):
    from edgecl.eval.loop import run_cloud

    stream = ("continual", {"corruptions": ["gaussian_noise", "zoom_blur"], "severity": 3,
                            "samples_per_domain": 450, "seed": 2})
    home = str(tiny_zoo.path.parent.parent)
    runs = [run_cloud(tiny_zoo, stream, 900, policy="uncertainty", fraction=0.1, batch=10,
                      sync_every=50, variant="tiny", home=home, seed=0,
                      learning={"trigger_samples": "12", "steps": "40"}) for _ in range(2)]
    assert runs[0]["updates_applied"] >= 1 and runs[0]["updates_rejected_cloud"] >= 1
    assert np.array_equal(runs[0]["correct"], runs[1]["correct"])
    for key in ("updates_applied", "updates_rejected_cloud", "uploads", "update_latency_s"):
        assert runs[0][key] == runs[1][key]
    # lockstep: every update is on the device within a batch (1 simulated s at 10/s, its
    # canary) of the sync that made it
    assert 0 <= max(runs[0]["update_latency_s"]) <= 1.0


def test_the_loop_is_the_fleet_virtual_clock_with_a_cloud_cost(tiny_zoo):
    """``edgecl eval loop`` runs on the fleet's virtual clock: a learning job that costs 5
    simulated seconds (a sync interval at 10 samples/s) puts every update 5 s or more after
    the sync that made it, and the device sees it later in its stream than in lockstep."""
    from edgecl.eval.loop import run_cloud
    from edgecl.fleet import CloudCostModel

    stream = ("continual", {"corruptions": ["gaussian_noise", "zoom_blur"], "severity": 3,
                            "samples_per_domain": 450, "seed": 2})
    home = str(tiny_zoo.path.parent.parent)
    kwargs = {"policy": "uncertainty", "fraction": 0.1, "batch": 10, "sync_every": 50,
              "variant": "tiny", "home": home, "seed": 0,
              "learning": {"trigger_samples": "12", "steps": "40"}}
    lockstep = run_cloud(tiny_zoo, stream, 900, **kwargs)
    slow = run_cloud(tiny_zoo, stream, 900, cost=CloudCostModel(job_s=5.0), **kwargs)
    assert slow["updates_applied"] >= 1
    assert min(slow["update_latency_s"]) >= 5.0
    assert slow["update_times"][0] > lockstep["update_times"][0]


def test_after_a_return_to_clean_the_device_is_back_at_source_level_within_200_samples(
        tiny_zoo):
    """Do no harm: a device that adapted to a corruption and then sees clean inputs again
    serves the bundle's state (or better) within 200 samples of the return."""
    from edgecl.device import DeviceRuntime
    from edgecl.eval.loop import run_cloud
    from edgecl.zoo.streams import returning_stream

    n = 500
    args = {"domains": ["clean", "gaussian_noise", "clean"], "severity": 3,
            "samples_per_domain": n, "seed": 3}
    images, labels, _ = returning_stream(**args).arrays()
    home = str(tiny_zoo.path.parent.parent)
    res = run_cloud(tiny_zoo, ("returning", args), 3 * n, policy="uncertainty",
                    fraction=0.1, batch=10,
                    sync_every=50, variant="tiny", home=home, seed=0,
                    learning={"trigger_samples": "12", "steps": "40"})
    rt = DeviceRuntime.open(tiny_zoo.student_bundle, ood=None)
    source = np.concatenate([rt.predict(images[i:i + 500]).labels
                             for i in range(0, len(images), 500)]) == labels
    cloud = res["correct"]
    # it adapted to the corruption (an update served, far above the source there)...
    assert res["updates_applied"] >= 1
    assert cloud[n:2 * n].mean() > source[n:2 * n].mean() + 0.1
    # ...saw both changes, fell back to the bundle state at the return...
    assert res["shifts_detected"] >= 2 and res["reverted"] >= 2
    # ...and from 200 samples after it serves as well as the source
    back = slice(2 * n + 200, 3 * n)
    assert cloud[back].mean() >= source[back].mean() - 0.02, (cloud[back].mean(),
                                                               source[back].mean())
    assert cloud[2 * n:2 * n + 200].mean() >= source[2 * n:2 * n + 200].mean() - 0.25
