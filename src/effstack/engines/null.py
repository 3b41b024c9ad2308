"""The null engine: returns a preallocated output and computes nothing.

Its throughput is the harness's own ceiling; the difference between a real engine measured through
effstack and the same engine used directly is what effstack costs. Tests also use it as a stand-in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Engine, Session, SessionOptions


class NullSession(Session):
    def __init__(self, engine: str, model: Any, options: SessionOptions, out_features: int):
        super().__init__(engine, model, options)
        self._out = np.zeros((max(options.batch, 1), out_features), dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n > self._out.shape[0]:
            self._out = np.zeros((n, self._out.shape[1]), dtype=np.float32)
        return self._out[:n]

    def executed_precision(self) -> dict[str, int]:
        return {"none": 1}


class NullEngine(Engine):
    name = "null"
    precisions = ("fp32", "bf16", "fp16", "int8")

    def load(self, model: Any, options: SessionOptions) -> Session:
        self.check(options)
        out = int(options.knobs.get("out_features", 0)) or _out_features(model)
        return NullSession(self.name, model, options, out)


def _out_features(model: Any) -> int:
    """The model's output width (from one eager call), or 1 when it cannot be known cheaply."""
    if model.module is None:
        return 1
    import torch

    with torch.inference_mode():
        y = model.module(torch.from_numpy(model.input.example(1)))
    y = y[0] if isinstance(y, (tuple, list)) else y
    return int(np.prod(y.shape[1:])) or 1
