"""The batcher under simulated Poisson load: no server, no clock, the real :func:`~effstack.serve.batcher.decide`.

The batcher's core is a pure function of the queue, the time and the policy, so a discrete-event simulation
can drive it: Poisson arrivals, instances that take the curve's time for each batch (with a log-normal
spread), 503s where admission refuses, the pace observed as the server's shell observes it. This is how the
latency-budget rules were chosen (``benchmarks/batcher_sim.py``), and how ``--instances auto`` compares
instance layouts at load: each layout's measured curve, simulated, gives the highest rate it would sustain
within the budget (:func:`sustainable_rate`).

The spread of batch time may be one figure or one per batch size: :func:`curve_stats` summarises batch times
measured at every size (``benchmarks/serving.py --only ceiling``) and :func:`measured_curve` turns that into
the median curve, the p99 curve the policy sees and the per-size spread the simulation draws from.

>>> p = BatchingPolicy(max_batch=4, latency_budget_s=0.1, latency_curve={1: 0.01, 4: 0.04})
>>> r = simulate(p, {1: 0.01, 4: 0.04}, instances=1, rate=20.0, seconds=10)
>>> r["refused"] == 0 and r["p99_ms"] < 100
True
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

from .batcher import BatchingPolicy, BatchQueue, Pending, decide, expired_head, interpolate
from .errors import QueueFull

__all__ = ["curve_stats", "max_rate", "measured_curve", "peak_rate", "queueing_bound", "ranking_agreement",
           "simulate", "sustainable_rate"]

Jitter = Union[float, Mapping[int, float]]  # sigma of the log of batch time: one figure, or per batch size


def _sigma(jitter: Jitter) -> Callable[[int], float]:
    """The spread for a batch of ``samples``: the figure, or the per-size mapping interpolated (sizes beyond the
    largest measured one keep its spread). Built once per simulation, not per launch."""
    if not isinstance(jitter, Mapping):
        return lambda samples, value=float(jitter): value
    table, largest = dict(jitter), max(jitter)
    return lambda samples: float(table[largest]) if samples >= largest else interpolate(table, samples)


def simulate(policy: BatchingPolicy, curve_s: Mapping[int, float], instances: int, rate: float, seconds: float,
             seed: int = 0, jitter: Jitter = 0.05, overhead_s: float = 0.002) -> dict[str, float]:
    """Run ``seconds`` of Poisson arrivals at ``rate`` (one sample each) against ``instances`` that take
    ``curve_s[b]`` (median seconds, interpolated) per batch of ``b``, spread by ``jitter`` (sigma of the log;
    one figure, or ``{batch: sigma}`` measured per size), plus ``overhead_s``. Returns the p50/p99 latency of
    answered requests in ms and the refused share."""
    curve, sigma = dict(curve_s), _sigma(jitter)
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
            # as the shell decides: with the arrival rate, so a lone request does not wait for company in vain
            d = decide(queue, now, policy, queue.arrival_rate(now)) if idle else expired_head(queue, now)
            queue.apply(d)
            if d.launch:
                samples = sum(p.n for p in d.launch)
                took = interpolate(curve, samples) * math.exp(rng.normal(0, sigma(samples))) + overhead_s
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
             max_refused: float = 0.01, jitter: Jitter = 0.1, tolerance: float = 0.01, seed: int = 0,
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


def queueing_bound(offline_rate: float, budget_s: float, quantile: float = 99.0, requests: int = 200_000,
                   seed: int = 0, tolerance: float = 0.002) -> float:
    """The highest Poisson rate *any* server of this engine could hold within ``budget_s`` at ``quantile``: a
    single first-come-first-served queue whose every sample costs exactly the offline time ``1 / offline_rate``,
    with no overhead, no spread and no wait for company (M/D/1). A real server spends at least the offline time
    per sample, and a batch's samples leave when the whole batch is done, so none holds more; the gap between
    this bound and the offline rate is queueing under Poisson arrivals, which no batcher removes.

    Sojourn times follow Lindley's recursion, vectorised: with ``C`` the running sum of service minus
    inter-arrival time, the wait of request ``n`` is ``C[n] - min(C[:n+1])``.

    Example (a budget of 10 sample-times holds about 0.77 of the offline rate):
        >>> round(queueing_bound(100.0, 0.100) / 100.0, 2)
        0.77
    """
    if not (offline_rate > 0 and budget_s > 0):
        raise ValueError("queueing_bound needs a positive offline rate and budget")
    service = 1.0 / offline_rate
    if budget_s < service:
        return 0.0
    gaps = np.random.default_rng(seed).exponential(1.0, requests)  # inter-arrival times at rate 1, scaled below
    skip = requests // 100  # the start, when the queue is still empty, is left out

    def held(rate: float) -> bool:
        c = np.concatenate(([0.0], np.cumsum(service - gaps[1:] / rate)))
        sojourn = c - np.minimum.accumulate(c) + service
        return float(np.percentile(sojourn[skip:], quantile)) <= budget_s

    lo, hi = 0.0, offline_rate
    while hi - lo > tolerance * offline_rate:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if held(mid) else (lo, mid)
    return lo


def sustainable_rate(policy: BatchingPolicy, curve_s: Mapping[int, float], instances: int,
                     jitter: Jitter = 0.1) -> float:
    """Samples/s ``instances`` running ``curve_s`` (spread by ``jitter``) are predicted to sustain under ``policy``
    (what ``--instances auto`` ranks layouts by): with a latency budget, :func:`max_rate` (the batcher's own rules
    on the curve, Poisson load); without one, the curve's best throughput over all instances (:func:`peak_rate`)."""
    if policy.latency_budget_s is None:
        return peak_rate(curve_s, instances, policy.max_batch)
    return max_rate(policy, curve_s, instances, jitter=jitter)


def curve_stats(laps_s: Mapping[int, Sequence[float]]) -> dict[int, dict[str, float]]:
    """Per batch size, the spread of its measured batch times (seconds): ``runs``, ``median_ms``, ``mean_ms``,
    ``p10_ms``, ``p90_ms``, ``p99_ms``, ``cv`` (std / mean) and ``sigma_log`` (std of the log: the
    log-normal spread :func:`simulate` draws from). Sizes without any time are left out.

    Example:
        >>> s = curve_stats({1: [0.010, 0.010, 0.010], 2: []})
        >>> list(s), s[1]["median_ms"], s[1]["cv"]
        ([1], 10.0, 0.0)
    """
    out: dict[int, dict[str, float]] = {}
    for b in sorted(laps_s):
        a = np.asarray(laps_s[b], dtype=np.float64)
        if a.size == 0:
            continue
        p10, p50, p90, p99 = np.percentile(a, (10, 50, 90, 99)) * 1e3
        out[int(b)] = {"runs": int(a.size), "median_ms": float(p50), "mean_ms": float(a.mean() * 1e3),
                       "p10_ms": float(p10), "p90_ms": float(p90), "p99_ms": float(p99),
                       "cv": float(a.std() / a.mean()) if a.mean() > 0 else 0.0,
                       "sigma_log": float(np.log(np.maximum(a, 1e-12)).std())}
    return out


def measured_curve(stats: Mapping[Any, Mapping[str, float]]) -> tuple[dict[int, float], dict[int, float],
                                                                       dict[int, float]]:
    """``(median curve, p99 curve, per-size sigma)`` in seconds from :func:`curve_stats` output (batch sizes may
    be JSON strings): the simulation runs the medians spread by the sigmas; the policy, like the server's,
    sees the p99.

    Raises:
        ValueError: no batch size in ``stats``.

    Example:
        >>> measured_curve({"1": {"median_ms": 10.0, "p99_ms": 12.0, "sigma_log": 0.05}})
        ({1: 0.01}, {1: 0.012}, {1: 0.05})
    """
    if not stats:
        raise ValueError("the measured curve has no batch size")
    sizes = sorted(int(b) for b in stats)
    row = {int(b): v for b, v in stats.items()}
    return ({b: row[b]["median_ms"] / 1e3 for b in sizes}, {b: row[b]["p99_ms"] / 1e3 for b in sizes},
            {b: float(row[b]["sigma_log"]) for b in sizes})


def ranking_agreement(predicted: Mapping[int, float], measured: Mapping[int, float | None],
                      tie: float = 0.05) -> bool | None:
    """Whether predictions rank layouts as their measured rates do.

    Every pair of layouts whose measured rates differ by more than ``tie`` (relative to the higher; a layout
    that sustained no rate counts as 0) must be predicted in the same order (a predicted tie is wrong); pairs
    measured within ``tie`` of each other say nothing. Returns None when no pair could be told apart.

    Example:
        >>> ranking_agreement({1: 22.8, 2: 28.3}, {1: 13.6, 2: 21.5})
        True
        >>> ranking_agreement({1: 30.0, 2: 28.3}, {1: 13.6, 2: 21.5}), ranking_agreement({1: 9, 2: 8}, {1: 20, 2: 20.5})
        (False, None)
    """
    layouts = sorted(predicted)
    verdict: bool | None = None
    for i, a in enumerate(layouts):
        for b in layouts[i + 1:]:
            ma, mb = measured.get(a) or 0.0, measured.get(b) or 0.0
            if abs(ma - mb) <= tie * max(ma, mb):
                continue
            right = (predicted[a] - predicted[b]) * (ma - mb) > 0
            verdict = right and verdict is not False
    return verdict
