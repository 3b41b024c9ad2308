"""Result rows as a table: rich on a terminal, aligned plain text elsewhere (logs, CI, pipes).

Both renderings show the same columns from the same rows::

    model     engine    precision      batch  thr  samples/s     p50 ms  p99 ms  % peak  noisy  status
    tiny_cnn  openvino  fp32           1      2    5,657 ±4%     0.177   0.240   3.1%           ok

``±`` after samples/s is half the (max - min) / median range of the repeats.

>>> from effstack.measure.row import ResultRow
>>> text = format_text([ResultRow(model="m", engine="null", precision="fp32", status="skipped", error="no")])
>>> text.splitlines()[1].endswith("skipped: no")
True
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from ..engines.base import NOT_OBSERVED

if TYPE_CHECKING:  # pragma: no cover
    from ..measure.row import ResultRow

__all__ = ["COLUMNS", "cells", "format_text", "render_table", "print_rows"]

COLUMNS = ("model", "engine", "precision", "batch", "thr", "samples/s", "p50 ms", "p99 ms", "% peak", "noisy",
           "status")
_RIGHT = {"batch", "thr", "samples/s", "p50 ms", "p99 ms", "% peak"}


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}" if value < 1 else f"{value:.2f}"


def _precision(row: "ResultRow") -> str:
    """``int8 → int8 54/54``: what was asked, what the kernels ran, and how many compute layers ran it
    (``fp32 → not observed`` where the engine could not read it back)."""
    ran = row.executed_precision
    counts = row.executed_counts or {}
    total = sum(counts.values())
    if not ran or not total or ran not in counts or ran == NOT_OBSERVED:  # a mix is already spelt out in ``ran``
        return row.precision if not ran or ran == row.precision else f"{row.precision} → {ran}"
    return f"{row.precision} → {ran} {counts[ran]}/{total}"


def _throughput(row: "ResultRow") -> str:
    if row.throughput is None:
        return "-"
    text = _num(row.throughput)
    if row.spread_pct is not None and row.spread_pct > 0:
        text += f" ±{row.spread_pct / 2:.0f}%"  # ± half the (max - min) / median range
    return text


def _status(row: "ResultRow") -> str:
    return row.status if not row.error else f"{row.status}: {row.error}"


def cells(row: "ResultRow") -> list[str]:
    """One row's table cells, in :data:`COLUMNS` order."""
    noisy = "" if row.noisy is None else ("NOISY" if row.noisy else "")
    if row.noisy and row.other_cpu_pct_core is not None:
        noisy = f"NOISY {row.other_cpu_pct_core:.0f}%"
    peak = "-" if row.peak_fraction is None else f"{100 * row.peak_fraction:.1f}%"
    return [
        row.model, row.engine, _precision(row), str(row.batch), str(row.threads or "-"), _throughput(row),
        _num(row.p50_ms), _num(row.p99_ms), peak, noisy, _status(row),
    ]


def format_text(rows: Sequence["ResultRow"], max_error: int = 100) -> str:
    """Rows as aligned plain text (no colour, no box characters), one line per row.

    Example:
        >>> format_text([]).split()[:2]
        ['model', 'engine']
    """
    table = [list(COLUMNS)]
    for row in rows:
        line = cells(row)
        if len(line[-1]) > max_error:
            line[-1] = line[-1][: max_error - 1] + "…"
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    out = []
    for r in table:
        parts = [c.rjust(w) if COLUMNS[i] in _RIGHT and r is not table[0] else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def render_table(rows: Sequence["ResultRow"], title: str | None = None) -> Any:
    """Rows as a ``rich.table.Table`` (errors in red, skipped dimmed, noisy rows flagged yellow).

    Raises:
        MissingDependencyError: rich is not installed.
    """
    from .._optional import require

    require("rich")
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, header_style="bold", show_lines=False)
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in _RIGHT else "left",
                         overflow="fold" if name == "status" else "ellipsis")
    for row in rows:
        line = cells(row)
        style = {"error": "red", "skipped": "dim"}.get(row.status, "")
        rendered = [Text(c, style=style) for c in line]
        if row.noisy:
            rendered[COLUMNS.index("noisy")] = Text(line[COLUMNS.index("noisy")], style="bold yellow")
        table.add_row(*rendered)
    return table


def print_rows(rows: Sequence["ResultRow"], file: IO[str] | None = None, title: str | None = None) -> None:
    """Print rows: a rich table when ``file`` (default stdout) is a terminal, plain text otherwise."""
    file = file or sys.stdout
    if getattr(file, "isatty", lambda: False)():
        try:
            from rich.console import Console

            Console(file=file).print(render_table(rows, title=title))
            return
        except ImportError:
            pass
    if title:
        print(title, file=file)
    print(format_text(rows), file=file)
