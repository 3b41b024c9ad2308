"""The ladder as a terminal table: every rung with what it bought, kept or not, and why.

:func:`ladder_text` is plain, deterministic text (a golden test pins it); :func:`print_ladder` shows the
same table with rich colours and a bar per rung whose length is the cumulative speed-up on a log scale.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ladder_rows", "ladder_text", "print_ladder", "human_bytes"]

COLUMNS = ("#", "rung", "status", "configuration", "samples/s", "p99 ms", "accuracy", "drop", "size", "MMACs",
           "step", "total", "why")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _x(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f}x" if v >= 100 else f"{v:.2f}x" if v < 10 else f"{v:.1f}x")


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def ladder_rows(result: Any) -> list[dict[str, str]]:
    """One dict of display strings per rung, keyed by :data:`COLUMNS`."""
    rows = []
    for i, r in enumerate(result.rungs):
        m = r.measured
        cfg = r.config
        config = "-" if cfg is None else (f"{r.variant}: {cfg.label()}" if r.variant else cfg.label())
        rows.append({
            "#": str(i), "rung": r.step, "status": r.status, "configuration": config,
            "samples/s": _num(m.throughput if m and m.throughput else None, ",.1f"),
            "p99 ms": _num(m.p99_ms if m else None, ".2f"),
            "accuracy": _num(m.accuracy if m else None, ".2f"),
            "drop": _num(r.drop, "+.2f") if r.drop is not None else "-",
            "size": human_bytes(m.size_bytes if m else None),
            "MMACs": _num(m.macs / 1e6 if m and m.macs else None, ",.1f"),
            "step": _x(r.step_speedup), "total": _x(r.cumulative_speedup), "why": r.reason,
        })
    return rows


def _summary(result: Any) -> list[str]:
    b = result.budget
    tol = b.max_drop if b.max_drop.endswith("%") else f"{b.max_drop} points"
    lines = [f"ladder for {result.model}: p99 budget {b.p99_ms:g} ms, max accuracy drop {tol}, "
             f"objective {b.objective}"]
    final, base = result.final, result.baseline
    if result.infeasible:
        lines.append(f"INFEASIBLE: {result.infeasible}")
    elif final is not None and final.measured is not None and base is not None and base.measured is not None:
        cfg = final.config.label() if final.config else "-"
        lines.append(f"chosen: {final.step} — {final.variant}: {cfg}; {final.measured.throughput:,.1f} samples/s "
                     f"at p99 {final.measured.p99_ms:.2f} ms = {_x(final.cumulative_speedup)} the baseline's "
                     f"{base.measured.throughput:,.1f} samples/s")
    int8 = next((r for r in result.rungs if r.step == "int8" and r.measured is not None), None)
    own = (int8.details or {}).get("engine_int8") or {} if int8 is not None else {}
    if own.get("throughput") and own.get("ratio") is not None:
        acc = f", accuracy {own['accuracy']:.2f}" if own.get("accuracy") is not None else ""
        lines.append(f"int8 side by side: the guarded build ran {own['ratio']:.2f}x the engine's own whole-model "
                     f"INT8 ({own['throughput']:,.1f} samples/s{acc}) at the same configuration"
                     + (f", median of {len(own['ratios'])} alternating rounds "
                        f"({min(own['ratios']):.2f}-{max(own['ratios']):.2f})" if len(own.get("ratios") or ()) > 1 else ""))
    return lines


def ladder_text(result: Any, width: int = 60) -> str:
    """The ladder as aligned plain text (the ``why`` column cut at ``width`` characters)."""
    rows = ladder_rows(result)
    cols = list(COLUMNS)
    cells = [[c for c in cols]] + [[row[c] if c != "why" else _cut(row[c], width) for c in cols] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    right = {"samples/s", "p99 ms", "accuracy", "drop", "size", "MMACs", "step", "total", "#"}
    out = []
    for k, line in enumerate(cells):
        out.append("  ".join(v.rjust(w) if cols[i] in right else v.ljust(w)
                             for i, (v, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join([*_summary(result), "", *out])


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _bar(total: float | None, top: float, width: int = 16) -> str:
    if not total or total <= 0 or top <= 1:
        return ""
    frac = max(math.log(max(total, 1.0)) / math.log(top), 0.0)
    n = frac * width
    return "█" * int(n) + ("▌" if n - int(n) >= 0.5 else "")


def print_ladder(result: Any, console: Any = None) -> None:
    """Print the ladder: a rich table with a log-scale bar of the cumulative speed-up on a terminal, the
    plain :func:`ladder_text` table when the output is a file or a pipe (where it stays readable)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal or console.width < 120:
        console.print(ladder_text(result, width=90), highlight=False, markup=False, soft_wrap=True)
        return
    rows = ladder_rows(result)
    top = max([r.cumulative_speedup or 1.0 for r in result.rungs] + [1.0])
    table = Table(title=_summary(result)[0], title_justify="left", header_style="bold")
    for c in COLUMNS:
        table.add_column(c, justify="right" if c in ("samples/s", "p99 ms", "accuracy", "drop", "size", "MMACs",
                                                     "step", "total") else "left",
                         overflow="fold", max_width=48 if c == "why" else None)
        if c == "total":
            table.add_column("log scale", style="green")
    style = {"kept": "green", "rejected": "red", "skipped": "dim"}
    for r, row in zip(result.rungs, rows):
        vals = []
        for c in COLUMNS:
            vals.append(row[c])
            if c == "total":
                vals.append(_bar(r.cumulative_speedup, top) if r.status == "kept" else "")
        table.add_row(*vals, style=style.get(r.status))
    console.print(table)
    for line in _summary(result)[1:]:
        console.print(line, style="bold red" if line.startswith("INFEASIBLE") else "bold")
