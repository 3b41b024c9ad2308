"""``effstack plan``: the best engine x precision x batch x instances x threads under a p99 budget."""

from __future__ import annotations

import argparse
import functools
import re

from ..errors import ConfigError
from .common import add_model_options, comma_list, int_list, model_spec_from_args, parse_knobs

DEFAULT_ENGINES = "torch,onnxruntime,openvino"
DEFAULT_PRECISIONS = "fp32,int8"
DEFAULT_BATCHES = "1,2,4,8,16,32,64"


def budget_ms(text: str) -> float:
    """``7ms``, ``7``, ``0.5s`` or ``500us`` -> milliseconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|us)?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive latency like 7ms, 0.5s or 500us, got {text!r}")
    return float(match.group(1)) * {"ms": 1.0, None: 1.0, "s": 1000.0, "us": 0.001}[match.group(2)]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="find the fastest configuration within a p99 latency budget",
        description="Search engine x precision x batch x instances x threads for the best configuration "
        "whose measured p99 latency (of one batch, with every instance busy) is within --latency-budget. "
        "The default search screens each family briefly, bisects the batch size of the best ones and "
        "re-measures the finalists; --exhaustive measures every cell.",
    )
    add_model_options(p)
    p.add_argument("--latency-budget", type=budget_ms, required=True, metavar="TIME",
                   help="p99 latency budget of one batch, e.g. 7ms, 0.5s")
    p.add_argument("--engines", type=comma_list, default=comma_list(DEFAULT_ENGINES),
                   help=f"engines, comma-separated (default {DEFAULT_ENGINES})")
    p.add_argument("--precisions", type=comma_list, default=None,
                   help=f"precisions (default {DEFAULT_PRECISIONS}, plus bf16 where AMX tiles are usable; each "
                   "engine gets those it runs)")
    p.add_argument("--batches", type=int_list, default=int_list(DEFAULT_BATCHES),
                   help=f"batch sizes (default {DEFAULT_BATCHES})")
    p.add_argument("--instances", type=int_list, default=[1, 2], help="concurrent sessions (default 1,2)")
    p.add_argument("--threads", type=int_list, default=[1, 2], help="threads per session (default 1,2)")
    p.add_argument("--exhaustive", action="store_true", help="measure every cell (default: smart search)")
    p.add_argument("--objective", choices=["throughput", "latency", "cost"], default="throughput",
                   help="what to optimise within the budget (default throughput)")
    p.add_argument("--price-per-hour", type=float, metavar="USD",
                   help="the machine's price per hour: adds $ per million inferences (needed for --objective cost)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="measurement time of each exhaustive cell and of the finalists (default 1)")
    p.add_argument("--knob", action="append", metavar="[ENGINE.]KEY=VALUE",
                   help="engine setting, e.g. onnxruntime.graph_optimization=all (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write the plan (every measurement, the front, the choice) as JSON")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from ..engines import canonical
    from ..models import load_model
    from ..plan import Grid, measure_real, plan, print_plan, write_plan
    from ..plan.prefer import default_precisions

    if args.price_per_hour is not None and not args.price_per_hour > 0:
        raise ConfigError(f"--price-per-hour must be positive dollars, got {args.price_per_hour}")
    engines = [canonical(e) for e in args.engines]  # an unknown engine: one line, exit 2, nothing measured
    precisions = args.precisions if args.precisions is not None else default_precisions()
    grid = Grid.build(engines, precisions, args.batches, args.instances, args.threads)
    knobs = parse_knobs(args.knob)
    model = load_model(model_spec_from_args(args))
    print(f"{model.name}: {len(grid)} cells ({len(grid.families())} engine/precision/instances/threads families "
          f"x batches {','.join(map(str, args.batches))}), p99 budget {args.latency_budget:g} ms")
    result = plan(grid, functools.partial(measure_real, model, knobs=knobs), args.latency_budget,
                  objective=args.objective, mode="exhaustive" if args.exhaustive else "smart",
                  price_per_hour=args.price_per_hour, seconds=args.seconds)
    print_plan(result)
    if args.json:
        write_plan(args.json, result, extra={"model": model.name, "model_source": str(args.model)})
        print(f"wrote {args.json}")
    result.choice()  # nothing met the budget: one line naming the fastest p99 seen, exit 2
    return 0
