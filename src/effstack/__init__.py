"""effstack: make deep-learning inference many times cheaper and faster, and prove it with measurements.

The public API is small and imported lazily, so ``import effstack`` stays light (no torch, no
onnxruntime, no openvino until a function that needs them is called)::

    import effstack
    model = effstack.load_model("resnet50")
    session = effstack.get_engine("openvino").load(model, effstack.SessionOptions(precision="int8"))
    rows = effstack.bench("resnet50", engines=["onnxruntime", "openvino"], precisions=["fp32", "int8"])
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "load_model": "effstack.models",
    "ModelSpec": "effstack.models",
    "InputSpec": "effstack.models",
    "LoadedModel": "effstack.models",
    "get_engine": "effstack.engines",
    "list_engines": "effstack.engines",
    "SessionOptions": "effstack.engines",
    "Session": "effstack.engines",
    "Engine": "effstack.engines",
    "export_onnx": "effstack.export",
    "export_openvino": "effstack.export",
    "bench": "effstack.measure",
    "ResultRow": "effstack.measure",
    "machine_info": "effstack.hardware",
    "peak_rates": "effstack.measure.peak",
    "EffstackError": "effstack.errors",
    "UserError": "effstack.errors",
    "MissingDependencyError": "effstack.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
