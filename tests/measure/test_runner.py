"""The sweep: one row per cell, skipped and error rows with reasons, and a crash that costs one row."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from effstack.measure import bench
from effstack.errors import ConfigError
from effstack.models import ModelSpec

REPO = Path(__file__).resolve().parents[2]
TINY = "effstack.testing:tiny_mlp"


def test_sweep_shapes_and_reasons():
    seen = []
    rows = bench(TINY, ["null", "nosuch"], ["fp32", "int4"], [1, 2], duration=0.05, isolate=False,
                 progress=False, peak=False, on_row=seen.append)
    assert len(rows) == 8 and seen == rows
    by = {(r.engine, r.precision, r.batch): r for r in rows}
    assert by[("null", "fp32", 1)].status == "ok" and by[("null", "fp32", 1)].scenario == "single_stream"
    assert by[("null", "fp32", 2)].status == "ok" and by[("null", "fp32", 2)].scenario == "offline"
    assert by[("null", "int4", 1)].status == "error" and "precision must be one of" in by[("null", "int4", 1)].error
    assert all(r.status == "error" and "unknown engine 'nosuch'" in r.error for k, r in by.items() if k[0] == "nosuch")
    assert len({r.run_id for r in rows}) == 1
    assert all("\n" not in r.error for r in rows)


def test_precision_the_engine_lacks_is_skipped(monkeypatch):
    from effstack.engines import get_engine

    engine = get_engine("null")
    monkeypatch.setattr(type(engine), "precisions", ("fp32",))
    rows = bench(TINY, "null", ["fp32", "int8"], 1, duration=0.05, isolate=False, progress=False, peak=False)
    assert [r.status for r in rows] == ["ok", "skipped"]
    assert "runs fp32, not 'int8'" in rows[1].error


def test_missing_package_is_skipped_with_the_pip_extra(monkeypatch):
    import effstack.registry as registry

    monkeypatch.setattr(registry, "is_installed", lambda name: name != "openvino")
    rows = bench(TINY, ["openvino"], ["fp32"], [1], duration=0.05, isolate=False, progress=False, peak=False)
    assert rows[0].status == "skipped" and "pip install 'effstack[openvino]'" in rows[0].error


def test_a_crashing_cell_costs_one_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    spec = ModelSpec("tests.measure.fakes:crash_once", options={"marker": str(tmp_path / "crashed")})
    rows = bench(spec, ["null"], ["fp32"], [1, 2], duration=0.05, isolate=True, progress=False, peak=False,
                 timeout_s=120)
    assert [r.status for r in rows] == ["error", "ok"], [r.error for r in rows]
    assert "exited with code 3" in rows[0].error
    assert rows[1].throughput > 0


def test_peak_record_gives_a_fraction_and_progress_bar_renders():
    peak = {"rates": {"fp32": {"gops": 1.0, "path": "fake"}}}
    rows = bench(TINY, ["null"], ["fp32"], [1], duration=0.05, isolate=False, progress=True, peak=peak,
                 knobs={"null": {"out_features": 4}})
    assert rows[0].status == "ok"
    assert rows[0].settings.get("out_features") == 4
    # the null engine computes nothing ("none" ran), so no peak applies
    assert rows[0].peak_precision is None and rows[0].peak_fraction is None


def test_bad_sweep_arguments():
    with pytest.raises(ConfigError, match="scenario"):
        bench(TINY, ["null"], scenario="burst", progress=False)
    with pytest.raises(ConfigError, match="rate_qps"):
        bench(TINY, ["null"], scenario="server", progress=False)
    with pytest.raises(ConfigError, match="engine"):
        bench(TINY, [], progress=False)
    with pytest.raises(ConfigError, match="batch"):
        bench(TINY, ["null"], batches=[0], progress=False)


def test_server_scenario_row():
    rows = bench(TINY, ["null"], ["fp32"], [1], scenario="server", rate_qps=200, duration=0.1, isolate=False,
                 progress=False, peak=False)
    row = rows[0]
    assert row.status == "ok", row.error
    assert row.scenario == "server" and row.target_qps == 200
    assert row.queries + row.incomplete >= 1 and row.late is not None and row.p99_ms is not None
