"""`edgecl eval loop` end to end on tiny settings: real service, real device, every key."""

from __future__ import annotations

import json

from edgecl.cli import main


def test_eval_loop_runs_and_reports_every_strategy(tiny_zoo, capsys):
    home = str(tiny_zoo.path.parent.parent)
    assert main(["eval", "loop", "--variant", "tiny", "--home", home, "--json",
                 "--samples-per-domain", "120", "--corruptions", "contrast,fog"]) == 0
    out = json.loads(capsys.readouterr().out)
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
