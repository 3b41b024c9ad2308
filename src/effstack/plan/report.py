"""A :class:`PlanResult` as tables (rich on a terminal, aligned text elsewhere) and as JSON.

The measured-cells table marks each row: ``✓`` within the budget, ``P`` on the Pareto front, ``◀`` the choice;
``others`` is other processes' CPU while it was measured (% of one core: high means trust it less)::

    engine       precision  batch  inst x thr  samples/s  p50 ms  p99 ms  s  others  mark
    onnxruntime  int8           8  2x1             1,303   11.2    29.1   1     12%  ✓ P ◀

>>> from effstack.plan import Candidate, Measurement, PlanResult
>>> t = (Candidate("e", "fp32", 4), Measurement(throughput=100.0, p50_ms=1.0, p99_ms=2.0, seconds=1.0))
>>> r = PlanResult("throughput", "smart", 5.0, best=t, pareto=[t], measured=[t], trials=[t], n_cells=4)
>>> print(format_plan(r).splitlines()[-1])
choice: e fp32 b4 1x1 — 100 samples/s, p99 2.00 ms (measured 1 of 4 cells, 25%)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from ..report.table import _num
from .search import PlanResult, Trial

__all__ = ["plan_table", "format_plan", "print_plan", "write_plan"]

_HEAD = ["engine", "precision", "batch", "inst x thr", "samples/s", "p50 ms", "p99 ms", "$/M", "s", "others",
         "mark"]
_RIGHT = {"batch", "samples/s", "p50 ms", "p99 ms", "$/M", "s", "others"}


def _columns(result: PlanResult) -> list[str]:
    return [h for h in _HEAD if h != "$/M" or result.price_per_hour is not None]


def _line(result: PlanResult, trial: Trial) -> dict[str, str]:
    c, m = trial
    marks = [("✓" if m.meets(result.budget_ms) else "") if m.ok else "failed: " + m.error]
    marks += ["P" if trial in result.pareto else "", "◀" if trial == result.best else ""]
    cost = result.cost(m)
    return {"engine": c.engine, "precision": c.precision, "batch": str(c.batch),
            "inst x thr": f"{c.instances}x{c.threads}", "samples/s": _num(m.throughput), "p50 ms": _num(m.p50_ms),
            "p99 ms": _num(m.p99_ms), "$/M": "-" if cost is None else f"{cost:.4g}", "s": f"{m.seconds:g}",
            "others": "-" if m.other_cpu_pct is None else f"{m.other_cpu_pct:.0f}%",
            "mark": " ".join(x for x in marks if x)}


def plan_table(result: PlanResult) -> list[dict[str, str]]:
    """The measured cells as table lines (column -> text), best first by the objective, failures last."""
    def key(t: Trial) -> tuple[int, float]:
        c, m = t
        if not m.ok:
            return (2, 0.0)
        return (0 if m.meets(result.budget_ms) else 1, m.p99_ms if result.objective == "latency" else -m.throughput)

    return [_line(result, t) for t in sorted(result.measured, key=key)]


def _summary(result: PlanResult) -> list[str]:
    lines = ["Pareto front (p99 vs samples/s): " + ", ".join(
        f"{c.label()} {_num(m.p99_ms)} ms {_num(m.throughput)}/s" for c, m in result.pareto)]
    lines += [f"assumed: {a}" for a in result.assumptions]
    lines += [f"left out: {what}: {why}" for what, why in result.rejected]
    where = f"measured {result.n_measured} of {result.n_cells} cells, {100 * result.fraction_measured:.0f}%"
    if result.best is None:
        lines.append(f"no choice: {result.message}")
    else:
        c, m = result.best
        cost = result.cost(m)
        dollars = f", ${cost:.4g} per million" if cost is not None else ""
        lines.append(f"choice: {c.label()} — {_num(m.throughput)} samples/s, p99 {m.p99_ms:.2f} ms{dollars} ({where})")
    return lines


def format_plan(result: PlanResult) -> str:
    """The measured cells as aligned plain text, then the Pareto front, assumptions, rejections and the choice."""
    cols = _columns(result)
    table = [cols] + [[line[h] for h in cols] for line in plan_table(result)]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    out = ["  ".join(c.rjust(w) if cols[i] in _RIGHT and r is not table[0] else c.ljust(w)
                     for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in table]
    title = (f"plan: objective {result.objective}, p99 budget {result.budget_ms:g} ms, {result.mode} search, "
             f"{result.wall_s:.1f} s")
    return "\n".join([title, *out, *_summary(result)])


def print_plan(result: PlanResult, file: IO[str] | None = None) -> None:
    """Print :func:`format_plan`, as a rich table when ``file`` (default stdout) is a terminal."""
    file = file or sys.stdout
    if getattr(file, "isatty", lambda: False)():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            cols = _columns(result)
            table = Table(title=format_plan(result).splitlines()[0], header_style="bold")
            for h in cols:
                table.add_column(h, justify="right" if h in _RIGHT else "left")
            for line in plan_table(result):
                style = "bold green" if "◀" in line["mark"] else ("" if "✓" in line["mark"] else "dim")
                table.add_row(*[line[h] for h in cols], style=style)
            console = Console(file=file)
            console.print(table)
            for text in _summary(result):
                console.print(text, markup=False, highlight=False)
            return
    print(format_plan(result), file=file)


def write_plan(path: str | os.PathLike[str], result: PlanResult, extra: dict[str, Any] | None = None) -> Path:
    """Write the result (with the machine and library versions) to ``path`` as JSON, atomically.

    Raises:
        ArtifactError: the file cannot be written.
    """
    from ..hardware import library_versions, machine_info
    from ..report.jsonio import atomic_write_text

    doc = {**(extra or {}), "machine": machine_info(), "versions": library_versions(), "plan": result.to_dict()}
    return atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
