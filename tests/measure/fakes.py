"""Fake sessions and crashing model factories for the measurement tests.

The factories are imported by child processes (``python -m effstack.measure.cell``) through a
``"tests.measure.fakes:<name>"`` model spec, so they live in an importable module, not in a test file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from effstack.engines.base import Engine, Session, SessionOptions


class FakeSession:
    """Counts calls; ``run`` sleeps ``sleep_s`` (time.sleep never returns early, so it is a lower bound)."""

    def __init__(self, sleep_s: float = 0.0, fail: bool = False):
        self.sleep_s = sleep_s
        self.fail = fail
        self.runs = 0
        self.run_many_calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.runs += 1
        if self.fail:
            raise RuntimeError("engine fell over")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return x[:, :1]

    def run_many(self, x: np.ndarray, n: int) -> int:
        self.run_many_calls += 1
        for _ in range(n):
            self.run(x)
        return n * x.shape[0]


# --- model factories that misbehave inside an isolated cell ---------------------------------------


def exits(**_: object):
    os._exit(7)


def segfaults(**_: object):
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)  # the signal is delivered before this ends


def raises(**_: object):
    raise RuntimeError("factory failed\non two lines")


def hangs(**_: object):
    time.sleep(120)


def crash_once(marker: str):
    """Exit hard the first time (leaving ``marker``), build a tiny MLP every later time."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(3)
    from effstack.testing import tiny_mlp

    return tiny_mlp()


# --- a pair of fake int8 engines for the peak tests (registered by the tests, run in-process) --------------

SLOW_SLEEP_S = 0.005


class Int8Session(Session):
    """Says its kernels ran int8; ``run`` sleeps ``sleep_s`` first (a lower bound on each call's time)."""

    def __init__(self, engine: str, model, options: SessionOptions, sleep_s: float):
        super().__init__(engine, model, options)
        self.sleep_s = sleep_s

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return x[:, :1]

    def executed_precision(self) -> dict[str, int]:
        return {"int8": 3}


class SlowInt8Engine(Engine):
    """At most 1 / SLOW_SLEEP_S calls per second: its rows stay below the tests' micro-benchmark peak."""

    name = "slow_int8"
    precisions = ("int8",)

    def load(self, model, options: SessionOptions) -> Session:
        self.check(options)
        return Int8Session(self.name, model, options, SLOW_SLEEP_S)


class FastInt8Engine(SlowInt8Engine):
    """Computes nothing: its rows outrun the peak the tests set (by orders of magnitude)."""

    name = "fast_int8"

    def load(self, model, options: SessionOptions) -> Session:
        self.check(options)
        return Int8Session(self.name, model, options, 0.0)
