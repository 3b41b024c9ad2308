"""The batcher's rules under simulated Poisson load (benchmarks/batcher_sim.py drives the real decide())."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from effstack.serve.batcher import BatchingPolicy

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "batcher_sim.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("batcher_sim", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_light_load_waits_for_nothing_and_overload_is_refused_not_queued(sim):
    curve = {1: 0.060, 8: 0.480}  # linear, like a CPU: 2 instances make ~33 samples/s
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.350, latency_curve={b: s * 1.1 for b, s in curve.items()},
                            instances=2)
    light = sim.simulate(policy, curve, 2, rate=5.0, seconds=60)
    assert light["refused"] == 0 and light["p50_ms"] < 70  # no waiting for company on a linear curve
    heavy = sim.simulate(policy, curve, 2, rate=100.0, seconds=30)  # 3x what the instances can do
    assert heavy["refused"] > 0.5  # most are refused at once ...
    assert heavy["p99_ms"] <= 350 * 1.2  # ... so the admitted ones still finish about within the budget


def test_the_same_seed_gives_the_same_run(sim):
    curve = {1: 0.010, 8: 0.020}
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.100, latency_curve=curve)
    assert sim.simulate(policy, curve, 1, 200.0, 10, seed=3) == sim.simulate(policy, curve, 1, 200.0, 10, seed=3)
