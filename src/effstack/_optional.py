"""Import optional packages with a one-line fix when they are missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

# package import name -> (pip extra, what it is for)
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "ONNX export"),
    "onnxruntime": ("onnx", "the ONNX Runtime engine"),
    "openvino": ("openvino", "the OpenVINO engine"),
    "nncf": ("openvino", "OpenVINO INT8 quantization"),
    "tensorrt": ("gpu", "the TensorRT engine"),
    "rich": ("all", "tables and progress bars"),
    "torch_pruning": ("shrink", "structural pruning"),
    "grpc": ("grpc", "the gRPC endpoint of effstack serve"),
    "tritonclient.grpc": ("grpc", "the gRPC protocol messages"),
}


def is_installed(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(name: str, purpose: str | None = None) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra, default_purpose = EXTRAS.get(name, ("all", name))
        raise MissingDependencyError(name, extra, purpose or default_purpose) from exc
