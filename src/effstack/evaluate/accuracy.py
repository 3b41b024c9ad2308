"""Accuracy and fidelity measures on numpy outputs: classifiers, embedding models, near-duplicate search.

All functions take plain arrays (logits ``(N, C)``, embeddings ``(N, D)``, labels ``(N,)``) so they work
on the output of any engine. Percentages are in points (0-100).

>>> import numpy as np
>>> top1(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
50.0
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, InputError

__all__ = [
    "MaxDrop",
    "agreement",
    "check_labels",
    "cosine_similarity",
    "near_duplicate_recall",
    "parse_max_drop",
    "recall_at_k",
    "score",
    "snr_db",
    "top1",
]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"outputs must have the same shape, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise InputError("outputs are empty; evaluate at least one sample")
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def check_labels(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Return ``labels`` as int64 after checking there is one per sample, each in ``[0, num_classes)``.

    Raises:
        InputError: wrong count, non-integer labels, or a label outside the model's classes.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"labels must be one integer per sample ({n}), got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise InputError("labels must be integer class indices, got fractional values")
    if y.dtype.kind not in "iuf":
        raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise InputError(
            f"label {int(y[bad][0])} is outside the model's {num_classes} classes (0..{num_classes - 1}); "
            "fix the labels or load the model with the right number of classes"
        )
    return y


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in points of ``logits (N, C)`` against integer ``labels (N,)``.

    Raises:
        InputError: shapes do not fit, or a label is outside ``[0, C)``.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise InputError(f"logits must be a non-empty (N, classes) array, got shape {logits.shape}")
    y = check_labels(labels, logits.shape[0], logits.shape[1])
    return float(100.0 * np.mean(np.argmax(logits, axis=1) == y))


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Top-1 agreement in points: how often ``logits`` pick the class ``reference`` picks.

    Example: ``agreement(int8_logits, fp32_logits)`` -> ``99.2``.
    """
    a, b = _pair(logits, reference)
    return float(100.0 * np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def cosine_similarity(x: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-sample cosine similarity between two ``(N, D)`` outputs (1.0: same directions)."""
    a, b = _pair(x, reference)
    a, b = a.astype(np.float64), b.astype(np.float64)
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-300), (num == 0).astype(float))))


def _neighbours(e: np.ndarray, k: int) -> np.ndarray:
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)  # a sample is not its own neighbour
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def recall_at_k(embeddings: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Recall@k in points of nearest neighbours: the share of each sample's ``k`` cosine neighbours under
    ``reference`` embeddings that are also among its ``k`` neighbours under ``embeddings``.

    Raises:
        InputError: fewer than two samples or mismatched shapes.
        ConfigError: ``k`` < 1.
    """
    a, b = _pair(embeddings, reference)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if a.shape[0] < 2:
        raise InputError("recall@k needs at least two samples")
    k = min(k, a.shape[0] - 1)
    got, want = _neighbours(a.astype(np.float64), k), _neighbours(b.astype(np.float64), k)
    hits = [len(set(g) & set(w)) for g, w in zip(got, want)]
    return float(100.0 * np.sum(hits) / (k * a.shape[0]))


def near_duplicate_recall(embeddings: np.ndarray, groups: np.ndarray, k: int = 1) -> float:
    """Near-duplicate recall@k in points: the share of queries with one of their ``k`` cosine-nearest other
    samples (never themselves) in the same group, e.g. another edit of the same source photo.

    Every sample is a query, except one alone in its group (it has no duplicate to find).

    Args:
        embeddings: ``(N, D)`` features.
        groups: ``(N,)`` integer group of each sample (``photo_arrays``' third array).
        k: neighbours looked at per query (at most ``N - 1`` are).

    Raises:
        InputError: mismatched shapes, or no group with two or more samples.
        ConfigError: ``k`` < 1.

    Example:
        >>> e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> near_duplicate_recall(e, np.array([0, 0, 1, 1]))
        100.0
    """
    e = np.asarray(embeddings, np.float64)
    g = np.asarray(groups)
    if e.ndim != 2 or g.shape != (e.shape[0],):
        raise InputError(f"embeddings must be (N, D) and groups (N,), got {e.shape} and {g.shape}")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    _, first, counts = np.unique(g, return_inverse=True, return_counts=True)
    queries = counts[first] > 1
    if not queries.any():
        raise InputError("near-duplicate recall needs a group with at least two samples, got none; "
                         "give several variants of each source")
    hits = (g[_neighbours(e, min(k, e.shape[0] - 1))] == g[:, None]).any(axis=1)
    return float(100.0 * np.mean(hits[queries]))


def score(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None,
          task: str = "classification") -> float:
    """How well ``outputs`` do, in points, the way the INT8 guard and the ladder score a rung: recall@10 of
    ``reference``'s neighbours for an embedding model (labels unused); else top-1 against ``labels`` when
    given, else top-1 agreement with ``reference``."""
    if task == "embedding":
        return recall_at_k(outputs, reference, 10)
    return top1(outputs, labels) if labels is not None else agreement(outputs, reference)


def snr_db(x: np.ndarray, reference: np.ndarray) -> float:
    """Signal-to-noise ratio of ``x`` against ``reference`` in dB (inf when identical)."""
    a, b = _pair(x, reference)
    noise = float(np.sum((a.astype(np.float64) - b) ** 2))
    signal = float(np.sum(b.astype(np.float64) ** 2))
    if noise == 0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-300) / noise))


class MaxDrop:
    """An accuracy tolerance: ``points`` (absolute) or ``percent`` of the fp32 figure (relative).

    Example: ``MaxDrop(1.0)`` allows 76.1 -> 75.1; ``MaxDrop(1.0, relative=True)`` allows 76.1 -> 75.34.
    """

    __slots__ = ("relative", "value")

    def __init__(self, value: float, relative: bool = False):
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"max drop must be a non-negative number, got {value}")
        self.value, self.relative = value, bool(relative)

    def allowed(self, baseline: float) -> float:
        """The largest drop in points allowed from ``baseline``."""
        return baseline * self.value / 100.0 if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaxDrop) and (self.value, self.relative) == (other.value, other.relative)

    def __hash__(self) -> int:
        return hash((self.value, self.relative))


def parse_max_drop(text: str | float | MaxDrop) -> MaxDrop:
    """``"1.0"`` -> 1 point; ``"1%"`` -> 1 % of the fp32 accuracy.

    Raises:
        ConfigError: not a non-negative number with an optional ``%``.
    """
    if isinstance(text, MaxDrop):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return MaxDrop(text)
    s = str(text).strip()
    relative = s.endswith("%")
    try:
        value = float(s[:-1] if relative else s)
    except ValueError:
        raise ConfigError(f"max drop must be points like 1.0 or a percentage like 1%, got {text!r}") from None
    return MaxDrop(value, relative)
