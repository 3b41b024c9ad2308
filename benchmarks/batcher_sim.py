"""Simulate the dynamic batcher's rules under Poisson load: no server, no clock, the real ``decide()``.

The batcher's core (:mod:`effstack.serve.batcher`) is a pure function of the queue, the time and the policy,
so it can be driven by a discrete-event simulation (:mod:`effstack.serve.simulate`): Poisson arrivals,
instances that take the measured latency of each batch (with a spread), 503s when admission refuses. This is
how the latency-budget rules were chosen; it reproduced the measured server within about 10% (ONNX Runtime
ResNet-50 fp32 at a 350 ms budget: 4.5/s simulated, 4.8/s measured) in seconds instead of minutes per rate.

    python benchmarks/batcher_sim.py --curve 1:67,2:134,4:268,8:536 --instances 2 --budget-ms 350

With the spread and the offline rate measured for ResNet-50 INT8 on OpenVINO here (batch 1 on both streams: mean
63.5 ms, CV 0.115; offline at batch 8: 35/s):

    python benchmarks/batcher_sim.py --curve 1:63.5,2:127,4:254,8:508 --instances 2 --budget-ms 350 \
        --jitter 0.115 --offline 35

The curve is the median compute time per batch size in ms (``effstack serve`` logs the p99 curve it measured at
load, and the model's config endpoint reports it); the policy sees it 10% slower, as its p99.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from effstack.serve.batcher import BatchingPolicy
from effstack.serve.simulate import peak_rate, simulate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--curve", required=True, help="median ms per batch size, e.g. 1:67,2:134,4:268,8:536")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--budget-ms", type=float, required=True)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=200.0, help="simulated seconds per rate")
    p.add_argument("--max-refused", type=float, default=0.01)
    p.add_argument("--jitter", type=float, default=0.05, help="batch time spread (sigma of its log; ~its CV)")
    p.add_argument("--offline", type=float, default=None,
                   help="the offline rate to compare with (default: the curve's best, all instances busy)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    curve = {int(b): float(ms) / 1e3 for b, ms in (item.split(":") for item in args.curve.split(","))}
    policy = BatchingPolicy(max_batch=args.max_batch, latency_budget_s=args.budget_ms / 1e3,
                            latency_curve={b: s * 1.1 for b, s in curve.items()}, instances=args.instances)
    offline = args.offline or peak_rate(curve, args.instances, args.max_batch)
    print(f"batch cap {policy.batch_cap}, admission limit {policy.admission_limit}; offline {offline:.1f}/s")
    rows, best = [], None
    for fraction in np.arange(0.3, 1.0001, 0.05):
        r = simulate(policy, curve, args.instances, fraction * offline, args.seconds, jitter=args.jitter)
        ok = r["p99_ms"] <= args.budget_ms and r["refused"] <= args.max_refused
        best = fraction if ok else best
        rows.append({**r, "fraction": float(fraction), "pass": ok})
        print(f"  {fraction:.2f}x = {r['rate']:.1f}/s: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
              f"refused {100 * r['refused']:.1f}% {'pass' if ok else 'fail'}", flush=True)
    print(f"highest passing rate: {best:.2f}x of offline" if best else "no rate passed")
    if args.json:
        from effstack.report.jsonio import atomic_write_text

        atomic_write_text(args.json, json.dumps({"benchmark": "batcher simulation", "command": sys.argv,
                                                 "policy": policy.to_dict(), "rows": rows, "best_fraction": best},
                                                indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
