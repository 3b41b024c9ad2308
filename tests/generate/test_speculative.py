"""Speculative decoding (transformers' assisted generation) on tiny models: greedy outputs identical to the plain
target's, acceptance counted, a draft with another tokenizer refused."""

from __future__ import annotations

import pytest

from effstack.errors import ConfigError, InputError
from effstack.generate.speculative import assisted, check_pair, compare, greedy
from effstack.generate.tiny import tiny_llama

PROMPTS = ["the quick brown fox", "a cat and a dog", "one two three"]


@pytest.fixture(scope="module")
def draft():
    return tiny_llama(seed=7, layers=1, hidden=16)


def test_outputs_identical_to_plain_greedy(tiny_lm, draft):
    for text in PROMPTS:
        p = tiny_lm.encode(text)
        out, stats = assisted(tiny_lm, draft, p, 12)
        assert out == greedy(tiny_lm, p, 12)
        assert stats.new_tokens == len(out) and stats.iterations >= 1 and 0 <= stats.accepted <= stats.proposed


def test_acceptance_is_counted(tiny_lm):
    # the target as its own draft: every proposed token is accepted; 4 per iteration + 1 of the target's
    p = tiny_lm.encode(PROMPTS[0])
    out, stats = assisted(tiny_lm, tiny_lm, p, 12, num_assistant_tokens=4, confidence_threshold=0.0)
    assert out == greedy(tiny_lm, p, 12)
    assert stats.acceptance_rate == 1.0 and stats.lengths[0] == 4 and stats.iterations == 3  # 5 + 5 + 2
    assert stats.proposed == 4 + 4 + 1  # the last iteration is capped by max_new_tokens


def test_compare_reports_identity_and_speed(tiny_lm, draft):
    prompts = [tiny_lm.encode(t) for t in PROMPTS]
    c = compare(tiny_lm, draft, prompts, 8)
    assert c["identical"] and c["identical_count"] == 3 and c["first_mismatch"] is None
    assert c["speedup"] == pytest.approx(c["spec_tokens_per_s"] / c["plain_tokens_per_s"])
    # a wrong reference is caught: the outputs are compared, not assumed
    bad = compare(tiny_lm, draft, prompts[:1], 8, reference=[[0] * 8], reference_s=[1.0])
    assert not bad["identical"] and bad["first_mismatch"] == {"prompt": 0, "position": 0}


def test_a_draft_with_another_vocabulary_is_refused(tiny_lm):
    from transformers import LlamaConfig, LlamaForCausalLM

    from effstack.generate.model import LanguageModel

    other = LanguageModel("other", LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=16, intermediate_size=32,
                                                                num_hidden_layers=1, num_attention_heads=2,
                                                                num_key_value_heads=1)), tiny_lm.tokenizer)
    with pytest.raises(ConfigError, match="vocabulary"):
        check_pair(tiny_lm, other)
    with pytest.raises(InputError, match="no tokens"):
        assisted(tiny_lm, tiny_lm, [], 4)
    with pytest.raises(InputError, match="num_assistant_tokens"):
        assisted(tiny_lm, tiny_lm, [5, 6], 4, num_assistant_tokens=0)
