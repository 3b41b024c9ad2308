"""Latency budgets on time to first token (TTFT) and time per output token (TPOT), and the admission that keeps them.

A generation step runs one forward over every running request: a decode token each, plus the prompt tokens of the
requests being prefilled. Its cost is modelled from measured steps as

    step_s(n, extra) = a + b * n + c * extra

with ``n`` the requests in the step and ``extra`` the query tokens beyond one per request (prefill work).
:class:`StepCost` fits ``a, b, c`` (least squares, non-negative) on the latest measured steps.

:func:`decide` is the pure admission rule. A new request is admitted only if, with it in the batch,

- the decode step (``n = running + 1``) stays within ``tpot_ms``: admitting it would otherwise slow every running
  request past its budget;
- its first token comes within ``ttft_ms``: the step in flight, then the pending prefill work (its prompt and those
  of the requests admitted before it, in chunks of ``max_batch_tokens``);
- the running batch is below ``max_running`` (the KV cache's room).

Otherwise it is refused with reason and estimate (the server answers 429 with ``Retry-After``). A prompt that
could not meet the TTFT budget even on an idle engine is a client error (the prompt is too long for the budget).

>>> cost = StepCost(a=0.010, b=0.002, c=0.0001)
>>> decide(Load(running=3, pending_prefill=0), 20, Budget(ttft_ms=200, tpot_ms=50), cost).admit
True
>>> decide(Load(running=30, pending_prefill=0), 20, Budget(ttft_ms=200, tpot_ms=50), cost).reason
'tpot_budget'
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, EffstackError, InputError

__all__ = ["Budget", "Load", "StepCost", "StepCostModel", "Decision", "decide", "Refused", "PromptTooLong"]


@dataclass(frozen=True)
class Budget:
    """Per-request latency budget: first token within ``ttft_ms``, then ``tpot_ms`` per output token (mean)."""

    ttft_ms: float
    tpot_ms: float

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number of milliseconds, got {v!r}")

    def met(self, ttft_s: float | None, tpot_s: float | None) -> bool:
        """Whether a finished request met both (no first token: not met; one token: TPOT vacuously met)."""
        if ttft_s is None:
            return False
        return ttft_s * 1e3 <= self.ttft_ms and (tpot_s is None or tpot_s * 1e3 <= self.tpot_ms)


@dataclass(frozen=True)
class Load:
    """What the engine is running: requests admitted and unfinished, and their prompt tokens not yet prefilled."""

    running: int
    pending_prefill: int = 0
    remaining_tokens: tuple[int, ...] = ()  # output tokens each running request may still produce


@dataclass(frozen=True)
class StepCost:
    """``step_s(n, extra) = a + b*n + c*extra`` seconds (see the module docstring)."""

    a: float
    b: float
    c: float
    samples: int = 0

    def step_s(self, n: int, extra_tokens: float = 0.0) -> float:
        return self.a + self.b * max(n, 0) + self.c * max(extra_tokens, 0.0)


class StepCostModel:
    """Fits :class:`StepCost` to the last ``window`` measured steps; thread-safe (the engine's loop adds, the server reads)."""

    def __init__(self, window: int = 512, prior: StepCost | None = None):
        self._samples: deque[tuple[int, int, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._prior = prior or StepCost(0.0, 0.0, 0.0)
        self._fit: StepCost | None = None

    def add(self, n_requests: int, q_tokens: int, seconds: float) -> None:
        if n_requests <= 0 or seconds <= 0:
            return
        with self._lock:
            self._samples.append((n_requests, max(q_tokens - n_requests, 0), seconds))
            self._fit = None

    def __len__(self) -> int:
        return len(self._samples)

    def cost(self) -> StepCost:
        with self._lock:
            if self._fit is None:
                self._fit = fit_step_cost(list(self._samples), self._prior)
            return self._fit


def fit_step_cost(samples: list[tuple[int, int, float]], prior: StepCost) -> StepCost:
    """Non-negative least squares of seconds on (1, n, extra); falls back to simpler models when data is thin."""
    if not samples:
        return prior
    x = np.array([[1.0, s[0], s[1]] for s in samples])
    y = np.array([s[2] for s in samples])
    # a feature with no spread (every step had the same n, or no prefill) is not identifiable: keep the prior's slope
    flat = [j for j in (1, 2) if np.ptp(x[:, j]) == 0]
    coef = np.array([0.0, prior.b, prior.c])
    y = y - x[:, flat] @ coef[flat] if flat else y
    cols = [j for j in (0, 1, 2) if j not in flat]
    coef[cols] = 0.0
    while cols:  # non-negative: drop the most negative coefficient and refit
        sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if (sol >= 0).all():
            coef[cols] = sol
            break
        cols.pop(int(np.argmin(sol)))
    return StepCost(float(coef[0]), float(coef[1]), float(coef[2]), samples=len(samples))


@dataclass(frozen=True)
class Decision:
    admit: bool
    reason: str  # "ok", "tpot_budget", "ttft_budget", "batch_full", "prompt_too_long"
    ttft_ms: float  # estimated for the new request
    tpot_ms: float  # estimated decode step with the new request in the batch
    running: int
    retry_after_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ttft_ms"] = round(self.ttft_ms, 2)
        d["tpot_ms"] = round(self.tpot_ms, 2)
        d["retry_after_s"] = round(self.retry_after_s, 3)
        return d


def _ttft_s(load: Load, prompt_tokens: int, cost: StepCost, max_batch_tokens: int) -> float:
    n = load.running + 1
    in_flight = cost.step_s(load.running, load.pending_prefill) if load.running else 0.0
    work = load.pending_prefill + prompt_tokens
    steps = max(1, math.ceil((work + n) / max(max_batch_tokens, 1)))
    return in_flight + steps * cost.step_s(n, work / steps)


def decide(load: Load, prompt_tokens: int, budget: Budget | None, cost: StepCost,
           max_running: int = 64, max_batch_tokens: int = 256) -> Decision:
    """Admit or refuse one request of ``prompt_tokens`` given the engine's ``load`` (pure; see module docstring)."""
    n = load.running + 1
    tpot_s = cost.step_s(n, 0)
    ttft_s = _ttft_s(load, prompt_tokens, cost, max_batch_tokens)
    # a slot frees when the running request closest to done finishes
    soonest = min(load.remaining_tokens) if load.remaining_tokens else 1
    retry = max(0.05, soonest * cost.step_s(max(load.running, 1), 0))

    def out(admit: bool, reason: str) -> Decision:
        return Decision(admit, reason, ttft_s * 1e3, tpot_s * 1e3, load.running, 0.0 if admit else retry)

    if n > max_running:
        return out(False, "batch_full")
    if budget is None:
        return out(True, "ok")
    alone_s = _ttft_s(Load(0), prompt_tokens, cost, max_batch_tokens)
    if alone_s * 1e3 > budget.ttft_ms:
        d = out(False, "prompt_too_long")
        return Decision(**{**asdict(d), "ttft_ms": alone_s * 1e3, "retry_after_s": 0.0})
    if load.running and tpot_s * 1e3 > budget.tpot_ms:
        return out(False, "tpot_budget")
    if load.running and ttft_s * 1e3 > budget.ttft_ms:
        return out(False, "ttft_budget")
    return out(True, "ok")


class Refused(EffstackError):
    """Admission refused a request: the server answers 429 (503 when the engine is not running) with the decision."""

    def __init__(self, message: str, decision: Decision | None = None, status: int = 429):
        super().__init__(message)
        self.decision = decision
        self.status = status
        self.retry_after_s = decision.retry_after_s if decision else 1.0


class PromptTooLong(InputError):
    """The prompt cannot meet the budget (or the context) even on an idle engine: a client error (400)."""

    def __init__(self, message: str, decision: Decision | None = None):
        super().__init__(message)
        self.decision = decision


def explain(d: Decision, budget: Budget | None) -> str:
    """One line for a refusal."""
    if d.reason == "batch_full":
        return f"{d.running} requests are running, the most this engine holds; retry in {d.retry_after_s:.2f}s"
    assert budget is not None
    if d.reason == "tpot_budget":
        return (f"admitting this request would slow decoding to ~{d.tpot_ms:.0f} ms/token, over the "
                f"{budget.tpot_ms:g} ms TPOT budget ({d.running} running); retry in {d.retry_after_s:.2f}s")
    if d.reason == "ttft_budget":
        return (f"its first token would come in ~{d.ttft_ms:.0f} ms, over the {budget.ttft_ms:g} ms TTFT budget "
                f"({d.running} running); retry in {d.retry_after_s:.2f}s")
    if d.reason == "prompt_too_long":
        return (f"the prompt needs ~{d.ttft_ms:.0f} ms to prefill even on an idle engine, over the "
                f"{budget.ttft_ms:g} ms TTFT budget; shorten it")
    return d.reason
