"""FAISS indexes over L2-normalised vectors (inner product = cosine), chosen by size, tuned to a recall target.

Kinds:

* ``flat``  exact search (``IndexFlatIP``); every collection up to :data:`FLAT_MAX` vectors.
* ``hnsw``  a graph (``IndexHNSWFlat``, M=32); ``efSearch`` is raised until recall@10 against exact search
  reaches the target. Below :data:`IVF_FROM` vectors.
* ``ivf``   inverted lists of the full vectors (``IndexIVFFlat``, about 4·√n lists); ``nprobe`` is tuned the
  same way. From :data:`IVF_FROM` up to :data:`HNSW_MAX` vectors: it builds in a minute or two where HNSW's
  graph takes tens of minutes (1M × 128 on 2 cores: 22 minutes), and at that size a query scans a few lists
  where HNSW needed efSearch 384 (p50 10 ms) for recall@10 0.95.
* ``ivfpq`` inverted lists of product-quantised codes, re-ranked exactly (``IndexRefineFlat``); ``nprobe``
  is tuned the same way. For the largest collections.

A single query runs on one OpenMP thread (set for the calling thread only, around the call), so it never
pays a thread team's start-up or wake-up; batches of queries, training and adds use every thread.

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

__all__ = ["FLAT_MAX", "HNSW_MAX", "IVF_FROM", "KINDS", "Tuning", "build", "choose_kind", "exact_neighbours",
           "faiss", "normalize", "search", "tune"]

KINDS = ("flat", "hnsw", "ivf", "ivfpq")
IVF_KINDS = ("ivf", "ivfpq")  # trained on the vectors (k-means), searched with nprobe
FLAT_MAX = 50_000  # exact search of 50k × 512 floats is ~25 MFLOP: about 2-5 ms on one core
# from here IVF-Flat replaces HNSW: 100k × 128 (4096-cluster mixture, 2 cores): HNSW built in 46 s, IVF-Flat in
# 16 s; 200k: IVF-Flat built in 28 s and reached recall@10 1.0 at nprobe 4 (p50 0.06 ms) at the 1M benchmark's
# density, while HNSW's build time grows faster than n (1M: 22 minutes) and its recall falls at fixed efSearch
IVF_FROM = 200_000
HNSW_MAX = 5_000_000  # past this, uncompressed vectors (HNSW's or IVF-Flat's) cost too much memory: IVF-PQ codes
IVFPQ_MIN = 1000  # the IVF kinds train on at least this many vectors (an index is exact until then)
IVF_TRAIN_PER_LIST = 64  # k-means samples per list (faiss warns below 39)
IVF_NITER = 10  # k-means iterations: faiss's default 25 took 2.5x as long for the same recall here
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
    """The index kind for ``n`` vectors: exact while it is fast, then HNSW, then IVF-Flat, then IVF-PQ."""
    if n <= FLAT_MAX:
        return "flat"
    if n < IVF_FROM:
        return "hnsw"
    return "ivf" if n <= HNSW_MAX else "ivfpq"


def _nlist_for(n: int) -> int:
    return max(1, min(65536, int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list


def _ivf(dim: int, n: int, kind: str) -> Any:
    """IVF lists of the full vectors (``ivf``), or of 8-bit product-quantised codes (2 dims per code byte
    where it divides) re-ranked exactly (``ivfpq``)."""
    f = faiss()
    nlist = _nlist_for(n)
    if kind == "ivf":
        index = f.index_factory(dim, f"IVF{nlist},Flat", f.METRIC_INNER_PRODUCT)
    else:
        m = next(m for m in (64, 32, 16, 8, 4, 2, 1) if dim % m == 0 and (dim // m >= 2 or m == 1))
        # "np": no polysemous training (minutes, and only for Hamming pre-filtering, which is not used here)
        index = f.index_factory(dim, f"IVF{nlist},PQ{m}np,RFlat", f.METRIC_INNER_PRODUCT)
        f.downcast_index(index).k_factor = 8.0
    f.extract_index_ivf(index).cp.niter = IVF_NITER
    return index


def build(kind: str, vectors: np.ndarray, seed: int = 0) -> Any:
    """A FAISS index of ``kind`` holding ``vectors`` (labels 0..N-1). The IVF kinds train on up to
    :data:`IVF_TRAIN_PER_LIST` vectors per list; training and adding use every OpenMP thread.

    Raises:
        ConfigError: an unknown kind, or too few vectors to train an IVF kind.
    """
    f = faiss()
    n, dim = vectors.shape
    if kind == "flat":
        index = f.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = f.IndexHNSWFlat(dim, HNSW_M, f.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif kind in IVF_KINDS:
        if n < IVFPQ_MIN:
            raise ConfigError(f"an {kind} index needs at least {IVFPQ_MIN} vectors to train on, got {n}; "
                              "use kind 'flat' or 'hnsw'")
        index = _ivf(dim, n, kind)
        cap = IVF_TRAIN_PER_LIST * _nlist(index)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, cap, replace=False)] if n > cap else vectors
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
    elif kind in IVF_KINDS:
        faiss().extract_index_ivf(index).nprobe = int(value)


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)``, each ``(Q, k)``; missing neighbours have label -1. One query runs on one
    OpenMP thread (this thread's setting, restored after: about 1 µs); a batch uses every thread."""
    k = max(1, min(int(k), max(index.ntotal, 1)))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if len(q) > 1:
        return index.search(q, k)
    f = faiss()
    threads = f.omp_get_max_threads()
    f.omp_set_num_threads(1)
    try:
        return index.search(q, k)
    finally:
        f.omp_set_num_threads(threads)


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
    if kind in IVF_KINDS:
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
