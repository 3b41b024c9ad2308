"""PyTorch eager: the baseline every speed-up is measured against (fp32, bf16 through autocast)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np

from ..errors import EngineError, PrecisionError
from ..hardware import has_native_bf16
from .base import Engine, Session, SessionOptions

_COMPUTE = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "MultiheadAttention")


class TorchSession(Session):
    """Runs an ``nn.Module`` under ``torch.inference_mode`` (and bf16 autocast when asked)."""

    def __init__(self, engine: str, model: Any, options: SessionOptions, module: Any = None):
        import torch

        super().__init__(engine, model, options)
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

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        t = torch.from_numpy(x)
        if self._channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._context():
            y = self.module(t)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if y.dtype != torch.float32:
            y = y.float()
        return y.numpy()

    def executed_precision(self) -> dict[str, int]:
        # Under CPU autocast, convolutions and linear layers run in bf16; other ops stay in fp32.
        n = sum(type(m).__name__ in _COMPUTE for m in self.module.modules()) if hasattr(self.module, "modules") else 0
        return {self.precision: n or 1}

    def settings(self) -> dict[str, Any]:
        return {
            "threads": self._torch.get_num_threads(),
            "channels_last": self._channels_last,
            **{k: v for k, v in self.options.knobs.items() if k != "channels_last"},
        }


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
