"""The search: the best :class:`Candidate` of a :class:`Grid` under a p99 latency budget.

``plan(grid, measure, budget_ms)`` measures candidates through an injected
``measure(candidate, seconds) -> Measurement`` (a synthetic cost model in tests, :func:`measure_real` for
real sessions) and returns a :class:`PlanResult`: the choice, the Pareto front of p99 against throughput,
every measurement, what was left out and why, and which decisions rested on an assumption.

Modes:

* ``"exhaustive"`` measures every cell for ``seconds`` each.
* ``"smart"`` (default) assumes, per *family* (engine, precision, instances, threads), that p99 latency
  grows with the batch size and that throughput does not fall as the batch grows. It then

  1. *screens* every family with one short measurement (``screen_seconds``) at its middle batch size,
     then re-measures the better half for twice as long, and so on (successive halving: more time, no
     more cells) until the best ``keep`` fraction of families (at least two) remains; each family dropped
     is listed with its figures and whether it was dominated (slower with a higher p99 than a kept one);
  2. *bisects* the batch axis of each kept family for the largest batch whose p99 meets the budget
     (probes of ``2 * screen_seconds``; the screening point is the first step); that batch is the
     family's pick, even where a smaller one measured faster (short measurements are noisy);
  3. re-measures every pick for the full ``seconds`` and chooses from those longer measurements; a pick
     over the budget when measured longer gives way to the next smaller batch of its family.

  With ``objective="latency"`` it screens each family at its smallest batch (p99 grows with batch) and
  re-measures the best ``keep`` fraction. Every decision that skipped cells because of an assumption is
  listed in :attr:`PlanResult.assumptions`.

Objectives: ``"throughput"`` (samples/s, default), ``"latency"`` (lowest p99) and ``"cost"`` (dollars
per million inferences at ``price_per_hour`` for the whole machine; with one price for every candidate
it ranks as throughput does, and the tables show the dollars).

On a CPU whose AMX tiles are usable, a candidate whose engine's compiled kernels run on them (read back:
``Measurement.kernel_isa == "amx"``) ranks as if it scored 3 % better, in screening and in the final choice
(:mod:`effstack.plan.prefer`); a choice that margin decided is listed in the assumptions.

>>> from effstack.plan import Grid, Measurement, plan
>>> grid = Grid.build("e", "fp32", [1, 2, 4, 8], cores=1, supported=lambda e: ("fp32",))
>>> def model(c, seconds):  # 1 ms + 1 ms per sample per batch
...     return Measurement(throughput=1000 * c.batch / (1 + c.batch), p50_ms=1 + c.batch,
...                        p99_ms=1 + c.batch, samples=100, seconds=seconds)
>>> plan(grid, model, budget_ms=5.5, progress=False).best[0].batch
4
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .candidate import Candidate, Family, Grid, Measurement
from .prefer import amx_active, pick, rank

__all__ = ["OBJECTIVES", "MODES", "BudgetInfeasibleError", "PlanResult", "Trial", "plan", "pareto_front",
           "cost_per_million"]

OBJECTIVES = ("throughput", "latency", "cost")
MODES = ("smart", "exhaustive")
Trial = tuple[Candidate, Measurement]
Measure = Callable[[Candidate, float], Measurement]


class BudgetInfeasibleError(ConfigError):
    """No measured candidate met the latency budget; the message names the fastest p99 seen."""


def cost_per_million(measurement: Measurement, price_per_hour: float | None) -> float | None:
    """Dollars per million inferences at ``price_per_hour`` for the machine, or None.

    Example:
        >>> cost_per_million(Measurement(throughput=1000.0, p99_ms=1.0), 3.6)
        1.0
    """
    if price_per_hour is None or not measurement.ok or not measurement.throughput:
        return None
    return price_per_hour / 3600.0 / measurement.throughput * 1e6


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """The successful trials no other beats on both p99 (lower) and throughput (higher), by p99.

    Example:
        >>> m = lambda t, p: Measurement(throughput=t, p99_ms=p)
        >>> c = Candidate("e")
        >>> [x[1].throughput for x in pareto_front([(c, m(10, 1)), (c, m(5, 2)), (c, m(20, 3))])]
        [10, 20]
    """
    ok = sorted((t for t in trials if t[1].ok), key=lambda t: (t[1].p99_ms, -t[1].throughput))
    front: list[Trial] = []
    for trial in ok:
        if not front or trial[1].throughput > front[-1][1].throughput:
            front.append(trial)
    return front


@dataclass
class PlanResult:
    """What :func:`plan` found.

    best: the chosen ``(Candidate, Measurement)``, or None when nothing met the budget (then
    :attr:`message` says why and :meth:`choice` raises). measured: the latest (longest) measurement of
    every cell measured; trials: every measurement in the order taken. rejected: ``(what, why)`` for each
    grid entry left out and each family the search dropped.
    """

    objective: str
    mode: str
    budget_ms: float
    best: Trial | None
    pareto: list[Trial]
    measured: list[Trial]
    trials: list[Trial]
    n_cells: int
    rejected: list[tuple[str, str]] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    price_per_hour: float | None = None
    wall_s: float = 0.0
    message: str = ""

    @property
    def n_measured(self) -> int:
        return len(self.measured)

    @property
    def fraction_measured(self) -> float:
        return self.n_measured / self.n_cells if self.n_cells else 0.0

    def choice(self) -> Trial:
        """The chosen trial.

        Raises:
            BudgetInfeasibleError: nothing met the budget (the message names the fastest p99 seen).
        """
        if self.best is None:
            raise BudgetInfeasibleError(self.message)
        return self.best

    def cost(self, measurement: Measurement) -> float | None:
        return cost_per_million(measurement, self.price_per_hour)

    def to_dict(self) -> dict[str, Any]:
        def trial(t: Trial | None) -> dict[str, Any] | None:
            if t is None:
                return None
            return {"candidate": t[0].to_dict(), "measurement": t[1].to_dict(),
                    "meets_budget": t[1].meets(self.budget_ms), "cost_per_million": self.cost(t[1])}

        return {
            "objective": self.objective, "mode": self.mode, "budget_ms": self.budget_ms,
            "price_per_hour": self.price_per_hour, "n_cells": self.n_cells, "n_measured": self.n_measured,
            "fraction_measured": self.fraction_measured, "wall_s": self.wall_s, "message": self.message,
            "best": trial(self.best), "pareto": [trial(t) for t in self.pareto],
            "measured": [trial(t) for t in self.measured], "trials": [trial(t) for t in self.trials],
            "rejected": [list(r) for r in self.rejected], "assumptions": list(self.assumptions),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlanResult":
        """Rebuild a result written by :meth:`to_dict` (e.g. read back from ``--json``)."""
        def trial(t: dict[str, Any] | None) -> Trial | None:
            return None if t is None else (Candidate.from_dict(t["candidate"]),
                                           Measurement.from_dict(t["measurement"]))

        return cls(objective=d["objective"], mode=d["mode"], budget_ms=d["budget_ms"], best=trial(d["best"]),
                   pareto=[trial(t) for t in d["pareto"]], measured=[trial(t) for t in d["measured"]],
                   trials=[trial(t) for t in d["trials"]], n_cells=d["n_cells"],
                   rejected=[tuple(r) for r in d["rejected"]], assumptions=list(d["assumptions"]),
                   price_per_hour=d.get("price_per_hour"), wall_s=d.get("wall_s", 0.0), message=d.get("message", ""))


class _Search:
    """Measures cells through the injected function, once per call, and keeps every result."""

    def __init__(self, grid: Grid, measure: Measure, budget_ms: float, objective: str, progress: bool):
        self.grid, self.fn, self.budget_ms, self.objective = grid, measure, budget_ms, objective
        self.progress = progress
        self.latest: dict[Candidate, Measurement] = {}
        self.trials: list[Trial] = []
        self.assumptions: list[str] = []
        self.rejected: list[tuple[str, str]] = list(grid.rejected)
        self.amx = amx_active()  # AMX tiles usable: configurations on AMX kernels get the preference margin

    def measure(self, c: Candidate, seconds: float) -> Measurement:
        try:
            m = self.fn(c, seconds)
            if not isinstance(m, Measurement):
                raise ConfigError(f"measure() must return a Measurement, got {type(m).__name__}")
        except Exception as exc:  # one failing cell is one failed measurement, not a lost search
            m = Measurement.failed(exc, seconds)
        self.latest[c] = m
        self.trials.append((c, m))
        if self.progress:
            print(f"plan [{len(self.latest)}/{len(self.grid)} cells] {c.label()} ({seconds:g} s): {_brief(m)}"
                  f"{'' if not m.ok else (' ✓' if m.meets(self.budget_ms) else ' over budget')}",
                  file=sys.stderr, flush=True)
        return m

    def get(self, c: Candidate, seconds: float) -> Measurement:
        """The cell's measurement, measuring it only when it has none yet."""
        return self.latest[c] if c in self.latest else self.measure(c, seconds)

    def score(self, m: Measurement) -> float:
        """Higher is better: throughput (throughput, cost) or minus p99 (latency); failures rank last."""
        if not m.ok:
            return -math.inf
        return -m.p99_ms if self.objective == "latency" else m.throughput

    def ranked(self, m: Measurement) -> float:
        """:meth:`score` with the AMX preference (:func:`effstack.plan.prefer.rank`)."""
        return rank(self.score(m), m.kernel_isa, self.amx)

    def best_of(self, cells: list[Candidate]) -> Trial | None:
        """The best trial within the budget; on AMX, one on AMX kernels within the margin beats a faster one
        that is not (the choice is then listed in :attr:`assumptions`)."""
        ok = [(c, self.latest[c]) for c in cells if c in self.latest and self.latest[c].meets(self.budget_ms)]
        best, over = pick(ok, lambda t: self.score(t[1]), lambda t: t[1].kernel_isa, self.amx)
        if best is not None and over is not None:
            self.assumptions.append(
                f"{best[0].label()} ({_brief(best[1])}) was chosen over {over[0].label()} ({_brief(over[1])}): "
                "its kernels run on AMX tiles and it measured within the AMX preference margin")
        return best


def _brief(m: Measurement) -> str:
    if not m.ok:
        return f"failed: {m.error}"
    return f"{m.throughput:,.1f}/s p99 {m.p99_ms:.3g} ms"


def plan(
    grid: Grid,
    measure: Measure,
    budget_ms: float,
    *,
    objective: str = "throughput",
    mode: str = "smart",
    price_per_hour: float | None = None,
    seconds: float = 1.0,
    screen_seconds: float | None = None,
    keep: float = 0.25,
    progress: bool = True,
) -> PlanResult:
    """Search ``grid`` for the best candidate whose measured p99 is within ``budget_ms``.

    Args:
        grid: the candidates (see :meth:`Grid.build`).
        measure: ``measure(candidate, seconds) -> Measurement``; an exception it raises becomes a failed
            measurement of that cell.
        budget_ms: the p99 latency budget of one batch, in milliseconds.
        objective: ``"throughput"``, ``"latency"`` or ``"cost"`` (needs ``price_per_hour``).
        mode: ``"smart"`` (see the module docstring) or ``"exhaustive"`` (measure every cell).
        price_per_hour: the machine's price, for dollars per million inferences.
        seconds: measurement time of exhaustive cells and of the smart search's final round.
        screen_seconds: the smart search's short measurements (default ``seconds / 4``).
        keep: the fraction of families the smart search keeps after screening (at least two).
        progress: one line per measurement on stderr.

    Returns:
        a :class:`PlanResult`; ``best`` is None when nothing measured met the budget (``message`` says
        so and names the fastest p99 seen; :meth:`PlanResult.choice` raises it).

    Raises:
        ConfigError: unknown objective or mode, a non-positive budget or time, cost without a price.

    Example:
        >>> result = plan(grid, functools.partial(measure_real, model), 7.0)  # doctest: +SKIP
        >>> result.choice()[0].label()                                        # doctest: +SKIP
        'onnxruntime int8 b8 1x2'
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not (isinstance(budget_ms, (int, float)) and budget_ms > 0):
        raise ConfigError(f"the latency budget must be positive milliseconds, got {budget_ms!r}")
    if objective == "cost" and not price_per_hour:
        raise ConfigError("objective 'cost' needs the machine's price; pass price_per_hour (e.g. 0.34)")
    if price_per_hour is not None and not price_per_hour > 0:
        raise ConfigError(f"price_per_hour must be positive, got {price_per_hour!r}")
    screen_seconds = seconds / 4 if screen_seconds is None else screen_seconds
    if not (seconds > 0 and screen_seconds > 0):
        raise ConfigError(f"measurement times must be positive seconds, got {seconds} and {screen_seconds}")
    if not 0 < keep <= 1:
        raise ConfigError(f"keep must be a fraction in (0, 1], got {keep}")
    t0 = time.perf_counter()
    search = _Search(grid, measure, float(budget_ms), objective, progress)
    if mode == "exhaustive":
        for c in grid:
            search.measure(c, seconds)
        best = search.best_of(list(grid))
    elif objective == "latency":
        best = _smart_latency(search, seconds, screen_seconds, keep)
    else:
        best = _smart_throughput(search, seconds, screen_seconds, keep)
    measured = list(search.latest.items())
    return PlanResult(
        objective=objective, mode=mode, budget_ms=float(budget_ms), best=best, pareto=pareto_front(measured),
        measured=measured, trials=search.trials, n_cells=len(grid), rejected=search.rejected,
        assumptions=search.assumptions, price_per_hour=price_per_hour, wall_s=time.perf_counter() - t0,
        message="" if best is not None else _infeasible(search),
    )


def _infeasible(search: _Search) -> str:
    ok = [(c, m) for c, m in search.latest.items() if m.ok]
    where = f"{len(search.latest)} of {len(search.grid)} cells measured"
    if not ok:
        failed = next(iter(search.latest.items()), None)
        first = f"; first: {failed[0].label()}: {failed[1].error}" if failed else ""
        return f"every measured candidate failed ({where}){first}; fix that error or leave that engine out"
    c, m = min(ok, key=lambda t: t[1].p99_ms)
    return (f"no candidate met the p99 budget of {search.budget_ms:g} ms; the fastest p99 seen was "
            f"{m.p99_ms:.3g} ms ({c.label()}; {where}); raise the budget to at least {m.p99_ms:.3g} ms or add "
            "faster engines or precisions")


def _cell(family: Family, batch: int) -> Candidate:
    engine, precision, instances, threads = family
    return Candidate(engine, precision, batch, instances, threads)


def _name(family: Family) -> str:
    return f"{family[0]} {family[1]} {family[2]}x{family[3]}"


def _screen(search: _Search, families: list[Family], batch_of: Callable[[Family], int], seconds: float,
            longest: float, keep: float) -> list[Family]:
    """Successive halving over families at one batch each: measure all for ``seconds``, then repeatedly
    re-measure the better half for twice as long (up to ``longest``) until the best ``keep`` fraction (at
    least two) remains. Re-measuring the same cells costs time, not cells."""
    cells = {f: _cell(f, batch_of(f)) for f in families}
    for f in families:
        search.get(cells[f], seconds)

    def point(f: Family) -> Measurement:
        return search.latest[cells[f]]

    def ranked(fs: list[Family]) -> list[Family]:
        return sorted(fs, key=lambda f: search.ranked(point(f)), reverse=True)

    for f in families:
        if not point(f).ok:
            search.rejected.append((_name(f), f"failed at b{batch_of(f)}: {point(f).error}"))
    alive = ranked([f for f in families if point(f).ok])
    target, dropped = max(2, math.ceil(keep * len(families))), []
    while len(alive) > target:
        half = max(target, math.ceil(len(alive) / 2))
        dropped += alive[half:]
        alive, seconds = alive[:half], min(2 * seconds, longest)
        for f in alive:
            if point(f).seconds < seconds:
                search.measure(cells[f], seconds)
        alive = ranked([f for f in alive if point(f).ok])
    for f in dropped:
        m = point(f)
        winner = next((k for k in alive if _dominates(point(k), m)), None)
        where = f"screened at b{batch_of(f)} ({_brief(m)}, {m.seconds:g} s)"
        if winner is not None:
            why = f"dominated: {where}, {_name(winner)} at b{batch_of(winner)} was faster with a lower p99"
        else:
            why = f"{where}, ranked below the {len(alive)} families kept"
        search.rejected.append((_name(f), why))
    return alive


def _dominates(a: Measurement, b: Measurement) -> bool:
    return (a.ok and b.ok and a.throughput >= b.throughput and a.p99_ms <= b.p99_ms
            and (a.throughput > b.throughput or a.p99_ms < b.p99_ms))


def _smart_throughput(search: _Search, seconds: float, screen_seconds: float, keep: float) -> Trial | None:
    grid = search.grid
    families = grid.families()
    batches = {f: grid.batches(f) for f in families}
    kept = _screen(search, families, lambda f: batches[f][(len(batches[f]) - 1) // 2], screen_seconds, seconds,
                   keep)
    probe_seconds = min(seconds, 2 * screen_seconds)  # a p99 decision deserves more than the shortest look
    picks = [p for p in (_bisect(search, f, batches[f], probe_seconds) for f in kept) if p is not None]
    if not picks:  # no kept family meets the budget: look for one that does among the others
        rest = sorted((f for f in families if f not in kept),
                      key=lambda f: min((m.p99_ms for c, m in search.latest.items() if c.family == f and m.ok),
                                        default=math.inf))
        for f in rest:
            pick = _bisect(search, f, batches[f], probe_seconds)
            if pick is not None:
                picks.append(pick)
                search.assumptions.append(f"no kept family met the budget, so {_name(f)} (the lowest p99 at "
                                          "screening among the rest) was searched too")
                break
    return _final_round(search, picks, seconds, len(picks))


def _bisect(search: _Search, family: Family, batches: list[int], seconds: float) -> Trial | None:
    """The largest batch of ``family`` whose p99 meets the budget, by bisection; None when none does.

    Relies on p99 growing with the batch (so one batch over budget rules out the larger ones) and on
    throughput not falling as the batch grows (so the largest batch within budget is the family's best).
    """
    lo, hi, found, over = 0, len(batches) - 1, -1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        m = search.get(_cell(family, batches[mid]), seconds)
        if m.meets(search.budget_ms):
            found, lo = mid, mid + 1
        else:
            over, hi = mid, mid - 1
    name = _name(family)
    measured = {c.batch for c in search.latest if c.family == family}
    if over is not None and any(b not in measured for b in batches[over + 1:]):
        why = "failed" if not search.latest[_cell(family, batches[over])].ok else "was over the budget"
        search.assumptions.append(f"{name}: batches above {batches[over]} not measured because b{batches[over]} "
                                  f"{why} (assumed: p99 grows with batch)")
    if found < 0:
        return None
    if any(b not in measured for b in batches[:found]):
        search.assumptions.append(f"{name}: batches below {batches[found]} not measured (assumed: throughput "
                                  "does not fall as the batch grows)")
    # the largest batch within budget, even where a smaller one measured faster: short measurements on a
    # shared machine disagree by more than neighbouring batches differ, and the assumption says larger is faster
    pick = _cell(family, batches[found])
    return (pick, search.latest[pick])


def _final_round(search: _Search, picks: list[Trial], seconds: float, n: int) -> Trial | None:
    """Re-measure the ``n`` best picks for ``seconds`` and choose from those longer measurements."""
    picks = sorted(picks, key=lambda t: search.ranked(t[1]), reverse=True)
    finalists = []
    for c, _ in picks[:n]:
        # a finalist over the budget when measured longer gives way to the next smaller batch of its family
        # (p99 from a short measurement is a noisy estimate of the tail)
        steps = [_cell(c.family, b) for b in reversed(search.grid.batches(c.family)) if b <= c.batch]
        for x in steps:
            known = search.latest.get(x)
            m = known if known is not None and known.seconds >= seconds else search.measure(x, seconds)
            if m.meets(search.budget_ms):
                finalists.append(x)
                if x != c:
                    search.assumptions.append(f"{c.label()} was over the budget when measured for {seconds:g} s; "
                                              f"its family continues at b{x.batch}")
                break
    best = search.best_of(finalists)
    if best is None and picks:
        best = search.best_of([c for c, _ in picks])
        if best is not None:
            search.assumptions.append(f"{best[0].label()} was chosen from a short measurement: every finalist "
                                      "was over the budget when measured longer")
    return best


def _smart_latency(search: _Search, seconds: float, screen_seconds: float, keep: float) -> Trial | None:
    grid = search.grid
    families = grid.families()
    smallest = {f: grid.batches(f)[0] for f in families}
    kept = _screen(search, families, smallest.__getitem__, screen_seconds, seconds, keep)
    if any(len(grid.batches(f)) > 1 for f in families):
        search.assumptions.append("only the smallest batch of each family was measured (assumed: p99 grows "
                                  "with batch)")
    picks = [(c, search.latest[c]) for c in (_cell(f, smallest[f]) for f in kept)]
    return _final_round(search, [p for p in picks if p[1].meets(search.budget_ms)], seconds, len(kept))
