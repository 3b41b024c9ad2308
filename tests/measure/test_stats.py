"""Percentiles, latency summaries and spreads: arithmetic only."""

from __future__ import annotations

import numpy as np
import pytest

from effstack.measure.stats import chunk_throughputs, latency_stats, percentile, spread
from effstack.errors import ConfigError


@pytest.mark.parametrize("q", [0, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q):
    values = [7.0, 1.0, 3.0, 10.0, 2.0, 8.5]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_small_cases():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99.9) == 5.0


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ConfigError, match="at least one"):
        percentile([], 50)
    with pytest.raises(ConfigError, match="0..100"):
        percentile([1.0], 101)


def test_latency_stats_in_ms():
    ns = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    s = latency_stats(ns)
    assert s.count == 100
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.p50_ms <= s.p90_ms <= s.p99_ms <= s.p999_ms <= s.max_ms


def test_spread():
    s = spread([90.0, 100.0, 110.0, 100.0])
    assert (s.median, s.min, s.max, s.n) == (100.0, 90.0, 110.0, 4)
    assert s.range_pct == pytest.approx(20.0)
    assert s.iqr_pct == pytest.approx(100 * (102.5 - 97.5) / 100)
    assert spread([3.0]).range_pct == 0.0
    with pytest.raises(ConfigError):
        spread([])


def test_chunk_throughputs():
    # 4 queries of batch 2: 1 s, 1 s, then 2 s, 2 s -> chunks of 2 queries: 4 samples / 2 s, 4 / 4 s
    assert chunk_throughputs([1e9, 1e9, 2e9, 2e9], 2, 2) == [2.0, 1.0]
    assert len(chunk_throughputs([1e9] * 3, 1, 5)) == 3  # never more chunks than queries
    assert chunk_throughputs([], 1, 5) == []
