"""benchmarks/engine_overhead.py's verdicts: the INT8 ceiling comes from the fastest path seen, a cell judged
against a micro-benchmark peak passes or fails on its rounds, and a cell that is its own ceiling is not judged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from effstack.measure.stats import spread

MACS = 4_000_000_000  # 8 GOP per sample


def _cell(engine: str, precision: str, rounds: list[float]) -> dict:
    direct = [r * 1.01 for r in rounds]  # OpenVINO's own API runs each round 1% faster
    return {"engine": engine, "precision": precision, "batch": 8, "effstack_rounds": rounds, "direct_rounds": direct,
            "effstack_median": sorted(rounds)[len(rounds) // 2], "direct_median": sorted(direct)[len(direct) // 2],
            "ratio": 0.99}


def _verdicts(bench, peak: dict, int8_rounds: list[float]) -> dict:
    model = SimpleNamespace(macs=MACS)
    harness = SimpleNamespace(throughput=spread([1e6, 1.1e6, 0.9e6]), latency=SimpleNamespace(p50_ms=1e-3,
                                                                                             p99_ms=2e-3))
    cells = [_cell("openvino", "int8", int8_rounds), _cell("openvino", "fp32", [20.0, 21.0, 22.0])]
    return bench.verdicts(model, cells, harness, peak, vnni=True)


@pytest.mark.parametrize("rounds, passes", [([92.0, 95.0, 98.0], True), ([80.0, 85.0, 99.0], False)])
def test_a_cell_under_a_micro_benchmark_peak_is_judged_on_its_rounds(load_benchmark, rounds, passes):
    bench = load_benchmark("engine_overhead")
    peak = {"rates": {"int8": {"gops": 800.0, "best": 820.0, "path": "openvino-conv"}}}  # 100 samples/s
    v = _verdicts(bench, peak, rounds)
    assert v["int8_ceiling"]["samples_per_s"] == pytest.approx(100.0)
    assert v["int8_ceiling"]["peak_path"] == "openvino-conv"
    b = v["best_int8_vs_ceiling"]
    assert b["value"] == pytest.approx(sorted(rounds)[1] / 100.0) and b["pass"] is passes and "why" not in b
    line = next(x for x in bench.readme_lines(v) if x["what"].startswith("best INT8 cell"))
    assert line["figure"].endswith("(met)" if passes else "(not met)")


def test_a_cell_that_is_its_own_ceiling_is_reported_but_not_judged(load_benchmark):
    """On a CPU whose engines outrun every matrix-product path (AMX through OpenVINO's convolutions, say), the
    peak is the fastest row itself: the ratio is 1 by construction and says nothing of the 0.9 goal."""
    bench = load_benchmark("engine_overhead")
    observed = {"gops": 8.0 * 95.0, "path": "observed:openvino/resnet50 b8"}  # the cell's own median
    peak = {"rates": {"int8": {"gops": 400.0, "best": 410.0, "path": "onnxruntime", "observed": observed}}}
    v = _verdicts(bench, peak, [92.0, 95.0, 98.0])
    assert v["int8_ceiling"]["peak_path"] == observed["path"]
    b = v["best_int8_vs_ceiling"]
    assert b["value"] == pytest.approx(1.0) and b["pass"] is None and "ceiling is this cell itself" in b["why"]
    line = next(x for x in bench.readme_lines(v) if x["what"].startswith("best INT8 cell"))
    assert "not judged" in line["figure"]
    # the other goals are judged as before
    assert v["best_int8_vs_fp32"]["pass"] is True and v["null_cost_us"]["pass"] is True


def test_the_best_int8_cell_is_compared_with_openvino_used_directly(load_benchmark):
    bench = load_benchmark("engine_overhead")
    peak = {"rates": {"int8": {"gops": 2000.0, "best": 2000.0, "path": "openvino-conv"}}}
    v = _verdicts(bench, peak, [90.0, 95.0, 100.0])
    o = v["best_int8_vs_openvino"]
    assert o["paired"] and o["value"] == pytest.approx(1 / 1.01) and o["pass"] is True
    assert o["cell"] == o["openvino_cell"] == "openvino int8 b8"

    model = SimpleNamespace(macs=MACS)
    harness = SimpleNamespace(throughput=spread([1e6] * 3), latency=SimpleNamespace(p50_ms=1e-3, p99_ms=2e-3))
    fast_ort = _cell("onnxruntime", "int8", [99.0, 100.0, 101.0])
    slow_ov = _cell("openvino", "int8", [80.0, 88.0, 90.0])  # direct: 80.8, 88.88, 90.9
    v = bench.verdicts(model, [fast_ort, slow_ov], harness, peak, vnni=True)
    o = v["best_int8_vs_openvino"]
    assert not o["paired"] and o["cell"] == "onnxruntime int8 b8" and o["openvino_cell"] == "openvino int8 b8"
    assert o["value"] == pytest.approx(100.0 / 88.88) and o["pass"] is True
    assert o["spread"] == pytest.approx({"min": 99.0 / 90.9, "max": 101.0 / 80.8})
    line = next(x for x in bench.readme_lines(v) if "OpenVINO used directly" in x["what"])
    assert line["figure"].endswith("(met)") and "worst to best rounds" in line["spread"]

    v = bench.verdicts(model, [fast_ort], harness, peak, vnni=True)
    assert v["best_int8_vs_openvino"]["pass"] is None and "no OpenVINO" in v["best_int8_vs_openvino"]["why"]
