"""Perplexity: token-weighted, deterministic, and it tells a model trained on a text from an untrained one."""

from __future__ import annotations

import math

import pytest

from effstack.errors import InputError
from effstack.generate.quality import heldout_texts, perplexity, token_stream

TEXT = ["the quick brown fox jumps over the lazy dog " * 3, "one two three four five six seven eight " * 3]


def test_training_on_the_text_lowers_its_perplexity(tiny_lm):
    from effstack.generate.tiny import tiny_llama
    from effstack.generate.train import TrainLMConfig, train_lm

    untrained = tiny_llama(seed=3, layers=1, hidden=16)
    trained = train_lm(tiny_lm, TEXT * 4, TrainLMConfig(layers=1, hidden=16, heads=2, kv_heads=1, intermediate=32,
                                                        context=16, steps=40, loss="ce", progress=False)).lm
    before = perplexity(untrained, TEXT, context=16).perplexity
    after = perplexity(trained, TEXT, context=16).perplexity
    assert after < 0.7 * before


def test_deterministic_and_token_weighted(tiny_lm):
    a = perplexity(tiny_lm, TEXT, context=16, batch_size=1)
    b = perplexity(tiny_lm, TEXT, context=16, batch_size=8)
    assert a.tokens == b.tokens and a.perplexity == pytest.approx(b.perplexity, rel=1e-5)
    n = len(token_stream(tiny_lm, TEXT))
    assert a.windows == math.ceil(n / 16) and a.tokens == n - a.windows  # each window's first token is context
    assert a.perplexity == pytest.approx(math.exp(a.nll))


def test_max_tokens_scores_a_prefix(tiny_lm):
    p = perplexity(tiny_lm, TEXT, context=8, max_tokens=17)
    assert p.windows == 2 and p.tokens == 7 + 7  # 8 + 8 + 1: a lone last token is not a window


def test_bad_input(tiny_lm):
    with pytest.raises(InputError, match="non-empty list"):
        perplexity(tiny_lm, [], context=16)
    with pytest.raises(InputError, match="non-empty list"):
        perplexity(tiny_lm, "a text, not a list", context=16)
    with pytest.raises(InputError, match="context must be"):
        perplexity(tiny_lm, TEXT, context=1)
    with pytest.raises(InputError, match="at least 2"):
        perplexity(tiny_lm, ["dog"], context=16)


def test_heldout_split_is_fixed_and_disjoint():
    train, evals = heldout_texts(8, seed=1, limit=100)
    again = heldout_texts(8, seed=1, limit=100)
    assert len(evals) == 8 and len(train) == 92 and (train, evals) == again and not set(train) & set(evals)
