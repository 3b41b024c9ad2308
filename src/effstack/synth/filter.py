"""Teacher filtering: a model trained on real data scores every synthetic sample; keep the best fraction.

Generate more than you need, let a teacher score each sample, train on what it keeps (the recipe behind
FineWeb-Edu's classifier-filtered text, here for images). With ``p`` the teacher's softmax over classes and
``y`` the sample's own synthetic label, the scores are:

* ``margin``: ``p[y] - max(p[c] for c != y)``, in [-1, 1]. High: the teacher sees the intended class and
  nothing close to it (clean, on-label, learnable); negative: it sees another class.
* ``confidence``: ``p[y]``, in [0, 1].
* ``agreement``: 1 if the teacher's top-1 is ``y``, else 0; ties broken by margin. (Top-1 is ``y`` exactly
  when the margin is positive, so it ranks samples as ``margin`` does except at a margin of exactly 0; its
  threshold reads directly: 1 means every kept sample agrees with the teacher.)

The ``keep`` fraction with the highest scores is kept (ties: the lower index first), over the whole pool or,
with ``balance=True``, within each class. Without ``balance`` a class the teacher dislikes can vanish: that is
reported in :attr:`FilterResult.kept_per_class` and warned about, never done silently.

>>> import numpy as np, torch
>>> teacher = torch.nn.Linear(2, 2, bias=False)
>>> _ = teacher.weight.data.copy_(torch.eye(2))            # logits = x: sample i says what x[i] says
>>> x = np.array([[3, 0], [0, 1], [1, 0], [0, 3]], np.float32)
>>> r = filter_by_teacher(teacher, (x, np.array([0, 1, 1, 1])), keep=0.5)
>>> r.indices.tolist(), r.kept_per_class
([0, 3], {0: (1, 1), 1: (1, 3)})
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, suggest

__all__ = ["SCORES", "FilterResult", "filter_by_teacher", "teacher_scores"]

SCORES = ("margin", "confidence", "agreement")


@dataclass(frozen=True)
class FilterResult:
    """What :func:`filter_by_teacher` kept and why.

    indices: the kept samples' indices ``(K,)`` int64, ascending (dataset order). scores: the named score of
    every sample ``(N,)`` float64. threshold: the lowest kept score (every sample scoring above it was kept,
    within its class when ``balance``). kept_per_class: class -> ``(kept, in the pool)`` for every class
    present in the pool. seconds: time spent scoring (teacher forward passes and softmax). score, keep,
    balance: the settings.
    """

    indices: np.ndarray
    scores: np.ndarray
    threshold: float
    kept_per_class: dict[int, tuple[int, int]]
    seconds: float
    score: str
    keep: float
    balance: bool

    @property
    def kept_fraction(self) -> dict[int, float]:
        """Class -> the fraction of that class's pool samples kept."""
        return {c: k / n for c, (k, n) in self.kept_per_class.items()}

    @property
    def dropped_classes(self) -> list[int]:
        """Classes present in the pool of which nothing was kept."""
        return [c for c, (k, _) in self.kept_per_class.items() if k == 0]

    def to_dict(self, with_scores: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (the per-sample scores only when ``with_scores``)."""
        doc: dict[str, Any] = {
            "score": self.score, "keep": self.keep, "balance": self.balance, "pool": int(len(self.scores)),
            "kept": int(len(self.indices)), "threshold": self.threshold, "seconds": round(self.seconds, 4),
            "kept_per_class": {str(c): list(kn) for c, kn in self.kept_per_class.items()},
            "kept_fraction": {str(c): round(f, 4) for c, f in self.kept_fraction.items()},
            "dropped_classes": self.dropped_classes}
        if with_scores:
            doc["scores"] = self.scores.tolist()
        return doc


def _check_settings(keep: Any, score: Any, batch: Any) -> None:
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.floating)) or not 0 < keep <= 1:
        raise ConfigError(f"keep must be a fraction in (0, 1], got {keep!r}; e.g. 0.5 keeps the better half")
    if score not in SCORES:
        raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {score!r};"
                          f"{suggest(str(score), SCORES) or ' margin is the default'}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ConfigError(f"batch must be an integer >= 1, got {batch!r}; 256 suits small images on a CPU")


def _is_dataset(data: Any) -> bool:
    import torch

    return isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__")


def _arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 (N, ...), y int64 (N,))`` from an ``(x, y)`` pair or a labelled Dataset, validated."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in data)
    elif hasattr(data, "arrays") or _is_dataset(data):
        from ..data.datasets import as_arrays

        if len(data) == 0:
            raise InputError("the data to filter is empty; give at least one labelled sample")
        try:
            x, y = as_arrays(data)
        except (TypeError, ValueError) as exc:
            raise InputError(f"a labelled Dataset must yield (x, y) pairs of an array and an int label ({exc}); "
                             f"return a tuple from __getitem__") from None
    else:
        raise InputError(f"data must be an (x, y) pair of arrays or a labelled Dataset, got {type(data).__name__}; "
                         f"wrap arrays as (x, y)")
    if x.ndim < 2 or x.shape[0] < 1 or x.dtype.kind != "f":
        raise InputError(f"x must be a float array (N, ...) with N >= 1, got dtype {x.dtype} shape {x.shape}; "
                         f"convert images to float32 in the teacher's input form")
    if not np.isfinite(x).all():
        raise InputError("x holds NaN or infinite values; clean the data before scoring it")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"labels must be one per sample: x has {x.shape[0]} samples, y has shape {y.shape}; "
                         f"pass y of shape ({x.shape[0]},)")
    if y.dtype.kind not in "iu" or y.min() < 0:
        raise InputError(f"labels must be integer class indices >= 0, got dtype {y.dtype} (min {y.min()}); "
                         f"convert them with y.astype(int)")
    return np.ascontiguousarray(x, np.float32), y.astype(np.int64)


def teacher_scores(teacher: Any, x: np.ndarray, y: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Every score of every sample: ``{"margin", "confidence", "agreement"}`` -> ``(N,)`` float64.

    Args:
        teacher: a classifier (``nn.Module`` or LoadedModel) mapping ``x`` batches to logits ``(B, classes)``;
            run in eval mode under ``torch.inference_mode``, its training flag restored afterwards.
        x: inputs ``(N, ...)`` float32, in the form the teacher was trained on.
        y: the samples' own labels ``(N,)`` int64.
        batch: samples per forward pass.

    Raises:
        ConfigError: ``teacher`` is not a torch module.
        InputError: the teacher's output is not ``(B, classes)`` logits, or a label is outside its classes.

    Example:
        >>> teacher_scores(teacher, x, y)["margin"][:3]                       # doctest: +SKIP
        array([ 0.98, -0.41,  0.77])
    """
    import torch

    from ..train.loop import unwrap

    module = unwrap(teacher, "teacher")
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    probs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                xb = torch.from_numpy(x[start:start + batch]).to(device)
                logits = module(xb)
                if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(xb):
                    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise InputError(f"the teacher must return logits ({len(xb)}, classes) for a batch of {len(xb)}, "
                                     f"got {shape}; wrap it to return one row of class scores per sample")
                probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64))
    finally:
        module.train(was_training)
    p = np.concatenate(probs)  # (N, classes)
    if int(y.max()) >= p.shape[1]:
        raise InputError(f"label {int(y.max())} is outside the teacher's {p.shape[1]} classes (0..{p.shape[1] - 1}); "
                         f"use a teacher trained on the same classes")
    rows = np.arange(len(y))
    own = p[rows, y]
    other = p.copy()
    other[rows, y] = -np.inf
    margin = own - other.max(1)
    return {"margin": margin, "confidence": own, "agreement": (p.argmax(1) == y).astype(np.float64)}


def _top(order_keys: tuple[np.ndarray, ...], members: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best of ``members`` by ``order_keys`` (most significant first, higher better; ties: lower index)."""
    keys = [-key[members] for key in reversed(order_keys)]
    order = np.lexsort([members, *keys])  # lexsort: the last key is the primary one
    return members[order[:k]]


def filter_by_teacher(teacher: Any, dataset_or_arrays: Any, keep: float = 0.5, score: str = "margin",
                      batch: int = 256, balance: bool = False) -> FilterResult:
    """Score every sample with ``teacher`` and keep the ``keep`` fraction that scores best.

    Args:
        teacher: a classifier (``nn.Module`` or LoadedModel) trained on real data, taking ``x`` as given and
            returning logits ``(B, classes)``.
        dataset_or_arrays: an ``(x, y)`` pair (x float ``(N, ...)`` in the teacher's input form, y int ``(N,)``
            the samples' own labels) or a labelled Dataset such as ``resolve_data("synth:digits?...")``.
        keep: fraction in (0, 1] to keep: ``round(keep * N)`` samples (at least 1), or per class
            ``round(keep * N_c)`` (at least 1 of each class present) with ``balance``.
        score: ``margin`` | ``confidence`` | ``agreement`` (see the module docstring).
        batch: samples per teacher forward pass.
        balance: keep the top fraction within each class, so the kept set has the pool's class mix.

    Returns:
        A :class:`FilterResult`; select the kept samples with ``x[result.indices], y[result.indices]``.

    Raises:
        ConfigError: ``keep`` outside (0, 1], an unknown ``score``, a bad ``batch``, or a teacher that is not
            a torch module.
        InputError: malformed data, x and y of different lengths, labels outside the teacher's classes, or a
            teacher that does not return ``(B, classes)`` logits.

    Warns:
        UserWarning: without ``balance``, when a class present in the pool keeps no sample at all.

    Example:
        >>> ds = resolve_data("synth:digits?n=4800&seed=1&preprocess=optdigits")    # doctest: +SKIP
        >>> r = filter_by_teacher(teacher, ds, keep=0.25, balance=True)              # doctest: +SKIP
        >>> r.kept_fraction[3], r.threshold                                          # doctest: +SKIP
        (0.25, 0.91)
    """
    _check_settings(keep, score, batch)
    x, y = _arrays(dataset_or_arrays)
    t0 = time.perf_counter()
    all_scores = teacher_scores(teacher, x, y, batch)
    seconds = time.perf_counter() - t0
    keys = (all_scores[score],) if score != "agreement" else (all_scores["agreement"], all_scores["margin"])
    keep = float(keep)
    classes = [int(c) for c in np.unique(y)]
    if balance:
        kept = np.concatenate([_top(keys, members, max(1, math.floor(keep * len(members) + 0.5)))
                               for members in (np.flatnonzero(y == c) for c in classes)])
    else:
        kept = _top(keys, np.arange(len(y)), max(1, math.floor(keep * len(y) + 0.5)))
    kept = np.sort(kept).astype(np.int64)
    per_class = {c: (int((y[kept] == c).sum()), int((y == c).sum())) for c in classes}
    result = FilterResult(indices=kept, scores=all_scores[score], threshold=float(all_scores[score][kept].min()),
                          kept_per_class=per_class, seconds=seconds, score=score, keep=keep, balance=bool(balance))
    if result.dropped_classes:
        warnings.warn(f"filter_by_teacher kept no sample of class(es) {result.dropped_classes} at keep={keep:g} "
                      f"(score {score}); pass balance=True to keep the top fraction of every class", stacklevel=2)
    return result
