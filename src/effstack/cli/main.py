"""``effstack`` entry point: parse, dispatch, and turn effstack errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import EffstackError, one_line
from . import bench as bench_cmd
from . import cascade as cascade_cmd
from . import deploy as deploy_cmd
from . import generate as generate_cmd
from . import index as index_cmd
from . import info as info_cmd
from . import ladder as ladder_cmd
from . import quantize as quantize_cmd
from . import plan as plan_cmd
from . import serve as serve_cmd
from . import synth as synth_cmd
from . import train as train_cmd

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effstack",
        description="Make deep-learning inference cheaper and faster, and prove it with measurements.",
    )
    parser.add_argument("--version", action="version", version=f"effstack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_cmd.add_parser(sub)
    cascade_cmd.add_parsers(sub)
    deploy_cmd.add_parsers(sub)
    generate_cmd.add_parsers(sub)
    index_cmd.add_parsers(sub)
    info_cmd.add_parsers(sub)
    ladder_cmd.add_parsers(sub)
    quantize_cmd.add_parsers(sub)
    serve_cmd.add_parsers(sub)
    plan_cmd.add_parsers(sub)
    synth_cmd.add_parsers(sub)
    train_cmd.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    debug = args.debug or bool(os.environ.get("EFFSTACK_DEBUG"))
    try:
        return int(args.func(args) or 0)
    except EffstackError as exc:
        if debug:
            raise
        print(f"effstack: error: {one_line(exc, 1000)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("effstack: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so, and how to see more
        if debug:
            raise
        print(f"effstack: internal error: {one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
