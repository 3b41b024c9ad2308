"""Texts -> padded token-id batches, with the model's own tokenizer (``tokenizer.json``, Hugging Face ``tokenizers``).

Only the fast Rust tokenizer is used (no ``transformers`` import), so the server tokenises without loading
the model code. Batches are padded to their longest text, not to the model's maximum: attention costs grow
with the padded length, so a batch of short texts padded to 256 would spend most of its time on pads.

>>> tok = TextTokenizer.from_model(load_model("all-minilm-l6-v2"))   # doctest: +SKIP
>>> tok.encode(["a short text", "another"]).shape                    # doctest: +SKIP
(2, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError, MissingDependencyError

__all__ = ["TextTokenizer"]


class TextTokenizer:
    """The tokenizer in ``folder/tokenizer.json``, truncating at ``max_length`` and padding with ``pad_id``."""

    def __init__(self, folder: str | Path, max_length: int, pad_id: int = 0):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("tokenizers", "text", "tokenising text") from exc
        path = Path(folder) / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception subclass for a bad file
            raise ArtifactError(f"cannot read the tokenizer {str(path)!r}: {str(exc).splitlines()[0][:160]}") from None
        if max_length < 2:
            raise ArtifactError(f"max_length must be at least 2, got {max_length}")
        self.folder = str(folder)
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        self._tok.no_padding()
        self._tok.enable_truncation(self.max_length)

    @classmethod
    def from_model(cls, model: Any) -> "TextTokenizer":
        """The tokenizer of a text model loaded by effstack (``model.meta["text"]``), or of its info dict."""
        info = model if isinstance(model, dict) else getattr(model, "meta", {}).get("text")
        if not info:
            raise ArtifactError("this model has no tokenizer: it is not a text model loaded by effstack")
        return cls(info["folder"], int(info["max_length"]), int(info["pad_id"]))

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids (with the model's special tokens), truncated, not padded."""
        texts = _check(texts)
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's length in tokens after truncation."""
        return np.array([len(i) for i in self.ids(texts)], dtype=np.int64)

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> np.ndarray:
        """``(N, L)`` int64 ids, padded to the longest text (or to ``pad_to``, at least that long)."""
        return pad(self.ids(texts), self.pad_id, pad_to)


def pad(rows: Sequence[Sequence[int]], pad_id: int = 0, pad_to: int | None = None) -> np.ndarray:
    """Token-id rows -> one ``(N, L)`` int64 array padded with ``pad_id`` to the longest row (or ``pad_to``)."""
    if not rows:
        raise InputError("no texts to pad; send at least one")
    width = max(max(len(r) for r in rows), int(pad_to or 0))
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _check(texts: Sequence[str]) -> Sequence[str]:
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, got one string; wrap it in a list")
    if len(texts) == 0:
        raise InputError("no texts given; send at least one")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is {type(t).__name__}, not a string; send UTF-8 text")
    return texts
