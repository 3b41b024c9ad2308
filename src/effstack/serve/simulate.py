"""The batcher under simulated Poisson load: no server, no clock, the real :func:`~effstack.serve.batcher.decide`.

The batcher's core is a pure function of the queue, the time and the policy, so a discrete-event simulation
can drive it: Poisson arrivals, instances that take the curve's time for each batch (with a log-normal
spread), 503s where admission refuses, the pace observed as the server's shell observes it. This is how the
latency-budget rules were chosen (``benchmarks/batcher_sim.py``), and how ``--instances auto`` compares
instance layouts at load: each layout's measured curve, simulated, gives the highest rate it would sustain
within the budget.

>>> p = BatchingPolicy(max_batch=4, latency_budget_s=0.1, latency_curve={1: 0.01, 4: 0.04})
>>> r = simulate(p, {1: 0.01, 4: 0.04}, instances=1, rate=20.0, seconds=10)
>>> r["refused"] == 0 and r["p99_ms"] < 100
True
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .batcher import BatchingPolicy, BatchQueue, Pending, decide, expired_head, interpolate
from .errors import QueueFull

__all__ = ["max_rate", "peak_rate", "simulate"]


def simulate(policy: BatchingPolicy, curve_s: Mapping[int, float], instances: int, rate: float, seconds: float,
             seed: int = 0, jitter: float = 0.05, overhead_s: float = 0.002) -> dict[str, float]:
    """Run ``seconds`` of Poisson arrivals at ``rate`` (one sample each) against ``instances`` that take
    ``curve_s[b]`` (median seconds, interpolated) per batch of ``b``, spread by ``jitter`` (sigma of the log),
    plus ``overhead_s``. Returns the p50/p99 latency of answered requests in ms and the refused share."""
    curve = dict(curve_s)
    rng = np.random.default_rng(seed)
    queue = BatchQueue(policy)
    arrivals = np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.5) + 10))
    arrivals = arrivals[arrivals < seconds]
    events: list[tuple[float, int, int, Any]] = [(float(a), 1, i, None) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    idle = list(range(instances))
    latencies: list[float] = []
    refused = 0
    timer: float | None = None
    tie = len(arrivals)
    while events:
        now, kind, _, data = heapq.heappop(events)
        if kind == 1:  # an arrival
            try:
                queue.admit(Pending(id=tie, n=1, arrival=now))
            except QueueFull:
                refused += 1
        elif kind == 2:  # a batch finished
            instance, batch, took = data
            idle.append(instance)
            queue.observe(sum(p.n for p in batch), took)  # as the server's shell does
            latencies += [now - p.arrival for p in batch]
        elif timer != now:  # a stale timer
            continue
        else:
            timer = None
        while True:
            d = decide(queue, now, policy) if idle else expired_head(queue, now)
            queue.apply(d)
            if d.launch:
                samples = sum(p.n for p in d.launch)
                took = interpolate(curve, samples) * math.exp(rng.normal(0, jitter)) + overhead_s
                tie += 1
                heapq.heappush(events, (now + took, 2, tie, (idle.pop(0), d.launch, took)))
                continue
            if d.wake_at is not None and (timer is None or d.wake_at < timer):
                timer = d.wake_at
                tie += 1
                heapq.heappush(events, (d.wake_at, 3, tie, None))
            break
    lat = np.array(latencies) if latencies else np.array([math.inf])
    return {"rate": rate, "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "refused": refused / max(len(arrivals), 1)}


def peak_rate(curve_s: Mapping[int, float], instances: int, max_batch: int, overhead_s: float = 0.0) -> float:
    """Samples/s of ``instances`` all busy at the curve's most efficient batch up to ``max_batch``: the offline rate.

    ``overhead_s`` is added to every batch's time (the simulation's per-batch cost outside the engine), so the
    bound stays finite and honest for an engine whose curve is microseconds.

    Example:
        >>> peak_rate({1: 0.010, 8: 0.040}, instances=2, max_batch=8)
        400.0
    """
    curve = dict(curve_s)
    return instances * max(b / max(interpolate(curve, b) + overhead_s, 1e-9) for b in range(1, max_batch + 1))


def max_rate(policy: BatchingPolicy, curve_s: Mapping[int, float], instances: int, requests: int = 4000,
             max_refused: float = 0.01, jitter: float = 0.1, tolerance: float = 0.01, seed: int = 0,
             overhead_s: float = 0.002) -> float:
    """The highest Poisson rate whose simulated p99 stays within the policy's budget with at most
    ``max_refused`` refused, to within ``tolerance`` (relative) of the bisection's upper bound.

    The bound is the instances' best offline rate *including* ``overhead_s`` per batch (what :func:`simulate`
    charges): without it a microsecond curve (the null engine on a fast CPU) gave a bound thousands of times
    above anything sustainable, ten halvings never came down to it, and the answer was 0. Each step simulates
    about ``requests`` arrivals (so a fast model costs no more to judge than a slow one); at most 40 steps.

    Raises:
        ValueError: the policy has no latency budget.
    """
    if policy.latency_budget_s is None:
        raise ValueError("max_rate needs a policy with a latency budget")
    budget_ms = policy.latency_budget_s * 1e3
    lo, hi = 0.0, peak_rate(curve_s, instances, policy.max_batch, overhead_s)
    bound = hi
    for _ in range(40):
        if hi - lo <= tolerance * bound:
            break
        mid = (lo + hi) / 2
        r = simulate(policy, curve_s, instances, mid, requests / mid, seed=seed, jitter=jitter, overhead_s=overhead_s)
        if r["p99_ms"] <= budget_ms and r["refused"] <= max_refused:
            lo = mid
        else:
            hi = mid
    return lo
