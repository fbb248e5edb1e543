"""Typed results and their published JSON Schemas (edgecl/schemas/).

Real output of each evaluation, benchmark and the simulator is checked against its schema
by the tests that already produce it (tests/schema_checks.py: ood/test_evaluate.py,
ood/test_drift.py, device/test_sampling.py, adapt/test_align_and_entropy.py, test_loop.py,
cloud/test_bench.py, test_cli.py, test_fleet.py); here: the schemas themselves, the base
class, and ``bench_adapt`` (which no other test runs).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from edgecl import ConfigError
from edgecl._result import FLAT, OMIT_NONE, JsonResult, flat, schema, schema_names, to_plain
from edgecl.bench import results as bench_results
from edgecl.eval import results as eval_results
from edgecl.fleet import _result as fleet_results
from tests.schema_checks import check_json, check_result

ROOT = Path(__file__).resolve().parents[1]


def _result_classes() -> list[type[JsonResult]]:
    return [obj for module in (eval_results, bench_results, fleet_results)
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, JsonResult) and obj is not JsonResult]


def test_every_result_type_has_a_valid_published_schema():
    names = schema_names()
    assert names == sorted({cls.SCHEMA for cls in _result_classes()})
    assert {"eval-ood", "eval-drift", "eval-sampling", "eval-adapt", "eval-loop",
            "bench-device", "bench-cloud", "bench-swap", "bench-adapt", "bench-soak",
            "simulate"} == set(names)
    for name in names:
        spec = schema(name)
        Draft202012Validator.check_schema(spec)
        assert spec["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert spec["type"] == "object" and spec["additionalProperties"] is False
    for cls in _result_classes():
        assert cls.json_schema() == schema(cls.SCHEMA)
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and "__slots__" in vars(cls), cls
    with pytest.raises(ConfigError, match="no result schema"):
        schema("nope")


def test_the_schemas_ship_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]["edgecl"]
    assert "schemas/*.schema.json" in data
    assert sorted(p.name for p in (ROOT / "edgecl" / "schemas").iterdir()) == [
        f"{n}.schema.json" for n in schema_names()]


@dataclasses.dataclass(frozen=True, slots=True)
class _Inner:
    a: int
    b: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Toy(JsonResult):
    SCHEMA = "toy"
    name: str
    inner: _Inner
    arrays: dict[int, tuple[float, ...]]
    per: dict[int, _Inner] = dataclasses.field(metadata=flat("per_{}"))
    merged: _Inner | None = dataclasses.field(default=None, metadata=FLAT)
    note: str | None = dataclasses.field(default=None, metadata=OMIT_NONE)


def test_to_dict_flattens_omits_and_makes_plain_json():
    toy = _Toy("t", _Inner(np.int64(1), None), {3: (np.float32(0.5), 1.0)},
               {5: _Inner(2, 0.25)})
    assert toy.to_dict() == {"name": "t", "inner": {"a": 1, "b": None},
                             "arrays": {"3": [0.5, 1.0]}, "per_5": {"a": 2, "b": 0.25}}
    assert type(toy.to_dict()["inner"]["a"]) is int
    both = dataclasses.replace(toy, merged=_Inner(7, 1.5), note="n")
    assert both.to_dict() == {**toy.to_dict(), "a": 7, "b": 1.5, "note": "n"}
    assert json.loads(both.to_json()) == both.to_dict()
    assert both.to_json().startswith('{\n  "a": 7,')  # sorted keys, indent 2
    assert both.to_json(indent=None) == json.dumps(both.to_dict(), sort_keys=True)
    assert to_plain(np.arange(3)) == [0, 1, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        toy.name = "u"  # type: ignore[misc]


def test_bench_adapt_result_matches_its_schema(tiny_zoo):
    from edgecl.bench import AdaptBenchResult, bench_adapt
    from edgecl.zoo.streams import continual_stream

    frames = continual_stream(["gaussian_noise"], samples_per_domain=64).arrays()[0]
    result = bench_adapt(tiny_zoo.student_bundle, frames, calls=40, block=10)
    assert isinstance(result, AdaptBenchResult)
    data = check_result(result, optional={"bundle"})
    assert "bundle" not in data and result.calls_per_mode == 20
    assert result.worker_errors == 0 and result.predict_p99_ms_on >= result.predict_p50_ms_on
    named = dataclasses.replace(result, bundle="zoo student")  # as `edgecl bench adapt` does
    assert check_result(named, optional={"bundle"})["bundle"] == "zoo student"


def test_schemas_reject_what_a_result_never_holds():
    sev = {"median_delay": None, "p90_delay": None, "missed": 1, "early_alarms": 0,
           "per_corruption": {"fog": None}}
    det = {"params": {}, "severity_5": sev, "false_alarms_per_10k": 0.0, "false_alarms": 0,
           "clean_samples": 10}
    drift = {"score": "energy", "detectors": {"ks": det}}
    check_json("eval-drift", drift, ("detectors", "ks"), ("detectors", "ks", "severity_5"))
    bad = [{**drift, "score": None},
           {**drift, "detectors": {"ks": {**det, "severity_x": sev}}},
           {**drift, "detectors": {"ks": {**det, "severity_5": {**sev, "missed": 0.5}}}},
           {**drift, "detectors": {"ks": {**det, "severity_5": {**sev, "median_delay": "1"}}}}]
    for instance in bad:
        assert not Draft202012Validator(schema("eval-drift")).is_valid(instance), instance
