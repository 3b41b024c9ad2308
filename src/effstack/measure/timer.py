"""The one timer: warm-up, synchronisation and the clock, shared by every scenario.

Scenarios never call ``time.*`` themselves; they ask a :class:`Timer` for the time (``now``), to
wait for the device (``sync``) or for a moment (``sleep_until``), to warm a function up
(``warm_up``), or to time it in a loop (``loop``). A GPU engine passes ``sync=torch.cuda.synchronize`` and every scenario becomes correct
for asynchronous devices at once.

>>> t = Timer(warmup_iters=1, warmup_s=0.0)
>>> laps = t.loop(lambda: None, iterations=3)
>>> len(laps)
3
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Timer"]


def _no_sync() -> None:
    return None


@dataclass
class Timer:
    """Owns warm-up, device synchronisation and the clock (``time.perf_counter_ns``).

    Args:
        warmup_iters: calls made before timing starts, at least.
        warmup_s: and keep warming up until this many seconds have passed (lets caches, thread
            pools and CPU frequency settle), but never more than ``warmup_max_iters`` calls.
        sync: called after each timed call so asynchronous work is finished before the clock
            is read (``torch.cuda.synchronize`` for CUDA; nothing for CPU engines).
        clock: nanosecond clock; replaceable in tests.

    Raises:
        ConfigError: negative warm-up settings.
    """

    warmup_iters: int = 3
    warmup_s: float = 0.2
    warmup_max_iters: int = 1000
    sync: Callable[[], Any] | None = None
    clock: Callable[[], int] = time.perf_counter_ns

    def __post_init__(self) -> None:
        if self.warmup_iters < 0 or self.warmup_s < 0 or self.warmup_max_iters < self.warmup_iters:
            raise ConfigError(
                f"warm-up must be non-negative with warmup_max_iters >= warmup_iters, got "
                f"{self.warmup_iters} iterations, {self.warmup_s} s, max {self.warmup_max_iters}"
            )
        if self.sync is None:
            self.sync = _no_sync

    def now(self) -> int:
        """The clock, in nanoseconds."""
        return self.clock()

    def sleep_until(self, t_ns: int) -> None:
        """Sleep until the clock reads ``t_ns`` (returns at once when it already has).

        ``time.sleep`` never returns early, so a query issued after this is never early; it may be
        late by the OS's wake-up delay, which an open-loop scenario counts against the system.
        """
        delay = (t_ns - self.clock()) / 1e9
        if delay > 0:
            time.sleep(delay)

    def warm_up(self, fn: Callable[[], Any]) -> tuple[int, int]:
        """Call ``fn`` until both warm-up conditions are met; return ``(calls, elapsed_ns)``."""
        start = self.clock()
        deadline = start + int(self.warmup_s * 1e9)
        calls = 0
        while calls < self.warmup_iters or (self.clock() < deadline and calls < self.warmup_max_iters):
            fn()
            self.sync()
            calls += 1
        return calls, self.clock() - start

    def loop(
        self,
        fn: Callable[[], Any],
        *,
        iterations: int | None = None,
        duration_s: float | None = None,
        min_iters: int = 1,
        max_iters: int = 1_000_000,
        time_limit_s: float | None = None,
    ) -> list[int]:
        """Time ``fn`` call by call and return each call's latency in nanoseconds.

        Stops after exactly ``iterations`` calls, or else once ``duration_s`` has passed and at
        least ``min_iters`` calls were made; never beyond ``max_iters`` calls or ``time_limit_s``
        (default: ``3 * duration_s + 60`` when a duration is given), so a slow model cannot hang
        a sweep. Warm-up is separate (:meth:`warm_up`); nothing here is counted twice.

        Raises:
            ConfigError: neither ``iterations`` nor ``duration_s`` given, or non-positive values.

        Example:
            >>> Timer().loop(lambda: None, duration_s=0.01, min_iters=5)[:0]
            []
        """
        if iterations is None and duration_s is None:
            raise ConfigError("give iterations or duration_s to Timer.loop")
        if (iterations is not None and iterations < 1) or (duration_s is not None and duration_s <= 0):
            raise ConfigError(f"iterations and duration_s must be positive, got {iterations}, {duration_s}")
        if iterations is not None:
            min_iters = max_iters = iterations
        if time_limit_s is None:
            time_limit_s = 3 * duration_s + 60 if duration_s is not None else float("inf")
        start = self.clock()
        end = start + int((duration_s or 0.0) * 1e9)
        limit = start + min(time_limit_s * 1e9, 2**62)
        clock, sync = self.clock, self.sync
        laps: list[int] = []
        t = start
        while len(laps) < max_iters:
            fn()
            sync()
            t2 = clock()
            laps.append(t2 - t)
            t = t2
            if t >= limit or (len(laps) >= min_iters and t >= end and iterations is None):
                break
        return laps
