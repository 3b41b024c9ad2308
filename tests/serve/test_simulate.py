"""The batcher's rules under simulated Poisson load (effstack.serve.simulate drives the real decide())."""

from __future__ import annotations

import pytest

from effstack.serve.batcher import BatchingPolicy
from effstack.serve.instances import pick_layout
from effstack.serve.simulate import (curve_stats, max_rate, measured_curve, queueing_bound, ranking_agreement,
                                     simulate, sustainable_rate)


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


def test_a_per_size_spread_equal_everywhere_is_the_single_figure():
    curve = {1: 0.060, 2: 0.120, 4: 0.240}
    policy = BatchingPolicy(max_batch=4, latency_budget_s=0.350, latency_curve={b: s * 1.1 for b, s in curve.items()},
                            instances=2)
    one = simulate(policy, curve, 2, rate=20.0, seconds=60, jitter=0.1)
    assert simulate(policy, curve, 2, rate=20.0, seconds=60, jitter={1: 0.1, 2: 0.1, 4: 0.1}) == one
    assert simulate(policy, curve, 2, rate=20.0, seconds=60, jitter={1: 0.1}) == one  # larger sizes keep the last
    assert max_rate(policy, curve, 2, jitter={1: 0.1, 4: 0.1}) == max_rate(policy, curve, 2, jitter=0.1)


def test_the_spread_of_the_sizes_the_batcher_runs_decides_the_ceiling():
    curve = {1: 0.060, 2: 0.120, 4: 0.240}  # linear: the batch cap is 1, so batch 1's spread is what counts
    policy = BatchingPolicy(max_batch=4, latency_budget_s=0.350, latency_curve={b: s * 1.3 for b, s in curve.items()},
                            instances=2)
    steady = max_rate(policy, curve, 2, jitter={1: 0.02, 2: 0.02, 4: 0.02})
    assert max_rate(policy, curve, 2, jitter={1: 0.3, 2: 0.02, 4: 0.02}) < steady  # a wide batch 1 costs rate
    assert max_rate(policy, curve, 2, jitter={1: 0.02, 2: 0.02, 4: 0.3}) == pytest.approx(steady, rel=0.05)


def test_curve_stats_and_measured_curve_round_trip_through_json():
    import json
    import math

    stats = curve_stats({1: [0.010, 0.020, 0.040], 2: [0.050] * 4, 3: []})
    assert sorted(stats) == [1, 2]  # a size without times is left out
    one = stats[1]
    assert one["runs"] == 3 and one["median_ms"] == pytest.approx(20.0) and one["p99_ms"] == pytest.approx(39.6)
    assert one["sigma_log"] == pytest.approx(math.log(2) * math.sqrt(2 / 3))  # std of ln: ln 2 x std(0, 1, 2)
    assert stats[2]["cv"] == pytest.approx(0.0, abs=1e-12) and stats[2]["sigma_log"] == pytest.approx(0.0, abs=1e-12)
    median, p99, sigma = measured_curve(json.loads(json.dumps({str(b): s for b, s in stats.items()})))
    assert median == {1: pytest.approx(0.020), 2: pytest.approx(0.050)}
    assert p99[1] == pytest.approx(0.0396) and sigma == {1: one["sigma_log"], 2: stats[2]["sigma_log"]}
    with pytest.raises(ValueError, match="no batch size"):
        measured_curve({})


@pytest.mark.parametrize("predicted,measured,expected", [
    ({1: 22.8, 2: 28.3}, {1: 13.6, 2: 21.5}, True),
    ({1: 30.0, 2: 28.3}, {1: 13.6, 2: 21.5}, False),
    ({1: 28.3, 2: 28.3}, {1: 13.6, 2: 21.5}, False),  # a predicted tie ranks nothing
    ({1: 20.0, 2: 28.3}, {1: 21.0, 2: 21.5}, None),  # measured within 5%: nothing to rank
    ({1: 20.0, 2: 28.3}, {1: None, 2: 5.0}, True),  # a layout that held no rate counts as 0
    ({1: 9.0, 2: 12.0, 4: 11.0}, {1: 5.0, 2: 10.0, 4: 10.2}, True),  # the 2-4 tie says nothing, the rest agree
    ({1: 9.0, 2: 12.0, 4: 13.0}, {1: 5.0, 2: 10.0, 4: 4.0}, False),
])
def test_ranking_agreement(predicted, measured, expected):
    assert ranking_agreement(predicted, measured) is expected


def test_pick_layout_is_the_auto_rule():
    assert pick_layout({1: 22.8, 2: 28.3}, {1: 1, 2: 1}) == 2
    assert pick_layout({1: 27.9, 2: 28.3}, {1: 1, 2: 1}) == 1  # within 5%: the fewer instances
    assert pick_layout({1: 28.25, 2: 28.3}, {1: 3, 2: 1}) == 2  # within 5%: the smaller batch cap first
    assert pick_layout({1: 27.9, 2: 28.3}, {1: 1, 2: 1}, margin=0.0) == 2


def test_sustainable_rate_with_and_without_a_budget():
    curve = {1: 0.060, 8: 0.480}
    budget = BatchingPolicy(max_batch=8, latency_budget_s=0.350, latency_curve=curve, instances=2)
    assert sustainable_rate(budget, curve, 2) == max_rate(budget, curve, 2)
    free = BatchingPolicy(max_batch=8, latency_curve=curve, instances=2)
    assert sustainable_rate(free, curve, 2) == pytest.approx(2 / 0.060)


def test_the_queueing_bound_is_the_m_d_1_p99_and_no_simulated_server_beats_it():
    # M/D/1 at 10 ms per sample: p99 sojourn within 10 sample-times near 0.77 load, within 20 near 0.89
    assert queueing_bound(100.0, 0.100) == pytest.approx(77.0, abs=1.5)
    assert queueing_bound(100.0, 0.200) == pytest.approx(89.0, abs=1.5)
    assert queueing_bound(100.0, 0.005) == 0.0  # a budget below one sample's time holds nothing
    assert queueing_bound(100.0, 0.100, seed=1) == pytest.approx(queueing_bound(100.0, 0.100), rel=0.02)
    # the batcher on a curve whose per-sample time never beats 10 ms, however it batches, misses the budget a
    # little above the bound (queueing, not the batcher: no spread, no overhead)
    curve = {1: 0.010, 2: 0.020, 4: 0.040, 8: 0.080}
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.100, latency_curve=curve, admission_horizon=2.0)
    above = simulate(policy, curve, 1, rate=1.1 * queueing_bound(100.0, 0.100), seconds=600, jitter=0.0,
                     overhead_s=0.0)
    assert above["p99_ms"] > 100.0
    for bad in ((0.0, 0.1), (100.0, 0.0), (float("nan"), 0.1)):
        with pytest.raises(ValueError, match="positive"):
            queueing_bound(*bad)
