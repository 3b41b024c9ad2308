"""How close a candidate text embedder is to its fp32 reference: cosine agreement and recall@10 of neighbours.

Two questions, on the same evaluation texts (token ids):

- **agreement**: the cosine similarity between the candidate's and the reference's embedding *of the same
  text*, averaged over the texts (``cosine_mean``) and at its worst (``cosine_min``; 1.0: identical);
- **neighbours**: for each text, how many of its 10 nearest other texts under the reference are still among
  its 10 nearest under the candidate (``recall_at_10``, points; 100: the same neighbours), i.e. whether a
  search index built with the candidate returns what the fp32 one would. This is
  :func:`effstack.evaluate.recall_at_k`, the figure the INT8 guard and the ladder score embeddings with.

A candidate is a PyTorch module or :class:`~effstack.models.LoadedModel` (run in fp32 inference mode), an
engine :class:`~effstack.engines.Session` (INT8 builds), or any ``ids -> embeddings`` callable.

>>> q = compare(int8_embeddings, fp32_embeddings)          # doctest: +SKIP
>>> q.cosine_mean, q.cosine_min, q.recall_at_10            # doctest: +SKIP
(0.9987, 0.9931, 96.4)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..evaluate.accuracy import recall_at_k

__all__ = ["TextQuality", "compare", "cosine_rows", "embed", "score_text"]


@dataclass(frozen=True)
class TextQuality:
    """A candidate against the reference on ``texts`` evaluation texts (``k`` neighbours each)."""

    cosine_mean: float
    cosine_min: float
    recall_at_10: float  # points; named for the default k (the ``k`` field says which was used)
    texts: int
    k: int = 10

    def to_dict(self) -> dict[str, Any]:
        return {key: (round(v, 6) if isinstance(v, float) else v) for key, v in asdict(self).items()}

    def holds(self, max_drop: float = 1.0, min_cosine: float | None = None) -> bool:
        """Whether recall@k lost at most ``max_drop`` points (the reference scores 100 against itself) and,
        when given, the mean cosine is at least ``min_cosine``."""
        return 100.0 - self.recall_at_10 <= max_drop + 1e-9 and (min_cosine is None or self.cosine_mean >= min_cosine)

    def __str__(self) -> str:
        return (f"cosine mean {self.cosine_mean:.4f} (min {self.cosine_min:.4f}), recall@{self.k} "
                f"{self.recall_at_10:.2f} on {self.texts} texts")


def cosine_rows(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(N,)`` cosine similarity of each row of ``x`` with the same row of ``reference`` (``(N, D)`` each).

    Raises:
        InputError: shapes differ or are empty.
    """
    a, b = np.asarray(x, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"embeddings must be two non-empty (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, np.sum(a * b, axis=1) / np.maximum(den, 1e-300), 0.0)


def compare(candidate: np.ndarray, reference: np.ndarray, k: int = 10) -> TextQuality:
    """:class:`TextQuality` of ``candidate`` embeddings against ``reference`` embeddings of the same texts.

    Raises:
        InputError: mismatched shapes, or fewer than two texts (neighbours need two).
    """
    cos = cosine_rows(candidate, reference)
    if len(cos) < 2:
        raise InputError("scoring a text embedder needs at least two evaluation texts (neighbours); give more")
    recall = recall_at_k(candidate, reference, k)
    return TextQuality(float(cos.mean()), float(cos.min()), recall, len(cos), min(k, len(cos) - 1))


def embed(model: Any, ids: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Embeddings ``(N, D)`` float32 of the token ids ``(N, L)`` under ``model``, ``chunk`` texts at a time.

    ``model``: an engine Session (anything with ``infer``), a LoadedModel or ``nn.Module`` (fp32, inference
    mode, no gradients), or a callable taking and returning numpy arrays.
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.ndim != 2 or len(ids) == 0:
        raise InputError(f"token ids must be a non-empty (N, L) batch, got shape {ids.shape}")
    if hasattr(model, "infer"):
        from ..engines.base import run_batches

        return np.asarray(run_batches(model, ids, chunk), dtype=np.float32)
    module = getattr(model, "module", None) or model
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None
    if torch is not None and isinstance(module, torch.nn.Module):
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            out = [module(torch.from_numpy(ids[i:i + chunk])).float().numpy() for i in range(0, len(ids), chunk)]
        module.train(was_training)
        return np.concatenate(out)
    return np.concatenate([np.asarray(model(ids[i:i + chunk]), np.float32) for i in range(0, len(ids), chunk)])


def score_text(candidate: Any, reference: Any, ids: np.ndarray, k: int = 10) -> TextQuality:
    """Run ``candidate`` and ``reference`` (models, sessions, or precomputed ``(N, D)`` embeddings) on the
    token ids and :func:`compare` them.

    Example:
        >>> score_text(int8_session, fp32_model, eval_ids).recall_at_10   # doctest: +SKIP
        97.3
    """
    ref = reference if isinstance(reference, np.ndarray) else embed(reference, ids)
    got = candidate if isinstance(candidate, np.ndarray) else embed(candidate, ids)
    return compare(got, ref, k)
