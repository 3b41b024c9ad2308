"""``effstack quantize MODEL --data DATA``: INT8 with an accuracy guarantee and a speed check.

DATA: an ``.npz`` file with ``x`` (N, *input shape) and optional ``y`` labels; a folder of class
sub-folders of images (``imagefolder``: resized to the model's input, normalised with its mean/std);
``photos:all?n=16`` (the real photographs the installed packages ship, edited variants at the model's
input; scored by agreement with fp32, or against a reference model with ``labels=reference``);
or ``synthetic`` (random inputs, agreement with fp32 only). Exit status: 0 accepted, 3 rejected
(accuracy or speed; nothing written), 2 a user mistake.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InputError
from .common import add_model_options, model_spec_from_args

EXIT_REJECTED = 3
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 quantization that keeps accuracy and must be faster",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    add_model_options(p)
    p.add_argument("--data", required=True, help="an .npz file (x, y), an image folder, a photos: spec "
                   "(e.g. photos:all?n=8), or 'synthetic'")
    p.add_argument("--engine", default="onnxruntime", help="onnxruntime or openvino (default onnxruntime)")
    p.add_argument("--method", default="minmax", help="calibration: minmax, entropy, percentile (default minmax)")
    p.add_argument("--samples", type=int, default=128, help="calibration samples (default 128)")
    p.add_argument("--max-drop", default="1.0", help="allowed accuracy drop: points (1.0) or relative (1%%)")
    p.add_argument("--speedup-min", type=float, default=1.1, help="INT8 must be this much faster (default 1.1)")
    p.add_argument("--time-budget", type=float, default=600.0, help="seconds for fallback attempts (default 600)")
    p.add_argument("--batch", type=int, default=8, help="batch of the speed check (default 8)")
    p.add_argument("--threads", type=int, help="compute threads (default: all cores)")
    p.add_argument("--task", default="classification", choices=["classification", "embedding"])
    p.add_argument("--no-fallback", action="store_true", help="do not keep sensitive layers in float")
    p.add_argument("--only-method", action="store_true", help="do not try the other calibration methods")
    p.add_argument("--bench-seconds", type=float, default=2.0, help="seconds per speed measurement (default 2)")
    p.add_argument("--train", help="labelled training data (.npz or image folder) for the QAT fallback")
    p.add_argument("--qat-epochs", type=int, default=3, help="QAT epochs when no post-training build passes (0: off)")
    p.add_argument("--parity", action="store_true", help="compare the INT8 model across runtimes")
    p.add_argument("--output", metavar="PATH", help="write the accepted INT8 ONNX model here")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--html", metavar="PATH", help="write the result as a self-contained HTML page")
    p.set_defaults(func=cmd_quantize)


def load_data(source: str, input_spec) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Read DATA for ``input_spec``; None for ``synthetic``.

    A ``photos:`` spec gives its variants at the model's input (see :func:`effstack.data.photos.photo_arrays`)
    without labels (scored by agreement with fp32: photo indices are not the model's classes), unless it
    asks for ``labels=reference``.

    Raises:
        InputError: a missing file, an npz without ``x``, an empty folder, unreadable images.
        ConfigError: a malformed ``photos:`` spec.
    """
    if source == "synthetic":
        return None
    if source.startswith("photos:"):
        from ..data.photos import photo_arrays
        from ..data.spec import parse_data_spec

        spec = parse_data_spec(source)
        x, y, _ = photo_arrays(spec, input_spec)
        return x, (y if spec.options.get("labels") == "reference" else None)
    if source.startswith(("synth:", "sklearn:")):
        return _spec_arrays(source, input_spec)
    path = Path(source.removeprefix("imagefolder:")).expanduser()
    if not path.exists():
        raise InputError(f"data {source!r} does not exist; give an .npz file, an image folder or 'synthetic'")
    if path.is_file():
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in ("x", "y") if k in z}
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {str(path)!r} as an .npz file: {exc}") from None
        if "x" not in arrays:
            raise InputError(f"{str(path)!r} has no array named 'x'; save it with np.savez(path, x=..., y=...)")
        return arrays["x"].astype(np.float32), arrays.get("y")
    return _image_folder(path, input_spec)


def _spec_arrays(source: str, input_spec) -> tuple[np.ndarray, np.ndarray]:
    """A ``synth:``/``sklearn:`` data set at the model's input: resized to its H, W (bilinear, antialiased)
    and normalised with its mean/std (the data sets come in [-1, 1])."""
    import torch
    import torch.nn.functional as F

    from ..data import as_arrays, resolve_data

    shape = tuple(input_spec.shape)
    if len(shape) != 3:
        raise InputError(f"image data needs a (C, H, W) model input, the model takes {shape}")
    x, y = as_arrays(resolve_data(source))
    c, h, w = shape
    if x.shape[1] != c:
        raise InputError(f"{source!r} has {x.shape[1]} channel(s), the model takes {c}; add channels={c}")
    v = torch.from_numpy(x) * 0.5 + 0.5  # [0, 1] pixels
    if tuple(v.shape[2:]) != (h, w):
        v = F.interpolate(v, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(input_spec.mean or (0.0,) * c).view(1, c, 1, 1)
    std = torch.tensor(input_spec.std or (1.0,) * c).view(1, c, 1, 1)
    return ((v - mean) / std).numpy().astype(np.float32), y


def _image_folder(path: Path, spec) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir())
             if f.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"image folder {str(path)!r} is empty: put images in one sub-folder per class")
    if len(spec.shape) != 3:
        raise InputError(f"image data needs a (C, H, W) model input, the model takes {spec.shape}")
    c, h, w = spec.shape
    mean = np.array(spec.mean or (0.0,) * c, np.float32)[:, None, None]
    std = np.array(spec.std or (1.0,) * c, np.float32)[:, None, None]
    xs = []
    for f, _ in files:
        try:
            img = Image.open(f).convert("RGB" if c == 3 else "L").resize((w, h))
        except OSError as exc:
            raise InputError(f"cannot read image {str(f)!r}: {exc}") from None
        a = np.asarray(img, np.float32) / 255.0
        a = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
        xs.append((a - mean) / std)
    return np.stack(xs).astype(np.float32), np.array([i for _, i in files], np.int64)


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..compress import QuantizeConfig, quantize
    from ..models import load_model

    config = QuantizeConfig(
        engine=args.engine, method=args.method, samples=args.samples, max_drop=args.max_drop,
        speedup_min=args.speedup_min, time_budget_s=args.time_budget, batch=args.batch, threads=args.threads,
        task=args.task, fallback=not args.no_fallback, try_methods=not args.only_method,
        synthetic=args.data == "synthetic", bench_seconds=args.bench_seconds, qat_epochs=args.qat_epochs,
    )
    model = load_model(model_spec_from_args(args))
    data = load_data(args.data, model.input)
    train = load_data(args.train, model.input) if args.train else None
    if args.train and (train is None or train[1] is None):
        raise InputError("--train needs labelled data: an .npz with x and y, or an image folder")
    result = quantize(model, config, data, train=train)
    print(result.table())
    doc = {"quantize": result.to_dict()}
    if args.parity and result.candidate_path is not None:
        from ..compress.parity import format_parity, parity

        doc["parity"] = parity(model, result.candidate_path, data[0][:256] if data else model.input.example(64))
        print(format_parity(doc["parity"]))
    if args.json:
        from .._files import atomic_write_json

        atomic_write_json(args.json, doc, indent=2, default=str)
    if args.html:  # a report, so written for a rejected model too (the model itself is not)
        from ..report import atomic_write_text
        from ..report.html import quantize_html

        atomic_write_text(args.html, quantize_html(result, parity=doc.get("parity")))
        print(f"wrote {args.html}")
    if not result.accepted:
        return EXIT_REJECTED
    if args.output:
        print(f"wrote {result.save(args.output)}")
    return 0
