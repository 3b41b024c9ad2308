"""What ``--images`` and ``--calibration`` name: a folder of image files, or a ``photos:`` spec of real
photographs expanded into near-duplicate variants (:mod:`effstack.data.photos`).

A photos spec given to ``effstack index build`` is written into the index as files,
``INDEX/photos/<photo>/<variant:03d>.png`` with ``groups.json`` (each id's source photo) and ``spec.txt``, so
its ids are ``chelsea/003.png``, its thumbnails are served like any stored image's, and it is decoded exactly
as queries are. The variants are made at the model's side (a square input) unless the spec gives ``size=``.

An INT8 session is calibrated on :class:`Calibration` images: ``samples`` of them spread evenly over the
source, decoded through the model's :class:`~.embed.ImageView`. The index's manifest records them (a folder's
by file), so a later query or server session quantizes the same way as the build did.

>>> Calibration("photos:all?n=4&split=train").resolve(InputSpec((3, 32, 32)))[1].images   # doctest: +SKIP
'photos:all?n=4&seed=0&size=32&split=train'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..models.spec import InputSpec
from .embed import ImageView, decode_image, list_images, prepare_image

__all__ = ["CALIBRATION_SAMPLES", "PHOTOS_FOLDER", "Calibration", "even_sample", "index_sample", "is_photos",
           "photos_spec", "write_photos"]

PHOTOS_FOLDER = "photos"  # inside the index folder, next to the server's uploads/
CALIBRATION_SAMPLES = 32


def is_photos(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a ``photos:`` spec (anything else is a folder)."""
    return isinstance(source, str) and source.strip().startswith("photos:")


def photos_spec(spec: str, input: InputSpec) -> str:
    """``spec`` with ``size=`` set to the model's side when it gives none (and the input is square).

    Raises:
        ConfigError: not a photos spec, or an option it does not take.
    """
    from ..data.spec import DataSpec, parse_data_spec

    parsed = parse_data_spec(spec)
    if parsed.kind != "photos":
        raise ConfigError(f"expected a photos: spec, got {spec!r}; e.g. photos:all?n=16")
    shape = tuple(input.shape)
    if "size" in parsed.options or len(shape) != 3 or shape[1] != shape[2]:
        return str(parsed)
    return str(DataSpec(parsed.kind, parsed.target, {**parsed.options, "size": shape[1]}))


def write_photos(spec: str, folder: str | os.PathLike[str], input: InputSpec) -> Path:
    """Write the variants of a photos ``spec`` into ``folder`` (see the module docstring), unless the same
    spec is there already; returns the folder.

    Raises:
        ConfigError: a bad spec, or ``folder`` holds other files.
        InputError: no photographs are installed.
        ArtifactError: the folder cannot be written.
    """
    from .._files import atomic_write_text
    from ..data.photos import write_photo_folder

    text = photos_spec(spec, input)
    out = Path(folder)
    marker = out / "spec.txt"
    if marker.is_file() and marker.read_text().strip() == text and (out / "groups.json").is_file():
        return out  # a resumed build: the same spec gives byte-identical images
    write_photo_folder(text, out)
    atomic_write_text(marker, text + "\n")
    return out


def even_sample(n: int, k: int) -> list[int]:
    """``min(k, n)`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= 0 or k <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()})


@dataclass(frozen=True)
class Calibration:
    """The images an INT8 embedder is calibrated on: ``images`` (a photos spec or a folder), ``samples`` of
    them spread evenly; ``files`` pins the exact files (what :meth:`resolve` records for a folder).

    Raises:
        ConfigError: ``samples`` < 1 or no ``images``.
    """

    images: str
    samples: int = CALIBRATION_SAMPLES
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not str(self.images).strip():
            raise ConfigError("calibration images must be a folder or a photos: spec, got an empty string")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ConfigError(f"calibration samples must be a whole number >= 1, got {self.samples!r}; e.g. 32")
        object.__setattr__(self, "images", str(self.images))
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "samples": self.samples, **({"files": list(self.files)} if self.files else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(d["images"], int(d.get("samples", CALIBRATION_SAMPLES)), tuple(d.get("files", ())))

    def resolve(self, input: InputSpec, view: ImageView | None = None) -> tuple[list[np.ndarray], Calibration]:
        """``(single-image batches (1, C, H, W), the calibration as recorded)``: a photos spec canonical and
        sized, a folder's sample pinned by file.

        Raises:
            InputError: a folder that is not one or holds no readable image, or a pinned file that is gone.
            ConfigError: a bad photos spec.
        """
        if self.files:
            gone = [f for f in self.files if not Path(f).is_file()]
            if gone:
                raise InputError(f"the INT8 calibration image {gone[0]!r} is gone ({len(gone)} of {len(self.files)}"
                                 "); put it back, or rebuild the index")
            return [decode_image(f, input, view)[None] for f in self.files], self
        if is_photos(self.images):
            from PIL import Image

            from ..data.photos import build_photos

            photos = build_photos(photos_spec(self.images, input))
            idx = even_sample(len(photos.images), self.samples)
            batches = [prepare_image(Image.fromarray(photos.images[i]), input, view)[None] for i in idx]
            return batches, Calibration(photos.spec, self.samples)
        paths = list_images(self.images)
        if not paths:
            raise InputError(f"the calibration folder {self.images!r} holds no images; give a folder of images "
                             "or a photos: spec")
        chosen = [str(paths[i].resolve()) for i in even_sample(len(paths), self.samples)]
        used = Calibration(str(Path(self.images).expanduser().resolve()), self.samples, tuple(chosen))
        return [decode_image(f, input, view)[None] for f in chosen], used


def index_sample(index: Any, samples: int = CALIBRATION_SAMPLES) -> Calibration | None:
    """A calibration on ``samples`` of the index's own stored images (None when it has none on disk): for an
    INT8 session of an index whose manifest records no calibration (one built in fp32)."""
    ids = index.ids
    paths = [index.path_of(ids[i]) for i in even_sample(len(ids), samples)]
    chosen = tuple(p for p in paths if p and Path(p).is_file())
    return Calibration(str(index.root), samples, chosen) if chosen else None
