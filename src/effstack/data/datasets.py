"""In-memory labelled image data sets (torch ``Dataset``) and the loaders behind :func:`resolve_data`.

Every data set yields ``(x, y)``: x float32 ``(C, H, W)`` normalised to [-1, 1] (``(v - 0.5) / 0.5`` of
the [0, 1] intensity, so ``mean = std = 0.5`` per channel), y an int class index. Each carries
``num_classes``, ``class_names``, ``input_shape`` ``(C, H, W)``, ``mean``/``std`` and ``labels`` (one
dict per sample: class plus whatever the source knows, e.g. the bounding box and pose of ``shapes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, InputError

__all__ = ["ArrayDataset", "as_arrays", "load_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MEAN = STD = 0.5


class ArrayDataset(torch.utils.data.Dataset):
    """Images held in memory: uint8 ``(N, H, W, C)`` (converted per item) or float32 ``(N, C, H, W)`` (as is).

    Args:
        images: the images; uint8 are scaled to [-1, 1] on access, float32 are returned unchanged.
        targets: ``(N,)`` class indices.
        class_names: one name per class.
        labels: optional per-sample label dicts (default ``{"label": y}``).
        spec: the DataSpec string it came from (for reports).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, class_names: tuple[str, ...],
                 labels: list[dict] | None = None, spec: str = ""):
        if len(images) != len(targets):
            raise InputError(f"images and targets must have the same length, got {len(images)} and {len(targets)}")
        if images.dtype == np.uint8 and images.ndim == 4:
            self.input_shape = (images.shape[3], images.shape[1], images.shape[2])
        elif images.dtype == np.float32 and images.ndim == 4:
            self.input_shape = tuple(images.shape[1:])
        else:
            raise InputError(f"images must be uint8 (N, H, W, C) or float32 (N, C, H, W), got {images.dtype} "
                             f"{images.shape}")
        self.images = images
        self.targets = np.asarray(targets, np.int64)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.labels = labels if labels is not None else [{"label": int(t)} for t in self.targets]
        self.spec = spec
        channels = self.input_shape[0]
        self.mean, self.std = (MEAN,) * channels, (STD,) * channels

    def __len__(self) -> int:
        return len(self.targets)

    def _float(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8:
            return batch
        return ((batch.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self._float(self.images[[i]])[0]
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.targets[i])

    def arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: x float32 ``(N, C, H, W)`` in [-1, 1], y int64 ``(N,)`` (the first ``limit`` samples)."""
        sl = slice(None, limit)
        return np.ascontiguousarray(self._float(self.images[sl]), dtype=np.float32), self.targets[sl].copy()

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.spec or 'arrays'}: {len(self)} samples, {self.num_classes} classes, "
                f"input {self.input_shape})")


def as_arrays(data: Any, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` numpy arrays from an :class:`ArrayDataset`, any ``(x, y)`` Dataset, or an ``(x, y)`` pair.

    Example:
        >>> x, y = as_arrays(resolve_data("sklearn:digits?split=test"))  # doctest: +SKIP
    """
    if hasattr(data, "arrays"):
        return data.arrays(limit)
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0], np.float32)[:limit], np.asarray(data[1], np.int64)[:limit]
    n = len(data) if limit is None else min(limit, len(data))
    if n == 0:
        raise InputError("data set is empty; give at least one sample")
    xs, ys = zip(*(data[i] for i in range(n)))
    return np.stack([np.asarray(x, np.float32) for x in xs]), np.asarray(ys, np.int64)


def check_channels(value: Any, default: int) -> int:
    value = default if value is None else value
    if value not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {value!r}")
    return value


def check_size(value: Any, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ConfigError(f"size must be an integer in [1, 4096], got {value!r}; e.g. size=32")
    return value


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> ``(N, H, W, channels)`` (grey by Rec. 601 luma when 1)."""
    if channels == 3:
        return images
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return (grey + 0.5).astype(np.uint8)[..., None]


def _synth_labels(path: Path) -> tuple[list[str], dict[str, dict]] | None:
    """Class order and per-file labels of a folder written by ``effstack synth``, else None."""
    import json

    if not ((path / "images").is_dir() and (path / "labels.jsonl").is_file() and (path / "meta.json").is_file()):
        return None
    try:
        classes = json.loads((path / "meta.json").read_text())["classes"]
        rows = [json.loads(line) for line in (path / "labels.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the labels of {str(path)!r}: {exc}; regenerate it with effstack synth") from None
    return list(classes), {r.get("file", ""): r for r in rows}


def load_image_folder(folder: str, options: dict[str, Any], spec: str = "") -> ArrayDataset:
    """An image folder (one sub-folder per class, sorted names are the classes) as an :class:`ArrayDataset`.

    Options: ``size`` (resize to size x size; default the first image's size), ``channels`` (1 or 3).

    Raises:
        InputError: a missing folder, no class folders with images, or an unreadable image.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(f"image folder {str(path)!r} does not exist; give a folder with one sub-folder per class")
    synth_rows = _synth_labels(path)
    root = path / "images" if synth_rows is not None else path
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if synth_rows is not None:  # written by ``effstack synth``: keep the recipe's class order and full labels
        classes = synth_rows[0]
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"image folder {str(path)!r} has no images; put them in one sub-folder per class")
    channels = check_channels(options.get("channels"), 3)
    size = check_size(options.get("size"), None)
    images = []
    for f, _ in files:
        try:
            img = Image.open(f).convert("RGB")
        except OSError as exc:
            raise InputError(f"cannot read image {str(f)!r}: {exc}; remove or replace it") from None
        size = size or img.size[0]
        images.append(np.asarray(img.resize((size, size), Image.BILINEAR) if img.size != (size, size) else img))
    arr = to_channels(np.stack(images), channels)
    targets = np.array([i for _, i in files], np.int64)
    labels = [{"label": int(i), "class": classes[i], "file": str(f.relative_to(path).as_posix())} for f, i in files]
    if synth_rows is not None:
        labels = [synth_rows[1].get(lab["file"], lab) for lab in labels]
    return ArrayDataset(arr, targets, tuple(classes), labels, spec or f"imagefolder:{path}")
