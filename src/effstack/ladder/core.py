"""The ladder's nouns and its arithmetic, with no engines in sight: what a rung is, when it is kept, and
how the total speed-up is attributed to the rungs.

A rung proposes a new configuration (a model variant, an engine, a precision, a batch, a layout). It is
**kept** only when it is honest on three counts, checked in this order:

1. its accuracy is within the tolerance of the *baseline* (drops do not accumulate unseen: every rung is
   scored against the same fp32 reference),
2. its p99 latency meets the budget,
3. its throughput is at least ``min_gain`` times the configuration it would replace.

Attribution: each kept rung's step speed-up is its throughput over the previous kept rung's; the
cumulative speed-up is its throughput over the baseline's. The step speed-ups of the kept rungs multiply
to the final cumulative one exactly (a test pins this). Rejected rungs keep the figure they reached and
the reason, but buy nothing.

>>> base = Measured(throughput=100.0, p99_ms=5.0, accuracy=90.0)
>>> decide(Measured(throughput=250.0, p99_ms=6.0, accuracy=89.5), base, base, Budget(7.0, "1.0"))
('kept', '2.50x the current best')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..evaluate.accuracy import parse_max_drop
from ..plan.candidate import Candidate

__all__ = ["Budget", "Candidate", "Measured", "Rung", "KEPT", "REJECTED", "SKIPPED", "decide", "attribute",
           "cost_per_million", "infeasible_message"]

KEPT, REJECTED, SKIPPED = "kept", "rejected", "skipped"
OBJECTIVES = ("throughput", "latency", "cost")


def _from_dict(cls: type, d: dict[str, Any], what: str) -> Any:
    from ..train.config import config_from_dict  # the one strict dict -> dataclass reader

    return config_from_dict(cls, d, what)


@dataclass(frozen=True)
class Budget:
    """The constraints every rung must meet.

    p99_ms: the latency budget (p99 of one batch's compute, in milliseconds).
    max_drop: the accuracy tolerance, ``"1.0"`` points or ``"1%"`` of the baseline.
    min_gain: the smallest throughput ratio over the current best that counts as a real speed-up.
    objective: ``throughput`` (default), ``latency`` (lowest p99 within the budget) or ``cost``
        (lowest cost per million inferences; with one machine price it ranks like throughput).
    price_per_hour: the machine's price, for the cost column (None: no cost column).

    Raises:
        ConfigError: a non-positive budget, a gain below 1, an unknown objective.
    """

    p99_ms: float
    max_drop: str = "1.0"
    min_gain: float = 1.05
    objective: str = "throughput"
    price_per_hour: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.p99_ms, (int, float)) and math.isfinite(self.p99_ms) and self.p99_ms > 0):
            raise ConfigError(f"latency budget must be positive milliseconds, got {self.p99_ms!r}")
        object.__setattr__(self, "max_drop", str(parse_max_drop(self.max_drop)))
        if not self.min_gain >= 1.0:
            raise ConfigError(f"min_gain must be at least 1.0 (a rung must not be slower), got {self.min_gain}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.price_per_hour is not None and not self.price_per_hour > 0:
            raise ConfigError(f"price per hour must be positive, got {self.price_per_hour}")

    def allowed_drop(self, baseline_accuracy: float) -> float:
        return parse_max_drop(self.max_drop).allowed(baseline_accuracy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Budget:
        return _from_dict(cls, d, "budget")


@dataclass
class Measured:
    """What one configuration measured: throughput (samples/s, median) with its spread, latency of one
    batch (p50/p99 ms), accuracy (percent), size of the weights (bytes), operations (MACs per sample), and
    what ran: the precision and the instruction set of the engine's kernels, as read back from it."""

    throughput: float = 0.0
    p99_ms: float = math.inf
    accuracy: float | None = None
    p50_ms: float | None = None
    spread_pct: float | None = None
    size_bytes: int | None = None
    macs: int | None = None
    executed_precision: str = ""
    kernel_isa: str = ""  # the widest ISA the engine's kernels use, read back ("amx"; "": cannot tell)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["p99_ms"] = None if not math.isfinite(self.p99_ms) else self.p99_ms
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measured:
        d = dict(d)
        if d.get("p99_ms") is None:
            d["p99_ms"] = math.inf
        return _from_dict(cls, d, "measurement")


@dataclass
class Rung:
    """One step of the ladder: what was tried, what it measured, whether it was kept and why."""

    step: str
    title: str
    status: str = SKIPPED
    reason: str = ""
    variant: str = ""
    config: Candidate | None = None
    measured: Measured | None = None
    drop: float | None = None
    step_speedup: float | None = None
    cumulative_speedup: float | None = None
    cost_per_million: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("step", "title", "status", "reason", "variant", "drop", "step_speedup",
                                           "cumulative_speedup", "cost_per_million", "details")}
        d["config"] = self.config.to_dict() if self.config else None
        d["measured"] = self.measured.to_dict() if self.measured else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rung:
        d = dict(d)
        config, measured = d.pop("config", None), d.pop("measured", None)
        rung = _from_dict(cls, d, "rung")
        rung.config = Candidate.from_dict(config) if config else None
        rung.measured = Measured.from_dict(measured) if measured else None
        return rung


def accuracy_rejection(candidate: Measured, baseline: Measured, budget: Budget) -> str | None:
    """Why ``candidate`` fails before speed counts (it did not run, or lost more accuracy against the
    ``baseline`` than the budget allows), or None when it holds."""
    if candidate.error:
        return candidate.error
    if baseline.accuracy is not None:
        if candidate.accuracy is None:
            return "its accuracy could not be measured"
        allowed = budget.allowed_drop(baseline.accuracy)
        drop = baseline.accuracy - candidate.accuracy
        if drop > allowed + 1e-9:
            return f"accuracy drop {drop:.2f} points > {allowed:.2f} allowed"
    return None


def decide(candidate: Measured, current: Measured, baseline: Measured, budget: Budget) -> tuple[str, str]:
    """Keep or reject ``candidate`` against the ``current`` best; returns ``(status, reason)``.

    Accuracy is compared with the ``baseline`` (so small drops cannot pile up rung after rung), then the
    latency budget, then the speed-up over ``current`` (``budget.min_gain``). A candidate without an
    accuracy figure is judged on speed alone only when the baseline has none either.
    """
    lost = accuracy_rejection(candidate, baseline, budget)
    if lost:
        return REJECTED, lost
    if not candidate.p99_ms <= budget.p99_ms:
        return REJECTED, f"p99 {candidate.p99_ms:.2f} ms over the {budget.p99_ms:g} ms budget"
    if budget.objective == "latency":
        if current.p99_ms <= budget.p99_ms and not candidate.p99_ms * budget.min_gain <= current.p99_ms:
            return REJECTED, (f"p99 {candidate.p99_ms:.2f} ms is not {budget.min_gain:g}x below the current "
                              f"{current.p99_ms:.2f} ms")
        return KEPT, f"p99 {candidate.p99_ms:.2f} ms"
    gain = candidate.throughput / current.throughput if current.throughput > 0 else math.inf
    if current.p99_ms <= budget.p99_ms and gain < budget.min_gain:
        return REJECTED, f"only {gain:.2f}x the current best; a rung must bring at least {budget.min_gain:g}x"
    return KEPT, f"{gain:.2f}x the current best"


def cost_per_million(throughput: float, price_per_hour: float | None) -> float | None:
    """Dollars per million inferences at ``throughput`` samples/s on a machine costing ``price_per_hour``."""
    if not price_per_hour or not throughput > 0:
        return None
    return price_per_hour / 3600.0 / throughput * 1e6


def attribute(rungs: list[Rung], price_per_hour: float | None = None) -> list[Rung]:
    """Fill each rung's step and cumulative speed-up (and cost); returns the same list.

    The first kept rung is the baseline (1.0x). A kept rung's step speed-up is over the previous kept
    rung; a rejected rung's is over the best kept before it (what it *would* have bought).
    """
    base: Measured | None = None
    current: Measured | None = None
    for rung in rungs:
        m = rung.measured
        if m is None or not m.throughput > 0:
            rung.step_speedup = rung.cumulative_speedup = None
            continue
        rung.cost_per_million = cost_per_million(m.throughput, price_per_hour)
        if base is None:
            if rung.status != KEPT:
                continue
            base = current = m
        rung.step_speedup = m.throughput / current.throughput  # type: ignore[union-attr]
        rung.cumulative_speedup = m.throughput / base.throughput
        if base.accuracy is not None and m.accuracy is not None:
            rung.drop = round(base.accuracy - m.accuracy, 4)
        if rung.status == KEPT:
            current = m
    return rungs


def final_rung(rungs: list[Rung]) -> Rung | None:
    """The last kept rung: the configuration the ladder hands back."""
    kept = [r for r in rungs if r.status == KEPT]
    return kept[-1] if kept else None


def infeasible_message(budget: Budget, seen: list[Measured]) -> str:
    """The one-line error when nothing meets the budget, naming the fastest p99 seen."""
    finite = [m.p99_ms for m in seen if m.p99_ms is not None and math.isfinite(m.p99_ms)]
    if not finite:
        return f"no configuration could be measured against the {budget.p99_ms:g} ms budget"
    best = min(finite)
    return (f"no configuration meets the p99 budget of {budget.p99_ms:g} ms: the fastest p99 seen was "
            f"{best:.2f} ms; raise --latency-budget to at least {math.ceil(best * 1.1 * 100) / 100:g}ms "
            f"or use a smaller model")
