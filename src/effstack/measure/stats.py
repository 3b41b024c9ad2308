"""Latency percentiles and the spread of throughput across repeats.

Percentiles are :func:`numpy.percentile`'s default: linear interpolation between closest ranks
("type 7"), so ``percentile([1, 2, 3, 4], 50) == 2.5``. Spread is reported two ways because they answer
different questions: ``range_pct`` = (max - min) / median (how far apart the best and worst repeats were) and
``iqr_pct`` = interquartile range / median (robust to one disturbed repeat).

>>> s = spread([100.0, 110.0, 90.0])
>>> (s.median, s.min, s.max, round(s.range_pct, 1))
(100.0, 90.0, 110.0, 20.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["LatencyStats", "Spread", "percentile", "latency_stats", "spread", "chunk_throughputs"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation.

    Raises:
        ConfigError: empty ``values`` or ``q`` outside [0, 100].

    Example:
        >>> percentile([10, 20, 30, 40, 50], 90)
        46.0
    """
    return float(_percentiles(values, q))


def _percentiles(values: Sequence[float], q: float | Sequence[float]) -> Any:
    """``np.percentile`` (linear) with effstack's errors; one float for one ``q``, an array for several."""
    if not len(values):
        raise ConfigError("cannot take a percentile of no values; run at least one query")
    qs = np.asarray(q, dtype=np.float64)
    if not np.all((qs >= 0) & (qs <= 100)):  # also refuses NaN
        raise ConfigError(f"percentile must be within 0..100, got {q}")
    return np.percentile(np.asarray(values, dtype=np.float64), qs)


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary in milliseconds over ``count`` queries."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    min_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def latency_stats(latencies_ns: Sequence[int | float]) -> LatencyStats:
    """Summarise per-query latencies given in nanoseconds as milliseconds.

    With fewer queries than a percentile needs (e.g. p99.9 from 100 queries) the value is the
    interpolated tail, i.e. close to the maximum; ``count`` says how much to trust it.

    Raises:
        ConfigError: no latencies.

    Example:
        >>> latency_stats([1_000_000, 3_000_000]).mean_ms
        2.0
    """
    if not len(latencies_ns):
        raise ConfigError("no latencies to summarise; run at least one query")
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99, p999 = _percentiles(ms, (50, 90, 99, 99.9)).tolist()
    return LatencyStats(count=len(ms), mean_ms=float(ms.mean()), p50_ms=p50, p90_ms=p90, p99_ms=p99,
                        p999_ms=p999, min_ms=float(ms.min()), max_ms=float(ms.max()))


@dataclass(frozen=True)
class Spread:
    """How repeat measurements of one quantity (e.g. throughput) agree."""

    median: float
    min: float
    max: float
    range_pct: float  # (max - min) / median * 100
    iqr_pct: float  # (p75 - p25) / median * 100
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    """Median, extremes and relative spread of repeat measurements.

    Raises:
        ConfigError: no values.

    Example:
        >>> spread([5.0]).range_pct
        0.0
    """
    if not len(values):
        raise ConfigError("no repeats to summarise; run at least one repeat")
    vals = np.asarray(values, dtype=np.float64)
    p25, med, p75 = _percentiles(vals, (25, 50, 75)).tolist()
    lo, hi = float(vals.min()), float(vals.max())
    rel = (lambda x: 100.0 * x / med) if med > 0 else (lambda x: 0.0)
    return Spread(median=med, min=lo, max=hi, range_pct=rel(hi - lo), iqr_pct=rel(p75 - p25), n=len(vals))


def chunk_throughputs(latencies_ns: Sequence[int | float], samples_per_query: int, chunks: int) -> list[float]:
    """Split consecutive query latencies into ``chunks`` runs and return each run's samples/s.

    Single-stream queries run back to back, so a chunk's throughput is its samples over the sum
    of its latencies; the chunks play the role of repeats for :func:`spread`. Fewer queries than
    chunks give one chunk per query.

    Example:
        >>> chunk_throughputs([1e9, 1e9, 2e9, 2e9], 1, 2)
        [1.0, 0.5]
    """
    n = len(latencies_ns)
    if n == 0:
        return []
    chunks = max(1, min(chunks, n))
    bounds = [round(i * n / chunks) for i in range(chunks + 1)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        total_s = sum(latencies_ns[a:b]) / 1e9
        out.append(samples_per_query * (b - a) / total_s if total_s > 0 else float("inf"))
    return out
