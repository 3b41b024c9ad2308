"""The speed guard: an INT8 model must beat the best float configuration, or it is rejected with the reason.

The decision (:func:`speed_verdict`) is a pure function of measured throughputs, so tests inject
figures instead of asserting on timing. :func:`float_layers` names the compute layers that did not run
in INT8, read from what each engine actually built (ONNX Runtime's optimized graph, OpenVINO's runtime
model), which is usually why an "INT8" model is not faster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SpeedVerdict", "float_configs", "float_layers", "offline_measure", "speed_verdict"]

Measure = Callable[[Any, np.ndarray], float]  # (session, batch) -> samples/s


@dataclass(frozen=True)
class SpeedVerdict:
    """passed: INT8 is at least ``speedup_min`` × the best float figure; reason says why not."""

    passed: bool
    speedup: float
    best_float: str
    reason: str


def speed_verdict(int8_tps: float, float_tps: dict[str, float], speedup_min: float,
                  not_int8: list[str] | None = None) -> SpeedVerdict:
    """Decide whether the INT8 throughput pays against the best float configuration.

    Args:
        int8_tps: INT8 samples/s.
        float_tps: samples/s by float configuration name, e.g. ``{"fp32": 50.0, "bf16": 90.0}``.
        speedup_min: the factor INT8 must reach (1.1: 10 % faster).
        not_int8: names of compute layers that ran in float in the INT8 build (for the reason).

    Example:
        >>> speed_verdict(100.0, {"fp32": 95.0}, 1.1, ["/0/Conv"]).passed
        False
    """
    best = max(float_tps, key=lambda k: float_tps[k])
    speedup = int8_tps / float_tps[best] if float_tps[best] > 0 else float("inf")
    if speedup >= speedup_min:
        return SpeedVerdict(True, speedup, best, f"int8 is {speedup:.2f}x the best float ({best})")
    layers = list(not_int8 or [])
    why = (f"{len(layers)} compute layer(s) did not run in int8: {', '.join(layers[:8])}"
           + (" ..." if len(layers) > 8 else "")) if layers else "every compute layer ran in int8, so the " \
        "float kernels are simply as fast on this CPU"
    return SpeedVerdict(False, speedup, best,
                        f"int8 is only {speedup:.2f}x {best} ({int8_tps:.1f} vs {float_tps[best]:.1f} samples/s, "
                        f"needs {speedup_min:g}x); {best} wins; {why}")


def float_configs(engine: Any) -> list[str]:
    """The float precisions an engine instance offers on this machine, e.g. ``["fp32", "bf16"]``."""
    return [p for p in ("fp32", "bf16", "fp16") if p in getattr(engine, "precisions", ("fp32",))]


def float_layers(session: Any) -> list[str]:
    """Names of the compute layers a session runs in float (empty for engines that cannot tell)."""
    layers = session.layer_precisions() if hasattr(session, "layer_precisions") else {}
    return [name for name, kind in layers.items() if kind not in ("int8", "int4", "uint8")]


def offline_measure(duration_s: float = 1.0, repeats: int = 3) -> Measure:
    """A :data:`Measure` that runs :func:`effstack.measure.scenarios.offline` and returns the median samples/s."""
    def measure(session: Any, x: np.ndarray) -> float:
        from ..measure.scenarios import offline

        spread = offline(session, x, duration_s=duration_s, repeats=repeats).throughput
        measure.last = spread  # type: ignore[attr-defined]  # the repeats' spread, for the caller's report
        return float(spread.median)

    return measure
