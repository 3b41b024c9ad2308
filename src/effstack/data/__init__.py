"""DataSpec -> data set: synthetic data generated on the fly, image folders, and the real digits.

::

    from effstack.data import resolve_data, as_arrays
    train = resolve_data("synth:digits?n=50000&seed=1&size=64")        # rendered now, in worker processes
    test = resolve_data("sklearn:digits?split=test&size=32")           # the real 8x8 digits, upscaled
    x, y = as_arrays(train)                                            # float32 (N, C, H, W), int64 (N,)
    train.num_classes, train.class_names, train.input_shape            # 10, ('0', ..., '9'), (3, 64, 64)

Spec forms (see :mod:`effstack.data.spec`):

* ``synth:RECIPE?n=&seed=&size=&strength=&workers=&channels=&preprocess=`` — a :mod:`effstack.synth`
  recipe (defaults n=1000, seed=0, size=32, strength=1, channels=3). ``preprocess=optdigits`` turns each
  image into the real digits' 8x8 form (input ``(1, 8, 8)``), for sim-to-real experiments.
* ``imagefolder:DIR?size=&channels=`` or just ``DIR`` — one sub-folder per class (also reads the folder
  ``effstack synth`` writes).
* ``sklearn:digits?split=train|test|all&size=8&channels=1`` — scikit-learn's real handwritten digits,
  fixed splits (train: first 1200, test: last 597), nearest-upscaled to ``size`` (a multiple of 8).
* ``photos:all|skimage|sklearn|matplotlib?n=16&seed=0&size=224&split=eval|train&labels=group|reference
  &reference=efficientnet_lite2`` — the real photographs scikit-image, scikit-learn and matplotlib ship,
  each expanded deterministically into ``n`` variants (eval: variant 0 is the centre-crop eval view, the
  rest random crops, flips, colour and JPEG edits; train: other edits of the same photos). Labels: the
  source photo (``group``) or a reference model's top-1 ImageNet class (``reference``, cached). See
  :mod:`effstack.data.photos` for :func:`~effstack.data.photos.photo_arrays` (model-ready arrays) and
  :func:`~effstack.data.photos.write_photo_folder` (a folder for ``effstack index build``).

All images are float32 in [-1, 1] (``mean = std = 0.5``).
"""

from __future__ import annotations

import os
from typing import Any

from .spec import DataSpec, parse_data_spec

__all__ = ["resolve_data", "as_arrays", "DataSpec", "parse_data_spec", "ArrayDataset"]


def resolve_data(spec: str | os.PathLike[str] | DataSpec, progress: bool = False) -> Any:
    """The data set a DataSpec names, as an :class:`~effstack.data.datasets.ArrayDataset`.

    Args:
        spec: a DataSpec string (``"synth:digits?n=5000&seed=1"``, ``"imagefolder:DIR"``, ``"DIR"``,
            ``"sklearn:digits?split=test"``, ``"photos:all?n=8"``) or a parsed :class:`DataSpec`.
        progress: show a progress bar while synthetic data is rendered.

    Raises:
        ConfigError: a malformed spec, unknown recipe, or an option out of range (e.g. ``n=0``).
        InputError: a missing or empty image folder.
        MissingDependencyError: ``sklearn:`` data without scikit-learn installed.

    Example:
        >>> ds = resolve_data("synth:digits?n=20&seed=3&size=16&workers=1")
        >>> len(ds), ds.num_classes, ds.input_shape
        (20, 10, (3, 16, 16))
    """
    parsed = parse_data_spec(spec)
    from . import loaders

    return loaders.LOADERS[parsed.kind](parsed, progress)


def __getattr__(name: str) -> Any:
    if name in ("as_arrays", "ArrayDataset"):
        from . import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
