"""Self-contained HTML for a ladder (the table and three plots drawn as inline SVG) and for a quantize run.

No JavaScript, no external fonts or scripts, nothing fetched: the file opens the same offline, in a mail
attachment or a CI artefact. Plots:

1. the ladder — each rung's throughput on a log scale (kept rungs solid, rejected ones hollow),
2. the latency-throughput Pareto front of every configuration measured, with the budget line,
3. accuracy against cost per million inferences (dollars with ``--price-per-hour``, else core-seconds).

:func:`quantize_html` renders a :class:`~effstack.compress.QuantizeResult` (accuracy before/after, speed-up
per precision, per-layer sensitivity with its plot, layers kept float, attempts, parity) as a page, or with
``page=False`` as a ``<section>`` to put inside another report such as the ladder's.
"""

from __future__ import annotations

import html
import math
from collections.abc import Collection
from typing import Any

from .ladder import COLUMNS, ladder_rows, ladder_text

__all__ = ["Plot", "ladder_html", "pareto_points", "quantize_html"]

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 300, 64, 16, 28, 44
COLOURS = {"kept": "#2e7d32", "rejected": "#c62828", "skipped": "#9e9e9e", "front": "#1565c0"}


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


class Plot:
    """A tiny SVG scatter/line plot with linear or log axes (enough for three report figures)."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xs: list[float], ys: list[float],
                 xlog: bool = False, ylog: bool = False):
        self.title, self.xlabel, self.ylabel, self.xlog, self.ylog = title, xlabel, ylabel, xlog, ylog
        self.xr = self._range(xs, xlog)
        self.yr = self._range(ys, ylog)
        self.items: list[str] = []

    @staticmethod
    def _range(vals: list[float], log: bool) -> tuple[float, float]:
        vals = [v for v in vals if v is not None and math.isfinite(v) and (v > 0 or not log)]
        if not vals:
            return (1.0, 10.0) if log else (0.0, 1.0)
        lo, hi = min(vals), max(vals)
        if log:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
            return (lo, hi * 10) if lo == hi else (lo, hi)
        span = (hi - lo) or abs(hi) or 1.0
        return lo - 0.08 * span, hi + 0.08 * span

    def _t(self, v: float, rng: tuple[float, float], log: bool) -> float:
        lo, hi = rng
        if log:
            v, lo, hi = math.log10(max(v, 1e-300)), math.log10(lo), math.log10(hi)
        return (v - lo) / ((hi - lo) or 1.0)

    def px(self, x: float) -> float:
        return PAD_L + self._t(x, self.xr, self.xlog) * (W - PAD_L - PAD_R)

    def py(self, y: float) -> float:
        return H - PAD_B - self._t(y, self.yr, self.ylog) * (H - PAD_T - PAD_B)

    def point(self, x: float, y: float, colour: str, label: str = "", hollow: bool = False, r: float = 4.5) -> None:
        fill = "white" if hollow else colour
        self.items.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="{r}" fill="{fill}" '
                          f'stroke="{colour}" stroke-width="1.5"><title>{_esc(label)}</title></circle>')

    def line(self, pts: list[tuple[float, float]], colour: str, dash: str = "") -> None:
        if len(pts) < 2:
            return
        d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.items.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.5"{extra}/>')

    def hline(self, y: float, colour: str, label: str) -> None:
        if not (self.yr[0] <= y <= self.yr[1]):
            return
        yy = self.py(y)
        self.items.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}" '
                          f'stroke-dasharray="5 4"/><text x="{W - PAD_R - 4}" y="{yy - 4:.1f}" text-anchor="end" '
                          f'font-size="11" fill="{colour}">{_esc(label)}</text>')

    def text(self, x: float, y: float, label: str) -> None:
        self.items.append(f'<text x="{self.px(x) + 7:.1f}" y="{self.py(y) + 4:.1f}" font-size="11">{_esc(label)}</text>')

    def _ticks(self, rng: tuple[float, float], log: bool) -> list[float]:
        lo, hi = rng
        if log:
            return [10.0 ** e for e in range(int(round(math.log10(lo))), int(round(math.log10(hi))) + 1)]
        step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1.0))
        for m in (1, 2, 5, 10):
            if (hi - lo) / (step * m) <= 6:
                step *= m
                break
        start = math.ceil(lo / step) * step
        return [start + i * step for i in range(int((hi - start) / step) + 1)]

    @staticmethod
    def _fmt(v: float) -> str:
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-2:
            return f"{v:.0e}"
        return f"{v:,.0f}" if abs(v) >= 10 else f"{v:g}"

    def svg(self) -> str:
        axes = [f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" '
                f'fill="none" stroke="#888"/>',
                f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold" font-size="13">{_esc(self.title)}</text>',
                f'<text x="{(W + PAD_L) / 2}" y="{H - 8}" text-anchor="middle" font-size="12">{_esc(self.xlabel)}</text>',
                f'<text x="14" y="{(H - PAD_B + PAD_T) / 2}" text-anchor="middle" font-size="12" '
                f'transform="rotate(-90 14 {(H - PAD_B + PAD_T) / 2})">{_esc(self.ylabel)}</text>']
        for t in self._ticks(self.xr, self.xlog):
            x = self.px(t)
            axes.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - PAD_B}" y2="{H - PAD_B + 4}" stroke="#888"/>'
                        f'<text x="{x:.1f}" y="{H - PAD_B + 16}" text-anchor="middle" font-size="10">{self._fmt(t)}</text>')
        for t in self._ticks(self.yr, self.ylog):
            y = self.py(t)
            axes.append(f'<line x1="{PAD_L - 4}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                        f'<text x="{PAD_L - 6}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{self._fmt(t)}</text>')
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
                f'font-family="sans-serif" role="img" aria-label="{_esc(self.title)}">' + "".join(axes + self.items)
                + "</svg>")


def _ladder_plot(result: Any) -> str:
    rungs = [r for r in result.rungs if r.measured and r.measured.throughput]
    ys = [r.measured.throughput for r in rungs]
    p = Plot("The ladder: throughput per rung (log scale)", "rung", "samples/s", list(range(len(rungs))) or [0],
             ys, ylog=True)
    kept = []
    for i, r in enumerate(rungs):
        p.point(i, r.measured.throughput, COLOURS.get(r.status, "#555"),
                f"{r.step}: {r.measured.throughput:,.1f}/s ({r.status}) {r.reason}", hollow=r.status != "kept")
        p.text(i, r.measured.throughput, r.step)
        if r.status == "kept":
            kept.append((i, r.measured.throughput))
    p.line(kept, COLOURS["kept"])
    return p.svg()


def pareto_points(measured: list[dict[str, Any]]) -> tuple[list[tuple[float, float, str]], list[tuple[float, float]]]:
    """All ``(p99_ms, throughput, label)`` points measured, and the Pareto front (lowest p99 for its
    throughput), sorted by p99."""
    pts = []
    for e in measured:
        m = e.get("measured") or {}
        if m.get("error") or not m.get("throughput") or m.get("p99_ms") is None:
            continue
        c = e.get("config") or {}
        label = (f"{e.get('variant')}: {c.get('engine')} {c.get('precision')} b{c.get('batch')} "
                 f"{c.get('instances', 1)}x{c.get('threads') or 'all'}")
        pts.append((float(m["p99_ms"]), float(m["throughput"]), label))
    front, best = [], -1.0
    for p99, tput, _ in sorted(pts, key=lambda t: (t[0], -t[1])):
        if tput > best:
            front.append((p99, tput))
            best = tput
    return pts, front


def _pareto_plot(result: Any) -> str:
    pts, front = pareto_points(result.measured)
    p = Plot("Latency against throughput: every configuration measured", "p99 latency (ms, log)",
             "samples/s (log)", [x for x, _, _ in pts] + [result.budget.p99_ms], [y for _, y, _ in pts],
             xlog=True, ylog=True)
    for x, y, label in pts:
        p.point(x, y, "#90a4ae", label, r=3)
    p.line(front, COLOURS["front"])
    for x, y in front:
        p.point(x, y, COLOURS["front"], f"Pareto: p99 {x:.2f} ms, {y:,.1f}/s", r=3.5)
    xb = p.px(result.budget.p99_ms)
    p.items.append(f'<line x1="{xb:.1f}" x2="{xb:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#c62828" '
                   f'stroke-dasharray="5 4"/><text x="{xb + 4:.1f}" y="{PAD_T + 12}" font-size="11" '
                   f'fill="#c62828">budget {result.budget.p99_ms:g} ms</text>')
    return p.svg()


def _cost_plot(result: Any) -> str:
    price = result.budget.price_per_hour
    cores = (result.machine or {}).get("cores") or 1
    rungs = [r for r in result.rungs if r.measured and r.measured.throughput and r.measured.accuracy is not None]
    if price:
        cost = [price / 3600.0 / r.measured.throughput * 1e6 for r in rungs]
        xlabel = f"dollars per million inferences (at ${price:g}/hour, log)"
    else:
        cost = [cores / r.measured.throughput * 1e6 for r in rungs]
        xlabel = f"core-seconds per million inferences ({cores} cores, log)"
    p = Plot("Accuracy against cost", xlabel, "accuracy (%)", cost, [r.measured.accuracy for r in rungs], xlog=True)
    for r, c in zip(rungs, cost):
        p.point(c, r.measured.accuracy, COLOURS.get(r.status, "#555"), f"{r.step}: {r.measured.accuracy:.2f}%",
                hollow=r.status != "kept")
        p.text(c, r.measured.accuracy, r.step)
    base = result.baseline
    if base and base.measured and base.measured.accuracy is not None:
        floor = base.measured.accuracy - result.budget.allowed_drop(base.measured.accuracy)
        p.hline(floor, COLOURS["rejected"], f"accuracy floor {floor:.2f}")
    return p.svg()


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.kept td{color:#1b5e20}tr.rejected td{color:#b71c1c}
tr.skipped td{color:#777}.plots{display:flex;flex-wrap:wrap;gap:16px}pre{background:#f6f6f6;padding:8px;
overflow:auto;font-size:12px}h1{font-size:22px}"""


def ladder_html(result: Any, sections: tuple[str, ...] = ()) -> str:
    """The whole report as one HTML string (write it with :func:`effstack.report.atomic_write_text`).

    ``sections``: more HTML sections to end it with, e.g. ``quantize_html(res, page=False)``.
    """
    numeric = {"samples/s", "p99 ms", "accuracy", "drop", "size", "MMACs", "step", "total", "#"}
    table = _table(list(COLUMNS), [[row[c] for c in COLUMNS] for row in ladder_rows(result)], numeric,
                   [r.status for r in result.rungs])
    summary = ladder_text(result).split("\n\n")[0]
    machine = result.machine or {}
    versions = ", ".join(f"{k} {v}" for k, v in sorted((result.versions or {}).items()) if v)
    plots = "".join(f"<figure>{svg}</figure>" for svg in (_ladder_plot(result), _pareto_plot(result),
                                                          _cost_plot(result)))
    return _page(f"effstack ladder: {result.model}",
                 f"<pre>{_esc(summary)}</pre>"
                 f"{table}<h2>Plots</h2><div class=\"plots\">{plots}</div>"
                 f"<h2>Where it ran</h2><pre>{_esc(machine.get('cpu', ''))} · "
                 f"{_esc(machine.get('cores', ''))} cores · {_esc(' '.join(machine.get('isa', [])))} · "
                 f"{_esc(versions)}</pre>"
                 f"<p>Measured in one run on one machine, {result.seconds:.0f} s in all. Throughput is the median "
                 "of consecutive chunks; p99 is one batch's compute latency.</p>" + "".join(sections))


def _page(title: str, body: str) -> str:
    """A whole HTML document: ``title`` as its title and heading, then ``body`` (already escaped HTML)."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><h1>{_esc(title)}</h1>{body}</body></html>")


def _table(columns: list[str], rows: list[list[Any]], numeric: Collection[str] = (),
           classes: list[str] | None = None) -> str:
    """An HTML table; ``numeric`` columns right-aligned, ``classes`` one CSS class a row (or none)."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        (f'<tr class="{_esc(classes[i])}">' if classes else "<tr>")
        + "".join(f'<td class="{"n" if c in numeric else ""}">{_esc(v)}</td>' for c, v in zip(columns, row))
        + "</tr>" for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _sensitivity_plot(rows: list[dict[str, Any]], kept: set[str]) -> str:
    """Each layer's output SNR with only it in INT8, most sensitive first; the layers kept float in red."""
    ys = [float(r["snr_db"]) for r in rows]
    p = Plot("Per-layer sensitivity: output SNR with only that layer INT8", "layer (most sensitive first)",
             "SNR (dB)", list(range(len(rows))), ys)
    p.line([(i, y) for i, y in enumerate(ys) if math.isfinite(y)], "#90a4ae")
    for i, (r, y) in enumerate(zip(rows, ys)):
        if not math.isfinite(y):
            continue
        float_ = r["layer"] in kept
        p.point(i, y, COLOURS["rejected"] if float_ else COLOURS["kept"],
                f"{r['layer']} ({r.get('module') or ''}): {y:.2f} dB{' - kept float' if float_ else ''}")
        if float_:
            p.text(i, y, r["layer"])
    return p.svg()


def quantize_html(result: Any, *, parity: list[dict[str, Any]] | None = None, page: bool = True) -> str:
    """A quantize run as HTML: a standalone page, or with ``page=False`` a ``<section>`` for another report.

    Args:
        result: a :class:`~effstack.compress.QuantizeResult`, its ``to_dict()``, or the CLI's JSON document
            (``{"quantize": ..., "parity": ...}``).
        parity: rows of :func:`effstack.compress.parity.parity` (default: the document's, if any).
    """
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    if "quantize" in d:  # the CLI's --json document
        parity, d = parity if parity is not None else d.get("parity"), d["quantize"]
    parity = parity if parity is not None else d.get("parity")
    engine = (d.get("config") or {}).get("engine", "")
    kept = list(d.get("kept_float") or [])
    verdict = "ACCEPTED" if d.get("accepted") else "REJECTED"
    summary = _table(["", ""], [
        ["verdict", f"{verdict}: {d.get('reason', '')}"],
        [f"{d.get('metric', 'accuracy')} fp32", _num(d.get("fp32_score"))],
        [f"{d.get('metric', 'accuracy')} int8", _num(d.get("int8_score"))],
        ["drop (allowed)", f"{_num(d.get('drop'))} ({_num(d.get('allowed_drop'))})"],
        ["method", d.get("method") or "-"],
        ["layers kept in float", ", ".join(kept) or "none"],
        ["speed-up", f"{_num(d.get('speedup'))}x over {d.get('best_float') or '-'}"],
        ["layers not run in int8", ", ".join(d.get("not_int8") or []) or "none"],
        ["time taken", f"{_num(d.get('seconds'), '.1f')} s"],
    ])
    tput = d.get("throughput") or {}
    int8 = tput.get("int8")
    speed = _table(["precision", "samples/s", "int8 speed-up over it"],
                   [[k, f"{v:,.1f}", f"{int8 / v:.2f}x" if int8 and v and k != "int8" else "-"]
                    for k, v in tput.items()], {"samples/s", "int8 speed-up over it"}) if tput else \
        "<p>No speed check was run.</p>"
    parts = [f"<h2>INT8 quantization{f' on {_esc(engine)}' if engine else ''}: {verdict}</h2>", summary,
             "<h3>Speed</h3>", speed]
    rows = d.get("sensitivity") or []
    if rows:
        plot = _sensitivity_plot(rows, set(kept))
        parts += ["<h3>Per-layer sensitivity</h3>", f'<div class="plots"><figure>{plot}</figure></div>',
                  _table(["#", "layer", "module", "SNR dB", "kept float"],
                         [[i + 1, r["layer"], r.get("module", ""), _num(r.get("snr_db")),
                           "yes" if r["layer"] in kept else ""] for i, r in enumerate(rows)],
                         {"#", "SNR dB"}, ["rejected" if r["layer"] in kept else "" for r in rows])]
    attempts = d.get("attempts") or []
    if attempts:
        parts += ["<h3>Attempts</h3>", _table(
            ["method", "layers kept float", "score", "drop", "SNR dB", "at s"],
            [[a.get("method"), len(a.get("kept_float") or []), _num(a.get("score")), _num(a.get("drop")),
              _num(a.get("snr_db")), _num(a.get("seconds"), ".1f")] for a in attempts],
            {"layers kept float", "score", "drop", "SNR dB", "at s"})]
    if parity:
        parts += ["<h3>Parity across runtimes</h3>", _table(
            ["runtime A", "runtime B", "top-1 agreement %", "SNR dB"],
            [[r["a"], r["b"], _num(r.get("top1_agreement")), _num(r.get("snr_db"))] for r in parity],
            {"top-1 agreement %", "SNR dB"})]
    section = f'<section class="quantize">{"".join(parts)}</section>'
    return _page(f"effstack quantize{f' ({engine})' if engine else ''}", section) if page else section
