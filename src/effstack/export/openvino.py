"""ONNX -> OpenVINO IR (``.xml`` + ``.bin``), cached by content like the ONNX export.

The IR is converted from the (checked) ONNX file with ``openvino.convert_model`` and saved with
``compress_to_fp16=False``: weights stay fp32 on disk, so an "fp32" run really reads fp32 weights and
the precision is chosen only at compile time (``INFERENCE_PRECISION_HINT``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._optional import require
from ..errors import ArtifactError, one_line
from .._files import atomic_files, cache_dir as _cache_folder
from ._cache import safe_name
from .onnx import export_onnx

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["export_openvino", "save_ir"]


def export_openvino(model: "LoadedModel", cache_dir: Path | str | None = None) -> Path:
    """Convert ``model`` to OpenVINO IR and return the ``.xml`` path (the ``.bin`` lies next to it).

    The file is ``<cache_dir>/<name>-<fingerprint>.xml`` (default folder ``$EFFSTACK_CACHE/openvino`` or
    ``~/.cache/effstack/openvino``); when it exists it is returned without converting again.

    Args:
        model: a :class:`~effstack.models.LoadedModel` (torch, exported to ONNX first; or ONNX).
        cache_dir: folder for the IR instead of the default.

    Raises:
        MissingDependencyError: ``openvino`` (or ``onnx`` for a torch model) is not installed.
        ArtifactError: the ONNX file cannot be converted.

    Example:
        >>> from effstack.models import load_model
        >>> export_openvino(load_model("effstack.testing:tiny_cnn")).suffix
        '.xml'
    """
    ov = require("openvino", "OpenVINO export")
    onnx_path = export_onnx(model)
    if not model.fingerprint:
        raise ArtifactError(f"model {model.name!r} has no fingerprint; load it with effstack.models.load_model")
    xml = _cache_folder("openvino", cache_dir) / f"{safe_name(model.name)}-{model.fingerprint}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    try:
        ov_model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        fix = "check it with onnx.checker.check_model" if model.onnx_path else "delete it so it is exported again"
        raise ArtifactError(f"OpenVINO cannot convert {str(onnx_path)!r}: {one_line(exc, 200)}; {fix}") from None
    save_ir(ov_model, xml)
    return xml


def save_ir(ov_model: object, xml: Path) -> None:
    """Save an ``openvino.Model`` as ``xml`` + ``.bin`` atomically, weights uncompressed."""
    import openvino as ov

    with atomic_files([xml.with_suffix(".bin"), xml]) as tmp:
        ov.save_model(ov_model, str(tmp / xml.name), compress_to_fp16=False)
