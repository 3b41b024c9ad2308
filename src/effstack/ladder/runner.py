"""Climbing the ladder: each rung proposes configurations, the measurements decide, the best one stays.

The climb is engine-agnostic: it sees model *variants* (the float model, its INT8 build, a pruned copy,
a distilled student) and a ``measure(variant, config) -> Measured`` function. The real one
(:class:`~effstack.ladder.workbench.Workbench`) builds engine sessions and times them; tests inject a
cost model, so every decision here is checked without a clock.

Rungs, in order (each is skipped with its reason when it cannot apply here):

========== ==================================================================================
baseline   PyTorch eager, fp32, batch 1: the reference every speed-up and accuracy drop is against
batching   the largest batch whose p99 meets the budget (doubling while p99 holds and throughput grows)
engine     every other engine in fp32, each at its own best batch
precision  bf16 / fp16 on every engine, each at its best batch (skipped where no native kernels)
int8       the quantize issue's calibrated INT8 build (with its accuracy fallbacks) on the current engine
prune      structural channel pruning + fine-tuning (needs a pruner and training data)
distill    a smaller student distilled from the current model, in float, then its own INT8
layout     instances x threads around the chosen configuration
========== ==================================================================================
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError, EffstackError, one_line
from ..plan.prefer import amx_active, pick
from .core import (KEPT, REJECTED, SKIPPED, Budget, Candidate, Measured, Rung, accuracy_rejection, attribute,
                   decide, final_rung)

__all__ = ["Variant", "Ladder", "LadderResult", "STEPS", "Shrunk"]

INT8_ROUNDS = 3  # alternating rounds of a guarded INT8 build against the engine's own whole-model INT8

# engines whose INT8 builds (QDQ files) can run their float layers at a reduced precision, and which: OpenVINO
# takes bf16 as its inference-precision hint there and keeps the quantized layers int8
ISLAND_PRECISIONS = {"openvino": ("bf16",)}
STEPS = ("baseline", "batching", "engine", "precision", "int8", "prune", "distill", "distill_int8", "layout")


@dataclass
class Variant:
    """A model the ladder can run: ``model`` is whatever the measure function understands (a LoadedModel
    for the real workbench); ``int8`` marks a quantized build (it runs only on the engines in ``engines``)."""

    label: str
    model: Any = None
    params: int | None = None
    macs: int | None = None
    int8: bool = False
    engines: tuple[str, ...] | None = None  # None: any engine
    float_parent: Variant | None = None  # for an INT8 build, the float model it came from
    # for an INT8 build, the precision its float layers (the guard's float islands) run at: the reduced float
    # precision the ladder already kept on the same engine (bf16 halves what the islands cost), else fp32
    float_precision: str = "fp32"
    details: dict[str, Any] = field(default_factory=dict)

    def runs_on(self, engine: str) -> bool:
        return self.engines is None or engine in self.engines


@dataclass
class Shrunk:
    """What a shrinking hook (quantize, prune, distill) hands back: the new variant, or why there is none."""

    variant: Variant | None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


Measure = Callable[[Variant, Candidate], Measured]
Quantizer = Callable[[Variant, Candidate, float], Shrunk]  # (float variant, config, points of drop left) -> INT8
Shrinker = Callable[[Variant], Shrunk]  # prune / distill: a float variant -> a smaller float variant
Layout = Callable[[Variant, Candidate, Measure], list[Candidate]]  # the layouts worth keeping (a planner search)


@dataclass
class LadderResult:
    """The climb: every rung (kept, rejected or skipped), the budget, and the chosen rung."""

    rungs: list[Rung]
    budget: Budget
    model: str = ""
    seconds: float = 0.0
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # label -> [{batch, throughput, p99}]
    measured: list[dict[str, Any]] = field(default_factory=list)  # every (variant, config, measured)
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    infeasible: str | None = None
    variants: dict[str, Variant] = field(default_factory=dict, repr=False)  # label -> variant (not serialised)

    @property
    def final(self) -> Rung | None:
        return final_rung(self.rungs)

    @property
    def baseline(self) -> Rung | None:
        return next((r for r in self.rungs if r.status == KEPT), None)

    def speedup(self) -> float | None:
        f = self.final
        return f.cumulative_speedup if f else None

    def to_dict(self) -> dict[str, Any]:
        final = self.final
        return {"kind": "effstack.ladder", "schema": 1, "model": self.model, "budget": self.budget.to_dict(),
                "seconds": round(self.seconds, 2), "final": final.step if final else None,
                "speedup": self.speedup(), "infeasible": self.infeasible,
                "rungs": [r.to_dict() for r in self.rungs], "curves": self.curves, "measured": self.measured,
                "machine": self.machine, "versions": self.versions}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LadderResult:
        if d.get("kind") != "effstack.ladder":
            raise ConfigError("this JSON is not an effstack ladder result (its 'kind' is not 'effstack.ladder')")
        return cls(rungs=[Rung.from_dict(r) for r in d["rungs"]], budget=Budget.from_dict(d["budget"]),
                   model=d.get("model", ""), seconds=d.get("seconds", 0.0), curves=d.get("curves", {}),
                   measured=d.get("measured", []), machine=d.get("machine", {}), versions=d.get("versions", {}),
                   infeasible=d.get("infeasible"))


class Ladder:
    """Climb the ladder for one model under one budget.

    Args:
        base: the float model as a :class:`Variant`.
        budget: p99, accuracy tolerance, minimum gain, objective.
        measure: ``(variant, config) -> Measured`` (accuracy included).
        engines: engines for the engine rung, besides ``baseline_engine``.
        precisions: reduced float precisions to try (``bf16``, ``fp16``).
        int8_engines: engines an INT8 build can run on.
        quantizer / pruner / distiller / layout: hooks for those rungs (None: the rung is skipped, with
            the reason given in ``missing``).
        max_batch: the batch search's upper bound.
        time_budget_s: rungs not started by then are skipped ("time budget spent").
        on_rung: called with each rung as it is decided (progress display).
        amx: whether AMX tiles are usable (None: ask :func:`effstack.hardware.amx_usable`); where they are, a
            proposal whose kernels run on them wins over one up to 3 % faster that does not
            (:mod:`effstack.plan.prefer`; the rung's details say so).

    Example:
        >>> result = Ladder(Variant("m", model), Budget(7.0), workbench.measure).climb()  # doctest: +SKIP
    """

    def __init__(self, base: Variant, budget: Budget, measure: Measure, *, baseline_engine: str = "torch",
                 engines: Sequence[str] = ("onnxruntime", "openvino"), precisions: Sequence[str] = ("bf16", "fp16"),
                 int8_engines: Sequence[str] = ("onnxruntime", "openvino"), quantizer: Quantizer | None = None,
                 pruner: Shrinker | None = None, distiller: Shrinker | None = None, layout: Layout | None = None,
                 max_batch: int = 256, time_budget_s: float | None = None, missing: dict[str, str] | None = None,
                 on_rung: Callable[[Rung], None] | None = None, model_name: str = "", cores: int | None = None,
                 amx: bool | None = None):
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self.base, self.budget, self._measure = base, budget, measure
        self.baseline_engine = baseline_engine
        self.engines = [e for e in engines if e != baseline_engine]
        self.precisions, self.int8_engines = list(precisions), tuple(int8_engines)
        self.quantizer, self.pruner, self.distiller, self.layout = quantizer, pruner, distiller, layout
        self.max_batch, self.time_budget_s = max_batch, time_budget_s
        self.missing = dict(missing or {})
        self.on_rung = on_rung
        self.model_name = model_name or base.label
        if cores is None:
            from ..hardware import available_cores

            cores = available_cores()
        self.cores = cores
        self.rungs: list[Rung] = []
        self.curves: dict[str, list[dict[str, Any]]] = {}
        self.log: list[dict[str, Any]] = []
        self._cache: dict[tuple[str, Candidate], Measured] = {}
        self._t0 = 0.0
        self._student: Variant | None = None
        self.variants: dict[str, Variant] = {}  # every variant measured, by label (the bundle needs the final one)
        self.amx = amx_active(amx)  # AMX tiles usable: proposals on AMX kernels get the preference margin

    # -- measuring -------------------------------------------------------------------------------------
    def measure(self, variant: Variant, config: Candidate) -> Measured:
        """Measure once per (variant, config) in a climb; errors become a Measured with ``error``."""
        key = (variant.label, config)
        self.variants.setdefault(variant.label, variant)
        if variant.engines is not None and len(variant.engines) == 1:  # one INT8 build per engine, same label
            self.variants.setdefault(f"{variant.label}@{variant.engines[0]}", variant)
        if key not in self._cache:
            t0 = time.perf_counter()
            try:
                m = self._measure(variant, config)
            except EffstackError as exc:
                m = Measured(error=one_line(exc))
            m.seconds = m.seconds or time.perf_counter() - t0
            if m.macs is None:
                m.macs = variant.macs
            self._cache[key] = m
            self.log.append({"variant": variant.label, "config": config.to_dict(), "measured": m.to_dict()})
        return self._cache[key]

    def best_batch(self, variant: Variant, config: Candidate) -> tuple[Candidate, Measured]:
        """The largest-throughput batch within the budget, searched by doubling from ``config.batch``.

        Assumes latency grows with batch (true of every engine measured here): doubling stops at the first
        batch over the budget, at ``max_batch``, or when throughput grows by less than 2 %; when
        ``config.batch`` is already over budget it halves down to 1. The curve is kept for the report.
        """
        curve: list[dict[str, Any]] = []

        def probe(b: int) -> Measured:
            m = self.measure(variant, replace(config, batch=b))
            curve.append({"batch": b, "throughput": m.throughput, "p99_ms": _finite(m.p99_ms), "error": m.error})
            return m

        b = config.batch
        m = probe(b)
        while b > 1 and (m.error or m.p99_ms > self.budget.p99_ms):
            b //= 2
            m = probe(b)
        best_b, best = b, m
        while not best.error and best.p99_ms <= self.budget.p99_ms and b * 2 <= self.max_batch:
            b *= 2
            m = probe(b)
            if m.error or m.p99_ms > self.budget.p99_ms or m.throughput < best.throughput * 1.02:
                break
            best_b, best = b, m
        layout = f" · {config.instances}x{config.threads}" if config.instances > 1 else ""
        label = f"{variant.label} · {config.engine} {config.precision}{layout}"
        self.curves[label] = sorted(curve, key=lambda p: p["batch"])
        return replace(config, batch=best_b), best

    # -- the climb -------------------------------------------------------------------------------------
    def climb(self) -> LadderResult:
        """Run every rung; returns the :class:`LadderResult` (never raises for a rung that fails)."""
        self._t0 = time.perf_counter()
        base_cfg = Candidate(self.baseline_engine, "fp32", 1, 1, self.cores)
        base_m = self.measure(self.base, base_cfg)
        if base_m.error:
            raise ConfigError(f"the baseline ({base_cfg.label()}) could not run: {base_m.error}")
        over = "" if base_m.p99_ms <= self.budget.p99_ms else f"; over the {self.budget.p99_ms:g} ms budget"
        self._add(Rung("baseline", f"PyTorch eager fp32, batch 1 ({self.base.label})", KEPT, "the reference" + over,
                       self.base.label, base_cfg, base_m))
        state = _State(self.base, base_cfg, base_m, base_m)

        self._step(state, "batching", "Batching under the latency budget", self._batching)
        self._step(state, "engine", "Engine and compilation", self._engine)
        self._step(state, "precision", "Reduced float precision", self._precision)
        self._step(state, "int8", "INT8 (calibrated, guarded)", self._int8)
        self._step(state, "prune", "Structural pruning + fine-tuning", lambda s: self._shrink(s, "prune"))
        self._step(state, "distill", "Distillation into a student", lambda s: self._shrink(s, "distill"))
        self._step(state, "distill_int8", "The student's own INT8", self._student_int8)
        self._step(state, "layout", "Instances x threads", self._layout)

        attribute(self.rungs, self.budget.price_per_hour)
        result = LadderResult(self.rungs, self.budget, self.model_name, time.perf_counter() - self._t0,
                              self.curves, self.log, variants=self.variants)
        final = result.final
        if final is None or final.measured is None or not final.measured.p99_ms <= self.budget.p99_ms:
            from .core import infeasible_message

            result.infeasible = infeasible_message(self.budget, [r.measured for r in self.rungs if r.measured])
        return result

    def _add(self, rung: Rung) -> None:
        self.rungs.append(rung)
        if self.on_rung is not None:
            self.on_rung(rung)

    def _step(self, state: _State, step: str, title: str, propose: Callable[[_State], Iterator[Proposal]]) -> None:
        """Measure what a rung proposes, keep the best acceptable proposal (or record why not)."""
        if self.time_budget_s is not None and time.perf_counter() - self._t0 > self.time_budget_s:
            self._add(Rung(step, title, SKIPPED, f"time budget of {self.time_budget_s:.0f} s spent"))
            return
        tried: list[tuple[Proposal, str, str]] = []
        try:
            for p in propose(state):
                if p.skip:
                    tried.append((p, SKIPPED, p.skip))
                    continue
                status, reason = decide(p.measured, state.measured, state.baseline, self.budget)
                tried.append((p, status, reason))
        except EffstackError as exc:
            self._add(Rung(step, title, REJECTED, one_line(exc)))
            return
        measured = [t for t in tried if t[0].measured is not None]
        if not measured:
            reasons = "; ".join(dict.fromkeys(r for _, _, r in tried)) or "nothing to try"
            self._add(Rung(step, title, SKIPPED, reasons, details={"tried": [t[0].summary(*t[1:]) for t in tried]}))
            return
        kept = [t for t in measured if t[1] == KEPT]
        pool = kept or measured
        best, over = pick(pool, self._score, lambda t: t[0].measured.kernel_isa, self.amx)
        p, status, reason = best
        details = {"tried": [t[0].summary(*t[1:]) for t in tried], **p.details}
        if over is not None:
            details["amx_preferred"] = (f"{p.title} runs on AMX kernels and measured within the preference "
                                        f"margin of {over[0].title}, which does not")
        self._add(Rung(step, f"{title}: {p.title}", status, reason, p.variant.label, p.config, p.measured,
                       details=details))
        if status == KEPT:
            state.variant, state.config, state.measured = p.variant, p.config, p.measured

    def _score(self, t: tuple[Proposal, str, str]) -> float:
        """Higher is better: throughput, or minus p99 for the latency objective."""
        m = t[0].measured
        return -m.p99_ms if self.budget.objective == "latency" else m.throughput

    # -- rungs -----------------------------------------------------------------------------------------
    def _batching(self, s: _State) -> Iterator[Proposal]:
        if self.max_batch == 1:
            yield Proposal.skipped("max batch is 1")
            return
        cfg, m = self.best_batch(s.variant, replace(s.config, batch=1))
        if cfg.batch == 1:
            two = self.measure(s.variant, replace(s.config, batch=2))
            why = (f"batch 2 failed: {two.error}" if two.error else
                   f"batch 2 ran {two.throughput:,.1f}/s at p99 {two.p99_ms:.2f} ms against batch 1's "
                   f"{m.throughput:,.1f}/s at {m.p99_ms:.2f} ms (budget {self.budget.p99_ms:g} ms)")
            yield Proposal.skipped(why)
            return
        yield Proposal(f"batch {cfg.batch}", s.variant, cfg, m)

    def _engine(self, s: _State) -> Iterator[Proposal]:
        if not self.engines:
            yield Proposal.skipped("no other engine to try")
        for engine in self.engines:
            reason = self.missing.get(engine)
            if reason:
                yield Proposal.skipped(f"{engine}: {reason}")
                continue
            cfg, m = self.best_batch(s.variant, replace(s.config, engine=engine, precision="fp32"))
            yield Proposal(f"{engine} fp32, batch {cfg.batch}", s.variant, cfg, m)

    def _precision(self, s: _State) -> Iterator[Proposal]:
        """Every reduced precision on *every* engine (the current one first): which engine has native
        bf16/fp16 kernels differs by CPU (OpenVINO runs bf16 on AVX512-BF16 and AMX where ONNX Runtime has
        no bf16 path at all), so asking only the current engine can miss the fastest one. An engine that
        would emulate a precision refuses it, and that refusal is the skip reason. bf16 is in the default
        precisions, so on AMX every engine that runs it natively is tried, and the one whose compiled kernels
        run on the tiles is preferred (:meth:`_step`)."""
        if not self.precisions:
            yield Proposal.skipped("no reduced precision asked for")
        engines = [s.config.engine] + [e for e in (*self.engines, self.baseline_engine) if e != s.config.engine]
        for precision in self.precisions:
            for engine in engines:
                if self.missing.get(engine):
                    continue
                cfg = replace(s.config, engine=engine, precision=precision)
                probe = self.measure(s.variant, cfg)
                if probe.error:
                    yield Proposal.skipped(f"{engine} {precision}: {probe.error}")
                    continue
                cfg, m = self.best_batch(s.variant, cfg)
                yield Proposal(f"{engine} {precision}, batch {cfg.batch}", s.variant, cfg, m)

    def _quantized(self, s: _State, variant: Variant) -> Iterator[Proposal]:
        """INT8 builds of ``variant`` on the int8-capable engines (the current one first)."""
        if self.quantizer is None:
            yield Proposal.skipped(self.missing.get("int8", "no quantizer"))
            return
        engines = [s.config.engine] if s.config.engine in self.int8_engines else []
        engines += [e for e in self.int8_engines if e not in engines and not self.missing.get(e)]
        if not engines:
            yield Proposal.skipped("no engine that runs INT8 is available")
            return
        left = self._drop_left(s.baseline, variant)
        for engine in engines:
            cfg = replace(s.config, engine=engine, precision="int8")
            q = self.quantizer(variant, cfg, left)
            if q.variant is None:
                yield Proposal.skipped(f"{engine}: {q.reason}", q.details)
                continue
            builds = [q.variant]
            if engine == s.config.engine and s.config.precision in ISLAND_PRECISIONS.get(engine, ()):
                # the precision rung kept it for the whole float model, so it may carry the float islands too
                # (the ladder scores the build as it runs); if that loses too much, the fp32 islands are next
                builds = [replace(q.variant, float_precision=s.config.precision, details=dict(q.variant.details)),
                          replace(q.variant, label=f"{q.variant.label}-fp32float", details=dict(q.variant.details))]
            for build in builds:
                cfg, m = self.best_batch(build, replace(s.config, engine=engine, precision="int8"))
                details = {"quantize": {**q.details, "float_precision": build.float_precision},
                           "quantize_reason": q.reason, "engine_int8": self._engine_int8(variant, cfg, m, build)}
                islands = "" if len(builds) == 1 else f" (float layers {build.float_precision})"
                yield Proposal(f"{build.label} on {engine}{islands}, batch {cfg.batch}", build, cfg, m, details)
                if accuracy_rejection(m, s.baseline, self.budget) is None:  # else the next float layers
                    break

    def _engine_int8(self, variant: Variant, config: Candidate, build: Measured, built: Variant) -> dict[str, Any]:
        """The engine's own whole-model INT8 of the float ``variant`` (its quantizer on every layer, e.g. NNCF
        for OpenVINO), measured side by side at the guarded build's configuration: the speed an INT8 build
        should reach. A guarded build that keeps layers in float pays for each float island; this is the
        figure that shows what that costs. ``ratio`` is the median over :data:`INT8_ROUNDS` alternating
        rounds of the build's throughput over the engine's own (a neighbour's load on a shared machine then
        falls on both alike), ``ratios`` each round's."""
        own = self.measure(variant, config)
        if own.error:
            return {"error": own.error}
        if build.error or not build.throughput or not own.throughput:
            return {"throughput": own.throughput, "p99_ms": _finite(own.p99_ms), "accuracy": own.accuracy,
                    "spread_pct": own.spread_pct, "ratio": None}
        ratios, owns = [build.throughput / own.throughput], [own.throughput]
        for _ in range(INT8_ROUNDS - 1):
            b, o = self._measure_raw(built, config), self._measure_raw(variant, config)
            if b.error or o.error or not b.throughput or not o.throughput:
                break
            ratios.append(b.throughput / o.throughput)
            owns.append(o.throughput)
        return {"throughput": statistics.median(owns), "p99_ms": _finite(own.p99_ms), "accuracy": own.accuracy,
                "spread_pct": own.spread_pct, "ratio": statistics.median(ratios),
                "ratios": [round(r, 3) for r in ratios]}

    def _measure_raw(self, variant: Variant, config: Candidate) -> Measured:
        """A fresh measurement (not the climb's cached one); errors become a Measured with ``error``."""
        try:
            return self._measure(variant, config)
        except EffstackError as exc:
            return Measured(error=one_line(exc))

    def _int8(self, s: _State) -> Iterator[Proposal]:
        yield from self._quantized(s, s.variant.float_parent or s.variant)

    def _drop_left(self, baseline: Measured, variant: Variant) -> float:
        """Points of accuracy the INT8 build of ``variant`` may still lose against the baseline."""
        if baseline.accuracy is None:
            return self.budget.allowed_drop(0.0)
        allowed = self.budget.allowed_drop(baseline.accuracy)
        fl = self._float_measured(variant)
        lost = baseline.accuracy - fl.accuracy if fl is not None and fl.accuracy is not None else 0.0
        return max(allowed - max(lost, 0.0), 0.0)

    def _float_measured(self, variant: Variant) -> Measured | None:
        for (label, _), m in self._cache.items():
            if label == variant.label and m.accuracy is not None and not m.error:
                return m
        return None

    def _shrink(self, s: _State, which: str) -> Iterator[Proposal]:
        hook = self.pruner if which == "prune" else self.distiller
        if hook is None:
            yield Proposal.skipped(self.missing.get(which, f"no {which} hook"))
            return
        source = s.variant.float_parent or s.variant
        out = hook(source)
        if out.variant is None:
            yield Proposal.skipped(out.reason, out.details)
            return
        small = out.variant
        small.details.update(out.details)
        # the smaller float model on the current engine (float precision when the current one is INT8)
        precision = "fp32" if s.config.precision == "int8" else s.config.precision
        engine = s.config.engine if small.runs_on(s.config.engine) else self.baseline_engine
        cfg, m = self.best_batch(small, replace(s.config, engine=engine, precision=precision))
        yield Proposal(f"{small.label} {engine} {precision}, batch {cfg.batch}", small, cfg, m, out.details)
        if which == "prune" and s.variant.int8:
            for q in self._quantized(replace(s, config=cfg), small):
                yield q
        if which == "distill":
            self._student = small

    def _student_int8(self, s: _State) -> Iterator[Proposal]:
        if self._student is None:
            yield Proposal.skipped("no student was distilled")
            return
        yield from self._quantized(s, self._student)

    def _layout(self, s: _State) -> Iterator[Proposal]:
        """What the layout search (the planner, in the real pipeline) picks among instances x threads."""
        if self.layout is None:
            yield Proposal.skipped(self.missing.get("layout", "no layout search"))
            return
        picks = [c for c in self.layout(s.variant, s.config, self.measure) if c != s.config]
        if not picks:
            yield Proposal.skipped(f"the current layout ({s.config.instances}x{s.config.threads} threads) is "
                                   "already the best the search found")
        for cfg in picks:
            yield Proposal(f"{cfg.instances} instance(s) x {cfg.threads} thread(s), batch {cfg.batch}",
                           s.variant, cfg, self.measure(s.variant, cfg))


@dataclass
class _State:
    variant: Variant
    config: Candidate
    measured: Measured
    baseline: Measured


@dataclass
class Proposal:
    title: str
    variant: Variant | None
    config: Candidate | None
    measured: Measured | None
    details: dict[str, Any] = field(default_factory=dict)
    skip: str = ""

    @classmethod
    def skipped(cls, reason: str, details: dict[str, Any] | None = None) -> Proposal:
        return cls(reason, None, None, None, dict(details or {}), skip=reason)

    def summary(self, status: str, reason: str) -> dict[str, Any]:
        m = self.measured
        return {"title": self.title, "status": status, "reason": reason,
                "config": self.config.to_dict() if self.config else None,
                "throughput": m.throughput if m else None, "p99_ms": _finite(m.p99_ms) if m else None,
                "accuracy": m.accuracy if m else None}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
