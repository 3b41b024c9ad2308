"""Token-id sets for scoring, calibrating and distilling a text encoder: a corpus split, tokenised, padded.

The evaluation texts are held out of the corpus (:func:`effstack.text.corpus.split`, fixed seed) and never
calibrate or teach anything; the rest are the training split (INT8 calibration, the student's lessons).
Both are truncated and padded to one length, ``seq_len`` tokens: padding never changes an embedding, so
every engine sees one fixed shape and the ladder's speed figures are *at that length* (batch x ``seq_len``).

>>> d = text_data(load_model("all-minilm-l6-v2"), seq_len=128)    # doctest: +SKIP
>>> d.eval_ids.shape, d.train_ids.shape                          # doctest: +SKIP
((256, 128), (2704, 128))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .corpus import TextCorpus, builtin_corpus, load_texts, split
from .tokenize import TextTokenizer

__all__ = ["TextData", "text_data", "ladder_data", "unpad"]


@dataclass
class TextData:
    """Held-out evaluation ids and training ids, ``(N, seq_len)`` int64 each, and where the texts came from."""

    eval_ids: np.ndarray
    train_ids: np.ndarray
    seq_len: int
    corpus: dict[str, Any] = field(default_factory=dict)
    pad_id: int = 0

    def describe(self) -> dict[str, Any]:
        lengths = (self.eval_ids != self.pad_id).sum(1) if self.eval_ids.size else np.zeros(1)
        return {**self.corpus, "eval_texts": int(len(self.eval_ids)), "train_texts": int(len(self.train_ids)),
                "seq_len": self.seq_len, "eval_tokens_median": float(np.median(lengths)),
                "eval_truncated": int(np.sum(lengths >= self.seq_len))}


def _corpus(source: Any) -> TextCorpus:
    if source is None:
        return builtin_corpus()
    if isinstance(source, TextCorpus):
        return source
    if isinstance(source, (str, Path)):
        return load_texts(source)
    texts = tuple(source)
    if not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be strings; pass a list of str, a TextCorpus, or a .txt/.md/.jsonl path")
    return TextCorpus(texts, "given texts")


DEFAULT_SEQ_LEN = 128


def text_data(model: Any, texts: Any = None, *, eval_count: int = 256, seq_len: int | None = None,
              train_limit: int | None = None, seed: int = 0) -> TextData:
    """Tokenise ``texts`` (None: the built-in corpus; a path; a list; a TextCorpus) with ``model``'s tokenizer.

    Args:
        model: a text model loaded by effstack (``meta["text"]``) or its info dict.
        eval_count: texts held out for scoring (fewer when the corpus is small: one text is always left to
            train on).
        seq_len: every text is truncated to this many tokens and padded to it (at most the model's maximum;
            None: 128, or the model's maximum when shorter).
        train_limit: keep at most this many training texts (the first, in corpus order).

    Raises:
        InputError: too few texts, or a ``seq_len`` outside 2..the model's maximum.
    """
    info = model if isinstance(model, dict) else getattr(model, "meta", {}).get("text")
    tok = TextTokenizer.from_model(model)
    seq_len = min(DEFAULT_SEQ_LEN, tok.max_length) if seq_len is None else seq_len
    if not 2 <= int(seq_len) <= tok.max_length:
        raise InputError(f"seq_len must be between 2 and the model's maximum of {tok.max_length} tokens, got {seq_len}")
    corpus = _corpus(texts)
    if len(corpus) < 3:
        raise InputError(f"the text data holds {len(corpus)} texts; give at least 3 (2 to score, 1 to train on)")
    eval_count = min(int(eval_count), len(corpus) - 1)
    if eval_count < 2:
        raise InputError(f"eval_count must be at least 2 (neighbours need two texts), got {eval_count}")
    train, evals = split(corpus, eval_count, seed)
    cut = TextTokenizer(tok.folder, int(seq_len), tok.pad_id)
    train_texts = list(train.texts[:train_limit] if train_limit else train.texts)
    ev = cut.encode(list(evals.texts), pad_to=int(seq_len))
    tr = cut.encode(train_texts, pad_to=int(seq_len))
    return TextData(ev, tr, int(seq_len), corpus.describe(), pad_id=int(info["pad_id"]) if info else 0)


def ladder_data(model: Any, texts: Any = None, **kw: Any) -> Any:
    """:func:`text_data` as the ladder's :class:`~effstack.ladder.pipeline.LadderData` (no labels), plus the
    :class:`TextData` it came from."""
    from ..ladder.pipeline import LadderData

    d = text_data(model, texts, **kw)
    return LadderData((d.eval_ids, None), (d.train_ids, None)), d


def unpad(ids: np.ndarray, pad_id: int = 0) -> list[np.ndarray]:
    """Each row of a padded ``(N, L)`` batch without its trailing pads (a text's own ids)."""
    keep = (np.asarray(ids) != pad_id).sum(1)
    return [row[:n] for row, n in zip(np.asarray(ids), keep)]
