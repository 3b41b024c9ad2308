"""INT8 weights on a causal LM: every Linear quantized, the original untouched, close logits, and the quantized
model runs in generate and in the continuous-batching engine with the same greedy tokens."""

from __future__ import annotations

import torch

from effstack.generate.quality import perplexity
from effstack.generate.quantize import quantize_lm, quantized_linears

from .conftest import greedy_alone

TEXT = ["the quick brown fox jumps over the lazy dog", "one two three four five six seven eight"]


def test_linears_quantized_original_untouched(tiny_lm):
    q = quantize_lm(tiny_lm, keep_float=())
    linears = sum(isinstance(m, torch.nn.Linear) for m in tiny_lm.model.modules())
    assert quantized_linears(q.model) == linears == 2 * 7 + 1  # 7 per layer + the LM head
    assert quantized_linears(tiny_lm.model) == 0 and q.name == "tiny-int8" and "INT8" in q.meta["weights"]
    ids = torch.tensor([tiny_lm.encode(TEXT[0])])
    with torch.no_grad():
        a, b = tiny_lm.model(ids).logits, q.model(ids).logits
    assert 0 < (a - b).abs().max() < 0.05 * a.abs().max()  # rounded, but close
    ppl, qppl = perplexity(tiny_lm, TEXT, context=16), perplexity(q, TEXT, context=16)
    assert abs(qppl.perplexity / ppl.perplexity - 1) < 0.02


def test_keep_float_leaves_the_named_linears_in_fp32(tiny_lm):
    import pytest

    from effstack.errors import ConfigError

    q = quantize_lm(tiny_lm)  # default: the MLP output projections and the LM head stay fp32
    assert quantized_linears(q.model) == 2 * 6 and q.meta["float_linears"] == 3
    assert isinstance(q.model.lm_head, torch.nn.Linear) and isinstance(q.model.model.layers[1].mlp.down_proj,
                                                                       torch.nn.Linear)
    assert quantized_linears(quantize_lm(tiny_lm, keep_float=("layers.0.",)).model) == 7 + 1
    with pytest.raises(ConfigError, match="no nn.Linear layers to quantize outside"):
        quantize_lm(tiny_lm, keep_float=("proj", "lm_head"))


def test_quantized_model_runs_in_the_engine(tiny_lm, engine_factory):
    q = quantize_lm(tiny_lm)
    prompt = tiny_lm.encode(TEXT[1])
    ref = greedy_alone(q, prompt, 10)
    engine = engine_factory(lm=q)
    s = engine.submit(prompt, 10, ignore_eos=True, admit=False).wait(60)
    assert s.status == "finished" and s.tokens == ref
