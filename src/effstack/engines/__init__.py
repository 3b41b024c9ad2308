"""Engines behind one protocol, listed in a registry that imports none of them.

>>> from effstack.engines import list_engines
>>> "onnxruntime" in list_engines()
True
"""

from __future__ import annotations

from ..errors import EngineUnavailableError, MissingDependencyError, UnknownEngineError
from ..registry import Registry
from .base import PRECISIONS, Engine, Session, SessionOptions, summarize_precision

ENGINES: Registry[Engine] = Registry("engine", UnknownEngineError)
ENGINES.register("torch", "effstack.engines.torch_eager:TorchEagerEngine", ("torch",), "PyTorch eager")
ENGINES.register(
    "torch_compile", "effstack.engines.torch_compile:TorchCompileEngine", ("torch",), "torch.compile (inductor)"
)
ENGINES.register("torch_cuda", "effstack.engines.torch_cuda:TorchCudaEngine", ("torch",), "PyTorch on an NVIDIA GPU")
ENGINES.register(
    "onnxruntime", "effstack.engines.onnxruntime:OnnxRuntimeEngine", ("onnxruntime", "onnx"), "ONNX Runtime (CPU)"
)
ENGINES.register("openvino", "effstack.engines.openvino:OpenVinoEngine", ("openvino",), "OpenVINO (CPU)")
ENGINES.register("tensorrt", "effstack.engines.tensorrt:TensorRtEngine", ("tensorrt",), "TensorRT (NVIDIA GPU)")
ENGINES.register("null", "effstack.engines.null:NullEngine", (), "no compute: measures harness overhead")

ALIASES = {"eager": "torch", "pytorch": "torch", "compile": "torch_compile", "ort": "onnxruntime",
           "ov": "openvino", "trt": "tensorrt", "cuda": "torch_cuda"}

# the pip extra that brings each engine's packages
_EXTRA = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "gpu", "torch": "all", "torch_compile": "all",
          "torch_cuda": "all"}


def canonical(name: str) -> str:
    name = name.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    ENGINES.entry(name)  # raises UnknownEngineError with suggestions
    return name


def list_engines(available_only: bool = False) -> list[str]:
    """Engine names; with ``available_only``, those whose packages are installed."""
    return [n for n in ENGINES.names() if not available_only or ENGINES.is_available(n)]


def auto_engine(asked: str = "auto") -> str:
    """``asked``, unless it is ``"auto"``: then the engine that means on a CPU, the first installed of OpenVINO,
    ONNX Runtime and PyTorch (in the order they usually run a CNN fastest here; PyTorch is always installed)."""
    if asked != "auto":
        return asked
    for name in ("openvino", "onnxruntime", "torch"):
        if ENGINES.is_available(name):
            return name
    return "torch"


def get_engine(name: str) -> Engine:
    """Instantiate an engine by name (or alias).

    Raises:
        UnknownEngineError: no such engine (suggests close names).
        MissingDependencyError: its package is not installed (names the pip extra).
        EngineUnavailableError: installed but cannot run here (e.g. TensorRT without a GPU).
    """
    name = canonical(name)
    missing = ENGINES.missing(name)
    if missing:
        raise MissingDependencyError(missing[0], _EXTRA.get(name, "all"), f"the {name} engine")
    engine = ENGINES.create(name)
    reason = getattr(engine, "unavailable_reason", lambda: None)()
    if reason:
        raise EngineUnavailableError(f"engine {name!r} cannot run here: {reason}")
    return engine


__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Engine",
    "Session",
    "SessionOptions",
    "auto_engine",
    "canonical",
    "get_engine",
    "list_engines",
    "summarize_precision",
]
