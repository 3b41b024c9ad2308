"""benchmarks/serving_stages.py: several runs judged on their medians (the goals of issue 17, item 1)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _stages(monkeypatch):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serving_stages.py"
    spec = importlib.util.spec_from_file_location("serving_stages_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the benchmark puts its folder first; undone after
    spec.loader.exec_module(module)
    return module


def _run(diff: float, ratio: float) -> dict:
    from effstack.serve.metrics import STAGES

    pct = {"p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.1}
    return {"model": "m", "precision": "int8", "engine": "openvino", "engine_alone": {"batch1": pct},
            "stages": {s: pct for s in STAGES}, "goals": {"server_p50_minus_engine_p50_ms": diff,
                                                          "client_p99_over_engine_p99": ratio}}


def test_the_median_run_is_kept_and_the_goals_are_judged_on_the_medians(monkeypatch):
    bench = _stages(monkeypatch)
    r = bench.summarise([_run(3.0, 1.2), _run(0.5, 1.9), _run(1.0, 1.4)])
    assert r["goals"]["server_p50_minus_engine_p50_ms"] == 1.0  # the run in the middle
    assert r["median_goals"] == {"server_p50_minus_engine_p50_ms": 1.0, "client_p99_over_engine_p99": 1.4,
                                 "pass": True}
    assert len(r["runs"]) == 3 and "+3.00" in r["readme"][1]["spread"] and r["readme"][2]["figure"] == "1.40x"
    failing = bench.summarise([_run(2.5, 1.2)])
    assert failing["median_goals"]["pass"] is False  # 2.5 ms over the engine: one run, judged as it is
