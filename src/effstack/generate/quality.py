"""Perplexity of a causal LM on held-out text: token-weighted, fixed context length, deterministic.

The texts are tokenized without special tokens and joined into one stream with the model's EOS token between
them; the stream is cut into consecutive, non-overlapping windows of ``context`` tokens (the last one may be
shorter). Inside a window every token after the first is predicted from the ones before it, so a window of ``n``
tokens scores ``n - 1`` predictions. Perplexity is ``exp(sum of negative log-likelihoods / predictions)`` over all
windows (token-weighted, not an average of per-text perplexities). No sampling, no shuffling: the same texts and
model give the same figure.

:func:`heldout_texts` is the standard evaluation split: the built-in offline corpus
(:func:`effstack.text.corpus.builtin_corpus`), ``eval_count`` texts held out with a fixed seed.

>>> # ppl = perplexity(load_lm("tiny"), heldout_texts()[1], context=64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError
from .model import LanguageModel

__all__ = ["Perplexity", "perplexity", "token_stream", "heldout_texts"]


@dataclass(frozen=True)
class Perplexity:
    """Token-weighted perplexity and what it was computed over."""

    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens
    windows: int
    context: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_stream(lm: LanguageModel, texts: Sequence[str], max_tokens: int | None = None) -> list[int]:
    """The texts' token ids (no special tokens), joined with EOS; at most ``max_tokens`` ids."""
    if isinstance(texts, str) or not texts:
        raise InputError("perplexity needs a non-empty list of texts")
    eos = lm.eos_token_id
    stream: list[int] = []
    for text in texts:
        ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            continue
        if stream and eos is not None:
            stream.append(int(eos))
        stream.extend(int(t) for t in ids)
        if max_tokens is not None and len(stream) >= max_tokens:
            return stream[:max_tokens]
    return stream


def perplexity(lm: LanguageModel, texts: Sequence[str], context: int = 128, batch_size: int = 8,
               max_tokens: int | None = None) -> Perplexity:
    """Perplexity of ``lm`` on ``texts`` (see the module doc), in windows of ``context`` tokens.

    Args:
        context: tokens per window (2 .. the model's positions).
        batch_size: windows per forward pass (does not change the figure beyond float rounding).
        max_tokens: score only the first ``max_tokens`` tokens of the stream (a fixed, shorter evaluation).

    Raises:
        InputError: no texts, a bad context or batch size, or fewer than 2 tokens in all.
    """
    import torch

    if not isinstance(context, int) or not 2 <= context <= lm.max_positions:
        raise InputError(f"context must be an integer in [2, {lm.max_positions}], got {context!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    stream = token_stream(lm, texts, max_tokens)
    if len(stream) < 2:
        raise InputError(f"the texts have {len(stream)} token(s); perplexity needs at least 2")
    windows = [stream[i:i + context] for i in range(0, len(stream), context)]
    windows = [w for w in windows if len(w) >= 2]
    model = lm.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode():
            for length in sorted({len(w) for w in windows}, reverse=True):  # full windows, then the short last one
                same = [w for w in windows if len(w) == length]
                for i in range(0, len(same), batch_size):
                    ids = torch.tensor(same[i:i + batch_size], dtype=torch.long)
                    logits = model(input_ids=ids).logits[:, :-1].float()
                    target = ids[:, 1:]
                    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                            reduction="sum")
                    total += float(nll)
                    count += int(target.numel())
    finally:
        model.train(was_training)
    mean = total / count
    return Perplexity(perplexity=math.exp(mean), nll=mean, tokens=count, windows=len(windows), context=context)


def heldout_texts(eval_count: int = 64, seed: int = 0, limit: int | None = None) -> tuple[tuple[str, ...],
                                                                                        tuple[str, ...]]:
    """(train, eval) texts of the built-in offline corpus, ``eval_count`` held out with ``seed``."""
    from ..text.corpus import builtin_corpus, split

    train, evals = split(builtin_corpus(limit=limit), eval_count, seed)
    return train.texts, evals.texts
