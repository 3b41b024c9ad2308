"""torch.compile with the inductor backend and weight freezing (fp32, bf16).

Freezing folds the (frozen, inference-only) weights into the graph so inductor can pre-pack them
for oneDNN; on this CPU it took ResNet-50 from 35 to 56 images/s. Compiling is slow the first time
(15-19 s for ResNet-50 cold), so sessions warm up once per batch size at load.
"""

from __future__ import annotations

from typing import Any

from ..errors import EngineError
from .base import Session, SessionOptions
from .torch_eager import TorchEagerEngine, TorchSession


class TorchCompileEngine(TorchEagerEngine):
    name = "torch_compile"

    def load(self, model: Any, options: SessionOptions) -> Session:
        import torch
        import torch._inductor.config as inductor_config

        self.check(options)
        if model.module is None:
            raise EngineError(f"engine 'torch_compile' needs a PyTorch model, but {model.name!r} came as ONNX")
        knobs = options.knobs
        inductor_config.freezing = bool(knobs.get("freezing", True))
        compiled = torch.compile(
            model.module,
            mode=knobs.get("mode", None),
            dynamic=bool(knobs.get("dynamic", False)),
            fullgraph=False,
        )
        session = TorchSession(self.name, model, options, module=compiled)
        try:  # compile now, for the batch the session will see, so timing never includes compilation
            session.run(model.input.example(options.batch))
        except Exception as exc:
            raise EngineError(f"torch.compile failed for {model.name!r}: {' '.join(str(exc).split())[:200]}") from None
        return session
