"""The batcher: the pure decision on hand-made queues, then the asyncio shell with concurrent requests in-process."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from effstack.errors import ConfigError, InputError
from effstack.serve.batcher import (
    BatchingPolicy,
    BatchQueue,
    Pending,
    QueueFull,
    RequestTimeout,
    decide,
    interpolate,
)

from .conftest import GateSession, wait_until


def reqs(*sizes, arrival=0.0, **kw):
    return [Pending(id=i, n=n, arrival=arrival, **kw) for i, n in enumerate(sizes)]


# --- the pure core ---------------------------------------------------------------------------------


def test_fills_to_max_batch_in_samples_and_keeps_order():
    d = decide(reqs(3, 3, 1, 1), now=0.0, policy=BatchingPolicy(max_batch=8))
    assert [p.id for p in d.launch] == [0, 1, 2, 3] and d.samples == 8


def test_stops_at_the_first_request_that_does_not_fit():
    d = decide(reqs(3, 3, 4, 1), now=0.0, policy=BatchingPolicy(max_batch=8))
    assert [p.id for p in d.launch] == [0, 1]  # request 3 would fit but must not jump the queue


def test_zero_delay_launches_a_partial_batch_at_once():
    d = decide(reqs(1), now=0.0, policy=BatchingPolicy(max_batch=8))
    assert len(d.launch) == 1


def test_max_queue_delay_waits_for_the_oldest():
    policy = BatchingPolicy(max_batch=8, max_queue_delay_s=0.010)
    q = [Pending(0, 1, arrival=1.000), Pending(1, 1, arrival=1.004)]
    d = decide(q, now=1.005, policy=policy)
    assert d.launch == () and d.wake_at == pytest.approx(1.010)
    assert len(decide(q, now=1.010, policy=policy).launch) == 2


def test_expired_requests_are_dropped_not_launched():
    q = [Pending(0, 1, 0.0, deadline=0.5), Pending(1, 1, 0.0, deadline=2.0), Pending(2, 1, 0.0)]
    q[2].cancelled = True
    d = decide(q, now=1.0, policy=BatchingPolicy(max_batch=8))
    assert [p.id for p in d.expired] == [0, 2]
    assert [p.id for p in d.launch] == [1]


def test_a_lone_request_larger_than_the_budget_cap_still_runs():
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.010, latency_curve={1: 0.001, 8: 0.008}, budget_slack=0)
    assert policy.batch_cap == 1  # 1 ms per sample at every batch: a larger batch buys nothing
    d = decide(reqs(7, 1), now=0.0, policy=policy)
    assert [p.n for p in d.launch] == [7]


def test_interpolation_between_and_beyond_points():
    curve = {1: 0.010, 4: 0.025, 8: 0.045}
    assert interpolate(curve, 1) == 0.010
    assert interpolate(curve, 2) == pytest.approx(0.015)
    assert interpolate(curve, 6) == pytest.approx(0.035)
    assert interpolate(curve, 10) == pytest.approx(0.055)  # the last segment, extended
    assert interpolate({2: 0.004}, 4) == pytest.approx(0.008)
    with pytest.raises(ConfigError):
        interpolate({}, 1)


def test_latency_budget_waits_for_company_at_most_one_batch():
    # budget 20 ms, 10% slack -> 18 ms usable; L(b) = 1 ms + 1 ms per sample
    curve = {1: 0.002, 4: 0.005, 8: 0.009}
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.020, latency_curve=curve)
    # cost per sample: 1.125 ms at 8 (the best that fits: 2 * 9 ms <= 18 ms); 7/6 ms at 6 is within 5% of it
    assert policy.batch_cap == 6
    q = [Pending(0, 1, arrival=0.0)]
    d = decide(q, now=0.004, policy=policy)
    # not until 18 - 7 = 11 ms (the budget's edge), nor L(6) = 7 ms: what a batch of 6 saves, 6 * 2 - 7 = 5 ms
    assert d.launch == () and d.wake_at == pytest.approx(0.005)
    assert len(decide(q, now=0.005, policy=policy).launch) == 1
    late = [Pending(0, 1, arrival=0.0, deadline=0.010)]  # a request's own deadline still comes first
    assert decide(late, now=0.0, policy=policy).wake_at == pytest.approx(0.010 - 0.007)
    gpu = BatchingPolicy(max_batch=64, latency_budget_s=1.0, latency_curve={1: 0.004, 64: 0.012}, budget_slack=0)
    assert decide(q, now=0.0, policy=gpu).wake_at == pytest.approx(gpu.latency(gpu.batch_cap))  # saves a lot
    linear = BatchingPolicy(max_batch=8, latency_budget_s=1.0, latency_curve={1: 0.070, 2: 0.133, 8: 0.532})
    assert linear.batch_cap == 2 and decide(q, now=0.0, policy=linear).wake_at == pytest.approx(0.007)  # saves 7 ms


def test_no_waiting_for_company_that_the_arrival_rate_says_will_not_come():
    # two streams: a batch of 2 costs what one of 1 does, so the cap is 2 and a lone request may wait what the
    # pair saves, 2 * 10 - 10.5 = 9.5 ms (issue 17: a lone request 100 ms after the last one waited all of it)
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.050, latency_curve={1: 0.010, 2: 0.0105, 4: 0.021})
    assert policy.batch_cap == 2 and policy.max_wait_s == pytest.approx(0.0095)
    q = [Pending(0, 1, arrival=1.0)]
    unknown = decide(q, now=1.0, policy=policy)
    assert unknown.launch == () and unknown.wake_at == pytest.approx(1.0095)  # no rate given: waits as before
    assert [p.id for p in decide(q, now=1.0, policy=policy, arrival_rate=10.0).launch] == [0]  # 0.095 expected
    assert [p.id for p in decide(q, now=1.0, policy=policy, arrival_rate=0.0).launch] == [0]
    busy = decide(q, now=1.0, policy=policy, arrival_rate=200.0)  # 1.9 samples expected within the wait
    assert busy.launch == () and busy.wake_at == pytest.approx(1.0095)
    edge = 1 / 0.0095  # exactly MIN_COMPANY expected: waiting may pay
    assert decide(q, now=1.0, policy=policy, arrival_rate=edge * 1.001).launch == ()
    assert len(decide(q, now=1.0, policy=policy, arrival_rate=edge * 0.999).launch) == 1
    # the window counts from the oldest request's arrival, so the decision does not flip as time passes
    assert decide(q, now=1.005, policy=policy, arrival_rate=200.0).wake_at == pytest.approx(1.0095)
    # a full batch launches whatever the rate; fixed-delay mode waits the user's delay whatever the rate
    assert len(decide(reqs(1, 1), now=0.0, policy=policy, arrival_rate=200.0).launch) == 2
    fixed = BatchingPolicy(max_batch=8, max_queue_delay_s=0.010)
    assert decide(q, now=1.0, policy=fixed, arrival_rate=0.0).wake_at == pytest.approx(1.010)


def test_the_arrival_rate_is_estimated_over_recent_arrivals_and_decays_when_they_stop():
    from effstack.serve.batcher import RATE_WINDOW

    policy = BatchingPolicy(max_batch=4, latency_budget_s=0.050, latency_curve={1: 0.004}, queue_capacity=1000)
    q = BatchQueue(policy)
    assert q.arrival_rate(0.0) == 0.0  # nothing seen: no company to expect
    q.admit(Pending(0, 1, 0.0))
    assert q.arrival_rate(0.0) == 0.0  # one arrival gives no rate
    for i in range(1, 40):  # 100 ms apart, launched as they come
        q.apply(decide(q, 0.1 * (i - 1), policy))
        q.admit(Pending(i, 1, 0.1 * i))
    assert q.arrival_rate(3.9) == pytest.approx(10.0)
    assert q.arrival_rate(3.9 + 1.5) == pytest.approx((RATE_WINDOW - 1) / (0.1 * (RATE_WINDOW - 1) + 1.5))
    burst = BatchQueue(policy)
    burst.admit(Pending(0, 2, 5.0))
    burst.admit(Pending(1, 3, 5.0))  # at the same instant: as fast as can be, and samples count, not requests
    assert burst.arrival_rate(5.0) == float("inf") and burst.arrival_rate(5.5) == pytest.approx(6.0)
    tiny = BatchQueue(BatchingPolicy(max_batch=1, latency_budget_s=0.050, latency_curve={1: 0.040}))
    tiny.admit(Pending(0, 1, 0.0))
    with pytest.raises(QueueFull):
        tiny.admit(Pending(1, 1, 0.01))
    assert tiny.arrival_rate(0.01) == pytest.approx(100.0)  # a refused request is load all the same


def test_the_shell_waits_for_company_only_once_requests_come_fast():
    from effstack.serve.workers import Batcher

    # cap 2, and a lone sample may wait 0.2 s for a second (what the pair saves)
    policy = BatchingPolicy(max_batch=2, latency_budget_s=10.0, latency_curve={1: 0.2, 2: 0.2})
    assert policy.batch_cap == 2 and policy.max_wait_s == pytest.approx(0.2)

    async def main():
        gate = GateSession()
        batcher = Batcher(policy, [gate.run])
        ys = await asyncio.gather(*(batcher.submit(_x(i)) for i in range(3)))
        batcher.close()
        return gate.batches, ys

    batches, ys = asyncio.run(main())
    # the first request has no rate behind it: it launches alone at once (a shell blind to the rate held it for
    # company: batches [2, 1]); the second comes right after it, so company is likely, and the third brings it
    assert batches == [1, 2] and [float(y[0, 0]) for y in ys] == [0.0, 2.0, 4.0]


def test_the_shell_stamps_each_requests_trace():
    from effstack.serve.metrics import STAGES, RequestTrace
    from effstack.serve.workers import Batcher

    async def main():
        gate = GateSession()
        batcher = Batcher(BatchingPolicy(max_batch=4), [gate.run])
        trace = RequestTrace(0)
        trace.read = trace.parse = trace.launch = start = __import__("time").perf_counter_ns()
        await batcher.submit(_x(3), trace=trace)
        batcher.close()
        return trace, start

    trace, start = asyncio.run(main())
    assert start <= trace.launch <= trace.started and trace.compute_ns > 0
    stages = dict(zip(STAGES, trace.stages_ns()))
    assert stages["compute"] == trace.compute_ns and all(v >= 0 for v in stages.values())


def test_the_cap_is_the_smallest_batch_near_the_best_cost_per_sample():
    budget = dict(latency_budget_s=1.0, budget_slack=0.0, queue_capacity=10_000)
    linear = BatchingPolicy(max_batch=8, latency_curve={1: 0.010, 8: 0.080}, **budget)  # a CPU: no gain
    assert linear.batch_cap == 1
    gpu = BatchingPolicy(max_batch=64, latency_curve={1: 0.004, 8: 0.005, 64: 0.012}, **budget)
    # cost per sample keeps falling (0.19 ms at 64); 56 is the first batch within 5% of it (11 ms / 56)
    assert gpu.batch_cap == 56
    tight = BatchingPolicy(max_batch=64, latency_curve={1: 0.004, 8: 0.005, 64: 0.012}, latency_budget_s=0.018,
                           budget_slack=0.0)
    fits = [b for b in range(1, 65) if 2 * tight.latency(b) <= 0.018]
    assert fits[-1] == 40 and tight.batch_cap == 36  # ... until the budget stops it (36: within 5% of 40's cost)
    streams = BatchingPolicy(max_batch=8, latency_curve={1: 0.060, 2: 0.062, 4: 0.122, 8: 0.242}, **budget)
    assert streams.batch_cap == 2  # two streams: batch 2 costs what batch 1 does, beyond that no gain


def test_latency_budget_sizes_the_queue_to_what_it_can_clear():
    curve = {1: 0.004, 8: 0.032}  # 4 ms per sample: the cap is 1
    policy = BatchingPolicy(max_batch=8, latency_budget_s=0.050, latency_curve=curve, queue_capacity=1000)
    assert policy.batch_cap == 1
    # Q / (1 sample / 4 ms) + 4 ms <= 50 ms  ->  Q <= 11.5
    assert policy.admission_limit == 11
    many = BatchingPolicy(max_batch=8, latency_budget_s=0.050, latency_curve=curve, queue_capacity=1000, instances=8)
    assert many.admission_limit == 92  # eight instances clear the queue eight times as fast
    roomy = BatchingPolicy(max_batch=8, latency_budget_s=0.500, latency_curve=curve, queue_capacity=1000)
    assert roomy.admission_limit == 124  # (500 - 4) ms / 4 ms
    small = BatchingPolicy(max_batch=8, latency_budget_s=0.500, latency_curve=curve, queue_capacity=20)
    assert small.admission_limit == 20  # the configured capacity still bounds it
    slow = BatchingPolicy(max_batch=8, latency_budget_s=0.050, latency_curve={1: 0.040}, queue_capacity=1000)
    assert slow.admission_limit == 1  # nothing can wait behind a batch that takes most of the budget: one at least


def test_admission_horizon_deepens_the_queue_and_is_checked():
    curve = {1: 0.004, 8: 0.032}
    base = dict(max_batch=8, latency_budget_s=0.050, latency_curve=curve, queue_capacity=1000)
    assert BatchingPolicy(**base).admission_limit == 11
    # Q * 4 ms + 4 ms <= 2 * 50 ms  ->  Q <= 24: a burst twice as deep waits instead of getting 503
    deep = BatchingPolicy(**base, admission_horizon=2.0)
    assert deep.admission_limit == 24
    assert deep.admission_limit_at(2.0) == 11  # (100 - 8) ms / 8 ms per sample: the pace still shortens it
    assert deep.batch_cap == BatchingPolicy(**base).batch_cap  # the horizon is about waiting, not batch size
    for bad in (0.5, 0.99, 11.0):
        with pytest.raises(ConfigError, match="admission horizon"):
            BatchingPolicy(**base, admission_horizon=bad)


def test_a_noisy_curve_is_smoothed_upwards():
    policy = BatchingPolicy(max_batch=8, latency_curve={1: 0.001, 2: 0.004, 4: 0.002, 8: 0.006})
    assert policy.latency(4) == 0.004 and policy.latency(3) == 0.004 and policy.latency(8) == 0.006
    assert policy.latency_curve[4] == 0.002  # the measurement itself is kept as measured


def test_own_deadline_brings_the_launch_forward():
    policy = BatchingPolicy(max_batch=8, max_queue_delay_s=0.100, latency_curve={1: 0.001, 8: 0.004})
    d = decide([Pending(0, 1, 0.0, deadline=0.050)], now=0.0, policy=policy)
    assert d.wake_at == pytest.approx(0.046)


def test_budget_without_curve_is_a_config_error():
    with pytest.raises(ConfigError, match="curve"):
        BatchingPolicy(latency_budget_s=0.05)


def test_policy_round_trips():
    p = BatchingPolicy(max_batch=16, latency_budget_s=0.05, latency_curve={1: 0.002, 16: 0.02}, instances=2)
    assert BatchingPolicy.from_dict(p.to_dict()) == p


def test_queue_bounds_priorities_and_retry_after():
    policy = BatchingPolicy(max_batch=4, queue_capacity=4, priority_levels=2)
    q = BatchQueue(policy)
    q.admit(Pending(0, 2, 0.0, level=policy.level(0)))
    q.admit(Pending(1, 2, 0.1, level=policy.level(1)))
    assert [p.id for p in q] == [1, 0]  # priority 1 first; no priority means the lowest level
    with pytest.raises(QueueFull) as info:
        q.admit(Pending(2, 1, 0.2))
    assert info.value.retry_after_s >= 1
    with pytest.raises(InputError, match="max batch"):
        q.admit(Pending(3, 5, 0.2))
    with pytest.raises(InputError, match="priority"):
        policy.level(3)
    d = decide(q, now=1.0, policy=policy)
    q.apply(d)
    assert q.samples == 0 and len(q) == 0


def test_cancelled_requests_free_capacity_and_leave_on_apply():
    q = BatchQueue(BatchingPolicy(max_batch=4, queue_capacity=2))
    a, b = Pending(0, 1, 0.0), Pending(1, 1, 0.0)
    q.admit(a)
    q.admit(b)
    q.cancel(a)
    assert q.samples == 1
    d = decide(q, now=0.0, policy=q.policy)
    assert d.expired == (a,) and d.launch == (b,)
    q.apply(d)
    assert q.samples == 0 and len(q) == 0


# --- the asyncio shell: N concurrent requests in-process -------------------------------------------


def _x(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, 4), float(i), dtype=np.float32)


async def _open_later(gate: GateSession, condition, what: str) -> None:
    await asyncio.to_thread(wait_until, condition, what)
    gate.gate.set()


def test_concurrent_requests_form_batches_and_get_their_own_rows():
    from effstack.serve.workers import Batcher

    async def main():
        gate = GateSession()
        gate.gate.clear()
        batcher = Batcher(BatchingPolicy(max_batch=8), [gate.run])
        first = asyncio.create_task(batcher.submit(_x(0)))
        await asyncio.to_thread(wait_until, lambda: gate.running == 1, "the first batch to start")
        rest = [asyncio.create_task(batcher.submit(_x(i, n))) for i, n in [(1, 2), (2, 3), (3, 1), (4, 2), (5, 1)]]
        await asyncio.to_thread(wait_until, lambda: batcher.queue.samples == 9, "9 samples to queue")
        gate.gate.set()
        outs = await asyncio.gather(first, *rest)
        batcher.close()
        return gate.batches, outs

    batches, outs = asyncio.run(main())
    # the first runs alone; 9 samples queue behind it: 2+3+1+2 = 8 fill one batch, the last waits for the next
    assert batches == [1, 8, 1]
    for i, y in enumerate(outs):
        assert np.all(y == 2.0 * i) and y.shape[1] == 1
    assert [y.shape[0] for y in outs] == [1, 2, 3, 1, 2, 1]


def test_instances_share_the_queue():
    from effstack.serve.workers import Batcher

    async def main():
        gates = [GateSession(), GateSession()]
        for g in gates:
            g.gate.clear()
        batcher = Batcher(BatchingPolicy(max_batch=4), [g.run for g in gates])
        tasks = [asyncio.create_task(batcher.submit(_x(i))) for i in range(2)]
        await asyncio.to_thread(wait_until, lambda: all(g.running == 1 for g in gates), "both instances busy")
        tasks += [asyncio.create_task(batcher.submit(_x(i))) for i in range(2, 7)]
        await asyncio.to_thread(wait_until, lambda: batcher.queue.samples == 5, "5 samples to queue")
        for g in gates:
            g.gate.set()
        await asyncio.gather(*tasks)
        batcher.close()
        return sorted(gates[0].batches + gates[1].batches)

    assert asyncio.run(main()) == [1, 1, 1, 4]


def test_timed_out_requests_answer_504_and_are_never_computed():
    from effstack.serve.workers import Batcher

    async def main():
        gate = GateSession()
        gate.gate.clear()
        batcher = Batcher(BatchingPolicy(max_batch=8), [gate.run])
        first = asyncio.create_task(batcher.submit(_x(0)))
        await asyncio.to_thread(wait_until, lambda: gate.running == 1, "the first batch to start")
        with pytest.raises(RequestTimeout):
            await batcher.submit(_x(1), timeout_s=0.001)
        kept = asyncio.create_task(batcher.submit(_x(2)))
        gate.gate.set()
        await asyncio.gather(first, kept)
        batcher.close()
        return gate.batches

    assert asyncio.run(main()) == [1, 1]  # request 1 was dropped, not computed


def test_overload_is_refused_at_once():
    from effstack.serve.workers import Batcher

    async def main():
        gate = GateSession()
        gate.gate.clear()
        batcher = Batcher(BatchingPolicy(max_batch=1, queue_capacity=2), [gate.run])
        tasks = [asyncio.create_task(batcher.submit(_x(0)))]
        await asyncio.to_thread(wait_until, lambda: gate.running == 1, "the first batch to start")
        tasks += [asyncio.create_task(batcher.submit(_x(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(_x(3))
        with pytest.raises(QueueFull):
            batcher.check_capacity()
        gate.gate.set()
        await asyncio.gather(*tasks)
        batcher.close()
        return gate.batches

    assert asyncio.run(main()) == [1, 1, 1]


def test_engine_failure_reaches_every_request_of_the_batch():
    from effstack.errors import EngineError
    from effstack.serve.workers import Batcher

    async def main():
        gate = GateSession()
        gate.fail = True
        batcher = Batcher(BatchingPolicy(max_batch=4), [gate.run])
        results = await asyncio.gather(*(batcher.submit(_x(i)) for i in range(3)), return_exceptions=True)
        gate.fail = False
        ok = await batcher.submit(_x(9))  # the batcher keeps working after a failed batch
        batcher.close()
        return results, ok

    results, ok = asyncio.run(main())
    assert all(isinstance(r, EngineError) for r in results)
    assert np.all(ok == 18.0)


def test_drain_finishes_admitted_requests_then_refuses():
    from effstack.serve.batcher import NotAccepting
    from effstack.serve.workers import Batcher

    async def main():
        gate = GateSession()
        gate.gate.clear()
        batcher = Batcher(BatchingPolicy(max_batch=2), [gate.run])
        tasks = [asyncio.create_task(batcher.submit(_x(i))) for i in range(3)]
        await asyncio.to_thread(wait_until, lambda: gate.running == 1, "the first batch to start")
        drain = asyncio.create_task(batcher.drain())
        await asyncio.sleep(0)
        with pytest.raises(NotAccepting):
            await batcher.submit(_x(9))
        opener = asyncio.create_task(_open_later(gate, lambda: True, "nothing"))
        outs = await asyncio.gather(*tasks)
        await drain
        await opener
        batcher.close()
        return outs

    outs = asyncio.run(main())
    assert [float(y[0, 0]) for y in outs] == [0.0, 2.0, 4.0]


def test_tiny_batches_run_inline_on_the_event_loop():
    import threading

    from effstack.serve.workers import Batcher

    threads: list[str] = []

    def run(x):
        threads.append(threading.current_thread().name)
        return x[:, :1]

    async def main():
        fast = BatchingPolicy(max_batch=4, latency_curve={1: 1e-5, 4: 2e-5})
        inline = Batcher(fast, [run], inline_below_s=1e-4)
        ys = await asyncio.gather(*(inline.submit(_x(i)) for i in range(3)))
        threaded = Batcher(fast, [run], inline_below_s=0.0)
        await threaded.submit(_x(7))
        inline.close()
        threaded.close()
        return ys

    ys = asyncio.run(main())
    assert [float(y[0, 0]) for y in ys] == [0.0, 1.0, 2.0]
    assert threads[0] == threading.main_thread().name and threads[-1].startswith("effstack-instance")


def test_admission_follows_the_pace_batches_really_run_at():
    curve = {1: 0.004}
    policy = BatchingPolicy(max_batch=4, latency_budget_s=0.050, latency_curve=curve, queue_capacity=1000)
    assert policy.admission_limit == 11 == policy.admission_limit_at(1.0)  # (50 - 4) ms / 4 ms per sample
    assert policy.admission_limit_at(2.0) == 5  # slower than measured: (50 - 8) ms / 8 ms per sample
    # faster than the p99 curve: the queue ahead clears at 2 ms a sample, the request's own batch still
    # counts at its 4 ms p99 ((50 - 4) / 2 = 23, not (50 - 2) / 2 = 24); never faster than MIN_PACE
    assert policy.admission_limit_at(0.5) == 23 == policy.admission_limit_at(0.1)
    q = BatchQueue(policy)
    for _ in range(60):
        q.observe(1, 0.008)  # batches take twice the curve's p99
    assert q.pace == pytest.approx(2.0, rel=0.01) and q.limit == 5
    for i in range(5):
        q.admit(Pending(i, 1, 0.0))
    assert q.full()
    with pytest.raises(QueueFull):
        q.admit(Pending(9, 1, 0.0))


def test_the_shell_measures_the_pace_of_finished_batches():
    import time

    from effstack.serve.workers import Batcher

    def slow(x):  # ten times the 1 ms the curve promises
        time.sleep(0.010)
        return x

    async def main():
        policy = BatchingPolicy(max_batch=1, latency_budget_s=0.050, latency_curve={1: 0.001})
        batcher = Batcher(policy, [slow])
        assert batcher.queue.limit == policy.admission_limit == 49
        for i in range(10):
            await batcher.submit(_x(i))
        batcher.close()
        return batcher.queue

    queue = asyncio.run(main())
    assert queue.pace >= 5 and queue.limit < 10
