"""Candidates, measurements and grids: validation, round trips, what a grid leaves out and why."""

from __future__ import annotations

import doctest

import pytest

from effstack.errors import ConfigError, UnknownEngineError
from effstack.plan import Candidate, Grid, Measurement


def test_candidate_round_trip_and_label():
    c = Candidate("onnxruntime", "int8", batch=8, instances=2, threads=1)
    assert Candidate.from_dict(c.to_dict()) == c
    assert c.label() == "onnxruntime int8 b8 2x1" and c.family == ("onnxruntime", "int8", 2, 1) and c.cores == 2
    with pytest.raises(ConfigError, match="unknown Candidate setting 'color'"):
        Candidate.from_dict({**c.to_dict(), "color": "red"})


@pytest.mark.parametrize("kwargs, match", [
    ({"batch": 0}, "candidate batch must be a positive integer, got 0"),
    ({"threads": 1.5}, "candidate threads must be a positive integer"),
    ({"instances": True}, "candidate instances must be a positive integer"),
    ({"engine": ""}, "candidate engine must be a non-empty name"),
])
def test_candidate_validates(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Candidate(**{"engine": "e", **kwargs})


def test_measurement_validates_and_round_trips():
    m = Measurement(throughput=10.0, p50_ms=1.0, p99_ms=2.0, samples=5, seconds=0.5)
    assert Measurement.from_dict(m.to_dict()) == m
    assert m.meets(2.0) and not m.meets(1.9)
    assert not Measurement.failed(RuntimeError("x\ny")).meets(100)
    assert Measurement.failed(RuntimeError("x\ny")).error == "RuntimeError: x y"
    with pytest.raises(ConfigError, match="needs throughput and p99_ms"):
        Measurement(throughput=1.0)
    with pytest.raises(ConfigError, match="finite non-negative"):
        Measurement(throughput=float("nan"), p99_ms=1.0)


def test_grid_keeps_what_can_run_and_says_why_for_the_rest():
    def supported(engine):
        if engine == "nope":
            raise UnknownEngineError("unknown engine 'nope'")
        return ("fp32",)

    grid = Grid.build(["a", "nope"], ["fp32", "int8"], [4, 1, 4], instances=[1, 2], threads=[1, 2], cores=2,
                      supported=supported)
    assert len(grid) == 2 * 3  # batches {1, 4} x layouts {1x1, 1x2, 2x1}
    assert grid.families() == [("a", "fp32", 1, 1), ("a", "fp32", 1, 2), ("a", "fp32", 2, 1)]
    assert grid.batches(("a", "fp32", 1, 2)) == [1, 4]
    assert dict(grid.rejected) == {
        "2x2": "uses 4 cores, more than the 2 this machine has",
        "nope": "unknown engine 'nope'",
        "a int8": "engine runs fp32 here",
    }
    assert all(c.cores <= 2 for c in grid)


def test_empty_grid_is_a_config_error_naming_the_reasons():
    with pytest.raises(ConfigError, match="no valid candidate .*a int8: engine runs fp32 here"):
        Grid.build("a", "int8", [1], cores=1, supported=lambda e: ("fp32",))
    with pytest.raises(ConfigError, match="batch size must be a positive integer, got 0"):
        Grid.build("a", "fp32", [0], cores=1, supported=lambda e: ("fp32",))
    with pytest.raises(ConfigError, match="at least one engine"):
        Grid.build([], "fp32", [1], cores=1)


def test_grid_uses_the_engine_registry_by_default():
    grid = Grid.build(["null", "tensorflow"], ["fp32"], [1], cores=1)
    assert [c.engine for c in grid] == ["null"]
    assert "unknown engine 'tensorflow'" in dict(grid.rejected)["tensorflow"]


def test_docstring_examples_run():
    import effstack.plan.candidate as candidate
    import effstack.plan.search as search

    for module in (candidate, search):
        assert doctest.testmod(module).failed == 0
