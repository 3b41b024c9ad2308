"""Real photographs as an evaluation set: ``photos:all?n=16&seed=0&size=224&split=eval&labels=group``.

The photographs are the ones the installed packages ship (nothing is downloaded): scikit-image's, the two
of scikit-learn, and matplotlib's portrait of Grace Hopper when matplotlib is installed. Each photo is
expanded deterministically into ``n`` variants, the kind of copies near-duplicate search must match:

* ``split=eval``: variant 0 is the canonical eval view (TF's centre crop of ``size / (size + 32)`` of the
  shorter side, bicubic resize to ``size``, as :func:`effstack.models.efficientnet_lite.preprocess` does);
  variants 1.. are random edits.
* ``split=train``: ``n`` random edits of the same photos, drawn from a different random stream (and no
  canonical view), so a train set never repeats an eval image of the same seed.

A random edit combines, each at random, a random-resized crop (area 0.35-1 of the photo, aspect 3/4-4/3),
a horizontal flip, brightness (x0.7-1.3), contrast and saturation (x0.6-1.4) changes, and JPEG
re-encoding at quality 20-90. The numbers come from a numpy Generator seeded with ``(seed, split, photo,
variant)`` (the photo's place in the fixed catalogue below, so picking one source does not change another's
edits), and the pixels from PIL operations with fixed filters (bicubic), so the same spec gives
byte-identical images wherever the same Pillow (and its bundled libjpeg) runs. Each variant records its
edit, e.g. ``"crop 0.62 flip jpeg q41"`` (``"centre"`` for the canonical view).

Labels: ``labels=group`` (default) makes the target the source photo (class names are the photo names);
``labels=reference`` makes it the top-1 ImageNet class of a reference model (``reference=``, default
``efficientnet_lite2``) on each variant, run at the reference's own input size and mean/std: agreement
labels, cached under ``cache_dir("photos")`` by spec, images and the reference's fingerprint.
``min_confidence=0.3`` (with ``labels=reference``) keeps only the variants whose reference top-1
probability is at least that: many of these photos (textures, microscopy, the Hubble field, a page of
text) are no ImageNet class, the reference spreads its guess over near-tied classes there, and top-1
agreement on them measures which of the near-ties wins, not fidelity.

>>> ds = load_photos(parse_data_spec("photos:sklearn?n=2&size=32"))   # doctest: +SKIP
>>> len(ds), ds.class_names, ds.labels[1]["edit"]                      # doctest: +SKIP
(4, ('china', 'flower'), 'crop 0.61 sat 0.86')
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from .._files import atomic_dir, atomic_write_json, cache_dir
from ..errors import ArtifactError, ConfigError, InputError, MissingDependencyError
from .datasets import ArrayDataset, check_size
from .spec import DataSpec, parse_data_spec

__all__ = ["CATALOGUE", "EXCLUDED", "PhotoSet", "build_photos", "load_photos", "photo_arrays", "source_photos",
           "write_photo_folder"]

# source -> (package, folder inside it, the photographs kept). Sorted names; the order is the catalogue
# order that seeds each photo's edits.
CATALOGUE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "skimage": ("skimage", "data", (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
        "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png",
        "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg",
        "text.png")),
    "sklearn": ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    "matplotlib": ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
}
# what the packages ship that is not a photograph, or not one image (left out on purpose)
EXCLUDED: dict[str, str] = {
    "skimage/chessboard_GRAY.png, chessboard_RGB.png": "a synthetic checkerboard",
    "skimage/color.png": "a synthetic colour wheel",
    "skimage/horse.png": "a binary silhouette drawing",
    "skimage/logo.png": "the scikit-image logo, a drawing",
    "skimage/phantom.png": "the synthetic Shepp-Logan phantom",
    "skimage/multipage.tif, multipage_rgb.tif, no_time_for_that_tiny.gif": "tiny multi-frame test files",
    "skimage/lfw_subset.npy": "an array of 200 25x25 face/non-face crops, not an image file",
    "skimage/motorcycle_disp.npz": "a disparity map, not a photograph",
    "skimage (pooch-fetched files)": "only files inside the installed package are read, never a download cache",
    "matplotlib/logo2.png and the other sample data": "a logo, tables and arrays, not photographs",
}
_PIP = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}
TARGETS = ("all", *CATALOGUE)
SPLITS = {"eval": 0, "train": 1}
LABELS = ("group", "reference")
DEFAULTS = {"n": 16, "seed": 0, "size": 224, "split": "eval", "labels": "group", "reference": "efficientnet_lite2",
            "min_confidence": 0.0}
_MAX_N = 10_000
_BATCH = 32  # reference forward pass


def _catalogue_index() -> dict[str, int]:
    names = [name for _, _, files in CATALOGUE.values() for name in files]
    return {Path(name).stem: i for i, name in enumerate(names)}


def _package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing it (scikit-learn takes seconds to import)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def source_photos(target: str = "all") -> list[tuple[str, Image.Image]]:
    """Every real photograph the installed packages ship, sorted by name, as ``(name, PIL RGB image)``.

    Kept: scikit-image's astronaut, brick, camera, cell, chelsea (a cat), clock_motion, coffee, coins, grass,
    gravel, hubble_deep_field, ihc, microaneurysms, moon, motorcycle_left/right (a stereo pair: two photos,
    two groups), page, retina, rocket and text (greyscale ones converted to RGB); scikit-learn's china and
    flower; matplotlib's grace_hopper. Left out (see :data:`EXCLUDED`): the synthetic drawings (chessboards,
    colour wheel, horse silhouette, logo, Shepp-Logan phantom), tiny multi-frame test files, the LFW crop
    array and the disparity map. Only files inside the installed packages are read: nothing is
    downloaded and scikit-image's fetcher is never called. A source that is not installed is skipped.

    Args:
        target: ``all``, or one source: ``skimage``, ``sklearn``, ``matplotlib``.

    Raises:
        ConfigError: an unknown target.
        MissingDependencyError: the one source asked for is not installed.
        InputError: a listed photo cannot be read, or no photograph is found at all.

    Example:
        >>> [name for name, _ in source_photos("sklearn")]   # doctest: +SKIP
        ['china', 'flower']
    """
    if target not in TARGETS:
        raise ConfigError(f"photos target must be one of {', '.join(TARGETS)}, got {target!r}; e.g. photos:all")
    out = []
    for source, (package, folder, files) in CATALOGUE.items():
        if target not in ("all", source):
            continue
        root = _package_dir(package)
        if root is None and target == source:
            if source == "matplotlib":
                raise InputError("photos:matplotlib needs matplotlib's sample data; pip install matplotlib, "
                                 "or use photos:all")
            raise MissingDependencyError(_PIP[source], "dev", f"photos:{source}")
        for name in files:
            path = root / folder / name if root is not None else None
            if path is None or not path.is_file():
                continue  # another version of the package may not ship it
            try:
                with Image.open(path) as img:
                    out.append((path.stem, img.convert("RGB")))
            except OSError as exc:
                raise InputError(f"cannot read photo {str(path)!r}: {exc}; reinstall {_PIP[source]}") from None
    if not out:
        raise InputError("no photographs found: none of scikit-image, scikit-learn or matplotlib is installed; "
                         "install scikit-image (pip install 'effstack[dev]')")
    return sorted(out, key=lambda item: item[0])


def _options(spec: DataSpec, size: int | None = None) -> dict[str, Any]:
    """The spec's options with defaults filled in, checked. ``size`` replaces the default size."""
    o = {**DEFAULTS, **({"size": size} if size is not None else {}), **spec.options}
    for key, low, high in (("n", 1, _MAX_N), ("seed", 0, 2**63 - 1)):
        value = o[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{key} must be an integer in [{low}, {high}], got {value!r}; e.g. {key}={DEFAULTS[key]}")
    o["size"] = check_size(o["size"], DEFAULTS["size"])
    if o["split"] not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {o['split']!r}; e.g. split=eval")
    if o["labels"] not in LABELS:
        raise ConfigError(f"labels must be one of {', '.join(LABELS)}, got {o['labels']!r}; e.g. labels=group")
    o["reference"] = str(o["reference"])
    conf = o["min_confidence"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf < 1:
        raise ConfigError(f"min_confidence must be a probability in [0, 1), got {conf!r}; e.g. min_confidence=0.3")
    if conf and o["labels"] != "reference":
        raise ConfigError("min_confidence keeps the variants the reference model is sure of; it needs "
                          "labels=reference")
    if spec.target not in TARGETS:
        raise ConfigError(f"photos target must be one of {', '.join(TARGETS)}, got {spec.target!r}; e.g. photos:all")
    return o


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    """TF's eval view: a centre square of ``size / (size + 32)`` of the shorter side, bicubic to ``size``."""
    from ..models.efficientnet_lite import CROP_PADDING

    w, h = image.size
    side = size / (size + CROP_PADDING) * min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (round(left), round(top), round(left + side), round(top + side))
    return image.crop(box).resize((size, size), Image.BICUBIC)


def random_edit(image: Image.Image, size: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One random edit of ``image`` at ``size`` x ``size`` and its description (``"crop 0.62 flip jpeg q41"``).

    Every call draws the same count of numbers, in a fixed order, whatever edits it picks.
    """
    do_crop, do_flip, do_bright, do_contrast, do_sat, do_jpeg = rng.random(6) < (0.8, 0.5, 0.4, 0.4, 0.4, 0.5)
    area, log_aspect = rng.uniform(0.35, 1.0), rng.uniform(math.log(3 / 4), math.log(4 / 3))
    px, py = rng.random(2)
    bright, contrast, sat = rng.uniform(0.7, 1.3), rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4)
    quality = int(rng.integers(20, 91))
    if not (do_crop or do_flip or do_bright or do_contrast or do_sat or do_jpeg):
        do_crop = True  # every random variant differs from the canonical view
    edits = []
    if do_crop:
        w, h = image.size
        aspect = math.exp(log_aspect)
        cw = min(math.sqrt(area * w * h * aspect), w)
        ch = min(math.sqrt(area * w * h / aspect), h)
        x0, y0 = px * (w - cw), py * (h - ch)
        out = image.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        edits.append(f"crop {cw * ch / (w * h):.2f}")
    else:
        out = centre_crop(image, size)
    if do_flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        edits.append("flip")
    for on, enhancer, factor, label in ((do_bright, ImageEnhance.Brightness, bright, "bright"),
                                        (do_contrast, ImageEnhance.Contrast, contrast, "contrast"),
                                        (do_sat, ImageEnhance.Color, sat, "sat")):
        if on:
            out = enhancer(out).enhance(float(factor))
            edits.append(f"{label} {factor:.2f}")
    if do_jpeg:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=quality, subsampling="4:2:0", optimize=False)
        with Image.open(io.BytesIO(buf.getvalue())) as decoded:
            out = decoded.convert("RGB")
        edits.append(f"jpeg q{quality}")
    return out, " ".join(edits)


@dataclass
class PhotoSet:
    """The variants of a photos spec: ``images`` uint8 ``(N, size, size, 3)``, one ``groups`` entry (the
    photo's index in ``names``), ``variants`` index and ``edits`` description per image; ``spec`` the
    canonical spec string (every option that decides the pixels)."""

    images: np.ndarray
    groups: np.ndarray
    variants: np.ndarray
    edits: list[str]
    names: tuple[str, ...]
    spec: str

    def subset(self, keep: np.ndarray) -> PhotoSet:
        """The variants where ``keep`` (a boolean mask) is true; names and spec unchanged."""
        idx = np.flatnonzero(keep)
        return PhotoSet(self.images[idx], self.groups[idx], self.variants[idx], [self.edits[i] for i in idx],
                        self.names, self.spec)

    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()


def build_photos(spec: str | DataSpec, size: int | None = None) -> PhotoSet:
    """Expand every photo of ``spec`` into its ``n`` variants (see the module docstring).

    Args:
        spec: a ``photos:`` DataSpec string or parsed spec.
        size: the size to use when the spec does not give one (default 224).

    Raises:
        ConfigError: not a photos spec, or an option out of range (``n=0``, ``split=test``, ...).
        InputError: no photographs are installed.

    Example:
        >>> build_photos("photos:sklearn?n=3&size=32").images.shape   # doctest: +SKIP
        (6, 32, 32, 3)
    """
    spec = _photo_spec(spec)
    o = _options(spec, size)
    n, seed, size, split = o["n"], o["seed"], o["size"], o["split"]
    index = _catalogue_index()
    photos = source_photos(spec.target)
    images, groups, variants, edits = [], [], [], []
    for group, (name, image) in enumerate(photos):
        for v in range(n):
            if split == "eval" and v == 0:
                out, edit = centre_crop(image, size), "centre"
            else:
                rng = np.random.default_rng([seed, SPLITS[split], index[name], v])
                out, edit = random_edit(image, size, rng)
            images.append(np.asarray(out, np.uint8))
            groups.append(group)
            variants.append(v)
            edits.append(edit)
    canonical = f"photos:{spec.target}?n={n}&seed={seed}&size={size}&split={split}"
    return PhotoSet(np.stack(images), np.array(groups, np.int64), np.array(variants, np.int64), edits,
                    tuple(name for name, _ in photos), canonical)


def same_photos(a: str | None, b: str | None) -> bool:
    """Whether two data specs are both ``photos:`` specs of the same photographs (edits of one photo share its
    group id in both), whatever their splits and edits.

    Example:
        >>> same_photos("photos:all?n=4", "photos:all?n=24&split=train"), same_photos("photos:all", "x.npz")
        (True, False)
    """
    if not (a and b and a.startswith("photos:") and b.startswith("photos:")):
        return False
    return parse_data_spec(a).target == parse_data_spec(b).target


def _photo_spec(spec: str | DataSpec) -> DataSpec:
    parsed = parse_data_spec(spec)
    if parsed.kind != "photos":
        raise ConfigError(f"data spec must be a photos: spec, got {str(parsed)!r}; e.g. photos:all?n=16")
    return parsed


def to_model_input(images: np.ndarray, input_spec: Any) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, C, H', W')``: bicubic resize to the spec's H', W' when they differ,
    grey (Rec. 601 luma) when it takes one channel, then ``(v - mean) / std`` of [0, 1] pixels.

    Raises:
        InputError: ``input_spec`` is not a (1 or 3, H, W) image input.
    """
    shape = tuple(input_spec.shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise InputError(f"photos need a (3, H, W) or (1, H, W) model input, the model takes {shape}")
    c, h, w = shape
    if images.shape[1:3] != (h, w):
        images = np.stack([np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC)) for a in images])
    x = images.astype(np.float32) / np.float32(255.0)
    if c == 1:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = x[..., None]
    mean = np.array(input_spec.mean or (0.0,) * c, np.float32)
    std = np.array(input_spec.std or (1.0,) * c, np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def reference_labels(photos: PhotoSet, reference: str) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """The reference model's top-1 class of each variant, its class names, and its top-1 softmax
    probability per variant (the confidence ``min_confidence`` filters on); cached on disk.

    The model runs at its own input size and mean/std (the variants are resized to it), in batches under
    ``torch.inference_mode``. The cache key is the spec, the images' hash and the model's fingerprint.

    Raises:
        ConfigError: the reference is not a torch model taking (3, H, W) images.
    """
    import torch

    from ..models import load_model

    model = load_model(reference)
    if model.module is None:
        raise ConfigError(f"reference must be a torch model (a name, module:factory or checkpoint), got "
                          f"{reference!r}; an ONNX file cannot give reference labels")
    if tuple(model.input.shape)[:1] != (3,) or len(model.input.shape) != 3:
        raise ConfigError(f"reference must take (3, H, W) images, {reference!r} takes {tuple(model.input.shape)}; "
                          "give an image classifier")
    key = hashlib.sha256(json.dumps({"spec": photos.spec, "images": photos.digest(), "model": model.fingerprint,
                                     "input": model.input.to_dict()}, sort_keys=True).encode()).hexdigest()
    path = cache_dir("photos") / f"reference-{key[:32]}.json"
    cached = _read_cache(path)
    if cached is None:
        module = model.module.eval()
        labels, confidence, classes = [], [], 0
        with torch.inference_mode():
            for start in range(0, len(photos.images), _BATCH):
                x = to_model_input(photos.images[start:start + _BATCH], model.input)
                logits = module(torch.from_numpy(x))
                classes = int(logits.shape[1])
                labels += logits.argmax(1).tolist()
                confidence += [round(float(p), 6) for p in logits.float().softmax(1).max(1).values]
        cached = {"spec": photos.spec, "reference": reference, "fingerprint": model.fingerprint,
                  "num_classes": classes, "labels": labels, "confidence": confidence}
        try:
            atomic_write_json(path, cached, indent=None)
        except ArtifactError:
            pass  # a read-only cache costs a rerun, not the result
    names = model.meta.get("class_names") or getattr(model.module, "class_names", None)
    names = tuple(names) if names else tuple(str(i) for i in range(cached["num_classes"]))
    return np.array(cached["labels"], np.int64), names, np.array(cached["confidence"], np.float64)


def _read_cache(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
        ok = isinstance(doc.get("labels"), list) and isinstance(doc.get("num_classes"), int) \
            and len(doc.get("confidence", ())) == len(doc["labels"])
        return doc if ok else None
    except (OSError, ValueError, AttributeError):
        return None  # absent or damaged: recompute


def _labelled(spec: DataSpec, size: int | None = None) -> tuple[PhotoSet, np.ndarray, tuple[str, ...]]:
    o = _options(spec, size)
    photos = build_photos(spec, size)
    if o["labels"] == "reference":
        y, names, confidence = reference_labels(photos, o["reference"])
        if o["min_confidence"]:
            keep = confidence >= o["min_confidence"]
            if not keep.any():
                raise InputError(f"no variant of {photos.spec} has a reference confidence of at least "
                                 f"{o['min_confidence']}; lower min_confidence")
            photos, y = photos.subset(keep), y[keep]
    else:
        y, names = photos.groups.copy(), photos.names
    return photos, y, names


def load_photos(spec: DataSpec, progress: bool = False) -> ArrayDataset:
    """The ``photos:`` loader: an :class:`ArrayDataset` (uint8 images, read as [-1, 1]) with labels
    ``{"label", "group", "photo", "edit"}`` per variant.

    Raises:
        ConfigError: an option out of range; InputError: no photographs installed.
    """
    photos, y, names = _labelled(spec)
    labels = [{"label": int(t), "group": int(g), "photo": photos.names[g], "edit": e}
              for t, g, e in zip(y, photos.groups, photos.edits)]
    return ArrayDataset(photos.images, y, names, labels, str(spec))


def photo_arrays(spec: str | DataSpec, input_spec: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model-ready ``(x, y, groups)`` of a photos spec: x float32 ``(N, C, H, W)`` normalised with
    ``input_spec``'s mean/std at its H, W; y int64 (the spec's labels); groups int64 (the source photo).

    Without ``size=`` in the spec the variants are made at the model's own side (when H == W), so variant 0
    is exactly the model's eval crop. ``input_spec`` None gives 3 x size x size in [-1, 1].

    Raises:
        ConfigError: a malformed spec or option; InputError: an input that is not an image.

    Example:
        >>> from effstack.models.efficientnet_lite import preprocess_spec
        >>> x, y, g = photo_arrays("photos:sklearn?n=2", preprocess_spec("efficientnet_lite0"))  # doctest: +SKIP
        >>> x.shape, y.tolist(), g.tolist()                                                      # doctest: +SKIP
        ((4, 3, 224, 224), [0, 0, 1, 1], [0, 0, 1, 1])
    """
    from ..models.spec import InputSpec

    spec = _photo_spec(spec)
    shape = tuple(input_spec.shape) if input_spec is not None else ()
    side = shape[1] if len(shape) == 3 and shape[1] == shape[2] else None
    photos, y, _ = _labelled(spec, side)
    if input_spec is None:
        size = photos.images.shape[1]
        input_spec = InputSpec((3, size, size), mean=(0.5,) * 3, std=(0.5,) * 3)
    return to_model_input(photos.images, input_spec), y, photos.groups.copy()


def write_photo_folder(spec: str | DataSpec, out_dir: str | os.PathLike[str]) -> Path:
    """Write the variants as ``out_dir/<photo>/<variant:03d>.png`` plus ``groups.json`` (file id -> group),
    for ``effstack index build MODEL --images out_dir``. The folder is built aside and swapped in whole.

    Raises:
        ConfigError: ``out_dir`` holds other files (it is replaced, so only an earlier photo folder may be).
        ArtifactError: the folder cannot be written.

    Example:
        >>> write_photo_folder("photos:sklearn?n=2&size=32", "/tmp/photos")   # doctest: +SKIP
        PosixPath('/tmp/photos')
    """
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "groups.json").is_file())):
        raise ConfigError(f"out_dir must be a new or empty folder (or one written here before), got {str(out)!r} "
                          "with other files; choose another folder")
    photos = build_photos(spec)
    groups = {}
    try:
        with atomic_dir(out) as tmp:
            for image, group, v in zip(photos.images, photos.groups, photos.variants):
                name = photos.names[group]
                (tmp / name).mkdir(exist_ok=True)
                Image.fromarray(image).save(tmp / name / f"{v:03d}.png")
                groups[f"{name}/{v:03d}.png"] = int(group)
            (tmp / "groups.json").write_text(json.dumps(groups, indent=1) + "\n")
    except OSError as exc:
        raise ArtifactError(f"cannot write photo folder {str(out)!r}: {exc.strerror or exc}; check the directory") \
            from None
    return out
