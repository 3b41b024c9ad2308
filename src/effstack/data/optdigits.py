"""scikit-learn's handwritten digits (UCI optdigits) and their preprocessing, applied to any image.

The real set: 8x8 images with values 0..16, made by NIST's normalisation of scanned digits into
32x32 binary bitmaps and counting the on pixels in each 4x4 block. :func:`optdigits_preprocess` does
the same to any image (binarize ink against the background, crop to the ink, scale to fill the height
of a 32x32 box (width 16..24 px), count 4x4 blocks), so a model trained
on synthetic images can be scored on the real set.

Splits (fixed, as in :mod:`effstack.testing.trained`): ``train`` = the first 1200 samples, ``test`` =
the remaining 597.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from ..errors import ConfigError, MissingDependencyError

__all__ = ["SPLITS", "load_optdigits", "optdigits_preprocess", "to_unit_range"]

SPLITS = {"train": slice(0, 1200), "test": slice(1200, None), "all": slice(None)}
_BOX, _MIN_WIDTH, _MAX_WIDTH = 32, 16, 24


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as ``(N, 8, 8)`` float32 and ``(N,)`` int64, read from scikit-learn's bundled file
    (without importing scikit-learn, which takes seconds; ``load_digits`` is the fallback)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError("scikit-learn", "dev", "the real digits set") from None
    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def load_optdigits(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x ``(N, 8, 8)`` float32 in 0..16, y int64. Splits: ``train`` (1200), ``test`` (597), ``all``.

    Raises:
        ConfigError: an unknown split.
        MissingDependencyError: scikit-learn is not installed.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    x, y = _load()
    return x[SPLITS[split]].copy(), y[SPLITS[split]].copy()


def to_unit_range(counts: np.ndarray) -> np.ndarray:
    """0..16 block counts -> float32 in [-1, 1] (the normalisation of :mod:`effstack.testing.trained`)."""
    return (np.asarray(counts, np.float32) / 16.0 - 0.5) / 0.5


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    centres = (edges[:-1] + edges[1:]) / 2
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[1:][int(np.argmax(between))])


def _ink(gray: np.ndarray) -> np.ndarray:
    """Binary ink mask of one grey image in [0, 1]: far from the background level (the border median)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    contrast = np.abs(gray - np.median(border))
    top = float(contrast.max())
    if top < 1e-3:
        return np.zeros(gray.shape, bool)
    contrast = contrast / top
    return contrast > _otsu(contrast.ravel())


def _normalise(ink: np.ndarray) -> np.ndarray:
    """Crop ``ink`` to its bounding box and scale it into a 32x32 box: height 32, width as the aspect ratio
    gives but within 16..24 px, centred. (The real set fills all 8 rows and, for every class, mostly 6 of
    the 8 columns, so NIST's normalisation stretches narrow glyphs such as '1' too.)"""
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    out = np.zeros((_BOX, _BOX), np.float32)
    if not len(rows):
        return out
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    tw = int(np.clip(round(w * _BOX / h), _MIN_WIDTH, _MAX_WIDTH))
    scaled = Image.fromarray(crop.astype(np.uint8) * 255).resize((tw, _BOX), Image.BILINEAR)
    left = (_BOX - tw) // 2
    out[:, left:left + tw] = np.asarray(scaled, np.float32) >= 128
    return out


def optdigits_preprocess(images: np.ndarray) -> np.ndarray:
    """Turn images into optdigits form: ``(N, H, W[, 3])`` uint8 -> ``(N, 8, 8)`` float32 block counts 0..16.

    Example:
        >>> img = np.zeros((1, 32, 32), np.uint8); img[0, 4:28, 14:18] = 255   # a '1'
        >>> optdigits_preprocess(img)[0].max()
        16.0
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ConfigError(f"images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    gray = images.astype(np.float32) / 255.0
    if gray.ndim == 4:
        gray = gray @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.empty((len(gray), 8, 8), np.float32)
    for i, g in enumerate(gray):
        out[i] = _normalise(_ink(g)).reshape(8, 4, 8, 4).sum((1, 3))
    return out
