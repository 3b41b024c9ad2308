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


def cmd_peak(args: argparse.Namespace) -> int:
    from ..measure.peak import peak_rates
    from ..report.jsonio import atomic_write_text

    rates = peak_rates(refresh=args.refresh)
    print(json.dumps(rates, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(rates, indent=2))
    return 0


def cmd_machine(args: argparse.Namespace) -> int:
    from ..hardware import library_versions, machine_info

    print(json.dumps({"machine": machine_info(), "versions": library_versions()}, indent=2))
    return 0
