"""Measurement: one timer, named scenarios, flat result rows, isolated cells, the sweep, and the peak rates.

>>> from effstack.measure import bench
>>> rows = bench("resnet50", ["onnxruntime", "openvino"], ["fp32", "int8"], [1, 8])  # doctest: +SKIP

Names are imported on first use: ``python -m effstack.measure.cell`` (the isolated child) must not
find its own module already imported by this package.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "Cell": "cell", "run_cell": "cell",
    "CpuUsage": "cpu", "OtherCpu": "cpu",
    "PEAK_PRECISIONS": "peak", "peak_for": "peak", "peak_rates": "peak",
    "SCHEMA_VERSION": "row", "ResultRow": "row",
    "bench": "runner",
    "SCENARIOS": "scenarios", "ScenarioResult": "scenarios", "offline": "scenarios", "server": "scenarios",
    "single_stream": "scenarios",
    "LatencyStats": "stats", "Spread": "stats", "latency_stats": "stats", "percentile": "stats", "spread": "stats",
    "Timer": "timer",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
