"""The batcher's rules under simulated Poisson load (effstack.serve.simulate drives the real decide())."""

from __future__ import annotations

import pytest

from effstack.serve.batcher import BatchingPolicy
from effstack.serve.simulate import max_rate, simulate


def test_light_load_waits_for_nothing_and_overload_is_refused_not_queued():
    curve = {1: 0.060, 8: 0.480}  # linear, like a CPU: 2 instances make ~33 samples/s
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.350, latency_curve={b: s * 1.1 for b, s in curve.items()},
                            instances=2)
    light = simulate(policy, curve, 2, rate=5.0, seconds=60)
    assert light["refused"] == 0 and light["p50_ms"] < 70  # no waiting for company on a linear curve
    heavy = simulate(policy, curve, 2, rate=100.0, seconds=30)  # 3x what the instances can do
    assert heavy["refused"] > 0.5  # most are refused at once ...
    assert heavy["p99_ms"] <= 350 * 1.2  # ... so the admitted ones still finish about within the budget


def test_the_same_seed_gives_the_same_run():
    curve = {1: 0.010, 8: 0.020}
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.100, latency_curve=curve)
    assert simulate(policy, curve, 1, 200.0, 10, seed=3) == simulate(policy, curve, 1, 200.0, 10, seed=3)


def test_max_rate_finds_the_knee_a_queue_allows():
    curve = {1: 0.060, 8: 0.480}
    two = BatchingPolicy(max_batch=8, latency_budget_s=0.350, latency_curve=curve, instances=2)
    rate = max_rate(two, curve, 2)
    # a Poisson queue at a budget of ~6 service times cannot run the instances flat out (33/s), nor need idle
    assert 0.5 * 33.3 < rate < 0.95 * 33.3
    r = simulate(two, curve, 2, rate, 4000 / rate, jitter=0.1)  # what max_rate judged it by
    assert r["p99_ms"] <= 350 and r["refused"] <= 0.01
    roomy = BatchingPolicy(max_batch=8, latency_budget_s=0.700, latency_curve=curve, instances=2)
    assert max_rate(roomy, curve, 2) > rate  # a longer budget lets the queue run closer to the instances' limit
    # a GPU-like curve: batching makes the rate, and the budget bounds the batch
    gpu = {1: 0.004, 8: 0.005, 64: 0.012}
    batched = BatchingPolicy(max_batch=64, latency_budget_s=0.050, latency_curve=gpu)
    assert max_rate(batched, gpu, 1) > 1000
    with pytest.raises(ValueError, match="budget"):
        max_rate(BatchingPolicy(max_batch=8, latency_curve=curve), curve, 1)


@pytest.mark.parametrize("seconds_per_sample", [1e-7, 1e-6, 1e-5])
def test_max_rate_of_a_microsecond_engine_is_bounded_by_the_per_batch_overhead(seconds_per_sample):
    # the null engine's curve on a fast CPU (Zen 5) is ~1 us: the bisection's bound must include the per-batch
    # overhead the simulation charges, or ten halvings of a bound of millions/s never reach a sustainable rate
    curve = {1: seconds_per_sample, 2: 2 * seconds_per_sample}
    policy = BatchingPolicy(max_batch=2, latency_budget_s=0.050, latency_curve=curve, instances=2)
    ceiling = 2 * 2 / (2 * seconds_per_sample + 0.002)  # two instances, batches of 2, 2 ms overhead each
    rate = max_rate(policy, curve, 2, overhead_s=0.002)
    assert 0.3 * ceiling < rate < ceiling
