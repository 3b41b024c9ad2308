"""Text models behind the protocol: ``BYTES`` texts in, token ids to the batcher, embeddings out.

A text model (a sentence embedder, :mod:`effstack.text.encoder`) is served with one input, ``text``: datatype
``BYTES``, shape ``[n]`` (or ``[n, 1]``, the Triton convention), each element a UTF-8 string (a JSON string, or
in the binary extension a 4-byte little-endian length and the bytes). The server tokenises with the model's own
``tokenizer.json`` (:class:`~effstack.text.tokenize.TextTokenizer`, the Rust ``tokenizers``; no ``transformers``
in the serving path), queues the request's ``(n, L)`` token ids with ``L`` its longest text, and answers
``embedding``: FP32 ``[n, D]``, one L2-normalised row per text, the same vectors the PyTorch module gives.

Texts longer than the model's ``max_length`` tokens are truncated silently, as sentence-transformers does (its
``max_seq_length``): a long document is embedded by its start rather than refused, which is what a search
index fed arbitrary documents wants. Each cut text is counted (``effstack_texts_truncated_total``), so the
truncation is visible. A text that is not UTF-8 is refused (400).

Batching groups requests by length (:attr:`~effstack.serve.batcher.BatchingPolicy.length_buckets`): by default
the powers of two from 16 up to ``max_length`` (16, 32, 64, 128, 256 for all-MiniLM-L6-v2), ``"off"`` for
one FIFO queue padded to the batch's longest text, or a list of edges. A batch is padded to its longest
text, not to its bucket's edge: the engines take any length on the dynamic sequence axis (ONNX Runtime, and
OpenVINO's model compiled with a dynamic shape: on all-MiniLM-L6-v2 at batch 8 here, the first run at a new
length took 0-15 ms more than the next ones at 66-95 ms each, within the noise of a loaded 2-core machine;
nothing is recompiled), so fixed shapes would buy nothing and cost padding.

>>> default_buckets(256), default_buckets(32), default_buckets(12)
((16, 32, 64, 128, 256), (16, 32), (12,))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError
from .errors import ProtocolError

__all__ = ["Encoded", "MIN_BUCKET", "TEXT_INPUT", "TEXT_OUTPUT", "TextFrontEnd", "default_buckets",
           "resolve_buckets", "text_info"]

TEXT_INPUT = "text"
TEXT_OUTPUT = "embedding"
MIN_BUCKET = 16  # texts shorter than this share the first bucket: padding 3 tokens to 16 costs next to nothing
OFF_LOOP_CHARS = 64 * 1024  # requests with more text than this are tokenised on a worker thread


def default_buckets(max_length: int) -> tuple[int, ...]:
    """Powers of two from :data:`MIN_BUCKET` below ``max_length``, then ``max_length`` itself."""
    edges, e = [], MIN_BUCKET
    while e < max_length:
        edges.append(e)
        e *= 2
    return (*edges, int(max_length))


def resolve_buckets(setting: Any, max_length: int) -> tuple[int, ...]:
    """The length-bucket edges for a ``length_buckets`` setting: ``"auto"`` (:func:`default_buckets`), ``"off"``
    (none: one FIFO queue), or a list of token counts (edges past ``max_length`` are dropped; ``max_length``
    closes the list).

    Raises:
        ConfigError: anything else.

    Example:
        >>> resolve_buckets([8, 64, 512], 256), resolve_buckets("off", 256)
        ((8, 64, 256), ())
    """
    if setting in (None, "auto"):
        return default_buckets(max_length)
    if setting == "off":
        return ()
    try:
        edges = sorted({int(e) for e in setting})
    except (TypeError, ValueError):
        edges = []
    if not edges or edges[0] < 1:
        raise ConfigError(f"length buckets must be 'auto', 'off' or a list of token counts >= 1, got {setting!r}")
    edges = [e for e in edges if e < max_length]
    return (*edges, int(max_length))


def text_info(model: Any, config_text: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What serving needs to tokenise for ``model``: ``{"folder", "pad_id", "max_length"}``, from the model
    (``meta["text"]``: a text model loaded by effstack) or from the serving config's ``text`` (a bundle's ONNX
    file, whose tokenizer lies beside it). None for other models.

    Raises:
        ConfigError: a ``text`` setting without its keys.
    """
    info = dict(getattr(model, "meta", {}).get("text") or {})
    if config_text:
        missing = [k for k in ("tokenizer", "max_length") if k not in config_text]
        if missing:
            raise ConfigError(f"the serving config's 'text' needs {', '.join(missing)} (the folder holding "
                              "tokenizer.json, the longest input in tokens)")
        info.update(folder=str(config_text["tokenizer"]), max_length=int(config_text["max_length"]),
                    pad_id=int(config_text.get("pad_id", info.get("pad_id", 0))))
    return info or None


@dataclass(frozen=True)
class Encoded:
    """One request's texts as token ids: ``ids`` ``(n, length)`` padded to its longest text."""

    ids: np.ndarray
    length: int  # its longest text, in tokens (the request's width; its length bucket)
    tokens: int  # real tokens, all texts together
    truncated: int  # texts cut at max_length


class TextFrontEnd:
    """The tokenizer of one served text model, turning a parsed ``BYTES`` input into token ids.

    Raises:
        ArtifactError: no readable ``tokenizer.json`` in ``folder``.
        MissingDependencyError: ``tokenizers`` is missing.
    """

    def __init__(self, folder: str | Path, max_length: int, pad_id: int = 0):
        from ..text.tokenize import TextTokenizer

        if not (Path(folder) / "tokenizer.json").is_file():
            raise ArtifactError(f"the text model's tokenizer is missing: no tokenizer.json in {str(folder)!r}")
        self.tokenizer = TextTokenizer(folder, max_length, pad_id)
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> TextFrontEnd:
        return cls(info["folder"], int(info["max_length"]), int(info.get("pad_id", 0)))

    @staticmethod
    def texts(x: np.ndarray) -> list[str]:
        """The UTF-8 texts of a parsed ``BYTES`` input (shape ``[n]`` or ``[n, 1]``).

        Raises:
            ProtocolError: an element that is not valid UTF-8.
        """
        out = []
        for i, v in enumerate(x.reshape(-1)):
            try:
                out.append(v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v))
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"text {i} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                                    "send UTF-8 strings") from None
        return out

    def chars(self, x: np.ndarray) -> int:
        """About how much text a request carries (bytes), to decide where to tokenise it."""
        return sum(len(v) for v in x.reshape(-1))

    def encode(self, x: np.ndarray) -> Encoded:
        """Tokenise a parsed ``BYTES`` input: ids padded to its longest text, truncated at ``max_length``.

        Raises:
            ProtocolError: a text that is not UTF-8, or no texts.
        """
        texts = self.texts(x)
        if not texts:
            raise ProtocolError("the request has no texts; send at least one string")
        # the Rust tokenizer itself: TextTokenizer.ids drops the overflow that tells a text was truncated
        encodings = self.tokenizer._tok.encode_batch(texts)
        rows = [e.ids for e in encodings]
        lengths = [len(r) for r in rows]
        width = max(1, max(lengths))  # a tokenizer without special tokens gives nothing for "": one pad column
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        truncated = sum(1 for e in encodings if e.overflowing)
        return Encoded(ids, width, int(sum(lengths)), truncated)


def warm_widths(buckets: Sequence[int], max_length: int) -> int:
    """The width every batch size is warmed up at: the first bucket's edge (or 16 tokens, at most max_length)."""
    return min(int(buckets[0]) if buckets else MIN_BUCKET, int(max_length))
