"""The real ``measure`` for the ladder: engine sessions, timed with effstack's scenarios, scored on data.

Speed: the single-stream scenario at the configuration's batch (one batch after another), so the p99 is
the p99 of one batch's compute, the latency a request sees when the dynamic batcher launches it at
once; throughput is batch / latency, the median of consecutive chunks, with their spread. Accuracy: the
session's outputs on the evaluation set, as top-1 against labels when there are labels, else as top-1
agreement with the baseline's outputs; for an embedding model (``task="embedding"``) as recall@10 of the
baseline's neighbours in points (100: every sample has the same 10 nearest neighbours as under fp32; labels
are not used). Accuracy depends only on (variant, engine, precision), so it is computed once per such triple.

Sessions are cached per (variant, engine, precision, threads) and reused across batch sizes (every
engine here takes a dynamic batch); OpenVINO's performance hint depends on the batch, so its sessions
are keyed by batch too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, EffstackError, InputError
from .core import Candidate, Measured
from .runner import Variant

__all__ = ["Workbench", "BYTES_PER_WEIGHT", "metric_name"]

BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "ternary": 0.2}


def metric_name(task: str, labelled: bool) -> str:
    """What the ladder's accuracy column holds for ``task``."""
    if task == "embedding":
        return "recall@10 of the fp32 baseline's neighbours (points; 100 = the same neighbours)"
    return "top-1 accuracy" if labelled else "top-1 agreement with the fp32 baseline"


@dataclass
class Workbench:
    """Measures ladder configurations on this machine.

    Args:
        x_eval: evaluation inputs ``(N, *input_shape)`` float32.
        y_eval: labels ``(N,)`` or None (then accuracy is agreement with the baseline's outputs).
        task: ``classification`` or ``embedding`` (accuracy is recall@10 of the baseline's neighbours).
        seconds: timed seconds per configuration (after warm-up).
        repeats: chunks whose throughputs give the spread.
        reference: the baseline's outputs on ``x_eval`` (filled by the first measurement when None).
        calibration: inputs an engine's own INT8 build calibrates on (default: the first 128 of ``x_eval``;
            the ladder passes its training inputs, so that calibration never sees the evaluation set).

    Raises (from :meth:`measure`): nothing for engine failures — they come back as ``Measured.error``.
    """

    x_eval: np.ndarray
    y_eval: np.ndarray | None = None
    task: str = "classification"
    seconds: float = 1.0
    repeats: int = 3
    reference: np.ndarray | None = None
    calibration: np.ndarray | None = None
    sessions: dict[tuple, Any] = field(default_factory=dict, repr=False)
    accuracy_cache: dict[tuple, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.x_eval, np.ndarray) or self.x_eval.ndim < 2 or len(self.x_eval) == 0:
            raise InputError("the evaluation set must be a non-empty numpy batch (N, ...)")
        # the INT8 guard's tasks: the ladder scores the same way
        from ..compress.quantize import TASKS

        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "embedding" and len(self.x_eval) < 2:
            raise InputError("scoring an embedding model needs at least two evaluation inputs (neighbours)")
        if self.y_eval is not None and len(self.y_eval) != len(self.x_eval):
            raise InputError(f"labels must match the evaluation inputs: {len(self.y_eval)} labels for "
                             f"{len(self.x_eval)} inputs")

    # -- sessions ------------------------------------------------------------------------------------
    def _session(self, variant: Variant, config: Candidate) -> Any:
        from ..engines import SessionOptions, get_engine

        batch_key = config.batch if config.engine == "openvino" else None
        key = (variant.label, config.engine, config.precision, config.threads, batch_key)
        if key not in self.sessions:
            # an INT8 build is a QDQ file: the engine runs it as given (its kernels are int8), its float layers
            # at the variant's float precision
            precision = variant.float_precision if variant.int8 else config.precision
            engine = get_engine(config.engine)
            calibration = None
            if precision == "int8":  # the engine's own INT8 of a float model: calibrate on real inputs
                x = self.calibration if self.calibration is not None else self.x_eval
                calibration = [x[i:i + 8] for i in range(0, min(len(x), 128), 8)]
            options = SessionOptions(precision, config.threads, config.batch, calibration=calibration)
            self.sessions[key] = engine.load(variant.model, options)
        return self.sessions[key]

    def close(self) -> None:
        for s in self.sessions.values():
            try:
                s.close()
            except Exception:  # closing is best effort; a session that fails to close holds nothing we need
                pass
        self.sessions.clear()

    # -- measuring -------------------------------------------------------------------------------------
    def measure(self, variant: Variant, config: Candidate) -> Measured:
        """Throughput, p50/p99 of one batch, accuracy, weight size for ``variant`` under ``config``."""
        from ..measure.scenarios import single_stream

        if config.instances > 1:
            return self._measure_instances(variant, config)
        try:
            session = self._session(variant, config)
            accuracy = self.accuracy(variant, config, session)
            x = np.ascontiguousarray(np.resize(self.x_eval, (config.batch, *self.x_eval.shape[1:])))
            r = single_stream(session, x, duration_s=self.seconds, repeats=self.repeats, min_queries=5)
        except EffstackError as exc:
            from ..errors import one_line

            return Measured(error=one_line(exc))
        lat = r.latency
        precision = "int8" if variant.int8 else config.precision
        from ..engines.base import session_kernel_isa

        executed = _executed(session)
        return Measured(throughput=r.throughput.median, p99_ms=lat.p99_ms, p50_ms=lat.p50_ms,
                        spread_pct=r.throughput.range_pct, accuracy=accuracy, macs=variant.macs,
                        size_bytes=_size(variant, precision), executed_precision=executed,
                        kernel_isa=session_kernel_isa(session), seconds=r.duration_s + r.warmup_s)

    def _measure_instances(self, variant: Variant, config: Candidate) -> Measured:
        """Several sessions at once, through the planner's concurrent measurement (the same offline scenario)."""
        from ..errors import one_line
        from ..plan.candidate import Candidate
        from ..plan.real import measure_real

        single = Candidate(config.engine, config.precision, config.batch, 1, config.threads)
        try:
            accuracy = self.accuracy(variant, config, self._session(variant, single))
            precision = variant.float_precision if variant.int8 else config.precision
            m = measure_real(variant.model, Candidate(config.engine, precision, config.batch, config.instances,
                                                      config.threads),
                             self.seconds, repeats=self.repeats)
        except EffstackError as exc:
            return Measured(error=one_line(exc))
        return Measured(throughput=m.throughput, p99_ms=m.p99_ms, p50_ms=m.p50_ms, accuracy=accuracy,
                        macs=variant.macs, size_bytes=_size(variant, "int8" if variant.int8 else config.precision),
                        kernel_isa=m.kernel_isa, seconds=m.seconds)

    def accuracy(self, variant: Variant, config: Candidate, session: Any) -> float:
        """Top-1 (labels), agreement with the reference, or (embeddings) recall@10 of the reference's
        neighbours, in percent; cached per (variant, engine, precision)."""
        from ..engines.base import run_batches
        from ..evaluate.accuracy import score

        key = (variant.label, config.engine, config.precision)
        if key not in self.accuracy_cache:
            out = run_batches(session, self.x_eval)
            if self.reference is None:
                self.reference = out
            self.accuracy_cache[key] = score(out, self.reference, self.y_eval, self.task)
        return self.accuracy_cache[key]


def _size(variant: Variant, precision: str) -> int | None:
    if variant.params is None:
        return None
    return int(math.ceil(variant.params * BYTES_PER_WEIGHT.get(precision, 4.0)))


def _executed(session: Any) -> str:
    from ..engines.base import summarize_precision

    try:
        return summarize_precision(session.executed_precision())
    except Exception:  # the executed-precision read-out is informative only
        return ""

