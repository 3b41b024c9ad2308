"""Tiny deterministic embedders and image folders for the search tests (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from effstack.models.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec


def thumb_embedder(size: int = 32):
    """A 4x4 colour thumbnail as the embedding (48 values): near-duplicates land close, different images apart."""
    from torch import nn

    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())
    model.input_spec = InputSpec(shape=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return model.eval()


THUMB = "tests.search.helpers:thumb_embedder"


def photo(i: int, size: int = 48) -> np.ndarray:
    """A distinct synthetic 'photo' (uint8 HxWx3): smooth colour blobs chosen by seed ``i``."""
    rng = np.random.default_rng(1000 + i)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3), np.float32)
    for _ in range(4):
        cy, cx, r = rng.random(3) * [1, 1, 0.5] + [0, 0, 0.1]
        colour = rng.random(3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[..., None] * colour
    return (np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8)


def write_photos(folder: Path, n: int, start: int = 0) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"img{i:03d}.png"
        Image.fromarray(photo(i)).save(p)
        paths.append(p)
    return paths


def near_duplicate(i: int, path: Path) -> Path:
    """An edited copy of photo ``i``: cropped, brightened, saved as JPEG."""
    from PIL import Image, ImageEnhance

    img = Image.fromarray(photo(i)).crop((3, 2, 46, 45))
    ImageEnhance.Brightness(img).enhance(1.1).save(path, quality=80)
    return path
