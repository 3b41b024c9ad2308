"""FAISS indexes over L2-normalised vectors (inner product = cosine), chosen by size, tuned to a recall target.

Kinds:

* ``flat``  exact search (``IndexFlatIP``); every collection up to :data:`FLAT_MAX` vectors.
* ``hnsw``  a graph (``IndexHNSWFlat``, M=32); ``efSearch`` is raised until recall@10 against exact search
  reaches the target. Up to :data:`HNSW_MAX` vectors.
* ``ivfpq`` inverted lists of product-quantised codes, re-ranked exactly (``IndexRefineFlat``); ``nprobe``
  is tuned the same way. For the largest collections.

A vector's FAISS label is its row in the index's vector matrix, so the matrix alone can rebuild any kind.

>>> import numpy as np
>>> v = normalize(np.random.default_rng(0).standard_normal((100, 8)).astype("float32"))
>>> ix = build("flat", v)
>>> int(search(ix, v[:1], 1)[1][0, 0])
0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, MissingDependencyError

__all__ = ["FLAT_MAX", "HNSW_MAX", "KINDS", "Tuning", "build", "choose_kind", "exact_neighbours", "faiss",
           "normalize", "search", "tune"]

KINDS = ("flat", "hnsw", "ivfpq")
FLAT_MAX = 50_000  # exact search of 50k × 512 floats is ~25 MFLOP: about 2-5 ms on one core
HNSW_MAX = 5_000_000  # past this, HNSW's memory (vectors + ~256 B of links each) favours compressed codes
IVFPQ_MIN = 1000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40  # build cost grows with it; recall is recovered by tuning efSearch
_EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_NPROBE_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)


def faiss() -> Any:
    """The faiss module, or :class:`MissingDependencyError` naming the ``search`` extra."""
    try:
        import faiss as module
    except ImportError:
        raise MissingDependencyError("faiss-cpu", "search", "the similarity index") from None
    return module


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm as C-contiguous float32 (zero rows stay zero).

    Raises:
        InputError: not a 2-D array, or it holds NaN or infinity.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"vectors must be a 2-D (N, dim) array, got shape {x.shape}; reshape them")
    if not np.isfinite(x).all():
        raise InputError("vectors must be finite, got NaN or infinity; check the model's outputs")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def choose_kind(n: int) -> str:
    """The index kind for ``n`` vectors: exact while it is fast, then HNSW, then IVF-PQ."""
    if n <= FLAT_MAX:
        return "flat"
    return "hnsw" if n <= HNSW_MAX else "ivfpq"


def _ivfpq(dim: int, n: int) -> Any:
    """IVF lists of 8-bit product-quantised codes (2 dims per code byte where it divides), re-ranked exactly."""
    f = faiss()
    nlist = max(1, min(65536, int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
    m = next(m for m in (64, 32, 16, 8, 4, 2, 1) if dim % m == 0 and (dim // m >= 2 or m == 1))
    # "np": no polysemous training (minutes, and only for Hamming pre-filtering, which is not used here)
    index = f.index_factory(dim, f"IVF{nlist},PQ{m}np,RFlat", f.METRIC_INNER_PRODUCT)
    f.downcast_index(index).k_factor = 8.0
    return index


def build(kind: str, vectors: np.ndarray, seed: int = 0) -> Any:
    """A FAISS index of ``kind`` holding ``vectors`` (labels 0..N-1). IVF-PQ trains on up to 256 per list.

    Raises:
        ConfigError: an unknown kind, or too few vectors to train IVF-PQ.
    """
    f = faiss()
    n, dim = vectors.shape
    if kind == "flat":
        index = f.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = f.IndexHNSWFlat(dim, HNSW_M, f.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif kind == "ivfpq":
        index = _ivfpq(dim, n)
        nlist = _nlist(index)
        if n < IVFPQ_MIN:
            raise ConfigError(f"an ivfpq index needs at least {IVFPQ_MIN} vectors to train on, got {n}; "
                              "use kind 'flat' or 'hnsw'")
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, min(n, 256 * nlist), replace=False)] if n > 256 * nlist else vectors
        index.train(np.ascontiguousarray(sample))
    else:
        raise ConfigError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n:
        index.add(vectors)
    return index


def _nlist(index: Any) -> int:
    return int(faiss().extract_index_ivf(index).nlist)


def set_search_param(index: Any, kind: str, value: int) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = int(value)
    elif kind == "ivfpq":
        faiss().extract_index_ivf(index).nprobe = int(value)


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)``, each ``(Q, k)``; missing neighbours have label -1."""
    k = max(1, min(int(k), max(index.ntotal, 1)))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """Exact top-``k`` labels ``(Q, k)`` of ``queries`` among ``vectors`` by inner product (numpy, chunked)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for start in range(0, len(vectors), chunk):
        s = q @ vectors[start : start + chunk].T  # (Q, chunk)
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], 1)
        cand_i = np.concatenate([best_i, part + start], 1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


@dataclass
class Tuning:
    """The search parameter chosen for an approximate index and the recall it measured."""

    param: str = ""
    value: int = 0
    recall: float = 1.0
    k: int = 10
    trace: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.param, "value": self.value, "recall": self.recall, "k": self.k,
                "trace": [list(t) for t in self.trace]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tuning:
        return cls(d.get("param", ""), int(d.get("value", 0)), float(d.get("recall", 1.0)), int(d.get("k", 10)),
                   [tuple(t) for t in d.get("trace", [])])


def tune_queries(vectors: np.ndarray, n: int = 200, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Queries near stored vectors (each one perturbed and renormalised)."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.choice(len(vectors), min(n, len(vectors)), replace=False)]
    jitter = rng.standard_normal(picks.shape).astype(np.float32) * (noise / np.sqrt(vectors.shape[1]))
    return normalize(picks + jitter)


def _drop_self(labels: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's labels without the query's own row, cut to ``k``."""
    return np.stack([np.concatenate([lab[lab != r], np.full(1, -1)])[:k] for lab, r in zip(labels, rows)])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k labels that were found (rows aligned)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def tune(index: Any, kind: str, vectors: np.ndarray, target: float = 0.95, k: int = 10,
         queries: np.ndarray | None = None, samples: int = 500) -> Tuning:
    """Raise the search parameter (HNSW ``efSearch``, IVF ``nprobe``) until recall@k against exact search
    reaches ``target``; the smallest such value is kept. The queries are ``queries``, or by default
    ``samples`` stored vectors each searching for its k nearest *other* vectors (leave-one-out: as hard as a
    fresh query from the same collection, where perturbed copies of stored vectors would be too easy).

    Raises:
        ConfigError: ``target`` outside (0, 1].
    """
    if not 0 < target <= 1:
        raise ConfigError(f"the recall target must be within (0, 1], got {target}")
    if kind == "flat" or len(vectors) == 0:
        return Tuning()
    k = min(k, len(vectors) - 1) if queries is None else min(k, len(vectors))
    if k < 1:
        return Tuning()
    if queries is None:  # leave-one-out: stored vectors query the others, like fresh draws of the same data
        rows = np.random.default_rng(0).choice(len(vectors), min(samples, len(vectors)), replace=False)
        q = vectors[rows]
        truth = _drop_self(exact_neighbours(vectors, q, k + 1), rows, k)
    else:
        q, rows = queries, None
        truth = exact_neighbours(vectors, q, k)
    steps, param = (_EF_STEPS, "efSearch") if kind == "hnsw" else (_NPROBE_STEPS, "nprobe")
    if kind == "ivfpq":
        steps = tuple(s for s in steps if s <= _nlist(index)) or (_nlist(index),)
    trace: list[tuple[int, float]] = []
    for value in steps:
        set_search_param(index, kind, value)
        found = search(index, q, k + (rows is not None))[1]
        r = recall(found if rows is None else _drop_self(found, rows, k), truth)
        trace.append((value, round(r, 4)))
        if r >= target:
            break
    return Tuning(param, value, r, k, trace)
