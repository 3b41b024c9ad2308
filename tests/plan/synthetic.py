"""A synthetic cost model with a known optimum, for testing the planner without measuring anything.

Per family (engine, precision, instances, threads) one batch takes
``overhead + per_sample * batch / speedup(threads)`` ms; instances run side by side on their own cores
(the grid never oversubscribes the 2 cores).
Throughput = instances * batch / latency. p99 = 1.25 x that latency. Deterministic.
"""

from __future__ import annotations

import random

from effstack.plan import Candidate, Grid, Measurement

ENGINES = {"fast": 0.8, "mid": 1.0, "slow": 1.6}          # per-sample ms factor
PRECISIONS = {"fp32": 1.0, "int8": 0.55}                  # per-sample ms factor
OVERHEAD = {"fast": 2.0, "mid": 0.6, "slow": 0.5}         # ms per call
BATCHES = [1, 2, 4, 8, 16, 32, 64]


def latency_ms(c: Candidate) -> float:
    per_sample = ENGINES[c.engine] * PRECISIONS[c.precision] * 0.25
    # two threads on one batch scale imperfectly (1.6x), instances scale perfectly but pay the overhead each
    speedup = 1.0 if c.threads == 1 else 1.6
    return OVERHEAD[c.engine] + per_sample * c.batch / speedup


def truth(c: Candidate) -> Measurement:
    lat = latency_ms(c)
    return Measurement(throughput=1000.0 * c.instances * c.batch / lat, p50_ms=lat, p99_ms=1.25 * lat, samples=100,
                       seconds=0.0)


class Model:
    """``measure(candidate, seconds)``, counting calls; optional seeded multiplicative noise."""

    def __init__(self, noise: float = 0.0, seed: int = 0, fail: set[str] = frozenset()):
        self.calls: list[tuple[Candidate, float]] = []
        self.noise, self.rng, self.fail = noise, random.Random(seed), fail

    def __call__(self, c: Candidate, seconds: float) -> Measurement:
        self.calls.append((c, seconds))
        if c.engine in self.fail:
            raise RuntimeError(f"{c.engine} fell over")
        m = truth(c)
        k = 1.0 + self.noise * (2 * self.rng.random() - 1)
        return Measurement(throughput=m.throughput / k, p50_ms=m.p50_ms * k, p99_ms=m.p99_ms * k, samples=100,
                           seconds=seconds)


def grid(engines=tuple(ENGINES), precisions=tuple(PRECISIONS), batches=BATCHES) -> Grid:
    """3 engines x 2 precisions x 7 batches x (1x1, 1x2, 2x1) on 2 cores = 126 cells; "slow" runs fp32 only."""
    return Grid.build(list(engines), list(precisions), batches, instances=[1, 2], threads=[1, 2], cores=2,
                      supported=lambda e: ("fp32",) if e == "slow" else ("fp32", "int8"))


def best(g: Grid, budget_ms: float, objective: str = "throughput") -> Candidate:
    """The known optimum, by brute force over the model's truth."""
    ok = [c for c in g if truth(c).p99_ms <= budget_ms]
    if objective == "latency":
        return min(ok, key=lambda c: truth(c).p99_ms)
    return max(ok, key=lambda c: truth(c).throughput)
