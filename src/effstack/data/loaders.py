"""One loader per DataSpec kind: ``loader(spec, progress) -> ArrayDataset``."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from .datasets import ArrayDataset, check_channels, check_size, load_image_folder, to_channels
from .spec import DataSpec

__all__ = ["LOADERS", "load_synth", "load_sklearn", "load_photos"]

PREPROCESS = ("none", "optdigits")


def load_synth(spec: DataSpec, progress: bool = False) -> ArrayDataset:
    """Render a synthetic data set now (see :class:`effstack.synth.SynthConfig` for the options)."""
    from ..synth import SynthConfig, generate

    o = spec.options
    preprocess = o.get("preprocess", "none")
    if preprocess not in PREPROCESS:
        raise ConfigError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
    config = SynthConfig(spec.target, n=o.get("n", 1000), seed=o.get("seed", 0), size=o.get("size", 32),
                         strength=o.get("strength", 1.0), workers=o.get("workers", 0))
    batch = generate(config, progress=progress)
    if preprocess == "optdigits":
        from .optdigits import optdigits_preprocess, to_unit_range

        if o.get("channels", 1) != 1:
            raise ConfigError("preprocess=optdigits makes 1-channel 8x8 images; drop channels= or set channels=1")
        images = to_unit_range(optdigits_preprocess(batch.images))[:, None]
    else:
        images = to_channels(batch.images, check_channels(o.get("channels"), 3))
    return ArrayDataset(images, batch.targets, batch.classes, batch.labels, str(spec))


def load_sklearn(spec: DataSpec, progress: bool = False) -> ArrayDataset:
    """scikit-learn's real handwritten digits (the only ``sklearn:`` set), fixed splits, 8x8 upscaled."""
    from .optdigits import load_optdigits, to_unit_range

    if spec.target != "digits":
        raise ConfigError(f"sklearn data must be 'sklearn:digits', got 'sklearn:{spec.target}'")
    o = spec.options
    size = check_size(o.get("size"), 8)
    if size % 8:
        raise ConfigError(f"size of sklearn:digits must be a multiple of 8 (the images are 8x8), got {size}")
    channels = check_channels(o.get("channels"), 1)
    x, y = load_optdigits(str(o.get("split", "test")))
    x = to_unit_range(x)[:, None]
    if size != 8:
        x = np.kron(x, np.ones((1, 1, size // 8, size // 8), np.float32))  # nearest upscaling
    if channels == 3:
        x = np.repeat(x, 3, axis=1)
    return ArrayDataset(np.ascontiguousarray(x), y, tuple(str(d) for d in range(10)), spec=str(spec))


def load_photos(spec: DataSpec, progress: bool = False) -> ArrayDataset:
    """Real photographs the installed packages ship, each expanded into edited variants (see
    :mod:`effstack.data.photos`)."""
    from .photos import load_photos as load

    return load(spec, progress)


def _load_folder(spec: DataSpec, progress: bool = False) -> ArrayDataset:
    return load_image_folder(spec.target, spec.options, str(spec))


LOADERS: dict[str, Callable[[DataSpec, bool], Any]] = {
    "synth": load_synth,
    "imagefolder": _load_folder,
    "sklearn": load_sklearn,
    "photos": load_photos,
}
