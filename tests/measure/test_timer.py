"""The timer: warm-up, sync hook and loop bounds, with a fake clock (no real timing)."""

from __future__ import annotations

import pytest

from effstack.measure.timer import Timer
from effstack.errors import ConfigError


class FakeClock:
    def __init__(self):
        self.t = 0

    def __call__(self) -> int:
        return self.t


def test_loop_returns_each_call_latency():
    clock = FakeClock()

    def work():
        clock.t += 5_000_000  # each call "takes" 5 ms

    laps = Timer(clock=clock).loop(work, iterations=4)
    assert laps == [5_000_000] * 4


def test_loop_duration_min_and_max_bounds():
    clock = FakeClock()
    fn = lambda: setattr(clock, "t", clock.t + 1_000_000)  # noqa: E731  1 ms per call
    t = Timer(clock=clock)
    assert len(t.loop(fn, duration_s=0.010)) == 10  # stops once 10 ms have passed
    assert len(t.loop(fn, duration_s=0.001, min_iters=25)) == 25  # but not before min_iters
    assert len(t.loop(fn, duration_s=1.0, max_iters=7)) == 7  # and never beyond max_iters
    assert len(t.loop(fn, duration_s=1.0, min_iters=10**6, time_limit_s=0.05)) == 50  # nor past the limit


def test_warm_up_and_sync_are_called():
    clock, synced, calls = FakeClock(), [], []
    t = Timer(warmup_iters=3, warmup_s=0.0, sync=lambda: synced.append(1), clock=clock)
    assert t.warm_up(lambda: calls.append(1)) == (3, 0)
    t.loop(lambda: calls.append(1), iterations=2)
    assert len(calls) == 5 and len(synced) == 5  # every call, warm-up included, is synchronised


def test_bad_arguments():
    with pytest.raises(ConfigError, match="iterations or duration_s"):
        Timer().loop(lambda: None)
    with pytest.raises(ConfigError):
        Timer(warmup_iters=-1)
