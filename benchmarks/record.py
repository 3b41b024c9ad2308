"""Record a measurement as a checkable file: ``results/<cpu-kind>/<NAME>.json``.

    python benchmarks/record.py NAME [--root results] [--kind KIND] -- COMMAND ... {json} ...

Runs COMMAND, which writes its JSON to ``{json}``, and wraps that JSON with the command line, git commit,
machine (CPU model, kind, ISA flags), library versions, wall time and the CPU share other processes took
during the run (``effstack.report.results.record``). ``make results`` then regenerates the README's tables from
the recorded files. Examples:

    python benchmarks/record.py demo -- effstack demo --json {json}
    python benchmarks/record.py quantize -- python benchmarks/quantize.py --json {json}
"""

from __future__ import annotations

import argparse
import os
import sys

from effstack.errors import EffstackError
from effstack.report.results import record


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python benchmarks/record.py NAME [--root DIR] [--kind KIND] -- COMMAND ... {json} ...",
              file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="benchmarks/record.py")
    p.add_argument("name")
    p.add_argument("--root", default="results")
    p.add_argument("--kind", default=None, help="the results folder's CPU kind (default: this machine's)")
    args = p.parse_args(argv[:cut])
    command = argv[cut + 1:]
    # the interpreter as a reader types it: "python", not this machine's venv path
    shown = ["python" if os.path.basename(a).startswith("python") and os.sep in a else a for a in command]
    recorded_as = ["python", "benchmarks/record.py", args.name, "--", *shown]
    try:
        path = record(args.name, command, root=args.root, kind=args.kind, recorded_as=recorded_as)
    except EffstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
