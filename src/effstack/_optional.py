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
    if name.split(".")[0] in ("openvino", "nncf"):
        no_third_party_telemetry()  # before the import: importing openvino already posts an event
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra, default_purpose = EXTRAS.get(name, ("all", name))
        raise MissingDependencyError(name, extra, purpose or default_purpose) from exc


def no_third_party_telemetry() -> None:
    """Stop OpenVINO's tools (the model converter, NNCF) from sending usage telemetry; idempotent.

    ``openvino.convert_model`` counts as consent the *absence* of ``~/intel/openvino_telemetry`` and then
    forks a process per event to post it to an analytics service. On a machine without that network the
    fork, made from a process with running engine threads, hung the caller (seen in a test: a warm-up thread
    that never started), and on any machine it sends what the user never agreed to. effstack declines in its
    own process, without writing to the user's home: every sender becomes a no-op (``force_send`` events
    included). Set ``EFFSTACK_ALLOW_TELEMETRY=1`` to leave OpenVINO's own consent rules in charge.
    """
    import os

    if os.environ.get("EFFSTACK_ALLOW_TELEMETRY") == "1" or not is_installed("openvino_telemetry"):
        return
    try:
        from openvino_telemetry.utils import sender
    except Exception:  # a broken telemetry package must not break inference
        return
    sender.TelemetrySender.send = _send_nothing  # type: ignore[method-assign]


def _send_nothing(self: object, backend: object, message: object) -> None:
    return None
