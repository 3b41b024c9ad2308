"""A served model's instances: loading them, and measuring the batch-time curve they serve on.

An *instance* is what computes one batch at a time. :func:`load_instances` builds ``instances`` of them from one
engine: sessions of their own with a share of the threads each, or streams of one compiled model where the
engine can share it (OpenVINO). :func:`warm_up` runs every batch size on every instance at once, as when serving
(engines that specialise on shapes compile here, not on the first unlucky request), and times the sizes 1, 2, 4,
..., max_batch into a :class:`Curve`: the p99 the latency-budget policy budgets with, and the medians and spread
``instances="auto"`` simulates each layout on before :func:`pick_layout` keeps one.

Example:
    >>> pick_layout({1: 40.0, 2: 41.0}, {1: 2, 2: 4})  # within the margin: the smaller batch cap wins
    1
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError
from ..measure.stats import percentile
from ..measure.timer import Timer
from .config import ServingConfig
from .protocol import TensorMeta, datatype_of
from .simulate import curve_stats

__all__ = ["AUTO_MARGIN", "BATCH1_SESSION_ENGINES", "BySize", "CURVE_REPEATS", "Curve", "MIN_SIGMA",
           "load_instances", "pick_layout", "run_on_each", "warm_up"]

AUTO_MARGIN = 0.05  # instances="auto": layouts predicted within this of the best count as equal
CURVE_REPEATS = 5  # timed runs per measured batch size; the curve takes their p99 (about their maximum)
MIN_SIGMA = 0.05  # the least spread (sigma of the log) the layout simulation draws batch times with: five runs on
# a quiet machine see less spread than a server's batches show under load
# engines whose sessions are set up for the batch they are loaded for, whose batch-1 setup may run a lone sample
# faster (OpenVINO: the LATENCY hint at batch 1, THROUGHPUT above; see BySize), and the settings that tell
# whether it does (one stream of every thread against one stream per thread). Other engines load once.
BATCH1_SESSION_ENGINES = {"openvino": ("streams", "threads")}


def _curve_sizes(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


def pick_layout(rates: dict[int, float], batch_caps: dict[int, int], margin: float | None = None) -> int:
    """``instances="auto"``'s choice among layouts (instance count -> predicted samples/s, -> batch cap): of those
    predicted within ``margin`` (default :data:`AUTO_MARGIN`) of the best, the smallest batch cap, then the
    fewest instances.

    Example:
        >>> pick_layout({1: 27.0, 2: 28.3}, {1: 1, 2: 1}), pick_layout({1: 28.25, 2: 28.3}, {1: 3, 2: 1})
        (1, 2)
    """
    top = max(rates.values())
    near = [n for n, r in rates.items() if r >= top / (1 + (AUTO_MARGIN if margin is None else margin))]
    return min(near, key=lambda n: (batch_caps[n], n))


def load_instances(engine: Any, model: Any, config: ServingConfig) -> tuple[list[Any], list[Any]]:
    """The instances' sessions, and the sessions they share (closed last).

    Where the engine can share one compiled model between instances (:meth:`Engine.shared_instance_knobs`), it
    is loaded once with all the threads and one stream per instance; otherwise each instance is a session of
    its own with its share of the threads.
    """
    from ..engines import SessionOptions

    knobs = {**engine.serving_knobs(), **config.knobs}  # the user's knobs win
    shared_knobs = engine.shared_instance_knobs(config.instances) if config.instances > 1 else None
    if shared_knobs is not None and not set(shared_knobs) & set(config.knobs):
        owner = engine.load(model, SessionOptions(precision=config.precision, threads=config.threads,
                                                  batch=config.max_batch, knobs={**knobs, **shared_knobs}))
        return owner.instances(config.instances), [owner]
    options = SessionOptions(precision=config.precision, threads=config.threads_per_instance(),
                             batch=config.max_batch, knobs=knobs)
    sessions: list[Any] = []
    try:
        for _ in range(config.instances):
            sessions.append(engine.load(model, options))
            telling = BATCH1_SESSION_ENGINES.get(engine.name)
            if telling and config.max_batch > 1 and options.n_threads > 1:
                single = engine.load(model, replace(options, batch=1))
                a, b = single.settings(), sessions[-1].settings()
                if all(a.get(k) == b.get(k) for k in telling):  # set up alike: one session serves every size
                    single.close()
                else:
                    sessions[-1] = BySize(single, sessions[-1])
    except BaseException:
        for s in sessions:
            s.close()
        raise
    return sessions, []


class BySize:
    """One instance as two sessions of one engine: ``single`` for batches of one sample, ``batched`` for the rest.

    Engines set a session up for the batch it is loaded for. OpenVINO's THROUGHPUT hint at a max batch of 8 makes
    one stream per core and splits a batch over them, so a lone sample ran on one core: on 2 cores, twice the
    latency of the LATENCY hint (one stream with both threads) that ``effstack bench --batch 1`` measures. At low
    load nearly every batch is one sample, so the instance runs those on a session loaded for batch 1. The two
    never run at once: an instance computes one batch at a time. :func:`load_instances` pairs them only where
    the engine sets batch 1 up differently (:data:`BATCH1_SESSION_ENGINES`: for OpenVINO, where an instance has
    several threads and the two sessions' streams differ; ``hint`` or ``streams`` knobs given by the user apply
    to both, and then one session serves every size).
    """

    def __init__(self, single: Any, batched: Any):
        self.single = single
        self.batched = batched
        self.engine = batched.engine
        self._single = single.run
        self._batched = batched.run

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._single(x) if x.shape[0] == 1 else self._batched(x)

    def settings(self) -> dict[str, Any]:
        return {**self.batched.settings(), "batch1": self.single.settings()}

    def close(self) -> None:
        self.single.close()
        self.batched.close()


class Curve(NamedTuple):
    """Batch times the warm-up measured, in seconds per batch size (each the worst session's)."""

    p99_s: dict[int, float]  # what the latency-budget policy budgets with
    median_s: dict[int, float]  # what the layout simulation runs
    sigma: dict[int, float]  # the spread of the log of the times

    def jitter(self) -> dict[int, float]:
        """The spread the simulation draws batch times with: the measured sigma, at least :data:`MIN_SIGMA`."""
        return {b: max(v, MIN_SIGMA) for b, v in self.sigma.items()}


def warm_up(sessions: Sequence[Any], spec: Any, max_batch: int,
            repeats: int = CURVE_REPEATS, warm_width: int | None = None) -> tuple[Curve, TensorMeta]:
    """Run every batch size 1..max_batch on every session (all sessions at once, as when serving), then
    time the sizes 1, 2, 4, ..., max_batch; return the measured :class:`Curve` (worst session) and the
    output's metadata. ``warm_width`` (token ids, whose sequence axis is dynamic): the sizes are run that many
    tokens wide, and the curve is timed at the full width (``spec.shape``), the worst case.

    Raises:
        ConfigError: the session's output does not keep the batch axis first.
    """
    timer = Timer(warmup_iters=1, warmup_s=0.0)
    laps_ns: list[dict[int, list[float]]] = [{} for _ in sessions]
    outputs: list[Any] = [None] * len(sessions)
    examples = {b: spec.example(b, seed=b) for b in range(1, max_batch + 1)}
    warm = examples if warm_width is None else {b: np.ascontiguousarray(x[:, :warm_width]) for b, x in examples.items()}

    def one(i: int, session: Any) -> None:
        for b in range(1, max_batch + 1):
            y = np.asarray(session.run(warm[b]))
            if y.ndim == 0 or y.shape[0] != b:
                raise ConfigError(f"the engine returns shape {y.shape} for a batch of {b}; the batch axis "
                                  "must come first to batch requests")
            if b == 1:
                outputs[i] = y
        for b in _curve_sizes(max_batch):
            laps_ns[i][b] = list(timer.loop(lambda x=examples[b]: session.run(x), iterations=repeats))

    run_on_each(sessions, one, "effstack-warmup")
    stats = [curve_stats({b: np.asarray(v) / 1e9 for b, v in laps.items()}) for laps in laps_ns]
    sizes = list(laps_ns[0])
    curve = Curve(p99_s={b: max(percentile(laps[b], 99) for laps in laps_ns) / 1e9 for b in sizes},
                  median_s={b: max(st[b]["median_ms"] for st in stats) / 1e3 for b in sizes},
                  sigma={b: max(st[b]["sigma_log"] for st in stats) for b in sizes})
    y = outputs[0]
    return curve, TensorMeta("output", datatype_of(y.dtype), [-1, *y.shape[1:]])


def run_on_each(sessions: Sequence[Any], fn: Any, name: str = "effstack-instance") -> None:
    """Call ``fn(i, session)`` for every session at once, each on a thread of its own (as when serving), and
    re-raise the first error on the caller's thread once all have returned."""
    errors: list[BaseException] = []

    def one(i: int, session: Any) -> None:
        try:
            fn(i, session)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, s), name=f"{name}{i}") for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
