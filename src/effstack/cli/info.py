"""``effstack engines``, ``effstack peak``, ``effstack machine``: what this machine and install can do."""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engines", help="list engines, whether each can run here, and their precisions")
    p.add_argument("--json", metavar="PATH", help="also write the list as JSON")
    p.set_defaults(func=cmd_engines)
    p = sub.add_parser("peak", help="measure (or show the cached) peak matrix-product rates of this machine")
    p.add_argument("--refresh", action="store_true", help="measure again instead of using the cache")
    p.add_argument("--json", metavar="PATH", help="also write the rates as JSON")
    p.set_defaults(func=cmd_peak)
    p = sub.add_parser("machine", help="show the machine and library versions every result row records")
    p.set_defaults(func=cmd_machine)


def engine_table() -> list[dict]:
    from ..engines import ENGINES, get_engine
    from ..errors import EffstackError

    rows = []
    for name in ENGINES.names():
        entry = ENGINES.entry(name)
        row = {"engine": name, "summary": entry.summary, "available": False, "precisions": [], "reason": ""}
        try:
            engine = get_engine(name)
            row.update(available=True, precisions=list(engine.precisions), device=engine.device)
        except EffstackError as exc:
            row["reason"] = str(exc)
        rows.append(row)
    return rows


def cmd_engines(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..report.jsonio import atomic_write_text

    rows = engine_table()
    table = Table(title="effstack engines")
    for col in ("engine", "available", "precisions", "what / why not"):
        table.add_column(col)
    for r in rows:
        what = escape(r["reason"] or r["summary"])  # "pip install 'effstack[gpu]'" is not rich markup
        table.add_row(r["engine"], "yes" if r["available"] else "no", ",".join(r["precisions"]), what)
    Console().print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps({"engines": rows}, indent=2))
    return 0


def peak_table(record: dict) -> list[dict]:
    """One row per precision of a :func:`~effstack.measure.peak.peak_rates` record: the peak (the micro-benchmark's,
    or the fastest row seen where one outran it), the path that gave it, and every path measured, fastest first.

    Example:
        >>> fp32, bf16, int8 = peak_table({"errors": {"bf16/torch": "RuntimeError: no bf16"}, "rates": {"int8": {
        ...     "gops": 100.0, "path": "torch", "candidates": {"torch": 100.0, "onnxruntime": 80.0},
        ...     "observed": {"gops": 120.0, "path": "observed:openvino/m b8"}}}})
        >>> int8
        {'precision': 'int8', 'gops': 120.0, 'path': 'observed:openvino/m b8', 'paths': 'torch 100, onnxruntime 80'}
        >>> fp32["paths"], bf16["paths"]
        ('no path measured it', 'torch: RuntimeError: no bf16')
    """
    from ..measure.peak import PEAK_PRECISIONS, peak_for

    rows = []
    for precision in PEAK_PRECISIONS:
        rate = (record.get("rates") or {}).get(precision)
        if not rate:
            errors = [f"{k.partition('/')[2]}: {v}" for k, v in (record.get("errors") or {}).items()
                      if k.startswith(f"{precision}/")]
            rows.append({"precision": precision, "gops": None, "path": "",
                         "paths": "; ".join(errors) or "no path measured it"})
            continue
        gops, path = peak_for(precision, record)
        measured = sorted((rate.get("candidates") or {}).items(), key=lambda kv: -kv[1])
        rows.append({"precision": precision, "gops": gops, "path": path,
                     "paths": ", ".join(f"{name} {g:.0f}" for name, g in measured)})
    return rows


def cmd_peak(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..measure.peak import peak_rates
    from ..report.jsonio import atomic_write_text

    rates = peak_rates(refresh=args.refresh)
    machine = rates.get("machine") or {}
    table = Table(title=f"peak matrix-product rates: {machine.get('kind', 'this machine')}, "
                        f"{rates.get('threads', '?')} threads, size {rates.get('size', '?')}")
    for col in ("precision", "peak GOP/s", "from", "every path measured (GOP/s)"):
        table.add_column(col)
    for r in peak_table(rates):
        table.add_row(r["precision"], "-" if r["gops"] is None else f"{r['gops']:.1f}", r["path"], r["paths"])
    Console().print(table)
    print(f"measured {rates.get('measured_at', '?')}; cached per machine and library versions "
          "(--refresh measures again); 'observed:' is a row that outran every path")
    if args.json:
        atomic_write_text(args.json, json.dumps(rates, indent=2))
    return 0


def cmd_machine(args: argparse.Namespace) -> int:
    from ..hardware import library_versions, machine_info

    print(json.dumps({"machine": machine_info(), "versions": library_versions()}, indent=2))
    return 0
