"""PyTorch eager: the baseline every speed-up is measured against (fp32, bf16 through autocast).

The precision each compute layer ran in is observed, not assumed: forward hooks on the Conv/Linear layers
record their output dtype during the session's first run (under autocast, what the kernel computed in), then
are removed, so later runs pay nothing. Before that first run every layer reads :data:`NOT_OBSERVED`.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any

import numpy as np

from ..errors import EngineError, PrecisionError
from ..hardware import has_native_bf16
from .base import NOT_OBSERVED, Engine, Session, SessionOptions, count_precisions

_COMPUTE = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "MultiheadAttention")
_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8", "uint8": "int8",
                "float64": "fp64"}


def precision_of(dtype: Any) -> str:
    """effstack's name for a torch dtype: ``torch.bfloat16`` -> ``"bf16"`` (unknown ones keep torch's name)."""
    name = str(dtype).replace("torch.", "")
    return _DTYPE_NAMES.get(name, name)


def compute_layers(module: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of the compute layers (convolutions, linear, attention) of an ``nn.Module``."""
    if not hasattr(module, "named_modules"):
        return []
    return [(name or type(m).__name__, m) for name, m in module.named_modules() if type(m).__name__ in _COMPUTE]


class TorchSession(Session):
    """Runs an ``nn.Module`` under ``torch.inference_mode`` (and bf16 autocast when asked).

    ``observed``: a mapping that someone else fills with layer name -> precision (torch.compile's backend,
    from the graph it compiles); without it the session observes its own first run with forward hooks.
    """

    def __init__(self, engine: str, model: Any, options: SessionOptions, module: Any = None,
                 observed: dict[str, str] | None = None):
        import torch

        super().__init__(engine, model, options)
        layers = compute_layers(model.module)
        self._layer_names = [name for name, _ in layers]
        self._layers: dict[str, str] = {} if observed is None else observed
        self._observer: int | None = None  # the thread whose run the hooks are recording
        self._hooks = [m.register_forward_hook(self._recorder(name)) for name, m in layers] if observed is None else []
        torch.set_num_threads(options.n_threads)  # process-wide in torch; recorded in settings()
        self._torch = torch
        self._channels_last = bool(options.knobs.get("channels_last", False)) and len(model.input.shape) == 3
        module = model.module if module is None else module
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self._autocast = options.precision == "bf16"

    def _context(self):
        if self._autocast:
            return self._torch.autocast("cpu", dtype=self._torch.bfloat16)
        return nullcontext()

    def _recorder(self, name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if self._observer == threading.get_ident():  # this session's run (the module may be shared)
                t = output[0] if isinstance(output, (tuple, list)) and output else output
                if hasattr(t, "dtype"):
                    self._layers[name] = precision_of(t.dtype)

        return hook

    def _stop_observing(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        t = torch.from_numpy(x)
        if self._channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        observing = bool(self._hooks)
        if observing:
            self._observer = threading.get_ident()
        try:
            with torch.inference_mode(), self._context():
                y = self.module(t)
        finally:
            if observing:
                self._observer = None
        if observing and self._layers:
            self._stop_observing()  # observed once: later runs pay nothing
        if isinstance(y, (tuple, list)):
            y = y[0]
        if y.dtype != torch.float32:
            y = y.float()
        return y.numpy()

    def layer_precisions(self) -> dict[str, str]:
        """Each compute layer -> the dtype its output had in an observed run (:data:`NOT_OBSERVED` before one,
        or for a layer the run never reached)."""
        layers = dict(self._layers)
        return {**{name: layers.pop(name, NOT_OBSERVED) for name in self._layer_names}, **layers}

    def executed_precision(self) -> dict[str, int]:
        return count_precisions(self.layer_precisions()) or {NOT_OBSERVED: 1}

    def settings(self) -> dict[str, Any]:
        return {
            "threads": self._torch.get_num_threads(),
            "channels_last": self._channels_last,
            **{k: v for k, v in self.options.knobs.items() if k != "channels_last"},
        }

    def close(self) -> None:
        self._stop_observing()  # the module may outlive the session (the model owns it)


class TorchEagerEngine(Engine):
    name = "torch"
    precisions = ("fp32", "bf16")  # what PyTorch offers; an instance keeps what this CPU runs natively

    def __init__(self) -> None:
        # bf16 without AVX512_BF16/AMX is emulated (ResNet-50: 0.2 images/s against 14 in fp32 on an
        # AVX2 CPU): not a configuration anyone should deploy, so sweeps skip it with the reason
        if not has_native_bf16():
            self.precisions = tuple(p for p in type(self).precisions if p != "bf16")

    def check(self, options: SessionOptions) -> None:
        if options.precision == "bf16" and "bf16" not in self.precisions:
            raise PrecisionError(
                "this CPU has no native bf16 (AVX512_BF16 or AMX): PyTorch would emulate it many times slower "
                "than fp32; ask for fp32"
            )
        super().check(options)

    def load(self, model: Any, options: SessionOptions) -> Session:
        self.check(options)
        if model.module is None:
            raise EngineError(
                f"engine 'torch' needs a PyTorch model, but {model.name!r} came as ONNX; use onnxruntime or openvino"
            )
        return TorchSession(self.name, model, options)
