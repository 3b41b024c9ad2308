"""Write a generated batch as an image folder plus a labels file, atomically.

Layout of ``OUT``::

    OUT/images/<class>/<index>.png   one sub-folder per class (readable as ``imagefolder:OUT``)
    OUT/labels.jsonl                 one JSON object per image: {"file", "index", "label", "class", ...}
    OUT/meta.json                    the SynthConfig, class names and count
    OUT/preview.png                  a grid of the first images (annotated where the recipe can)

Everything is written into a temporary folder next to ``OUT`` and renamed into place at the end, so
``OUT`` is either the complete data set or untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .._files import atomic_dir
from ..errors import ArtifactError, ConfigError
from .core import SynthBatch, get_recipe

__all__ = ["write_dataset", "check_output", "preview_grid"]


def preview_grid(batch: SynthBatch, count: int = 64, tile: int = 96) -> Image.Image:
    """A square grid of the first ``count`` images, each scaled to ``tile`` px and annotated by the recipe."""
    count = min(count, len(batch.images))
    cols = int(np.ceil(np.sqrt(count)))
    rows = -(-count // cols)
    gap = 2
    grid = Image.new("RGB", (cols * (tile + gap) + gap, rows * (tile + gap) + gap), (255, 255, 255))
    annotate = get_recipe(batch.config.recipe).annotate
    for k in range(count):
        img = Image.fromarray(batch.images[k])
        scale = tile / img.size[0]
        img = img.resize((tile, tile), Image.NEAREST)
        if annotate is not None:
            annotate(img, batch.labels[k], scale)
        grid.paste(img, (gap + (k % cols) * (tile + gap), gap + (k // cols) * (tile + gap)))
    return grid


def check_output(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early unless a data set can be written at ``out``; returns the absolute path.

    Raises:
        ConfigError: ``out`` or one of its parents is a file, or ``out`` is a non-empty folder and not
            ``overwrite``.
        ArtifactError: the nearest existing parent folder is not writable.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {str(out)!r} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {str(out)!r} is not empty; choose a new folder or pass overwrite "
                          f"(--overwrite)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"output folder {str(out)!r} cannot be created: {str(parent)!r} is a file; "
                          f"choose another folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"output folder {str(out)!r} is not writable (no write permission in "
                            f"{str(parent)!r}); choose a folder you can write to")
    return out


def write_dataset(batch: SynthBatch, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``batch`` under ``out`` (layout in the module docstring); returns the folder.

    Args:
        batch: from :func:`effstack.synth.generate`.
        out: a new or empty folder (or any folder with ``overwrite``).
        overwrite: replace an existing, non-empty ``out``.

    Raises:
        ConfigError: ``out`` is a file, or a non-empty folder without ``overwrite``.
        ArtifactError: ``out`` (or its parent) cannot be created or written.

    Example:
        >>> write_dataset(generate(SynthConfig("digits", n=10)), "digits-10")  # doctest: +SKIP
    """
    out = check_output(out, overwrite)
    try:
        with atomic_dir(out) as tmp:  # replaces an old data set there only once the new one is complete
            rows = []
            for name in batch.classes:
                (tmp / "images" / name).mkdir(parents=True, exist_ok=True)
            for img, label in zip(batch.images, batch.labels):
                rel = f"images/{batch.classes[label['label']]}/{label['index']:06d}.png"
                Image.fromarray(img).save(tmp / rel, compress_level=1)
                rows.append(json.dumps({"file": rel, **label}))
            (tmp / "labels.jsonl").write_text("\n".join(rows) + "\n")
            meta = {"config": batch.config.to_dict(), "classes": list(batch.classes), "count": len(batch.labels)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            preview_grid(batch).save(tmp / "preview.png")
    except OSError as exc:
        raise ArtifactError(f"cannot write the data set to {str(out)!r} ({exc.strerror or exc}); "
                            f"check free space and permissions") from None
    return out
