"""Scenarios over fake sessions: counts, structure, and the server's open-loop latency accounting."""

from __future__ import annotations

import numpy as np
import pytest

from effstack.measure.scenarios import offline, poisson_schedule, server, single_stream
from effstack.measure.timer import Timer
from effstack.errors import ConfigError, InputError

from .fakes import FakeSession

X1 = np.zeros((1, 4), dtype=np.float32)
X4 = np.zeros((4, 4), dtype=np.float32)
QUICK = Timer(warmup_iters=2, warmup_s=0.0)


def test_single_stream_counts_queries_and_samples():
    s = FakeSession()
    r = single_stream(s, X4, duration_s=0.01, min_queries=5, max_queries=5, repeats=5, timer=QUICK)
    assert r.scenario == "single_stream"
    assert (r.queries, r.samples, r.batch) == (5, 20, 4)
    assert len(r.latencies_ns) == 5 and r.latency.count == 5
    assert s.runs == r.warmup_calls + 5  # warm-up calls are made but not counted
    assert r.throughput.n == 5 and r.throughput.min <= r.throughput.median <= r.throughput.max
    assert r.cpu is not None


def test_offline_uses_run_many_in_repeats():
    s = FakeSession()
    r = offline(s, X4, duration_s=0.01, repeats=3, max_calls_per_repeat=10, timer=QUICK)
    assert r.scenario == "offline" and r.batch == 4
    assert r.throughput.n == 3
    assert r.latency is None  # per-batch latency is undefined with batches in flight
    per_repeat = r.queries // 3
    assert 1 <= per_repeat <= 10
    assert r.samples == 3 * per_repeat * 4
    assert s.run_many_calls == r.warmup_calls + 3


def test_offline_keeps_every_request_in_flight_busy():
    """A session with 3 requests in flight gets rounds of at least 4 x 3 calls, and sizing calls of 3."""

    class Pipelined(FakeSession):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def concurrency(self) -> int:
            return 3

        def run_many(self, x, n):
            self.sizes.append(n)
            return super().run_many(x, n)

    s = Pipelined()
    r = offline(s, X4, duration_s=0.001, repeats=2, timer=QUICK)
    timed = s.sizes[-2:]
    assert all(n >= 12 for n in timed) and r.queries == sum(timed)
    assert all(n == 3 for n in s.sizes[:-2])  # warm-up and sizing calls fill the pipeline too


def test_server_counts_latency_from_the_scheduled_time():
    # one worker, 10 ms per query, ~400 queries/s offered: a queue must build, and each query's
    # latency includes its wait. Query i cannot finish before query 0's scheduled time plus
    # (i + 1) service times, so latency_i >= (i + 1) * 10 ms - (sched_i - sched_0): a lower bound
    # that holds however slow the machine is (time.sleep never returns early).
    service = 0.010
    s = FakeSession(sleep_s=service)
    r = server(s, X1, rate_qps=400, duration_s=0.1, seed=3, drain_s=60, late_ms=1.0, timer=QUICK)
    offsets = poisson_schedule(400, 0.1, seed=3, max_queries=100_000)
    n = len(offsets)
    assert n > 10
    assert r.incomplete == 0 and r.queries == n and len(r.latencies_ns) == n
    for i, lat in enumerate(r.latencies_ns):
        bound = (i + 1) * service * 1e9 - (offsets[i] - offsets[0])
        assert lat >= bound - 1e5, f"query {i}: {lat} ns < {bound} ns"
    # the back of the queue waited for everyone in front: far more than one service time
    assert r.latencies_ns[-1] >= (n * service - 0.1) * 1e9 - 1e5
    assert r.latency.max_ms >= r.latencies_ns[-1] / 1e6 - 1e-9
    assert r.late >= 1
    assert r.target_qps == 400 and r.achieved_qps > 0


def test_server_schedule_is_seeded_and_bounded():
    a = poisson_schedule(50, 2.0, seed=1, max_queries=1000)
    assert np.array_equal(a, poisson_schedule(50, 2.0, seed=1, max_queries=1000))
    assert not np.array_equal(a, poisson_schedule(50, 2.0, seed=2, max_queries=1000))
    assert (np.diff(a) >= 0).all() and a[-1] < 2e9
    assert len(poisson_schedule(1000, 10.0, seed=0, max_queries=17)) == 17


def test_server_schedule_offers_exactly_its_rate_with_poisson_gaps():
    for seed in range(5):  # every step carries the rate it is credited with, whatever the draw
        assert len(poisson_schedule(29.9, 10.0, seed=seed, max_queries=100_000)) == 299
    gaps = np.diff(poisson_schedule(1000, 50.0, seed=0, max_queries=100_000)) / 1e9
    assert gaps.mean() == pytest.approx(1e-3, rel=0.01)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)  # exponential gaps: as bursty as Poisson
    assert np.mean(gaps > 3e-3) == pytest.approx(np.exp(-3), abs=0.005)  # their tail too


def test_server_drops_backlog_after_drain_and_counts_it():
    s = FakeSession(sleep_s=0.02)
    r = server(s, X1, rate_qps=500, duration_s=0.05, seed=0, drain_s=0.0, timer=QUICK)
    issued = len(poisson_schedule(500, 0.05, seed=0, max_queries=100_000))
    assert r.incomplete >= 1 and r.queries + r.incomplete == issued
    assert r.latency.count == issued  # unfinished queries still count, with the time they waited


def test_server_engine_error_propagates():
    with pytest.raises(RuntimeError, match="fell over"):
        server(FakeSession(fail=True), X1, rate_qps=100, duration_s=0.02,
               timer=Timer(warmup_iters=0, warmup_s=0.0))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(InputError, match="numpy batch"):
        single_stream(FakeSession(), [1, 2, 3], duration_s=0.01)
    with pytest.raises(ConfigError, match="rate_qps must be positive"):
        server(FakeSession(), X1, rate_qps=0)
    with pytest.raises(ConfigError, match="duration_s must be positive"):
        offline(FakeSession(), X4, duration_s=0)
