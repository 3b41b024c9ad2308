"""peak_fraction can never exceed 1: a pair of fake engines, one of which outruns the micro-benchmark peak.

The slow engine sleeps SLOW_SLEEP_S per call, so its rows are at most 1 / SLOW_SLEEP_S samples/s (a sleep
never returns early); the micro-benchmark peak is set at 5x that, so they stay below it whatever the machine.
The fast engine computes nothing and outruns that peak by orders of magnitude.
"""

from __future__ import annotations

import json

import pytest

from effstack.measure import bench, peak, runner
from effstack.measure.cpu import CpuUsage
from effstack.measure.row import ResultRow
from effstack.measure.scenarios import ScenarioResult
from effstack.measure.stats import latency_stats, spread
from tests.measure.fakes import SLOW_SLEEP_S

TINY = "effstack.testing:tiny_mlp"
MACS = 640  # tiny_mlp's MACs per sample
MICRO = 2.0 * MACS * 5 / SLOW_SLEEP_S / 1e9  # GOP/s: 5x the slow engine's ceiling at batch 1


def _record(key: str | None = None) -> dict:
    rec = {"rates": {"int8": {"gops": MICRO, "best": MICRO, "path": "fake-mm", "size": 64,
                              "candidates": {"fake-mm": MICRO}}}, "threads": 1, "size": 64, "errors": {}}
    if key:
        rec["key"] = key
    return rec


@pytest.fixture
def fake_pair(monkeypatch):
    """Register the slow and the fast fake int8 engines for this test."""
    from effstack.engines import ENGINES
    from effstack.registry import Entry

    for name, target in (("slow_int8", "tests.measure.fakes:SlowInt8Engine"),
                         ("fast_int8", "tests.measure.fakes:FastInt8Engine")):
        monkeypatch.setitem(ENGINES._entries, name, Entry(name, target))


def _sweep(engines, peak_arg):
    return bench(TINY, engines, ["int8"], [1], duration=0.05, repeats=2, isolate=False, progress=False,
                 peak=peak_arg)


def test_a_row_that_outruns_the_peak_becomes_the_peak_and_no_fraction_exceeds_one(fake_pair):
    given = _record()
    slow, fast, slow_after = _sweep(["slow_int8", "fast_int8", "slow_int8"], given)
    assert [r.status for r in (slow, fast, slow_after)] == ["ok"] * 3, [r.error for r in (slow, fast, slow_after)]
    for row in (slow, fast, slow_after):
        assert row.peak_precision == "int8" and row.peak_path
        assert 0 < row.peak_fraction <= 1.0
        assert row.gops <= row.peak_gops
    # outran it: the row is the peak, and says so
    assert fast.peak_gops > MICRO and fast.peak_gops == fast.gops and fast.peak_fraction == 1.0
    assert fast.peak_path == f"observed:fast_int8/{fast.model} b1"
    # every row of the sweep, the one measured before it too, is judged against the observation
    for row in (slow, slow_after):
        assert (row.peak_path, row.peak_gops) == (fast.peak_path, fast.gops)
        assert row.peak_fraction == pytest.approx(row.gops / fast.gops)
        assert row.peak_fraction < 0.2  # at most MICRO / 5 over more than MICRO
    assert given == _record()  # the caller's record is not changed


def test_an_observed_peak_is_cached_for_later_sweeps_until_refresh(fake_pair, tmp_path, monkeypatch):
    calls = []

    def measure_all(threads, size):
        calls.append(threads)
        return _record()

    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "_measure_all", measure_all)
    (fast,) = _sweep(["fast_int8"], True)
    assert fast.peak_path.startswith(peak.OBSERVED) and fast.peak_fraction == 1.0
    cached = json.loads((tmp_path / "peak.json").read_text())["entries"]
    (entry,) = cached.values()
    assert entry["rates"]["int8"]["gops"] == MICRO  # the micro-benchmark's own figure is kept
    assert entry["rates"]["int8"]["observed"]["path"] == fast.peak_path

    (slow,) = _sweep(["slow_int8"], True)  # a new sweep starts from the cached observation
    assert (slow.peak_path, slow.peak_gops) == (fast.peak_path, fast.gops) and slow.peak_fraction < 1.0
    assert len(calls) == 1

    assert peak.peak_for("int8", peak.peak_rates(refresh=True)) == (MICRO, "fake-mm")  # --refresh forgets it


def _result(throughput: float) -> ScenarioResult:
    return ScenarioResult(scenario="offline", batch=8, queries=3, samples=24, duration_s=0.1,
                          throughput=spread([throughput] * 3), latency=latency_stats([1e6, 1e6, 1e6]),
                          cpu=CpuUsage(0.1, 0.0, 0.0, 190.0, 2, True))


@pytest.mark.parametrize("throughput", [1.0, 49.9, 50.0, 50.1, 1e4, 1e9])
def test_fill_never_gives_a_fraction_above_one(throughput):
    rec = {"rates": {"fp32": {"gops": 100.0, "path": "onnxruntime"}}}
    row = ResultRow(model="m", engine="openvino", precision="fp32", batch=8, macs_per_sample=1_000_000_000)
    row.fill(_result(throughput), rec)  # gops = 2 * throughput
    assert row.peak_fraction <= 1.0 and row.peak_gops >= row.gops
    if row.gops > 100.0:
        assert row.peak_path == "observed:openvino/m b8" and row.peak_fraction == 1.0
    else:
        assert row.peak_path == "onnxruntime" and row.peak_fraction == pytest.approx(row.gops / 100.0)


def test_settle_peak_judges_rows_measured_before_a_faster_one_against_it():
    rec = {"rates": {"int8": {"gops": 100.0, "path": "fake-mm"}}}
    rows = [ResultRow(model="m", engine=e, precision="int8", batch=8, gops=g, status="ok")
            for e, g in (("a", 150.0), ("b", 200.0), ("c", 50.0))]
    failed = ResultRow(model="m", engine="d", precision="int8", batch=8, status="error")
    for row in rows:  # as a sweep goes: each judged on the peak so far, which rows that outrun it raise
        row.judge_peak(rec)
        runner._raise_peak(rec, row)
    assert [r.peak_fraction for r in rows] == [1.0, 1.0, 0.25]  # a and b both read 100%
    runner.settle_peak([*rows, failed], rec)
    assert [r.peak_fraction for r in rows] == [0.75, 1.0, 0.25]
    assert {r.peak_path for r in rows} == {"observed:b/m b8"} and failed.peak_fraction is None
    assert rec["rates"]["int8"]["gops"] == 100.0  # the micro-benchmark's own figure stays
    runner.settle_peak(rows, None)  # no peak measured: rows keep what they have
    assert rows[0].peak_fraction == 0.75


def test_raise_peak_only_raises():
    rec = _record()
    assert not peak.raise_peak(rec, "int8", MICRO / 2, "observed:x/m b1", persist=False)
    assert not peak.raise_peak(rec, "fp32", 1e9, "observed:x/m b1", persist=False)  # no micro-benchmark peak
    assert not peak.raise_peak(None, "int8", 1e9, "observed:x/m b1", persist=False)
    assert peak.raise_peak(rec, "int8", 2 * MICRO, "observed:a/m b1", persist=False)
    assert not peak.raise_peak(rec, "int8", 1.5 * MICRO, "observed:b/m b1", persist=False)  # below the observation
    assert peak.peak_for("int8", rec) == (2 * MICRO, "observed:a/m b1")
    assert rec["rates"]["int8"]["gops"] == MICRO


def test_every_installed_engine_family_has_a_peak_path_and_conv_counts_its_operations():
    names = {p: [n for n, _ in paths] for p, paths in peak._PATHS.items()}
    assert {"openvino", "openvino-conv", "onnxruntime", "torch"} <= set(names["int8"])
    assert {"openvino", "openvino-conv", "torch"} <= set(names["bf16"])

    def fn():
        return None

    fn.flop = 123.0
    assert peak._flop(fn, 1024) == 123.0 and peak._flop(lambda: None, 4) == 128.0
