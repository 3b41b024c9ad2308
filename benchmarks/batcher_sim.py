"""Simulate the dynamic batcher's rules under Poisson load: no server, no clock, the real ``decide()``.

The batcher's core (:mod:`effstack.serve.batcher`) is a pure function of the queue, the time and the policy,
so it can be driven by a discrete-event simulation (:mod:`effstack.serve.simulate`): Poisson arrivals,
instances that take the measured latency of each batch (with a spread), 503s when admission refuses. This is
how the latency-budget rules were chosen; it reproduced the measured server within about 10% (ONNX Runtime
ResNet-50 fp32 at a 350 ms budget: 4.5/s simulated, 4.8/s measured) in seconds instead of minutes per rate.
A run takes seconds to a minute (``--seconds`` simulated per rate, 15 rates, then a bisection).

From a curve measured at every batch size with its spread (``benchmarks/serving.py --only ceiling --json
FILE`` writes it; this reads that file, or just its ``ceiling`` object): the median time per size, its spread
(sigma of the log) per size, the p99 per size for the policy, the instances, the budget and the offline rate
of that run:

    python benchmarks/batcher_sim.py --curve-json results/serving_ceiling.json

Or from a typed curve (median ms per batch size) with one spread for every size; the policy then sees the
curve 10% slower, as its p99:

    python benchmarks/batcher_sim.py --curve 1:67,2:134,4:268,8:536 --instances 2 --budget-ms 350 --jitter 0.1

Flags given with ``--curve-json`` override the file's instances, budget, max batch and offline rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from effstack.serve.batcher import BatchingPolicy
from effstack.serve.simulate import max_rate, measured_curve, peak_rate, simulate


def read_measured(path: str) -> dict[str, Any]:
    """The ``ceiling`` object of a ``benchmarks/serving.py`` JSON file (or a file holding only that object)."""
    from effstack.report.jsonio import read_json

    data = read_json(path, "measured curve")
    data = data.get("ceiling", data)
    if "curve" not in data:
        raise SystemExit(f"{path} has no measured curve (run benchmarks/serving.py --only ceiling --json {path})")
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--curve", help="median ms per batch size, e.g. 1:67,2:134,4:268,8:536")
    src.add_argument("--curve-json", metavar="PATH", help="a curve measured at every batch size with its spread "
                     "(benchmarks/serving.py --only ceiling --json PATH)")
    p.add_argument("--instances", type=int, help="instances (default: the file's, else 1)")
    p.add_argument("--budget-ms", type=float, help="p99 budget (required with --curve; default: the file's)")
    p.add_argument("--max-batch", type=int, help="largest batch (default: the file's, else 8)")
    p.add_argument("--seconds", type=float, default=200.0, help="simulated seconds per rate")
    p.add_argument("--max-refused", type=float, default=0.01)
    p.add_argument("--jitter", type=float, default=0.05,
                   help="with --curve: batch time spread (sigma of its log; ~its CV)")
    p.add_argument("--offline", type=float, default=None,
                   help="the offline rate to compare with (default: the file's, else the curve's best, all busy)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    measured: dict[str, Any] = {}
    if args.curve_json:
        measured = read_measured(args.curve_json)
        curve, p99, jitter = measured_curve(measured["curve"])
    else:
        if args.budget_ms is None:
            p.error("--budget-ms is required with --curve")
        curve = {int(b): float(ms) / 1e3 for b, ms in (item.split(":") for item in args.curve.split(","))}
        p99, jitter = {b: s * 1.1 for b, s in curve.items()}, args.jitter
    instances = args.instances or int(measured.get("instances", 1))
    budget_ms = args.budget_ms or float(measured["budget_ms"])
    max_batch = args.max_batch or int(measured.get("max_batch", 8))
    policy = BatchingPolicy(max_batch=max_batch, latency_budget_s=budget_ms / 1e3, latency_curve=p99,
                            instances=instances)
    offline = args.offline or measured.get("offline_samples_per_s") or peak_rate(curve, instances, max_batch)
    print(f"batch cap {policy.batch_cap}, admission limit {policy.admission_limit}; offline {offline:.1f}/s")
    rows, best = [], None
    for fraction in np.arange(0.3, 1.0001, 0.05):
        r = simulate(policy, curve, instances, fraction * offline, args.seconds, jitter=jitter)
        ok = r["p99_ms"] <= budget_ms and r["refused"] <= args.max_refused
        best = fraction if ok else best
        rows.append({**r, "fraction": float(fraction), "pass": ok})
        print(f"  {fraction:.2f}x = {r['rate']:.1f}/s: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
              f"refused {100 * r['refused']:.1f}% {'pass' if ok else 'fail'}", flush=True)
    print(f"highest passing rate: {best:.2f}x of offline" if best else "no rate passed")
    bisected = max_rate(policy, curve, instances, max_refused=args.max_refused, jitter=jitter)
    print(f"bisected (what benchmarks/serving.py's ceiling reports): {bisected:.1f}/s = {bisected / offline:.2f}x")
    if args.json:
        from effstack.report.jsonio import atomic_write_text

        atomic_write_text(args.json, json.dumps({"benchmark": "batcher simulation", "command": sys.argv,
                                                 "policy": policy.to_dict(), "rows": rows, "best_fraction": best,
                                                 "max_rate_qps": bisected, "ceiling": bisected / offline},
                                                indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
