"""ModelSpec -> LoadedModel: a torch module (or an ONNX file) plus its InputSpec and size."""

from __future__ import annotations

import hashlib
import math
import importlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError, UnknownModelError, suggest
from .spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec, ModelSpec

_TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript", ".jit")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass
class LoadedModel:
    """A model ready to export or run.

    module: the ``torch.nn.Module`` in eval mode, or None for a model given only as ONNX.
    onnx_path: the ONNX file when the model came as one (engines export torch modules themselves).
    macs: multiply-accumulates per sample (counted once, used for the fraction-of-peak figure).
    fingerprint: a content hash of the weights and architecture (export caches key on it).
    """

    name: str
    spec: ModelSpec
    input: InputSpec
    module: Any = None
    onnx_path: Path | None = None
    macs: int | None = None
    params: int | None = None
    fingerprint: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "onnx" if self.module is None else "torch"


def torchvision_names() -> list[str]:
    """The classification models torchvision knows (no weights are touched)."""
    from torchvision import models

    return sorted(models.list_models(module=models))


def load_model(spec: ModelSpec | str, input: InputSpec | None = None) -> LoadedModel:
    """Load a model from a spec string or :class:`ModelSpec`.

    Args:
        spec: ``"resnet50"``, ``"model.onnx"``, ``"model.ts"``, ``"ckpt.pt"`` or ``"pkg.mod:factory"``.
        input: override the inferred :class:`InputSpec` (e.g. another resolution).

    Raises:
        UnknownModelError: no such torchvision model or file (suggests close names).
        ArtifactError: the file exists but cannot be read as that kind of model.

    Example:
        >>> m = load_model("effstack.testing:tiny_cnn")
        >>> m.input.shape
        (3, 32, 32)
    """
    spec = ModelSpec.coerce(spec)
    if input is not None:
        spec = ModelSpec(**{**spec.__dict__, "input": input})
    src = spec.source
    path = Path(src).expanduser()
    if src.endswith(".onnx"):
        model = _load_onnx(spec, path)
    elif _is_text(src):
        from ..text.encoder import load_text_encoder

        return load_text_encoder(spec)
    elif ":" in src and not path.exists() and not src.startswith(("/", ".")):
        model = _load_factory(spec)
    elif path.suffix in _TORCHSCRIPT_SUFFIXES + _CHECKPOINT_SUFFIXES or path.exists():
        model = _load_torch_file(spec, path)
    elif src in _pretrained_names():
        model = _load_pretrained(spec)
    else:
        model = _load_torchvision(spec)
    if model.module is not None:
        _finish_torch(model)
    return model


def from_module(module: Any, input: InputSpec, name: str, source: str | None = None) -> LoadedModel:
    """Wrap an in-memory torch module (a pruned copy, a distilled student) as a :class:`LoadedModel`.

    The module is put in eval mode with gradients off; its size, MACs and fingerprint are counted.

    Raises:
        InputError: the module rejects an input of ``input``'s shape.

    Example:
        >>> from effstack.testing import tiny_cnn
        >>> from_module(tiny_cnn(), InputSpec((3, 32, 32)), "tiny").params > 0
        True
    """
    spec = ModelSpec(source or f"<memory>:{name}", input=input)
    model = LoadedModel(name, spec, input, module=module)
    _finish_torch(model)
    return model


def recalibrate_batchnorm(module: Any, batches: Any) -> int:
    """Re-estimate every BatchNorm's running statistics from ``batches`` (numpy arrays); returns the count.

    A model with random weights has running statistics (mean 0, variance 1) that do not match its
    activations, so its outputs collapse to nearly one class; recomputing them from real-looking inputs
    makes its outputs vary with the input again, which is what an accuracy-as-agreement check needs.
    The weights are not touched.
    """
    import torch

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch seen
    module.train()
    with torch.no_grad():
        for b in batches:
            module(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)))
    module.eval()
    for m, (momentum, _) in zip(norms, saved):
        m.momentum = momentum
    return len(norms)


# --- torch sources ------------------------------------------------------------------------------


def is_pretrained(source: str) -> bool:
    """Whether ``source`` names a model effstack loads with real trained weights (EfficientNet-Lite)."""
    return source in _pretrained_names()


def _is_text(source: str) -> bool:
    from ..text.encoder import is_text_model

    return is_text_model(source)


def _pretrained_names() -> tuple[str, ...]:
    from .efficientnet_lite import VARIANTS

    return tuple(VARIANTS)


def _load_pretrained(spec: ModelSpec) -> LoadedModel:
    """A model effstack builds itself with real trained weights from an installed package (EfficientNet-Lite).

    ``weights=FILE`` loads that state dict instead (strictly); ``num_classes`` other than 1,000 keeps the
    backbone's weights and leaves a new classifier.
    """
    from .efficientnet_lite import efficientnet_lite

    module = efficientnet_lite(spec.source, num_classes=spec.num_classes or 1000, weights=spec.weights)
    model = LoadedModel(spec.source, spec, spec.input or module.input_spec, module=module)
    if module.class_names:
        model.meta["class_names"] = list(module.class_names)
    model.meta["pretrained"] = spec.weights or "imagenet"
    return model


def _load_torchvision(spec: ModelSpec) -> LoadedModel:
    from torchvision import models

    names = torchvision_names()
    if spec.source not in names:
        raise UnknownModelError(
            f"unknown model {spec.source!r}: not a torchvision model name, a file, or module:factory."
            + suggest(spec.source, names + list(_pretrained_names()))
        )
    kwargs: dict[str, Any] = {"weights": None}
    if spec.num_classes:
        kwargs["num_classes"] = spec.num_classes
    module = models.get_model(spec.source, **kwargs)
    if spec.weights:
        _load_state_dict(module, Path(spec.weights))
    size = 299 if spec.source.startswith("inception") else 224
    default = InputSpec(shape=(3, size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return LoadedModel(spec.source, spec, spec.input or default, module=module)


def _load_factory(spec: ModelSpec) -> LoadedModel:
    module_name, _, attr = spec.source.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownModelError(
            f"cannot import model factory {spec.source!r} ({exc}); give 'package.module:function'"
        ) from None
    kwargs = {k: v for k, v in spec.options.items() if k != "trust_pickle"}
    if spec.num_classes:
        kwargs["num_classes"] = spec.num_classes
    module = factory(**kwargs)
    if spec.weights:
        _load_state_dict(module, Path(spec.weights))
    inp = spec.input or getattr(module, "input_spec", None)
    if inp is None:
        raise ConfigError(f"model {spec.source!r} has no input_spec attribute; pass input=InputSpec(...)")
    return LoadedModel(attr, spec, inp, module=module)


def _load_torch_file(spec: ModelSpec, path: Path) -> LoadedModel:
    import torch

    if not path.is_file():
        raise UnknownModelError(f"model file {str(path)!r} does not exist; check the path")
    name = path.stem
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError for a broken archive
            raise ArtifactError(f"cannot read TorchScript file {str(path)!r}: {_short(exc)}") from None
    else:
        obj = _load_checkpoint(path, trusted=bool(spec.options.get("trust_pickle")))
        if isinstance(obj, torch.nn.Module):
            module = obj
        else:
            state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else None
            arch = spec.arch or (obj.get("arch") if isinstance(obj, dict) else None)
            if not isinstance(state, dict) or not arch:
                raise ArtifactError(
                    f"{str(path)!r} holds a state dict but no architecture; pass arch='resnet50' (or --arch)"
                )
            inner = load_model(ModelSpec(arch, num_classes=spec.num_classes, input=spec.input))
            _apply_state_dict(inner.module, state, path)
            module = inner.module
            spec = ModelSpec(**{**spec.__dict__, "input": spec.input or inner.input})
    inp = spec.input or getattr(module, "input_spec", None)
    if inp is None:
        raise ConfigError(f"cannot infer the input of {str(path)!r}; pass input=InputSpec(shape=(3, 224, 224))")
    return LoadedModel(name, spec, inp, module=module)


def _is_torchscript(path: Path) -> bool:
    if path.suffix in _TORCHSCRIPT_SUFFIXES:
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torch_load(path: Path, weights_only: bool) -> Any:
    import torch

    if not path.is_file():
        raise ArtifactError(f"weights file {str(path)!r} does not exist; check the path")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        raise ArtifactError(f"cannot read {str(path)!r} as a PyTorch file: {_short(exc)}") from None


def _load_checkpoint(path: Path, trusted: bool) -> Any:
    """Read a checkpoint with ``weights_only=True``; a pickled module (code) only when the user trusts it.

    Unpickling arbitrary objects runs code from the file, so, like torch.load since 2.6, effstack refuses
    it unless asked (``ModelSpec(options={"trust_pickle": True})`` or ``--trust-pickle``).
    """
    import pickle

    import torch

    if not path.is_file():
        raise ArtifactError(f"weights file {str(path)!r} does not exist; check the path")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trusted:
            raise ArtifactError(
                f"{str(path)!r} holds pickled Python objects, not just weights; loading it runs code from the file: "
                "pass --trust-pickle if you trust it, or save a state dict and pass --arch"
            ) from None
    except Exception as exc:
        raise ArtifactError(f"cannot read {str(path)!r} as a PyTorch file: {_short(exc)}") from None
    return _torch_load(path, weights_only=False)


def _load_state_dict(module: Any, path: Path) -> None:
    obj = _torch_load(path, weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ArtifactError(f"{str(path)!r} is not a state dict (got {type(obj).__name__})")
    _apply_state_dict(module, obj, path)


def _apply_state_dict(module: Any, state: dict, path: Path) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"weights in {str(path)!r} do not fit the architecture: {_short(exc, 160)}"
        ) from None


def _finish_torch(model: LoadedModel) -> None:
    import torch

    model.module.eval()
    for p in model.module.parameters():
        p.requires_grad_(False)
    model.params = sum(p.numel() for p in model.module.parameters())
    model.fingerprint = fingerprint_module(model.module, model.input)
    try:
        model.macs = count_macs(model.module, model.input)
    except Exception:  # counting is best effort (TorchScript graphs may refuse fake tensors)
        model.macs = None
    with torch.inference_mode():
        x = torch.from_numpy(model.input.example(1))
        try:
            model.module(x)
        except Exception as exc:
            raise InputError(
                f"model {model.name!r} rejects input of shape {tuple(x.shape)}: {_short(exc)}; "
                "pass the right input shape"
            ) from None


def count_macs(module: Any, input: InputSpec) -> int:
    """Multiply-accumulates of one sample, from torch's FLOP counter (FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.from_numpy(input.example(1))
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(x)
    return counter.get_total_flops() // 2


def fingerprint_module(module: Any, input: InputSpec) -> str:
    """A content hash of the architecture text, every weight's bytes, and the input spec."""
    import torch

    h = hashlib.sha256()
    h.update(type(module).__qualname__.encode())
    h.update(str(module).encode())
    h.update(repr(input.to_dict()).encode())
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        t = tensor.detach().contiguous().cpu()
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# --- ONNX source --------------------------------------------------------------------------------


def _load_onnx(spec: ModelSpec, path: Path) -> LoadedModel:
    from .._optional import require

    if not path.is_file():
        raise UnknownModelError(f"ONNX file {str(path)!r} does not exist; check the path")
    onnx = require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ArtifactError(f"{str(path)!r} is not a valid ONNX model: {_short(exc)}") from None
    graph_inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if not graph_inputs:
        raise ArtifactError(f"{str(path)!r} has no graph input")
    first = graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in first.type.tensor_type.shape.dim]
    inp = spec.input
    if inp is None:
        if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
            raise ConfigError(f"cannot infer the input shape of {str(path)!r}; pass input=InputSpec(shape=...)")
        elem = onnx.helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
        inp = InputSpec(shape=tuple(dims[1:]), dtype=str(elem), name=first.name, layout="")
    elif inp.name != first.name:
        inp = InputSpec(**{**inp.__dict__, "name": first.name})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return LoadedModel(path.stem, spec, inp, onnx_path=path, fingerprint=digest, macs=_onnx_macs(proto, inp))


def _onnx_macs(proto: Any, inp: InputSpec) -> int | None:
    """MACs of Conv/Gemm/MatMul nodes, from shapes inferred at batch 1 (None when shapes are unknown)."""
    try:
        import onnx
        from onnx import shape_inference

        model = onnx.ModelProto()
        model.CopyFrom(proto)
        dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
        inferred = shape_inference.infer_shapes(model)
        shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        inits = {t.name: list(t.dims) for t in model.graph.initializer}
        total = 0
        for node in model.graph.node:
            if node.op_type == "Conv":
                w, out = inits.get(node.input[1]), shapes.get(node.output[0])
                if not w or not out:
                    return None
                total += int(math.prod(out)) * int(math.prod(w[1:]))
            elif node.op_type in ("Gemm", "MatMul"):
                w = inits.get(node.input[1]) or shapes.get(node.input[1])
                out = shapes.get(node.output[0])
                if not w or not out:
                    return None
                k = w[1] if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else w[0]
                total += int(math.prod(out)) * int(k)
        return total or None
    except Exception:
        return None


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
