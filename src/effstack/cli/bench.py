"""``effstack bench``: measure a model on engines × precisions × batch sizes, one isolated cell each."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_options, comma_list, int_list, model_spec_from_args, parse_knobs

DEFAULT_ENGINES = "torch,onnxruntime,openvino"
DEFAULT_PRECISIONS = "fp32,bf16,int8"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure a model on several engines, precisions and batch sizes",
        description="Measure MODEL on each engine x precision x batch cell. Each cell runs in its own "
        "process, so one crash costs one row marked as an error.",
    )
    add_model_options(p)
    add_bench_options(p)
    p.set_defaults(func=cmd_bench)


def add_bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", type=comma_list, default=comma_list(DEFAULT_ENGINES),
                   help=f"engines, comma-separated (default {DEFAULT_ENGINES}; see 'effstack engines')")
    p.add_argument("--precision", type=comma_list, default=comma_list(DEFAULT_PRECISIONS),
                   help=f"precisions: fp32, bf16, fp16, int8 (default {DEFAULT_PRECISIONS})")
    p.add_argument("--batch", type=int_list, default=[1, 8], help="batch sizes (default 1,8)")
    p.add_argument("--threads", type=int, help="compute threads per session (default: all cores)")
    p.add_argument("--scenario", default="auto", choices=["auto", "single_stream", "offline", "server"],
                   help="auto: single_stream at batch 1, offline at larger batches")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of measurement per cell (default 5)")
    p.add_argument("--repeats", type=int, default=5, help="offline repeats per cell, for the spread (default 5)")
    p.add_argument("--rate", type=float, help="server scenario: target queries per second")
    p.add_argument("--calibration-size", type=int, default=32, help="INT8 calibration samples (default 32)")
    p.add_argument("--knob", action="append", metavar="[ENGINE.]KEY=VALUE",
                   help="engine setting, e.g. openvino.hint=throughput (repeatable)")
    p.add_argument("--no-isolate", action="store_true", help="run cells in this process (faster, less safe)")
    p.add_argument("--no-peak", action="store_true", help="skip the machine's peak-rate measurement (no %% of peak)")
    p.add_argument("--json", metavar="PATH", help="write the result rows as JSON")


def run_bench(args: argparse.Namespace, spec) -> list:
    from ..measure import bench
    from ..engines import PRECISIONS, canonical
    from ..errors import PrecisionError
    from ..models import load_model
    from ..report import print_rows, write_rows

    # Mistakes in the request are one line and exit 2 before anything is measured.
    engines = [canonical(e) for e in args.engine]
    for p in args.precision:
        if p not in PRECISIONS:
            raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
    model = load_model(spec)
    macs = f"{model.macs / 1e9:.3g} GMAC/sample" if model.macs else "MACs unknown"
    print(f"{model.name}: input {model.input.shape} {model.input.dtype}, {macs}")
    rows = bench(
        spec,
        engines=engines,
        precisions=args.precision,
        batches=args.batch,
        scenario=args.scenario,
        duration=args.duration,
        repeats=args.repeats,
        rate_qps=args.rate,
        peak=not args.no_peak,
        threads=args.threads,
        knobs=parse_knobs(args.knob),
        calibration_size=args.calibration_size,
        isolate=not args.no_isolate,
        progress=True,
    )
    print_rows(rows)
    if args.json:
        write_rows(Path(args.json), rows)
        print(f"wrote {args.json}")
    return rows


def cmd_bench(args: argparse.Namespace) -> int:
    rows = run_bench(args, model_spec_from_args(args))
    return 0 if any(r.status == "ok" for r in rows) else 1
