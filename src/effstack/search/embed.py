"""Image embeddings from a CNN layer, computed in batches through an effstack engine session.

The default layer is the pooled features before the classifier: the model with its last ``nn.Linear``
replaced by ``nn.Identity`` (a ResNet's 2048 pooled features). ``layer="NAME"`` takes any node torchvision's
feature extractor names instead (spatial maps are averaged over their positions); ``layer="output"`` uses
the model's output as it is (a model that already is an embedder).

A ladder bundle (``effstack ladder --bundle DIR``) is loaded with its artifact and its engine, precision and
threads; an ONNX artifact is cut at the input of its final ``Gemm``/``MatMul`` for the pooled features (when
no such layer can be cut, its output is embedded and :attr:`Embedder.note` says so).

An image file becomes the model's input through an :class:`ImageView`: a centre crop of the part of the
image that fits the model's aspect, resized to its input size. A model may declare its own view (an
``image_view`` dict attribute: EfficientNet-Lite's is TF's eval crop, ``size / (size + 32)`` of the shorter
side, bicubic); others take the whole shorter side, bilinear. The index records the view, so its queries are
decoded as its images were.

>>> emb = load_embedder("effstack.testing:tiny_cnn", engine="torch")      # doctest: +SKIP
>>> emb.embed(np.zeros((2, 3, 32, 32), np.float32)).shape                  # doctest: +SKIP
(2, 32)
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError, suggest
from ..models.spec import InputSpec, ModelSpec
from .vectors import normalize

if TYPE_CHECKING:
    from .sources import Calibration

__all__ = ["IMAGE_SUFFIXES", "Embedder", "ImageView", "decode_image", "feature_module", "list_images", "load_embedder",
           "prepare_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def feature_module(module: Any, layer: str | None = None) -> tuple[Any, str]:
    """``(module that outputs the features, the layer's name)``.

    Raises:
        ConfigError: ``layer`` is not a node of the model (close names are suggested).
    """
    from torch import nn

    if layer == "output":
        return module, "output"
    if layer is None:
        linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            return module, "output"  # no classifier: the model is an embedder already
        clone = copy.deepcopy(module)
        clone.set_submodule(linears[-1], nn.Identity())
        return clone.eval(), f"{linears[-1]}:input"
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    names = get_graph_node_names(module)[1]
    if layer not in names:
        raise ConfigError(f"layer must be a node of the model, got {layer!r}; its nodes include "
                          f"{', '.join(names[-6:])}." + suggest(layer, names))
    return _Pooled(create_feature_extractor(copy.deepcopy(module), return_nodes={layer: "features"})).eval(), layer


def _pooled_cls() -> type:
    from torch import nn

    class Pooled(nn.Module):
        """A feature extractor's output averaged over spatial positions: (N, C, H, W) -> (N, C)."""

        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            y = self.inner(x)["features"]
            return y.flatten(2).mean(-1) if y.dim() > 2 else y

    return Pooled


def _Pooled(inner: Any) -> Any:
    return _pooled_cls()(inner)


_RESAMPLE = ("bilinear", "bicubic")


@dataclass(frozen=True)
class ImageView:
    """How an image becomes the model's input: the centred region of the model's aspect that fits the image,
    ``crop`` of it kept (1.0: all of it; EfficientNet-Lite's 224 / 256), resized with ``resample``.

    Raises:
        ConfigError: ``crop`` outside (0, 1] or an unknown ``resample``.
    """

    crop: float = 1.0
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if isinstance(self.crop, bool) or not isinstance(self.crop, (int, float)) or not 0 < self.crop <= 1:
            raise ConfigError(f"the view's crop must be a share of the image in (0, 1], got {self.crop!r}; "
                              "e.g. 0.875")
        object.__setattr__(self, "crop", float(self.crop))
        if self.resample not in _RESAMPLE:
            raise ConfigError(f"the view's resample must be one of {', '.join(_RESAMPLE)}, got {self.resample!r}")

    @property
    def is_default(self) -> bool:
        return self == ImageView()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ImageView:
        """The view a manifest records (None or {}: the default one)."""
        d = d or {}
        return cls(**{key: d[key] for key in ("crop", "resample") if key in d})

    @classmethod
    def of(cls, module: Any) -> ImageView:
        """The view ``module`` declares in an ``image_view`` dict attribute, else the default one."""
        declared = getattr(module, "image_view", None)
        return cls.from_dict(declared) if isinstance(declared, dict) else cls()


def prepare_image(img: Any, spec: InputSpec, view: ImageView | None = None) -> np.ndarray:
    """One PIL image as the model's input ``(C, H, W)`` float32: ``view``'s centre crop resized to the input
    size, scaled to [0, 1] and normalised with the spec's mean and std.

    The crop box is rounded to whole pixels before the resize (as TF's eval crop and
    :func:`effstack.models.efficientnet_lite.preprocess` do), so both give the same pixels.

    Raises:
        InputError: the model's input is not a 1- or 3-channel image ``(C, H, W)``.
    """
    from PIL import Image

    if len(spec.shape) != 3:
        raise InputError(f"the model's input must be an image (C, H, W), got shape {spec.shape}")
    c, h, w = spec.shape
    if c not in (1, 3):
        raise InputError(f"the model's input must have 1 or 3 channels to take images, got {c}")
    view = view or ImageView()
    img = img.convert("L" if c == 1 else "RGB")
    scale = max(h / img.height, w / img.width)  # the model's aspect, as large as fits in the image
    rw, rh = view.crop * w / scale, view.crop * h / scale
    left, top = (img.width - rw) / 2, (img.height - rh) / 2
    box = (round(left), round(top), round(left + rw), round(top + rh))
    resample = Image.Resampling.BICUBIC if view.resample == "bicubic" else Image.Resampling.BILINEAR
    arr = np.asarray(img.crop(box).resize((w, h), resample), dtype=np.float32) / np.float32(255.0)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if spec.mean is not None and spec.std is not None:
        mean = np.asarray(spec.mean, np.float32)[: c, None, None]
        std = np.asarray(spec.std, np.float32)[: c, None, None]
        arr = (arr - mean) / std
    return np.ascontiguousarray(arr, dtype=np.float32)


def decode_image(source: str | os.PathLike[str] | bytes, spec: InputSpec, view: ImageView | None = None
                 ) -> np.ndarray:
    """One image file (or its encoded bytes) as the model's input ``(C, H, W)`` float32, through ``view``
    (default: the whole shorter side, bilinear); see :func:`prepare_image`.

    Raises:
        InputError: the file or bytes are not an image Pillow can read, or the model's input is not an image.

    Example:
        >>> decode_image("cat.jpg", InputSpec((3, 224, 224)), ImageView(0.875, "bicubic")).shape  # doctest: +SKIP
        (3, 224, 224)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(spec.shape) != 3:
        raise InputError(f"the model's input must be an image (C, H, W), got shape {spec.shape}")
    what = "the uploaded image" if isinstance(source, (bytes, bytearray)) else repr(str(source))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as img:
            return prepare_image(ImageOps.exif_transpose(img), spec, view)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{what} cannot be read as an image ({' '.join(str(exc).split())[:120]}); "
                         "give a JPEG, PNG or another format Pillow reads") from None


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted; hidden files skipped).

    Raises:
        InputError: ``folder`` is not a folder.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"--images must be a folder of images, got {str(root)!r}; check the path")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


class Embedder:
    """A model that turns images into L2-normalised embeddings through one engine session.

    Build with :func:`load_embedder`. ``fingerprint`` identifies the weights, the layer and a view other than
    the default one (not the engine or precision: an INT8 session of the same model fills the same index).
    ``calibration`` records the images an INT8 session was calibrated on (None: not INT8, or arrays given).
    """

    def __init__(self, model: Any, session: Any, layer: str, source: dict[str, Any], batch: int = 32,
                 note: str = "", view: ImageView | None = None, calibration: dict[str, Any] | None = None):
        self.model = model
        self.session = session
        self.layer = layer
        self.source = source
        self.batch = batch
        self.note = note  # a line for the user: how the layer was chosen when the asked one could not be cut
        self.view = view or ImageView()
        self.calibration = calibration
        self.input: InputSpec = model.input
        # a default view leaves the fingerprint as it was before views existed (older indexes still open)
        seen = "" if self.view.is_default else f"|{self.view.crop!r}|{self.view.resample}"
        self.fingerprint = hashlib.sha256(f"{model.fingerprint}|{layer}{seen}".encode()).hexdigest()[:16]
        self.dim = int(self.embed(model.input.example(1)).shape[1])

    def describe(self) -> dict[str, Any]:
        """What an index's manifest records about the model (enough to load it again)."""
        return {"fingerprint": self.fingerprint, "name": self.model.name, "layer": self.layer, **self.source,
                "engine": self.session.engine, "precision": self.session.precision,
                **({"view": self.view.to_dict()} if not self.view.is_default else {}),
                **({"calibration": self.calibration} if self.calibration else {}),
                **({"note": self.note} if self.note else {})}

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embeddings ``(N, dim)`` of a preprocessed batch ``(N, C, H, W)``, run in chunks of ``batch``."""
        x = self.input.validate(np.asarray(x, dtype=np.float32))
        outs = []
        for start in range(0, len(x), self.batch):
            y = np.asarray(self.session.run(np.ascontiguousarray(x[start : start + self.batch])), np.float32)
            outs.append(y.reshape(len(y), y.shape[1], -1).mean(-1) if y.ndim > 2 else y.reshape(len(y), -1))
        return normalize(np.concatenate(outs))

    def embed_images(self, sources: Sequence[str | os.PathLike[str] | bytes]) -> np.ndarray:
        """Decode and embed images (paths or encoded bytes). Raises :class:`InputError` for an unreadable one."""
        return self.embed(np.stack([decode_image(s, self.input, self.view) for s in sources]))

    def embed_paths(self, paths: Sequence[Path], on_error: Callable[[Path, Exception], None] | None = None
                    ) -> Iterator[tuple[list[Path], np.ndarray]]:
        """Yield ``(paths, embeddings)`` batch by batch; unreadable images go to ``on_error`` (else raise)."""
        for chunk in _chunks(paths, self.batch):
            good, arrays = [], []
            for p in chunk:
                try:
                    arrays.append(decode_image(p, self.input, self.view))
                    good.append(p)
                except InputError as exc:
                    if on_error is None:
                        raise
                    on_error(p, exc)
            if good:
                yield good, self.embed(np.stack(arrays))

    def close(self) -> None:
        self.session.close()


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    d = spec.to_dict()
    for key in ("source", "weights"):  # absolute paths: the index may be used from another folder
        if d.get(key) and Path(d[key]).expanduser().exists():
            d[key] = str(Path(d[key]).expanduser().resolve())
    return d


def load_embedder(model: Any, layer: str | None = None, engine: str = "auto", precision: str | None = None,
                  threads: int | None = None, batch: int = 32, input: InputSpec | None = None,
                  calibration: Sequence[np.ndarray] | Calibration | None = None,
                  view: ImageView | None = None, knobs: dict[str, Any] | None = None) -> Embedder:
    """Load ``model`` (a spec string, :class:`ModelSpec`, loaded model or bundle folder) as an :class:`Embedder`.

    Args:
        layer: the layer whose output is the embedding (None: pooled features before the classifier).
        engine: an effstack engine name; ``auto`` picks the bundle's engine, else openvino, else onnxruntime,
            else torch.
        precision: the session's precision (fp32, int8, ...; None: the bundle's, else fp32).
        threads: compute threads (None: the bundle's, else all cores).
        batch: images per engine call.
        calibration: for an INT8 session, a :class:`~.sources.Calibration` naming images (decoded through the
            view, and recorded in :meth:`Embedder.describe` so a reload calibrates alike), or preprocessed
            sample batches; None leaves it to the engine, which draws synthetic inputs (noise: give images).
        view: how image files become input (None: the model's own :class:`ImageView`, else the default).
        knobs: the engine's settings for the session (e.g. OpenVINO's ``keep_float`` for int8), recorded in
            :meth:`Embedder.describe`.

    Raises:
        ConfigError: an unknown layer, or a named layer asked of an ONNX model.
        InputError: calibration images that cannot be found or read.
        UnknownModelError, ArtifactError, MissingDependencyError, PrecisionError, EngineError: from loading
            (ArtifactError: a bundle that is damaged or not a bundle).

    Example:
        >>> emb = load_embedder("efficientnet_lite0", precision="int8",
        ...                     calibration=Calibration("photos:all?n=4&split=train"))   # doctest: +SKIP
        >>> emb.describe()["calibration"]                                                  # doctest: +SKIP
        {'images': 'photos:all?n=4&seed=0&size=224&split=train', 'samples': 32}
    """
    from ..engines import SessionOptions, get_engine
    from ..models import load_model
    from ..models.loader import LoadedModel, fingerprint_module
    from ..engines import auto_engine

    bundle = _bundle_path(model)
    if bundle is not None:
        return _load_bundle(bundle, layer, engine, precision, threads, batch, calibration, view, knobs)
    loaded = model if isinstance(model, LoadedModel) else load_model(ModelSpec.coerce(model), input=input)
    note = ""
    if loaded.module is None:
        feat, layer_name, note = _onnx_features(loaded, layer)
    else:
        module, layer_name, note = _torch_features(loaded, layer)
        feat = replace(loaded, module=module, fingerprint=fingerprint_module(module, loaded.input),
                       name=f"{loaded.name}-embed")
    view = view or ImageView.of(loaded.module)
    precision = precision or "fp32"
    batches, record = _calibration(calibration, precision, loaded.input, view)
    session = get_engine(auto_engine(engine)).load(
        feat, SessionOptions(precision=precision, threads=threads, batch=batch, calibration=batches,
                             knobs=dict(knobs or {})))
    source = {"spec": _spec_dict(loaded.spec), "input": loaded.input.to_dict(),
              **({"knobs": dict(knobs)} if knobs else {})}
    try:
        return Embedder(feat, session, layer_name, source, batch, note, view, record)
    except BaseException:
        session.close()
        raise


def _calibration(calibration: Sequence[np.ndarray] | Calibration | None, precision: str, input: InputSpec,
                 view: ImageView) -> tuple[Sequence[np.ndarray] | None, dict[str, Any] | None]:
    """``(batches for the engine, the record for the manifest)``: images named by a :class:`Calibration` are
    decoded only for an INT8 session (no other precision calibrates)."""
    from .sources import Calibration

    if not isinstance(calibration, Calibration):
        return calibration, None
    if precision != "int8":
        return None, None
    batches, used = calibration.resolve(input, view)
    return batches, used.to_dict()


def _torch_features(loaded: Any, layer: str | None) -> tuple[Any, str, str]:
    """``(module, layer name, note)``: :func:`feature_module`, or for a TorchScript module (no submodule can
    be swapped or traced in it) its output, with a note when it ends in a classifier.

    Raises:
        ConfigError: an unknown layer, or a named layer asked of a TorchScript module.
    """
    import torch

    if not isinstance(loaded.module, torch.jit.ScriptModule):
        return (*feature_module(loaded.module, layer), "")
    if layer not in (None, "output"):
        raise ConfigError(f"layer {layer!r} cannot be taken from the TorchScript model {loaded.name!r}; pass the "
                          "PyTorch model (a factory or state dict) instead")
    linear = layer is None and any(getattr(m, "original_name", "") == "Linear" for m in loaded.module.modules())
    note = (f"the pooled features cannot be cut from the TorchScript model {loaded.name!r}: its output is "
            "embedded") if linear else ""
    return loaded.module, "output", note


def _bundle_path(model: Any) -> Path | None:
    """The folder when ``model`` names a folder (a ladder bundle; :func:`read_bundle` refuses any other), else None."""
    source = model if isinstance(model, (str, os.PathLike)) else getattr(model, "source", None)
    if source is None or not isinstance(model, (str, os.PathLike, ModelSpec)):
        return None
    path = Path(source).expanduser()
    return path.resolve() if path.is_dir() else None


def _load_bundle(folder: Path, layer: str | None, engine: str, precision: str | None, threads: int | None,
                 batch: int, calibration: Sequence[np.ndarray] | Calibration | None,
                 view: ImageView | None = None, knobs: dict[str, Any] | None = None) -> Embedder:
    """An embedder from a bundle's artifact, run with the bundle's engine, precision and threads unless given.

    Its fingerprint comes from the bundle's model fingerprint and the layer (so an INT8 bundle of a model
    fills the same index as its fp32 bundle, and any other model is refused).
    """
    from ..ladder.bundle import read_bundle
    from ..models import load_model

    manifest, serving = read_bundle(folder)
    if serving.model is None:
        raise ArtifactError(f"the bundle {str(folder)!r} names no model file in serving.json; write it again")
    inp = InputSpec.from_dict(manifest["input"]) if isinstance(manifest.get("input"), dict) else None
    loaded = load_model(serving.model, input=inp)
    model_fp = manifest.get("fingerprint") or loaded.fingerprint
    emb = load_embedder(loaded, layer, serving.engine if engine == "auto" else engine,
                        precision or serving.precision, threads or serving.threads, batch, calibration=calibration,
                        view=view, knobs=knobs)
    seen = "" if emb.view.is_default else f"|{emb.view.crop!r}|{emb.view.resample}"
    emb.fingerprint = hashlib.sha256(f"bundle|{model_fp}|{emb.layer}{seen}".encode()).hexdigest()[:16]
    emb.source = {"bundle": str(folder), "bundle_model": manifest.get("model"), "bundle_fingerprint": model_fp,
                  "input": emb.source["input"], **({"knobs": knobs} if knobs else {})}
    return emb


_CLASSIFIER_TAIL = {"Softmax", "LogSoftmax", "Identity", "Flatten", "Reshape", "Squeeze", "Add",
                    "QuantizeLinear", "DequantizeLinear", "Cast"}


def _onnx_features(loaded: Any, layer: str | None) -> tuple[Any, str, str]:
    """``(model, layer name, note)`` for an ONNX model: its pooled features (the input of the final Gemm or
    MatMul, cut into a new file in the cache) when ``layer`` is None, else its output.

    Raises:
        ConfigError: a named layer (only None or ``output`` can be taken from an ONNX file).
    """
    if layer not in (None, "output"):
        raise ConfigError(f"layer {layer!r} cannot be taken from an ONNX model; export the model to "
                          "end at that layer, or pass a PyTorch model")
    if layer == "output":
        return loaded, "output", ""
    try:
        cut = _cut_onnx_features(loaded)
    except Exception as exc:  # an unusual graph: embed the output rather than fail
        cut, why = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:100]}"
    else:
        why = "its graph does not end in a Gemm or MatMul classifier"
    if cut is None:
        return loaded, "output", (f"no classifier layer can be cut from the ONNX model {loaded.name!r} ({why}): "
                                  "its output is embedded")
    path, node_name = cut
    from ..models import load_model

    feat = load_model(ModelSpec(str(path), input=loaded.input), input=loaded.input)
    return replace(feat, name=f"{loaded.name}-embed"), f"{node_name}:input", ""


def _cut_onnx_features(loaded: Any) -> tuple[Path, str] | None:
    """Write the ONNX graph ending at the input of its final Gemm/MatMul; ``(file, that node's name)`` or None
    (an INT8 QDQ build keeps the float model's node names, so both name the same layer)."""
    import onnx

    from .._files import atomic_file, cache_dir

    proto = onnx.load(str(loaded.onnx_path))
    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {t.name for t in graph.initializer}
    if len(graph.output) != 1:
        return None
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in _CLASSIFIER_TAIL:
        data = [i for i in node.input if i and i not in inits and i in producer]
        node = producer.get(data[0]) if data else None
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        return None
    tensor = node.input[0]
    if tensor in inits or not tensor:
        return None
    digest = hashlib.sha256(tensor.encode()).hexdigest()[:8]
    out = cache_dir("search") / f"{loaded.fingerprint}-features-{digest}.onnx"
    if not out.is_file():
        names = [i.name for i in graph.input if i.name not in inits]
        with atomic_file(out) as tmp:
            onnx.utils.extract_model(str(loaded.onnx_path), str(tmp), names, [tensor])
    return out, node.name or node.op_type


def embedder_from_manifest(model: dict[str, Any], engine: str = "auto", precision: str | None = None,
                           threads: int | None = None, batch: int = 32,
                           calibration: Calibration | None = None) -> Embedder:
    """The embedder an index's manifest describes (its model spec, input, layer and view).

    An INT8 session calibrates on the images the manifest records (as the build did, so it quantizes alike),
    else on ``calibration`` (e.g. :func:`~.sources.index_sample` of the index's own images).

    Raises:
        ArtifactError: the manifest names no loadable model, or the model loaded now differs from the one
            that built the index (its fingerprint changed: the weights file was replaced).
        InputError: the recorded calibration images are gone.
    """
    from .sources import Calibration

    if isinstance(model.get("calibration"), dict):
        calibration = Calibration.from_dict(model["calibration"])
    view = ImageView.from_dict(model.get("view"))  # absent: built before views, or with the default one
    # knobs belong to one engine and precision (an int8 one refuses an fp32 session): kept for the same ones only
    same = _same_engine(engine, model.get("engine")) and (precision is None or precision == model.get("precision"))
    knobs = model.get("knobs") if same else None
    bundle = model.get("bundle")
    if bundle:
        if not Path(str(bundle)).is_dir():
            raise ArtifactError(f"the bundle {bundle!r} that built this index is gone; put it back, or rebuild "
                                "the index")
        emb = load_embedder(str(bundle), model.get("layer") if model.get("layer") == "output" else None, engine,
                            precision, threads, batch, calibration=calibration, view=view, knobs=knobs)
        _check_fingerprint(emb, model, f"the bundle {bundle!r}")
        return emb
    spec = model.get("spec")
    if not isinstance(spec, dict):
        raise ArtifactError("the index's manifest records no model spec; pass the model with --model")
    layer = model.get("layer")
    emb = load_embedder(ModelSpec.from_dict(spec), None if str(layer).endswith(":input") else layer, engine,
                        precision or model.get("precision", "fp32"), threads, batch,
                        InputSpec.from_dict(model["input"]) if model.get("input") else None, calibration, view, knobs)
    _check_fingerprint(emb, model, f"the model {spec.get('source')!r}")
    return emb


def _same_engine(asked: str, recorded: Any) -> bool:
    from ..engines import canonical
    from ..engines import auto_engine

    return recorded is not None and canonical(auto_engine(asked)) == recorded


def _check_fingerprint(emb: Embedder, model: dict[str, Any], what: str) -> None:
    if emb.fingerprint != model.get("fingerprint"):
        emb.close()
        raise ArtifactError(f"{what} loaded now has fingerprint {emb.fingerprint}, but the index was built with "
                            f"{model.get('fingerprint')}: its model changed; put the original model back, or "
                            "rebuild the index")
