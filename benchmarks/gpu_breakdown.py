"""Where a GPU batch's time goes: host staging, host->GPU copy, compute, GPU->host copy (needs a CUDA GPU).

`effstack bench --engine torch_cuda` times the whole round trip a client waits for: a float32 numpy batch
in, a numpy result out. At large batches on a fast GPU the copies, not the network, can set the rate;
this script times each stage separately on the engine's own session (CUDA events for the GPU stages,
medians of ``--repeats``), so a row of the bench table can be read correctly.

    PYTHONPATH=src python3 benchmarks/gpu_breakdown.py --batch 256 --precision fp16 --json results/gpu/breakdown.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _measure(torch, session, x, repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each stage's median (and min/max) over ``repeats`` calls, after 3 untimed ones."""
    stream = session.stream
    ms: dict[str, list[float]] = {k: [] for k in ("stage", "h2d", "compute", "d2h", "round_trip")}
    with torch.inference_mode():
        for _ in range(repeats + 3):
            t0 = time.perf_counter()
            host = session._stage(x)
            t1 = time.perf_counter()
            events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            with torch.cuda.stream(stream):
                events[0].record(stream)
                t = host.to(session.device, non_blocking=True)
                events[1].record(stream)
                t = t.to(session.dtype)
                if session._channels_last:
                    t = t.contiguous(memory_format=torch.channels_last)
                y = session.module(t)
                events[2].record(stream)
                out = y.float().to("cpu", non_blocking=True)
                events[3].record(stream)
            stream.synchronize()
            ms["stage"].append((t1 - t0) * 1e3)
            ms["h2d"].append(events[0].elapsed_time(events[1]))
            ms["compute"].append(events[1].elapsed_time(events[2]))
            ms["d2h"].append(events[2].elapsed_time(events[3]))
            r0 = time.perf_counter()
            session.run(x)
            ms["round_trip"].append((time.perf_counter() - r0) * 1e3)
            del out
    med = {k: statistics.median(v[3:]) for k, v in ms.items()}
    return med, {k: [min(v[3:]), max(v[3:])] for k, v in ms.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--staging", default="pinned:1,pinned,direct",
                   help="staging variants, comma-separated: pinned[:copy threads] or direct")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()

    import torch

    from effstack.engines import SessionOptions, get_engine
    from effstack.models import load_model
    from effstack.report.jsonio import atomic_write_text

    model = load_model(args.model)
    x = model.input.example(args.batch, seed=0)
    mb = x.nbytes / 1e6
    results = []
    for variant in args.staging.split(","):
        kind, _, threads = variant.partition(":")
        knobs = {"staging": kind, **({"copy_threads": int(threads)} if threads else {})}
        session = get_engine("torch_cuda").load(model, SessionOptions(precision=args.precision, batch=args.batch,
                                                                      knobs=knobs))
        med, spread = _measure(torch, session, x, args.repeats)
        settings = session.settings()
        session.close()
        result = {
            "staging": variant, "median_ms": med, "spread_ms": spread,
            "samples_per_s": {"round_trip": args.batch / med["round_trip"] * 1e3,
                              "compute_only": args.batch / med["compute"] * 1e3},
            "h2d_gb_per_s": mb / med["h2d"], "settings": settings,
        }
        results.append(result)
        print(f"{model.name} {args.precision} batch {args.batch} ({mb:.0f} MB of float32 input), staging {variant}, "
              f"medians of {args.repeats}: staging {med['stage']:.2f} ms, host->GPU {med['h2d']:.2f} ms "
              f"({result['h2d_gb_per_s']:.1f} GB/s), compute {med['compute']:.2f} ms, GPU->host {med['d2h']:.3f} ms; "
              f"round trip {med['round_trip']:.2f} ms = {result['samples_per_s']['round_trip']:,.0f}/s, compute "
              f"alone {result['samples_per_s']['compute_only']:,.0f}/s", flush=True)
    result = {"model": model.name, "batch": args.batch, "precision": args.precision, "input_mb": mb,
              "variants": results}
    if args.json:
        atomic_write_text(args.json, json.dumps({"benchmark": "gpu breakdown", "command": sys.argv, "result": result},
                                                indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
