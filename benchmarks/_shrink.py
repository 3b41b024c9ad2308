"""Shared pieces of the model-shrinking benchmarks (distill, prune, ternary): data, models, timing.

Data: scikit-learn's bundled digits (1200 train / 597 test; no download), upscaled to ``size``².
Speed: paired, interleaved offline rounds on ONNX Runtime through effstack's own measurement code
(:func:`effstack.measure.scenarios.offline`), so a burst of load from other processes hits both
models alike; the figure is the median of the per-round throughput ratios, with min and max.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np


def parse(p: Any, argv: Any, smoke: dict[str, Any], speed_rounds: int | None = None) -> Any:
    """Add the shared options (speed rounds when ``speed_rounds``, --train-threads, --smoke, --json), parse,
    apply the ``smoke`` overrides when asked, and set torch's training threads."""
    import torch

    if speed_rounds:
        p.add_argument("--batch", type=int, default=32, help="batch of the speed measurement (default 32)")
        p.add_argument("--rounds", type=int, default=speed_rounds,
                       help=f"interleaved speed rounds (default {speed_rounds})")
        p.add_argument("--seconds", type=float, default=1.0, help="seconds per model per round (default 1)")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch threads while training (default 1: on a busy machine, more threads spin and are slower)")
    p.add_argument("--smoke", action="store_true", help="tiny and short (checks the script works)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in smoke.items():
            setattr(args, key, value)
    torch.set_num_threads(args.train_threads)  # training only: ONNX Runtime sessions keep their own threads
    return args


def digits(size: int = 32) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)), x ``(N, 1, size, size)`` float32 in [-1, 1]."""
    from effstack.testing.trained import digits_data

    return digits_data("train", size), digits_data("test", size)


def vgg(width: int = 32, classes: int = 10, seed: int = 0):
    """A small VGG-style CNN with BatchNorm for 1×32×32 inputs (~100 M MACs at width 32)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    w = width

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, w), *block(w, 2 * w), nn.MaxPool2d(2), *block(2 * w, 4 * w), *block(4 * w, 4 * w),
                         nn.MaxPool2d(2), *block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8 * w, classes))


def small_cnn(width: int = 8, classes: int = 10, seed: int = 0, size: int = 8):
    """A student: two thin convolutions, each followed by 2×2 max pooling, and a linear head."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(2 * width * (size // 4) ** 2, classes))


def ort_session(model: Any, size: int, name: str, threads: int | None = None):
    """An effstack ONNX Runtime session of a torch module (exported through effstack's checked exporter)."""
    from effstack.compress.prune import as_loaded
    from effstack.engines import SessionOptions, get_engine
    from effstack.models.spec import InputSpec

    loaded = as_loaded(model, InputSpec(shape=(1, size, size)), name)
    return get_engine("onnxruntime").load(loaded, SessionOptions(precision="fp32", threads=threads)), loaded


def paired_speedup(base: Any, fast: Any, x: np.ndarray, rounds: int, seconds: float) -> dict[str, Any]:
    """Throughput of ``fast`` over ``base`` on batch ``x``: ``rounds`` interleaved offline measurements."""
    from effstack.measure.scenarios import offline

    base_tps, fast_tps, ratios = [], [], []
    for i in range(rounds):
        order = (base, fast) if i % 2 == 0 else (fast, base)  # ABBA: neither side always goes first
        got = {id(s): offline(s, x, duration_s=seconds, repeats=3).throughput.median for s in order}
        base_tps.append(got[id(base)])
        fast_tps.append(got[id(fast)])
        ratios.append(got[id(fast)] / got[id(base)])
    return {"batch": int(x.shape[0]), "rounds": rounds, "base_samples_per_s": statistics.median(base_tps),
            "fast_samples_per_s": statistics.median(fast_tps), "speedup_median": statistics.median(ratios),
            "speedup_min": min(ratios), "speedup_max": max(ratios)}


def spread_text(values: list[float]) -> str:
    """``"97.32 ± 0.41 (96.9–97.7, n=3)"``: mean ± sample standard deviation, range, count."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} ({min(values):.2f}–{max(values):.2f}, n={len(values)})"


def write_json(path: str | None, doc: dict[str, Any]) -> None:
    if path:
        from effstack.report.jsonio import atomic_write_text

        atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
        print(f"wrote {path}")
