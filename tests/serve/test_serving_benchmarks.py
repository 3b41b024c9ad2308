"""The serving benchmarks' own arithmetic: serving_stages judges runs on their medians (issue 17, item 1);
serving_cpu splits a server's CPU time between its event loop and its other threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest


def _run(diff: float, ratio: float) -> dict:
    from effstack.serve.metrics import STAGES

    pct = {"p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.1}
    return {"model": "m", "precision": "int8", "engine": "openvino", "engine_alone": {"batch1": pct},
            "stages": {s: pct for s in STAGES}, "goals": {"server_p50_minus_engine_p50_ms": diff,
                                                          "client_p99_over_engine_p99": ratio}}


def test_the_median_run_is_kept_and_the_goals_are_judged_on_the_medians(load_benchmark):
    bench = load_benchmark("serving_stages")
    r = bench.summarise([_run(3.0, 1.2), _run(0.5, 1.9), _run(1.0, 1.4)])
    assert r["goals"]["server_p50_minus_engine_p50_ms"] == 1.0  # the run in the middle
    assert r["median_goals"] == {"server_p50_minus_engine_p50_ms": 1.0, "client_p99_over_engine_p99": 1.4,
                                 "pass": True}
    assert len(r["runs"]) == 3 and "+3.00" in r["readme"][1]["spread"] and r["readme"][2]["figure"] == "1.40x"
    failing = bench.summarise([_run(2.5, 1.2)])
    assert failing["median_goals"]["pass"] is False  # 2.5 ms over the engine: one run, judged as it is


def test_cpu_time_splits_into_the_event_loop_and_the_other_threads(load_benchmark):
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc here")
    bench = load_benchmark("serving_cpu")
    before, after = {10: 1.0, 11: 2.0}, {10: 1.5, 11: 2.25, 12: 0.5}  # thread 12 started between the readings
    assert bench.split(10, before, after) == {"event_loop": 0.5, "engine_and_other_threads": 0.75}
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        now = bench.thread_cpu_s(os.getpid())
        assert os.getpid() in now and threading.get_native_id() in now and worker.native_id in now
        assert all(v >= 0 for v in now.values())
    finally:
        stop.set()
        worker.join()
