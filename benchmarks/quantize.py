"""Benchmark ``effstack.compress.quantize`` on models trained here: accuracy drop, speed-up per engine, time.

Each architecture is trained for a few epochs on scikit-learn's bundled digits (upscaled to
``--size`` pixels, 3 channels; no download), then quantized on each engine with the full pipeline
(calibration, sensitivity fallback, QAT fallback, speed check against the best float configuration).
Each model × engine cell is isolated: a crash costs one row, marked as an error.

    python benchmarks/quantize.py --json results/quantize.json
    python benchmarks/quantize.py --smoke            # tiny and short: checks the script runs

Never run as a test: it trains and measures for minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ARCHS = {"resnet18": "resnet18", "mobilenet_v3_small": "mobilenet_v3_small", "digits_cnn": None}


def train_model(arch: str, size: int, epochs: int, folder: Path):
    """Train ``arch`` on digits at ``size``² and return (LoadedModel, train, test, seconds)."""
    import torch

    from effstack.models import InputSpec, ModelSpec, load_model, recalibrate_batchnorm
    from effstack.testing.trained import digits_data, train_classifier

    channels = 1 if ARCHS[arch] is None else 3
    train, test = digits_data("train", size, channels), digits_data("test", size, channels)
    t = time.perf_counter()
    if ARCHS[arch] is None:  # the small CNN of the tests, at 8x8
        train, test = digits_data("train"), digits_data("test")
        model = load_model(ModelSpec("effstack.testing.trained:digits_cnn", options={"epochs": max(epochs, 8)}))
        return model, train, test, time.perf_counter() - t
    from torchvision import models

    torch.manual_seed(0)
    net = models.get_model(ARCHS[arch], weights=None, num_classes=10)
    train_classifier(net, *train, epochs=epochs, lr=2e-3)
    # torchvision's MobileNetV3 updates BatchNorm statistics with momentum 0.01: after a few short epochs they are
    # still near their initial values and the eval-mode model scores at chance (9% seen); re-estimate them
    recalibrate_batchnorm(net, [train[0][i:i + 64] for i in range(0, len(train[0]), 64)])
    path = folder / f"{arch}.pt"
    torch.save(net.state_dict(), path)
    spec = ModelSpec(ARCHS[arch], weights=str(path), num_classes=10, input=InputSpec(shape=(3, size, size)))
    return load_model(spec), train, test, time.perf_counter() - t


def run_cell(model, train, test, engine: str, args) -> dict:
    from effstack.compress import QuantizeConfig, quantize

    cfg = QuantizeConfig(engine=engine, method=args.method, samples=args.samples, max_drop=args.max_drop,
                         batch=args.batch, bench_seconds=args.bench_seconds, bench_repeats=args.repeats,
                         time_budget_s=args.time_budget, qat_epochs=args.qat_epochs)
    r = quantize(model, cfg, test, train=train)
    print(r.table(), flush=True)
    return r.to_dict()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,mobilenet_v3_small,digits_cnn")
    p.add_argument("--engines", default="onnxruntime,openvino")
    p.add_argument("--size", type=int, default=64, help="image side the digits are upscaled to (default 64)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--method", default="minmax")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--max-drop", default="1.0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--bench-seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--time-budget", type=float, default=600.0)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes and short runs (checks the script works)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.epochs, args.samples, args.bench_seconds, args.repeats = 32, 1, 32, 0.3, 2
        args.qat_epochs, args.time_budget = 1, 60.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="effstack-bench-q-") as tmp:
        for arch in args.models.split(","):
            try:
                model, train, test, train_s = train_model(arch, args.size, args.epochs, Path(tmp))
            except Exception as exc:
                rows.append({"model": arch, "error": f"training failed: {exc}"})
                continue
            for engine in args.engines.split(","):
                print(f"== {arch} on {engine} (trained in {train_s:.1f} s)", flush=True)
                row = {"model": arch, "engine": engine, "train_s": round(train_s, 1), "size": args.size}
                try:
                    row.update(run_cell(model, train, test, engine, args))
                except Exception as exc:  # isolate the cell: one crash costs one row
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                rows.append(row)
    print(f"\n{'model':<20} {'engine':<12} {'fp32':>6} {'int8':>6} {'drop':>5} {'speed-up':>9} {'s':>6}  verdict")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<20} {r.get('engine', '-'):<12} error: {r['error'][:80]}")
            continue
        print(f"{r['model']:<20} {r['engine']:<12} {r['fp32_score']:6.2f} {r['int8_score'] or 0:6.2f} "
              f"{r['drop'] if r['drop'] is not None else float('nan'):5.2f} {r['speedup'] or 0:8.2f}x "
              f"{r['seconds']:6.1f}  {'accepted' if r['accepted'] else 'rejected: ' + r['reason'].split('; ', 1)[-1][:110]}")
    if args.json:
        from effstack.report.jsonio import atomic_write_text

        atomic_write_text(args.json, json.dumps({"quantize_benchmark": rows, "args": vars(args)}, indent=2,
                                                default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
