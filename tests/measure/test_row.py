"""ResultRow: filling from a scenario, the derived figures, and the dict round trip."""

from __future__ import annotations

import json

import pytest

from effstack.measure.cpu import CpuUsage
from effstack.measure.row import SCHEMA_VERSION, ResultRow, dominant_precision
from effstack.measure.scenarios import ScenarioResult
from effstack.measure.stats import latency_stats, spread
from effstack.errors import ArtifactError, ConfigError

PEAK = {"rates": {"fp32": {"gops": 100.0, "path": "onnxruntime"}, "int8": {"gops": 400.0, "path": "openvino"}}}


def _result(other_pct: float = 15.0) -> ScenarioResult:
    return ScenarioResult(
        scenario="single_stream", batch=1, queries=3, samples=3, duration_s=0.03,
        throughput=spread([90.0, 100.0, 110.0]), latency=latency_stats([10e6, 10e6, 11e6]),
        cpu=CpuUsage(0.03, other_pct, other_pct / 2, 190.0, 2, True),
    )


def test_fill_derives_gops_peak_of_the_executed_precision_and_noisy():
    row = ResultRow(model="m", engine="openvino", precision="fp32", macs_per_sample=1_000_000_000,
                    executed_counts={"i8": 50, "f32": 3})  # asked fp32, ran (mostly) int8
    row.fill(_result(), PEAK, noisy_threshold_pct=10.0)
    assert row.throughput == 100.0 and (row.throughput_min, row.throughput_max) == (90.0, 110.0)
    assert row.spread_pct == pytest.approx(20.0)
    assert row.gops == pytest.approx(200.0)  # 2 * 1e9 MAC * 100 samples/s
    assert row.peak_precision == "int8" and row.peak_gops == 400.0 and row.peak_path == "openvino"
    assert row.peak_fraction == pytest.approx(0.5)
    assert row.p50_ms == pytest.approx(10.0) and row.queries == 3
    assert row.other_cpu_pct_core == 15.0 and row.noisy is True
    assert row.status == "ok"


def test_fill_without_peak_or_macs_leaves_fractions_empty():
    row = ResultRow(engine="null", precision="fp32", executed_counts={"none": 1}).fill(_result(0.0), None)
    assert row.gops is None and row.peak_fraction is None and row.noisy is False


def test_dominant_precision():
    assert dominant_precision({"u8": 10, "f32": 2}) == "int8"
    assert dominant_precision({"bf16": 3}) == "bf16"
    assert dominant_precision({"none": 1}) is None
    assert dominant_precision({}) is None


def test_round_trip_and_json_safety():
    row = ResultRow(model="m", engine="null", settings={"hint": "latency", "streams": 1}, machine={"cores": 2})
    row.fill(_result(), PEAK)
    row.throughput_max = float("inf")  # JSON has no infinity
    d = row.to_dict()
    assert d["throughput_max"] is None and d["schema"] == SCHEMA_VERSION
    back = ResultRow.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back.to_dict() == d


def test_from_dict_tolerates_new_keys_but_not_a_newer_schema():
    assert ResultRow.from_dict({"engine": "x", "added_later": 1}).engine == "x"
    with pytest.raises(ArtifactError, match="upgrade effstack"):
        ResultRow.from_dict({"schema": SCHEMA_VERSION + 1})
    with pytest.raises(ArtifactError):
        ResultRow.from_dict(["not", "a", "row"])


def test_failed_rows_are_one_line():
    row = ResultRow(engine="x").failed("error", "first line\n  second line")
    assert row.status == "error" and row.error == "first line second line"
    with pytest.raises(ConfigError, match="status"):
        ResultRow(status="maybe")
