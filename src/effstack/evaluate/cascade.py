"""A model cascade: the small model answers when it is confident enough, else the big model answers.

The confidence of a sample is the small model's maximum softmax probability (``"maxprob"``) or the gap between
its two largest softmax probabilities (``"margin"``). With a threshold ``t`` the cascade's answer is the small
model's top-1 where ``confidence >= t`` and the big model's top-1 elsewhere (the sample is *escalated*).

The threshold is chosen on a *calibration split* (:func:`choose_threshold`) and judged on a separate *test split*
(:func:`evaluate_cascade`); :func:`split_calibration` makes the two deterministically, keeping groups (the variants
of one source photo) whole. What a query costs each model comes from measured throughput (:func:`measure_cost`),
with the model's MACs as a hardware-free second view.

Accuracy is in points (0-100): top-1 against labels, or, with ``reference=None``, top-1 agreement with the big
model (the big model alone then scores 100).

>>> import numpy as np
>>> small = np.array([[4.0, 0.0], [0.1, 0.0], [0.0, 3.0]])   # confident, unsure, confident
>>> big = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
>>> c = choose_threshold(small, big, None, max_drop_points=0.0)
>>> round(c.threshold, 3), round(c.fraction_small, 3), c.accuracy
(0.953, 0.667, 100.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError
from .accuracy import MaxDrop, check_labels, parse_max_drop

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["METRICS", "CascadeResult", "ModelCost", "ThresholdChoice", "choose_threshold", "confidence",
           "evaluate_cascade", "measure_cost", "split_calibration"]

METRICS = ("maxprob", "margin")
AGREEMENT = "top-1 agreement with the big model"
ACCURACY = "top-1 accuracy"
_EPS_COUNT = 1e-9  # slack when comparing counts of correct answers computed from a float tolerance


# --- confidence and inputs ------------------------------------------------------------------------------------


def confidence(logits: np.ndarray, metric: str = "maxprob") -> np.ndarray:
    """Each sample's confidence ``(N,)`` from its ``logits (N, C)``: the largest softmax probability
    (``"maxprob"``) or the largest minus the second largest (``"margin"``; 1.0 for a single class).

    Raises:
        ConfigError: an unknown metric.
        InputError: ``logits`` is not a non-empty ``(N, C)`` array of finite numbers.

    Example:
        >>> confidence(np.array([[0.0, 0.0], [9.0, 0.0]])).round(3).tolist()
        [0.5, 1.0]
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    z = _logits(logits, "logits")
    p = np.exp(z - z.max(axis=1, keepdims=True))  # stable softmax, (N, C)
    p /= p.sum(axis=1, keepdims=True)
    if metric == "maxprob" or p.shape[1] == 1:
        return p.max(axis=1)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]  # (N, 2): second largest, largest
    return top2[:, 1] - top2[:, 0]


def _logits(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0 or a.dtype.kind not in "iuf":
        raise InputError(f"{name} must be a non-empty numeric (N, classes) array, got shape {a.shape} of {a.dtype}; "
                         "pass the model's outputs")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InputError(f"{name} must be finite, got NaN or infinity; check the model's outputs")
    return a


def _inputs(small_logits: Any, big_logits: Any, reference: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(small, big, reference labels)`` after checking they describe the same samples and classes."""
    small, big = _logits(small_logits, "small_logits"), _logits(big_logits, "big_logits")
    if small.shape != big.shape:
        raise InputError(f"small and big logits must have the same shape (N, classes), got {small.shape} and "
                         f"{big.shape}; run both models on the same samples with the same classes")
    ref = np.argmax(big, axis=1) if reference is None else check_labels(reference, *small.shape)
    return small, big, ref


def _points(correct: float, n: int) -> float:
    return float(100.0 * correct / n)


# --- choosing the threshold -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold chosen on the calibration split, and the whole curve it was chosen from.

    threshold: the small model answers where its confidence is ``>=`` this (``inf``: the big model answers all).
    fraction_small: the share of calibration samples the small model answers (0..1).
    accuracy / small_accuracy / big_accuracy: points on the calibration split, of the cascade at ``threshold``,
        of the small model alone and of the big model alone.
    allowed_drop: the points the cascade may lose against the big model (``max_drop`` resolved).
    curve: ``(threshold, fraction_small, accuracy)`` for every distinct threshold, lowest first, ending with
        ``(inf, 0.0, big_accuracy)``.
    """

    threshold: float
    metric: str
    fraction_small: float
    accuracy: float
    small_accuracy: float
    big_accuracy: float
    max_drop: str
    allowed_drop: float
    n: int
    scored_as: str
    curve: tuple[tuple[float, float, float], ...] = field(repr=False, default=())

    def to_dict(self, max_curve_points: int | None = 200) -> dict[str, Any]:
        """A JSON-ready dict (``inf`` as None); the curve thinned to about ``max_curve_points`` points, always
        keeping both ends and the chosen threshold."""
        d = asdict(self)
        curve = list(self.curve)
        if max_curve_points and len(curve) > max_curve_points:
            keep = set(np.linspace(0, len(curve) - 1, max_curve_points).round().astype(int).tolist())
            keep |= {i for i, p in enumerate(curve) if p[0] == self.threshold}
            curve = [curve[i] for i in sorted(keep)]
        d["curve"] = [{"threshold": _finite(t), "fraction_small": f, "accuracy": a} for t, f, a in curve]
        d["threshold"] = _finite(self.threshold)
        return d


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def choose_threshold(small_logits: np.ndarray, big_logits: np.ndarray, reference: np.ndarray | None,
                     max_drop_points: float | str | MaxDrop = 0.5, metric: str = "maxprob",
                     scored_as: str | None = None) -> ThresholdChoice:
    """The lowest confidence threshold (the most samples answered by the small model) at which the cascade loses
    at most ``max_drop_points`` against the big model alone, on a calibration split.

    Every distinct confidence value of the calibration samples is a candidate, so samples with equal confidence
    are always answered by the same model; ``inf`` (the big model answers all) always qualifies, so the result
    exists. The accuracy need not fall monotonically as the threshold falls; the lowest threshold that
    qualifies wins even when a higher one does not.

    Args:
        small_logits: the small model's outputs ``(N, C)`` on the calibration split.
        big_logits: the big model's outputs ``(N, C)`` on the same samples.
        reference: labels ``(N,)``, or None to score top-1 agreement with the big model.
        max_drop_points: points the cascade may lose (``0.5``), or a share of the big model's accuracy (``"1%"``).
        metric: ``"maxprob"`` or ``"margin"`` (see :func:`confidence`).
        scored_as: what the score is, for the record (default: top-1 accuracy with labels, else agreement with
            the big model); e.g. ``"top-1 agreement with resnet50's labels"`` for labels another model made.

    Raises:
        InputError: logits of different shapes, empty or non-finite, or labels that do not fit them.
        ConfigError: a negative or malformed ``max_drop_points``, or an unknown metric.

    Example:
        >>> c = choose_threshold(small_cal, big_cal, y_cal, max_drop_points=0.5)  # doctest: +SKIP
        >>> c.threshold, c.fraction_small, c.accuracy, c.big_accuracy             # doctest: +SKIP
    """
    small, big, ref = _inputs(small_logits, big_logits, reference)
    drop = parse_max_drop(max_drop_points)
    conf = confidence(small, metric)
    n = len(ref)
    order = np.argsort(-conf, kind="stable")  # most confident first
    c = conf[order]
    ok_small = (np.argmax(small, axis=1) == ref)[order]
    ok_big = (np.argmax(big, axis=1) == ref)[order]
    cum_small = np.concatenate([[0], np.cumsum(ok_small)])  # (N+1,): correct answers among the first m
    cum_big = np.concatenate([[0], np.cumsum(ok_big)])
    big_correct = int(cum_big[-1])
    # m = how many samples a threshold lets the small model answer: one cut after each run of equal confidences
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True]) + 1
    cuts = np.concatenate([ends[::-1], [0]])  # lowest threshold (most samples) first, then none
    thresholds = np.concatenate([c[ends - 1][::-1], [np.inf]])
    correct = cum_small[cuts] + (big_correct - cum_big[cuts])
    big_acc = _points(big_correct, n)
    allowed = drop.allowed(big_acc)
    feasible = correct >= big_correct - allowed * n / 100.0 - _EPS_COUNT
    best = int(np.flatnonzero(feasible)[0])  # the last entry (inf) always qualifies
    curve = tuple((float(t), float(m / n), _points(k, n)) for t, m, k in zip(thresholds, cuts, correct))
    return ThresholdChoice(
        threshold=float(thresholds[best]), metric=metric, fraction_small=float(cuts[best] / n),
        accuracy=_points(correct[best], n), small_accuracy=_points(cum_small[-1], n), big_accuracy=big_acc,
        max_drop=str(drop), allowed_drop=float(allowed), n=n, scored_as=_scored_as(scored_as, reference), curve=curve)


def _scored_as(given: str | None, reference: Any) -> str:
    return given or (AGREEMENT if reference is None else ACCURACY)


# --- cost ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCost:
    """What one query costs a model: measured seconds per sample, and MACs per sample.

    seconds_per_sample: 1 / the best throughput measured (None: not measured).
    macs: multiply-accumulates per sample (None: not counted).
    batch / engine: where the best throughput was measured.
    spread_pct: (max - min) / median of that throughput's repeats, in percent.
    throughputs: ``(batch, samples/s)`` for every batch measured.

    Raises:
        ConfigError: a non-positive or non-finite time, negative MACs, or a batch below 1.
    """

    seconds_per_sample: float | None = None
    macs: int | None = None
    batch: int | None = None
    engine: str | None = None
    spread_pct: float | None = None
    repeats: int | None = None
    throughputs: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        s = self.seconds_per_sample
        if s is not None and not (math.isfinite(s) and s > 0):
            raise ConfigError(f"seconds_per_sample must be a positive number, got {s}; measure the model again")
        if self.macs is not None and self.macs < 0:
            raise ConfigError(f"macs must be non-negative, got {self.macs}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be at least 1, got {self.batch}")

    @property
    def ms_per_1000(self) -> float | None:
        """Milliseconds of compute for 1,000 queries."""
        return None if self.seconds_per_sample is None else self.seconds_per_sample * 1e6

    @property
    def gmac_per_1000(self) -> float | None:
        """GMAC for 1,000 queries."""
        return None if self.macs is None else self.macs * 1e-6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["throughputs"] = {str(b): t for b, t in self.throughputs}
        d["ms_per_1000"], d["gmac_per_1000"] = self.ms_per_1000, self.gmac_per_1000
        return d


def measure_cost(model: "LoadedModel", engine: str = "torch", batches: Sequence[int] = (1, 8, 32),
                 seconds: float = 1.0, repeats: int = 3, threads: int | None = None,
                 precision: str = "fp32") -> ModelCost:
    """Measure ``model``'s throughput on this machine at each batch (effstack's offline scenario: batches back to
    back, the median of ``repeats`` rounds) and keep the best as its cost per query.

    One session is built per batch (OpenVINO picks its performance hint from it) and closed after.

    Raises:
        ConfigError: no batches, a batch below 1, non-positive seconds or repeats.
        UnknownEngineError / MissingDependencyError / EngineError: from the engine.

    Example:
        >>> cost = measure_cost(load_model("efficientnet_lite0"), "onnxruntime")  # doctest: +SKIP
        >>> cost.seconds_per_sample, cost.batch, cost.spread_pct                  # doctest: +SKIP
    """
    from ..engines import SessionOptions, canonical, get_engine
    from ..measure.scenarios import offline

    sizes = sorted({int(b) for b in batches})
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"batches must be one or more sizes of at least 1, got {list(batches)}")
    name = canonical(engine)
    runtime = get_engine(name)
    measured: dict[int, Any] = {}
    for b in sizes:
        with runtime.load(model, SessionOptions(precision, threads, b)) as session:
            x = model.input.image_like(b, seed=b)
            measured[b] = offline(session, x, duration_s=seconds, repeats=repeats).throughput
    best = max(sizes, key=lambda b: measured[b].median)
    return ModelCost(seconds_per_sample=1.0 / measured[best].median, macs=model.macs, batch=best, engine=name,
                     spread_pct=float(measured[best].range_pct), repeats=measured[best].n,
                     throughputs=tuple((b, float(measured[b].median)) for b in sizes))


# --- judging the cascade on the test split --------------------------------------------------------------------


@dataclass(frozen=True)
class CascadeResult:
    """The cascade on the test split, beside each model alone, with what 1,000 queries cost.

    Batching assumption of the cost: the small model runs on every query and the escalated queries are
    collected and run by the big model as separate batches, each model at the batch where its measured
    throughput was best. So the cascade costs ``small + escalated * big`` per query, in seconds of compute;
    the latency of an escalated query (both models, plus the wait to fill a batch) is not what this counts.
    """

    threshold: float
    metric: str
    n: int
    scored_as: str
    accuracy: float
    small_accuracy: float
    big_accuracy: float
    fraction_escalated: float
    small_cost: ModelCost | None = None
    big_cost: ModelCost | None = None

    def cost(self, which: str, unit: str) -> float | None:
        """Cost of 1,000 queries for ``which`` (``small``, ``big``, ``cascade``) in ``unit`` (``ms``, ``gmac``)."""
        if which not in ("small", "big", "cascade") or unit not in ("ms", "gmac"):
            raise ConfigError(f"cost needs small/big/cascade and ms/gmac, got {which!r} and {unit!r}")
        attr = "ms_per_1000" if unit == "ms" else "gmac_per_1000"
        small = getattr(self.small_cost, attr, None)
        big = getattr(self.big_cost, attr, None)
        if which == "small":
            return small
        if which == "big":
            return big
        return None if small is None or big is None else small + self.fraction_escalated * big

    def speedup(self, which: str = "cascade", unit: str = "ms") -> float | None:
        """How many times cheaper than the big model alone ``which`` is (None when a cost is missing)."""
        mine, big = self.cost(which, unit), self.cost("big", unit)
        return None if not mine or big is None else big / mine

    @property
    def drop(self) -> float:
        """Points the cascade lost against the big model on the test split (negative: it gained)."""
        return self.big_accuracy - self.accuracy

    def rows(self) -> list[dict[str, Any]]:
        """One row each for the small model alone, the big model alone and the cascade (what the table shows)."""
        out = []
        for which, acc, esc in (("small", self.small_accuracy, 0.0), ("big", self.big_accuracy, 1.0),
                                ("cascade", self.accuracy, self.fraction_escalated)):
            out.append({"system": "cascade" if which == "cascade" else f"{which} alone", "accuracy": acc,
                        "fraction_escalated": esc if which == "cascade" else None,
                        "ms_per_1000": self.cost(which, "ms"), "gmac_per_1000": self.cost(which, "gmac"),
                        "speedup_vs_big": self.speedup(which, "ms"),
                        "speedup_vs_big_macs": self.speedup(which, "gmac")})
        return out

    def table(self) -> str:
        """The rows as a fixed-width text table."""
        head = f"{'':14s}{'accuracy':>9s}{'escalated':>11s}{'ms/1000 q':>12s}{'GMAC/1000 q':>13s}{'speed-up':>10s}" \
               f"{'(MACs)':>8s}"
        lines = [head]
        for r in self.rows():
            esc = "-" if r["fraction_escalated"] is None else f"{100 * r['fraction_escalated']:.1f}%"
            lines.append(f"{r['system']:14s}{r['accuracy']:9.2f}{esc:>11s}{_fmt(r['ms_per_1000'], ',.0f'):>12s}"
                         f"{_fmt(r['gmac_per_1000'], ',.1f'):>13s}{_fmt(r['speedup_vs_big'], '.2f', 'x'):>10s}"
                         f"{_fmt(r['speedup_vs_big_macs'], '.2f', 'x'):>8s}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["threshold"] = _finite(self.threshold)
        d["small_cost"] = self.small_cost.to_dict() if self.small_cost else None
        d["big_cost"] = self.big_cost.to_dict() if self.big_cost else None
        d["drop"] = self.drop
        d["rows"] = self.rows()
        return d


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def evaluate_cascade(small_logits: np.ndarray, big_logits: np.ndarray, reference: np.ndarray | None,
                     threshold: float | ThresholdChoice, small_cost: ModelCost | None = None,
                     big_cost: ModelCost | None = None, metric: str | None = None,
                     scored_as: str | None = None) -> CascadeResult:
    """The cascade at ``threshold`` on a test split: its accuracy beside each model alone, the share escalated,
    and (given the costs) what 1,000 queries cost in milliseconds of compute and in GMAC.

    Cost of 1,000 queries: ``small * 1000 + escalated * big * 1000``, each model's per-query cost measured at
    its best batch; the escalated queries are batched separately for the big model, and the small model runs
    on every query (see :class:`CascadeResult`).

    Args:
        small_logits / big_logits: both models' outputs ``(N, C)`` on the test split.
        reference: labels ``(N,)``, or None to score top-1 agreement with the big model.
        threshold: from :func:`choose_threshold` (its metric is used), or a number (with ``metric``).
        small_cost / big_cost: from :func:`measure_cost` (or made by hand); None leaves the costs out.
        metric: the confidence measure; defaults to the choice's, else ``"maxprob"``.
        scored_as: what the score is, as in :func:`choose_threshold`.

    Raises:
        InputError: logits of different shapes, empty or non-finite, or labels that do not fit them.
        ConfigError: a NaN threshold, an unknown metric, or a metric that contradicts the choice's.

    Example:
        >>> r = evaluate_cascade(small_test, big_test, y_test, choice, cost_small, cost_big)  # doctest: +SKIP
        >>> r.accuracy, r.fraction_escalated, r.speedup()                                    # doctest: +SKIP
    """
    if isinstance(threshold, ThresholdChoice):
        if metric is not None and metric != threshold.metric:
            raise ConfigError(f"metric {metric!r} contradicts the threshold's {threshold.metric!r}; leave metric unset")
        metric, t = threshold.metric, threshold.threshold
    else:
        t = float(threshold)
        metric = metric or "maxprob"
    if math.isnan(t):
        raise ConfigError("threshold must be a number, got NaN; choose it with choose_threshold")
    small, big, ref = _inputs(small_logits, big_logits, reference)
    use_small = confidence(small, metric) >= t
    answer = np.where(use_small, np.argmax(small, axis=1), np.argmax(big, axis=1))
    n = len(ref)
    return CascadeResult(
        threshold=t, metric=metric, n=n, scored_as=_scored_as(scored_as, reference),
        accuracy=_points(np.sum(answer == ref), n), small_accuracy=_points(np.sum(np.argmax(small, 1) == ref), n),
        big_accuracy=_points(np.sum(np.argmax(big, 1) == ref), n), fraction_escalated=float(1.0 - use_small.mean()),
        small_cost=small_cost, big_cost=big_cost)


# --- splitting -------------------------------------------------------------------------------------------------------


def split_calibration(n: int, groups: Sequence[Any] | np.ndarray | None = None, fraction: float = 0.5,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(calibration, test)`` index arrays (each sorted) over ``n`` samples.

    With ``groups`` (one id per sample: the source photo of each variant), whole groups go to one side, so no
    source photo is seen on both; groups are shuffled with ``seed`` and taken until the calibration side holds
    about ``fraction`` of the samples (at least one group on each side).

    Raises:
        InputError: fewer than two samples (or groups), or groups not one per sample.
        ConfigError: ``fraction`` outside (0, 1).

    Example:
        >>> cal, test = split_calibration(6, groups=[0, 0, 1, 1, 2, 2], seed=0)
        >>> sorted(set(cal.tolist()) | set(test.tolist())) == list(range(6))
        True
    """
    if not (0.0 < fraction < 1.0):
        raise ConfigError(f"fraction must be between 0 and 1 (exclusive), got {fraction}; e.g. 0.5")
    n = int(n)
    rng = np.random.default_rng(seed)
    if groups is None:
        if n < 2:
            raise InputError(f"splitting needs at least two samples, got {n}; give more data")
        perm = rng.permutation(n)
        k = min(max(int(round(fraction * n)), 1), n - 1)
        return np.sort(perm[:k]), np.sort(perm[k:])
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise InputError(f"groups must be one id per sample ({n}), got shape {g.shape}")
    ids, inverse, sizes = np.unique(g, return_inverse=True, return_counts=True)
    if len(ids) < 2:
        raise InputError(f"a grouped split needs at least two groups, got {len(ids)}; give more source photos")
    order = rng.permutation(len(ids))
    filled = np.cumsum(sizes[order])
    k = int(np.searchsorted(filled, fraction * n)) + 1  # groups until the calibration side reaches its share
    k = min(max(k, 1), len(ids) - 1)
    on_cal = np.zeros(len(ids), bool)
    on_cal[order[:k]] = True
    mask = on_cal[inverse]
    return np.flatnonzero(mask), np.flatnonzero(~mask)
