"""Benchmark ``effstack.compress.prune``: half the MACs, the accuracy kept, the speed-up on ONNX Runtime.

A VGG-style CNN (BatchNorm, ~95 M MACs) is trained on scikit-learn's digits upscaled to 32×32 (no
download), then pruned with torch-pruning to ``--target`` of its MACs in ``--steps`` rounds of prune +
fine-tune, channel counts kept multiples of ``--round-to``. Both models are exported to ONNX (the
pruned one is really smaller: its layers have fewer channels) and timed on ONNX Runtime with effstack's
offline scenario in interleaved rounds; the speed-up is the median of the per-round ratios.

    nice -n 5 python benchmarks/prune.py --json results/prune.json
    python benchmarks/prune.py --smoke             # tiny and short: checks the script runs

Never run as a test: it trains and measures for minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=32, help="channels of the first layer (default 32)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs of the full model (default 8)")
    p.add_argument("--target", type=float, default=0.5, help="fraction of MACs to keep (default 0.5)")
    p.add_argument("--steps", type=int, default=3, help="prune + fine-tune rounds (default 3)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs per round (default 3)")
    p.add_argument("--round-to", type=int, default=8, help="channel counts a multiple of this (default 8)")
    p.add_argument("--seed", type=int, default=0)
    from _shrink import digits, ort_session, paired_speedup, parse, vgg, write_json

    args = parse(p, argv, {"width": 8, "epochs": 1, "finetune_epochs": 1, "steps": 1, "rounds": 2, "seconds": 0.2},
                 speed_rounds=8)

    from effstack.compress import PruneConfig, prune
    from effstack.train import TrainConfig, evaluate, fit

    t0 = time.perf_counter()
    train, test = digits(32)
    model = vgg(args.width, seed=args.seed)
    base = fit(model, train, TrainConfig(epochs=args.epochs, lr=2e-3, augment="shift", seed=args.seed), val=test,
               label="train")
    acc_before = evaluate(model, test)
    ft = TrainConfig(epochs=args.finetune_epochs, lr=1e-3, augment="shift", seed=args.seed)
    r = prune(model, train[0][:1], PruneConfig(args.target, steps=args.steps, finetune=ft, round_to=args.round_to),
              train, val=test)
    acc_after = evaluate(r.model, test)
    print(r.table())
    full, full_loaded = ort_session(model, 32, "vgg-full")
    small, small_loaded = ort_session(r.model, 32, "vgg-pruned")
    from effstack.export import export_onnx

    sizes = {k: export_onnx(m).stat().st_size for k, m in (("full", full_loaded), ("pruned", small_loaded))}
    speed = paired_speedup(full, small, test[0][:args.batch], args.rounds, args.seconds)
    row = {"model": f"vgg{args.width}", "input": "digits 1x32x32", "macs_before": r.macs_before,
           "macs_after": r.macs_after, "flops_ratio": round(r.flops_ratio, 4), "params_before": r.params_before,
           "params_after": r.params_after, "onnx_bytes": sizes, "top1_before": acc_before, "top1_after": acc_after,
           "top1_drop": acc_before - acc_after, "train_seconds": round(base.seconds, 1), **speed,
           "engine": "onnxruntime fp32", "seconds": round(time.perf_counter() - t0, 1), "rounds_detail": r.rounds}
    print(f"\n{'model':<8} {'MACs':>12} {'->':>2} {'MACs':>12} {'ratio':>6} {'top-1':>6} {'->':>2} {'top-1':>6} "
          f"{'drop':>5} {'ORT b' + str(args.batch) + ' speed-up (median, min-max)':>36}")
    print(f"{row['model']:<8} {r.macs_before:>12,} {'':>2} {r.macs_after:>12,} {r.flops_ratio:6.3f} {acc_before:6.2f} "
          f"{'':>2} {acc_after:6.2f} {acc_before - acc_after:5.2f} "
          f"{speed['speedup_median']:>20.2f}x ({speed['speedup_min']:.2f}-{speed['speedup_max']:.2f}, "
          f"n={args.rounds})")
    print(f"samples/s on ONNX Runtime: full {speed['base_samples_per_s']:.0f}, pruned {speed['fast_samples_per_s']:.0f}; "
          f"ONNX file {sizes['full']:,} -> {sizes['pruned']:,} bytes; {row['seconds']:.0f} s in all")
    write_json(args.json, {"prune_benchmark": row, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
