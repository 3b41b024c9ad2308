"""Benchmark ``effstack.compress.ternarize``: 1.58-bit weights against fp32 — accuracy, packed size, kernels.

Per seed: a VGG-style CNN (BatchNorm) is trained in fp32 on scikit-learn's digits upscaled to
``--size``² (no download), then fine-tuned with ternary weights (absmean scaling, straight-through
estimator; stem and head stay 8-bit, every layer's input 8-bit with a learned range). Reported: top-1 of
fp32 and ternary (PyTorch, and the exported QDQ model on ONNX Runtime), the packed weight size against
fp32, which precision ONNX Runtime's kernels actually ran (ternary weights execute as INT8: no CPU engine
here has ternary kernels), and the paired ONNX Runtime throughput of the ternary INT8 file against fp32.

    nice -n 5 python benchmarks/ternary.py --json results/ternary.json
    python benchmarks/ternary.py --smoke            # tiny and short: checks the script runs

Never run as a test: it trains and measures for minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time


def run_seed(seed: int, args) -> dict:
    from _shrink import digits, vgg

    from effstack.compress import TernaryConfig, ternarize
    from effstack.compress.sensitivity import run_onnx
    from effstack.engines.onnxruntime import count_onnx_precision
    from effstack.train import TrainConfig, evaluate, fit

    train, test = digits(args.size)
    model = vgg(args.width, seed=seed)
    fit(model, train, TrainConfig(epochs=args.epochs, lr=3e-3, augment="shift", seed=seed), val=test, label="fp32")
    fp32 = evaluate(model, test)
    cfg = TernaryConfig(train=TrainConfig(epochs=args.ternary_epochs, lr=1e-3, augment="shift", seed=seed),
                        packing=args.packing)
    r = ternarize(model, train, cfg, val=test)
    tern = evaluate(r.model, test)
    path = r.export_onnx(train[0][:256])
    ort_top1 = float((run_onnx(path, test[0]).argmax(1) == test[1]).mean() * 100)
    return {"seed": seed, "fp32_top1": fp32, "ternary_top1": tern, "ternary_ort_int8_top1": ort_top1,
            "drop": fp32 - tern, "ort_drop": fp32 - ort_top1, **r.sizes, "ternary_layers": r.ternary_layers,
            "int8_layers": r.int8_layers, "ort_executed": count_onnx_precision(path), "onnx": str(path),
            "fp32_model": model, "ternary_model": r.model}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=16, help="channels of the first layer (default 16)")
    p.add_argument("--size", type=int, default=16, help="image side, a multiple of 8 (default 16)")
    p.add_argument("--epochs", type=int, default=12, help="fp32 training epochs (default 12)")
    p.add_argument("--ternary-epochs", type=int, default=12, help="ternary fine-tuning epochs (default 12)")
    p.add_argument("--packing", default="2bit", help="2bit or base3 (default 2bit)")
    p.add_argument("--seeds", type=int, default=3, help="independent runs (default 3)")
    from _shrink import digits, ort_session, paired_speedup, parse, spread_text, write_json

    args = parse(p, argv, {"width": 8, "epochs": 1, "ternary_epochs": 1, "seeds": 1, "rounds": 2, "seconds": 0.2},
                 speed_rounds=6)

    from effstack.engines import SessionOptions, get_engine
    from effstack.models import load_model

    t0 = time.perf_counter()
    rows = [run_seed(s, args) for s in range(args.seeds)]
    last = rows[-1]
    fp32_session, _ = ort_session(last.pop("fp32_model"), args.size, "vgg-fp32")
    int8_session = get_engine("onnxruntime").load(load_model(last["onnx"]), SessionOptions(precision="fp32"))
    x = digits(args.size)[1][0][:args.batch]
    speed = paired_speedup(fp32_session, int8_session, x, args.rounds, args.seconds)
    for r in rows:
        r.pop("fp32_model", None)
        r.pop("ternary_model", None)
    print(f"\n{'seed':>4} {'fp32':>6} {'ternary':>7} {'ORT int8':>8} {'drop':>5} {'fp32 bytes':>10} {'packed':>7} "
          f"{'ratio':>6}  ORT kernels")
    for r in rows:
        print(f"{r['seed']:>4} {r['fp32_top1']:6.2f} {r['ternary_top1']:7.2f} {r['ternary_ort_int8_top1']:8.2f} "
              f"{r['drop']:5.2f} {r['weights_fp32_bytes']:>10,} {r['weights_packed_bytes']:>7,} "
              f"{r['weights_ratio']:6.3f}  {r['ort_executed']}")
    summary = {k: spread_text([r[k] for r in rows]) for k in ("fp32_top1", "ternary_top1", "ternary_ort_int8_top1",
                                                              "drop")}
    for k, v in summary.items():
        print(f"{k:<22} {v}")
    print(f"packed weights: {last['bits_per_weight']:g} bits per ternary weight ({args.packing}), "
          f"{last['weights_ratio']:.3f} of fp32 (all Conv/Linear weights, stem and head at 8 bits, scales counted)")
    print(f"ONNX Runtime b{args.batch}: ternary-as-INT8 {speed['fast_samples_per_s']:.0f} vs fp32 "
          f"{speed['base_samples_per_s']:.0f} samples/s = {speed['speedup_median']:.2f}x "
          f"({speed['speedup_min']:.2f}-{speed['speedup_max']:.2f}, n={args.rounds}); "
          f"{time.perf_counter() - t0:.0f} s in all")
    write_json(args.json, {"ternary_benchmark": {"rows": rows, "summary": summary, "speed": speed},
                           "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
