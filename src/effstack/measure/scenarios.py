"""Named load scenarios over a :class:`~effstack.engines.Session`, after MLPerf LoadGen.

* :func:`single_stream` — one query after another (batch 1 in MLPerf's definition): latency
  percentiles and the throughput that follows from them.
* :func:`offline` — all work available at once: throughput at batch ``x.shape[0]`` through
  ``session.run_many`` (engines with an asynchronous queue keep several batches in flight), in
  several repeats whose median and spread are reported.
* :func:`server` — open-loop Poisson arrivals at a target rate. Arrival times are drawn in advance
  from a seeded generator; a scheduler issues each query at its scheduled time, and latency counts
  from the *scheduled* time, so a slow reply cannot hide the queue that forms behind it.

Every scenario warms up first (through the one :class:`~effstack.measure.timer.Timer`), is bounded in
query count and in time, meters other processes' CPU during the timed part, and returns a
:class:`ScenarioResult`.

>>> from effstack.measure.scenarios import single_stream      # doctest: +SKIP
>>> r = single_stream(session, x, duration_s=2.0)           # doctest: +SKIP
>>> r.latency.p99_ms, r.throughput.median                   # doctest: +SKIP
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .cpu import CpuUsage, OtherCpu
from .stats import LatencyStats, Spread, chunk_throughputs, latency_stats, spread
from .timer import Timer

__all__ = ["SCENARIOS", "ScenarioResult", "single_stream", "offline", "server"]

SCENARIOS = ("single_stream", "offline", "server")


@dataclass
class ScenarioResult:
    """What one scenario measured.

    throughput: samples/s across repeats (single-stream: consecutive chunks of queries; offline:
        the repeats; server: one figure, the achieved rate in samples/s).
    latency: per-query latency (None for offline, where per-batch latency is not defined when
        several batches are in flight).
    queries / samples: what the timed part counted (warm-up excluded).
    late / incomplete: server only — queries that started more than ``late_ms`` after their
        scheduled time, and queries not finished when the drain time ran out.
    """

    scenario: str
    batch: int
    queries: int
    samples: int
    duration_s: float
    throughput: Spread
    latency: LatencyStats | None
    cpu: CpuUsage | None
    warmup_calls: int = 0
    warmup_s: float = 0.0
    target_qps: float | None = None
    achieved_qps: float | None = None
    late: int | None = None
    incomplete: int | None = None
    latencies_ns: list[int] = field(default_factory=list, repr=False)

    def to_dict(self, with_latencies: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_latencies:
            d.pop("latencies_ns")
        return d


def _check_input(session: Any, x: Any) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim < 1 or x.shape[0] < 1:
        raise InputError(f"the benchmark input must be a numpy batch with at least one sample, got {type(x).__name__}")
    spec = getattr(session, "input", None)
    return spec.validate(x) if hasattr(spec, "validate") else np.ascontiguousarray(x)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value is None or not value > 0:
            raise ConfigError(f"{name} must be positive, got {value}")


def single_stream(
    session: Any,
    x: np.ndarray,
    duration_s: float = 5.0,
    min_queries: int = 20,
    max_queries: int = 100_000,
    repeats: int = 5,
    timer: Timer | None = None,
) -> ScenarioResult:
    """Run queries one after another for ``duration_s`` (and at least ``min_queries``).

    Args:
        session: anything with ``run(x)``.
        x: one query's batch (MLPerf single-stream uses batch 1; larger batches are allowed).
        duration_s: timed seconds after warm-up; the loop also stops at ``max_queries`` or at
            ``3 * duration_s + 60`` seconds, whichever comes first.
        repeats: the queries are split into this many consecutive chunks whose throughputs give
            the spread.

    Raises:
        InputError: ``x`` is not a non-empty numpy batch the session accepts.
        ConfigError: non-positive duration or counts.

    Example:
        >>> r = single_stream(session, x, duration_s=1.0)  # doctest: +SKIP
    """
    _check_positive(duration_s=duration_s, min_queries=min_queries, max_queries=max_queries, repeats=repeats)
    x = _check_input(session, x)
    timer = timer or Timer()
    run = session.run
    calls, warm_ns = timer.warm_up(lambda: run(x))
    with OtherCpu() as meter:
        laps = timer.loop(lambda: run(x), duration_s=duration_s, min_iters=min(min_queries, max_queries),
                          max_iters=max_queries)
    batch = x.shape[0]
    return ScenarioResult(
        scenario="single_stream", batch=batch, queries=len(laps), samples=len(laps) * batch,
        duration_s=sum(laps) / 1e9, throughput=spread(chunk_throughputs(laps, batch, repeats)),
        latency=latency_stats(laps), cpu=meter.usage, warmup_calls=calls, warmup_s=warm_ns / 1e9,
        latencies_ns=laps,
    )


MIN_ROUNDS_IN_FLIGHT = 4  # offline rounds hold at least this many calls per request in flight


def offline(
    session: Any,
    x: np.ndarray,
    duration_s: float = 5.0,
    repeats: int = 5,
    max_calls_per_repeat: int = 100_000,
    timer: Timer | None = None,
) -> ScenarioResult:
    """Throughput at batch ``x.shape[0]``: ``repeats`` rounds of ``session.run_many``.

    Each round runs the batch ``n`` times, with ``n`` chosen after warm-up so a round lasts about
    ``duration_s / repeats``. The median round is the figure; min, max and spread show how
    much the rounds disagreed (a large spread on a shared machine means: measure again).

    Raises:
        InputError: ``x`` is not a non-empty numpy batch the session accepts.
        ConfigError: non-positive duration or repeats.

    Example:
        >>> r = offline(session, x, duration_s=2.0, repeats=3)  # doctest: +SKIP
        >>> r.throughput.median, r.throughput.range_pct           # doctest: +SKIP
    """
    _check_positive(duration_s=duration_s, repeats=repeats, max_calls_per_repeat=max_calls_per_repeat)
    x = _check_input(session, x)
    timer = timer or Timer()
    # An engine that keeps several requests in flight (OpenVINO's THROUGHPUT streams) only reaches its
    # rate when a round holds many more calls than that: a round of one call leaves all streams but one
    # idle (ResNet-50 batch 8 measured at half its rate that way), and each round ends with a drain.
    inflight = max(1, int(session.concurrency()) if hasattr(session, "concurrency") else 1)
    calls, warm_ns = timer.warm_up(lambda: session.run_many(x, inflight))
    # size the rounds from the fastest of a few pipelined calls (the warm-up includes slow first calls)
    per_call_ns = max(min(timer.loop(lambda: session.run_many(x, inflight), iterations=3)) // inflight, 1)
    least = 1 if inflight == 1 else MIN_ROUNDS_IN_FLIGHT * inflight
    n = int(min(max(least, round(duration_s / repeats * 1e9 / per_call_ns)), max_calls_per_repeat))
    counted: list[int] = []
    with OtherCpu() as meter:
        laps = timer.loop(lambda: counted.append(int(session.run_many(x, n))), iterations=repeats)
    rates = [s / (t / 1e9) for s, t in zip(counted, laps) if t > 0]
    return ScenarioResult(
        scenario="offline", batch=x.shape[0], queries=n * repeats, samples=sum(counted),
        duration_s=sum(laps) / 1e9, throughput=spread(rates), latency=None, cpu=meter.usage,
        warmup_calls=calls + 3, warmup_s=warm_ns / 1e9,
    )


def poisson_schedule(rate_qps: float, duration_s: float, seed: int, max_queries: int) -> np.ndarray:
    """Scheduled send offsets in nanoseconds: a Poisson process of ``rate`` within ``duration_s``, conditioned on
    its count being exactly ``round(rate * duration_s)`` (at least 1), at most ``max_queries`` of them.

    Given its count, a Poisson process's arrival times are independent and uniform over the window, so the
    arrivals are as bursty as Poisson ones, but a step offers exactly the rate it is credited with. Drawing the
    gaps freely instead let a 10 s step at 29.9/s send 260 requests (26/s, 2.3 sigma low) and pass at a rate it
    never carried.

    Example:
        >>> s = poisson_schedule(100.0, 1.0, seed=0, max_queries=1000)
        >>> bool((np.diff(s) >= 0).all() and s[-1] < 1e9), len(s)
        (True, 100)
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(round(rate_qps * duration_s)))
    offsets = np.sort(rng.uniform(0.0, duration_s, size=n))[:max_queries]
    return (offsets * 1e9).astype(np.int64)


def server(
    session: Any,
    x: np.ndarray,
    rate_qps: float,
    duration_s: float = 5.0,
    seed: int = 0,
    workers: int = 1,
    max_queries: int = 100_000,
    late_ms: float = 1.0,
    drain_s: float | None = None,
    timer: Timer | None = None,
) -> ScenarioResult:
    """Open-loop Poisson load at ``rate_qps`` for ``duration_s``; latency from the scheduled time.

    A scheduler thread sleeps until each query's scheduled time and hands it to a pool of
    ``workers`` threads (immediately when one is idle; otherwise it waits in the pool's FIFO
    queue, and that wait is part of its latency). After the last arrival the scheduler waits up
    to ``drain_s`` (default ``max(2, duration_s)``) for the queue to empty; queries still unfinished
    then are counted in ``incomplete`` and enter the percentiles with the time they had waited (a
    lower bound), so an overloaded server cannot look fast by dropping its backlog.

    Args:
        rate_qps: target arrival rate in queries per second.
        seed: the arrival schedule's seed (same seed, same schedule).
        workers: concurrent queries; more than 1 requires a thread-safe session.
        late_ms: a query that starts more than this after its scheduled time counts as late.

    Raises:
        InputError: ``x`` is not a non-empty numpy batch the session accepts.
        ConfigError: non-positive rate, duration or workers.

    Example:
        >>> r = server(session, x, rate_qps=50, duration_s=5.0)  # doctest: +SKIP
        >>> r.achieved_qps, r.latency.p99_ms, r.late              # doctest: +SKIP
    """
    _check_positive(rate_qps=rate_qps, duration_s=duration_s, workers=workers, max_queries=max_queries)
    x = _check_input(session, x)
    timer = timer or Timer()
    drain_s = max(2.0, duration_s) if drain_s is None else drain_s
    calls, warm_ns = timer.warm_up(lambda: session.run(x))
    offsets = poisson_schedule(rate_qps, duration_s, seed, max_queries)
    n = len(offsets)
    start = np.full(n, -1, dtype=np.int64)
    end = np.full(n, -1, dtype=np.int64)
    stop = threading.Event()

    def work(i: int) -> None:
        if stop.is_set():  # the drain time ran out while this query waited in the queue
            return
        start[i] = timer.now()
        session.run(x)
        timer.sync()
        end[i] = timer.now()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effstack-server")
    with OtherCpu() as meter:
        t0 = timer.now() + 2_000_000  # a short lead so that query 0 is not late by our own set-up
        scheduled = t0 + offsets
        futures = []
        for i in range(n):
            timer.sleep_until(int(scheduled[i]))
            futures.append(pool.submit(work, i))
        last = int(scheduled[-1]) if n else t0
        wait(futures, timeout=max((last - timer.now()) / 1e9, 0.0) + drain_s)
        stop.set()
        t_stop = timer.now()
        pool.shutdown(wait=True, cancel_futures=True)  # running queries finish; queued ones are dropped
    for f in futures:  # a failing engine is an error, not a row of "incomplete" queries
        if f.done() and not f.cancelled() and f.exception() is not None:
            raise f.exception()  # type: ignore[misc]
    done = end >= 0
    # unfinished queries count with the time they had waited when we stopped: a lower bound
    lat = np.where(done, end - scheduled, t_stop - scheduled) if n else np.array([], dtype=np.int64)
    late = int(np.sum((start < 0) | (start - scheduled > late_ms * 1e6))) if n else 0
    completed = int(done.sum())
    span_s = (int(end[done].max()) - t0) / 1e9 if completed else 0.0
    qps = completed / span_s if span_s > 0 else 0.0
    batch = x.shape[0]
    return ScenarioResult(
        scenario="server", batch=batch, queries=completed, samples=completed * batch,
        duration_s=(t_stop - t0) / 1e9, throughput=spread([qps * batch]),
        latency=latency_stats(lat.tolist()) if n else None, cpu=meter.usage,
        warmup_calls=calls, warmup_s=warm_ns / 1e9, target_qps=float(rate_qps), achieved_qps=qps,
        late=late, incomplete=n - completed, latencies_ns=[int(v) for v in lat],
    )
