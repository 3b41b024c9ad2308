"""Torch -> ONNX, with a dynamic batch axis, a numerical check, and a content-addressed cache.

Exporter choice (torch 2.14): the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) still
works and is used first. On CNNs it gives the cleaner and faster graph: BatchNorm folded into Conv,
``GlobalAveragePool`` + ``Flatten`` + ``Gemm`` for the head, the opset asked for (17), and it takes
~0.1 s on a tiny CNN and ~1 s on ResNet-18. The dynamo exporter (``dynamo=True``) only implements
opset >= 18 (its down-conversion to 17 fails on ``ReduceMean``), turns pooling into
``ReduceMean`` + ``Reshape``, takes ~4 s even on a tiny CNN, and cannot export ``torch.jit`` modules.
It remains the fallback for modules the TorchScript tracer cannot handle (then the file holds opset 18
although its name says the requested opset).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import is_installed, require
from ..errors import ArtifactError, ConfigError, one_line
from .._files import atomic_file, cache_dir as _cache_folder
from ._cache import safe_name

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["export_onnx", "onnx_path_for", "check_onnx", "MAX_REL_ERROR"]

MAX_REL_ERROR = 1e-4  # max |onnx - torch| / max |torch| accepted after export
OUTPUT_NAME = "output"
_CHECK_SEED = 12345  # the check batch differs from the trace batch, so a baked-in batch value shows


def onnx_path_for(model: "LoadedModel", opset: int = 17, cache_dir: Path | str | None = None) -> Path:
    """Where :func:`export_onnx` puts (or finds) the ONNX file of ``model``."""
    return _cache_folder("onnx", cache_dir) / f"{safe_name(model.name)}-{model.fingerprint}-op{opset}.onnx"


def export_onnx(model: "LoadedModel", opset: int = 17, cache_dir: Path | str | None = None) -> Path:
    """Export a torch model to ONNX (batch axis dynamic), checked against eager PyTorch, cached.

    The file is ``<cache_dir>/<name>-<fingerprint>-op<opset>.onnx`` (default folder
    ``$EFFSTACK_CACHE/onnx`` or ``~/.cache/effstack/onnx``); when it exists it is returned without
    exporting again. The graph input is named ``model.input.name``, the output ``"output"``.

    Args:
        model: a :class:`~effstack.models.LoadedModel`; one that came as ONNX is returned as is.
        opset: ONNX opset (9..23; the TorchScript exporter goes up to 20).
        cache_dir: folder for the file instead of the default.

    Raises:
        MissingDependencyError: ``onnx`` is not installed.
        ConfigError: the opset is out of range.
        ArtifactError: the export failed, or its output differs from PyTorch by more than 1e-4
            (relative to the largest output magnitude).

    Example:
        >>> from effstack.models import load_model
        >>> path = export_onnx(load_model("effstack.testing:tiny_cnn"))
        >>> path.suffix
        '.onnx'
    """
    if model.onnx_path is not None:
        return Path(model.onnx_path)
    onnx = require("onnx", "ONNX export")
    if model.module is None:
        raise ArtifactError(f"model {model.name!r} has neither a torch module nor an ONNX file; load it with load_model")
    if not 9 <= int(opset) <= 23:  # 9..20: TorchScript exporter; 18..23: dynamo exporter
        raise ConfigError(f"opset must be between 9 and 23, got {opset}; 17 suits every engine here")
    if not model.fingerprint:  # LoadedModel built by hand: hash it now, so the cache stays content-addressed
        from ..models.loader import fingerprint_module

        model.fingerprint = fingerprint_module(model.module, model.input)
    final = onnx_path_for(model, opset, cache_dir)
    if final.is_file():
        return final
    with atomic_file(final) as tmp:
        _torch_export(model, tmp, int(opset))
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as exc:
            raise ArtifactError(f"the ONNX export of {model.name!r} is invalid: {one_line(exc, 200)}") from None
        check_onnx(model, tmp)
    return final


def _torch_export(model: "LoadedModel", path: Path, opset: int) -> None:
    """Run the TorchScript exporter, falling back to the dynamo exporter; write ``path``."""
    import torch

    inp = model.input
    # trace at batch 2: a batch of 1 lets the tracer specialise size-1 dimensions
    x = torch.from_numpy(inp.example(2, seed=0))
    base: dict[str, Any] = {"input_names": [inp.name], "output_names": [OUTPUT_NAME], "opset_version": opset}
    supports_dynamo_flag = "dynamo" in inspect.signature(torch.onnx.export).parameters
    first_error: BaseException | None = None
    try:
        axes = {0: "batch", **{1 + a: f"axis{1 + a}" for a in inp.dynamic}}
        kwargs = dict(base, do_constant_folding=True, dynamic_axes={inp.name: axes, OUTPUT_NAME: {0: "batch"}})
        if supports_dynamo_flag:
            kwargs["dynamo"] = False
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter warns that it is deprecated
            torch.onnx.export(model.module, (x,), str(path), **kwargs)
        return
    except Exception as exc:
        first_error = exc
    if not supports_dynamo_flag or not is_installed("onnxscript"):
        raise ArtifactError(f"cannot export {model.name!r} to ONNX: {one_line(first_error, 200)}") from None
    try:
        kwargs = dict(base, opset_version=max(opset, 18), dynamo=True, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096),
                                       **{1 + a: torch.export.Dim(f"axis{1 + a}", min=2, max=inp.shape[a])
                                          for a in inp.dynamic}},))
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model.module, (x,), **kwargs)
            program.save(str(path))
        finally:
            quiet.setLevel(level)
    except Exception as exc:
        raise ArtifactError(
            f"cannot export {model.name!r} to ONNX (TorchScript exporter: {one_line(first_error, 120)}; "
            f"dynamo exporter: {one_line(exc, 120)})"
        ) from None


def _first_tensor(out: Any) -> Any:
    """The first tensor of a model output (tensor, tuple/list, or dict)."""
    if isinstance(out, dict):
        out = next(iter(out.values()))
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _shorter(inp: Any, x: np.ndarray) -> np.ndarray | None:
    """``x`` cut to about half its size on each dynamic axis (None when the spec has none)."""
    if not inp.dynamic:
        return None
    cut = tuple(slice(None) if a - 1 not in inp.dynamic else slice(0, max(2, x.shape[a] // 2))
                for a in range(x.ndim))
    return np.ascontiguousarray(x[cut])


def check_onnx(model: "LoadedModel", path: Path, max_rel_error: float = MAX_REL_ERROR) -> float | None:
    """Compare the ONNX file with eager PyTorch on a deterministic batch of 2; return the relative error.

    Skipped (returns None) when onnxruntime is not installed.

    Raises:
        ArtifactError: the error exceeds ``max_rel_error``, the file cannot run, or it is not batch-dynamic.
    """
    if not is_installed("onnxruntime"):
        return None
    import onnxruntime as ort
    import torch

    x = model.input.example(2, seed=_CHECK_SEED)
    with torch.inference_mode():
        ref = _first_tensor(model.module(torch.from_numpy(x))).float().numpy()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {model.input.name: x})[0]
        one = sess.run(None, {model.input.name: x[:1]})[0]
        short = _shorter(model.input, x[:1])
        if short is not None:  # a dynamic axis must run at another size and give what PyTorch gives there
            with torch.inference_mode():
                want = _first_tensor(model.module(torch.from_numpy(short))).float().numpy()
            have = sess.run(None, {model.input.name: short})[0]
            if have.shape != want.shape or not np.allclose(have, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max())):
                raise ArtifactError(f"the ONNX export of {model.name!r} fixed the size of a dynamic axis "
                                    f"(input {short.shape} gives {have.shape}, PyTorch {want.shape})")
    except Exception as exc:
        raise ArtifactError(f"the ONNX export of {model.name!r} does not run: {one_line(exc, 200)}") from None
    if got.shape != ref.shape or one.shape[:1] != (1,):
        raise ArtifactError(
            f"the ONNX export of {model.name!r} gives shape {got.shape} (batch 1: {one.shape}), "
            f"PyTorch {ref.shape}; the model must keep the batch axis first and not fix its size"
        )
    scale = max(float(np.max(np.abs(ref))), float(np.finfo(np.float32).tiny))
    err = float(np.max(np.abs(got.astype(np.float64) - ref))) / scale
    if not err <= max_rel_error:  # written so that NaN fails too
        raise ArtifactError(
            f"the ONNX export of {model.name!r} differs from PyTorch by {err:.2e} (relative to max |output|), "
            f"more than {max_rel_error:.0e}; the exporter mistranslated an op, report it with the model"
        )
    return err
