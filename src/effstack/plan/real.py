"""Measure a :class:`Candidate` on real sessions with effstack's own measurement code.

``instances`` sessions, each with ``threads`` compute threads, are driven together through the
:func:`~effstack.measure.scenarios.offline` scenario: the scenario sees one session whose ``run_many``
splits its calls across the instances (one Python thread each; engines release the GIL while they
compute), and every call is timed by the one :class:`~effstack.measure.timer.Timer`. Throughput is the
offline figure (median round); p50/p99 are the latencies of single batches during the timed rounds, i.e.
under full load — what a request would see when every instance is busy.

OpenVINO sessions default to the LATENCY hint (one stream each), so that ``instances`` is the only
source of concurrency; pass ``knobs={"openvino": {"hint": "throughput"}}`` to override. Cells run in
this process (not isolated like :func:`effstack.bench` cells): a planner measures many short cells, and a
process start per cell would cost more than most of them take.

>>> from functools import partial                                                    # doctest: +SKIP
>>> from effstack.models import load_model                                           # doctest: +SKIP
>>> model = load_model("effstack.testing:tiny_resnet")                              # doctest: +SKIP
>>> measure_real(model, Candidate("onnxruntime", "fp32", 8, instances=2, threads=1), 0.5)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from .candidate import Candidate, Measurement

__all__ = ["measure_real", "DEFAULT_KNOBS"]

# one stream per instance: the planner's instances axis is the concurrency
DEFAULT_KNOBS: dict[str, dict[str, Any]] = {"openvino": {"hint": "latency"}}


class _Instances:
    """``n`` sessions behind the session interface :func:`offline` uses (``input``, ``run``,
    ``run_many``, ``concurrency``). ``rounds`` holds the per-call latencies (ns) of every ``run_many``."""

    def __init__(self, sessions: list[Any], timer: Any):
        self.sessions, self.timer = sessions, timer
        self.input = sessions[0].input
        self.rounds: list[list[int]] = []
        self._pool = ThreadPoolExecutor(len(sessions), "effstack-plan") if len(sessions) > 1 else None

    def concurrency(self) -> int:
        return len(self.sessions)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.sessions[0].run(x)

    def run_many(self, x: np.ndarray, n: int) -> int:
        k = len(self.sessions)
        shares = [n // k + (i < n % k) for i in range(k)]  # n calls split as evenly as they go
        if self._pool is None:
            laps = self.timer.loop(partial(self.sessions[0].run, x), iterations=n)
        else:
            futures = [self._pool.submit(self.timer.loop, partial(s.run, x), iterations=share)
                       for s, share in zip(self.sessions, shares) if share]
            laps = [lap for f in futures for lap in f.result()]
        self.rounds.append(laps)
        return n * x.shape[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _knobs(engine: str, knobs: dict[str, Any] | None) -> dict[str, Any]:
    from ..measure.runner import _engine_knobs

    own = _engine_knobs(knobs, engine, [engine])
    return {**DEFAULT_KNOBS.get(engine, {}), **own}


def measure_real(
    model: Any,
    candidate: Candidate,
    seconds: float = 1.0,
    *,
    knobs: dict[str, Any] | None = None,
    repeats: int = 3,
) -> Measurement:
    """Throughput and p50/p99 of ``candidate`` on ``model``, measured for about ``seconds``.

    Args:
        model: a :class:`~effstack.models.LoadedModel` (load it once and bind it with
            ``functools.partial(measure_real, model)`` to plan), or anything :func:`load_model` takes.
        candidate: engine, precision, batch, instances and threads.
        seconds: timed seconds (after warm-up; loading and compiling are not counted).
        knobs: engine settings in :func:`effstack.bench`'s shape (shared keys, or a dict per engine).
        repeats: offline rounds; throughput is the median round.

    Raises:
        UnknownEngineError, MissingDependencyError, EngineUnavailableError, PrecisionError: the engine or
            precision cannot run here. EngineError (or the runtime's own error): building or running failed.

    Example:
        >>> measure_real(model, Candidate("torch", "fp32", 4), 0.5).throughput  # doctest: +SKIP
        1234.5
    """
    from ..engines import canonical, get_engine
    from ..engines.base import SessionOptions, session_kernel_isa
    from ..measure.scenarios import offline
    from ..measure.stats import latency_stats
    from ..measure.timer import Timer
    from ..models import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    name = canonical(candidate.engine)
    engine = get_engine(name)
    options = SessionOptions(precision=candidate.precision, threads=candidate.threads, batch=candidate.batch,
                             knobs=_knobs(name, knobs))
    engine.check(options)
    timer = Timer()
    with contextlib.ExitStack() as stack:
        sessions = [stack.enter_context(engine.load(loaded, options)) for _ in range(candidate.instances)]
        group = _Instances(sessions, timer)
        stack.callback(group.close)
        x = loaded.input.example(candidate.batch, seed=0)
        for session in sessions:
            # one call from this thread first: OpenVINO's bindings initialise numpy support lazily, and two
            # instances doing that at once from pool threads deadlock (a pybind11 once-flag under the GIL)
            session.run(x)
        result = offline(group, x, duration_s=seconds, repeats=repeats, timer=timer)
        # offline's timed rounds are its last `repeats` run_many calls (warm-up and sizing come first)
        lat = latency_stats([lap for laps in group.rounds[-repeats:] for lap in laps])
        isa = session_kernel_isa(sessions[0])
    cpu = result.cpu.other_pct_core if result.cpu is not None else None
    return Measurement(throughput=result.throughput.median, p50_ms=lat.p50_ms, p99_ms=lat.p99_ms,
                       samples=result.samples, seconds=seconds, other_cpu_pct=cpu, kernel_isa=isa)


