"""Per-layer sensitivity: how much error quantizing each compute layer alone adds to the model output.

For every Conv/Gemm/MatMul the model is quantized with only that layer in INT8 (same calibration
ranges, so the float model does not run again) and run on ONNX Runtime; the output's signal-to-noise
ratio against the float output is the layer's score. Low SNR = sensitive: those layers are the first
kept in float by the fallback.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluate.accuracy import snr_db

if TYPE_CHECKING:  # pragma: no cover
    from .calibrate import Calibration

__all__ = ["LayerSensitivity", "layer_sensitivity", "run_onnx", "torch_name"]


@dataclass(frozen=True)
class LayerSensitivity:
    """One row of the table: ``layer`` (ONNX node), ``module`` (torch module path), ``snr_db`` of the output."""

    layer: str
    module: str
    snr_db: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def torch_name(node: str) -> str:
    """``"/features/3/conv/Conv"`` -> ``"features.3.conv"`` (the torch module the exporter named it after)."""
    parts = [p for p in node.split("/") if p]
    return ".".join(parts[:-1]) if len(parts) > 1 else node


def run_onnx(path: Any, x: np.ndarray, threads: int | None = None, chunk: int = 64) -> np.ndarray:
    """Run an ONNX file on ONNX Runtime's CPU provider over ``x`` in chunks; return the first output."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i: i + chunk]})[0] for i in range(0, len(x), chunk)])


def layer_sensitivity(cal: Calibration, method: str, x: np.ndarray, reference: np.ndarray,
                      threads: int | None = None, deadline: float | None = None) -> list[LayerSensitivity]:
    """The sensitivity table, most sensitive (lowest SNR) first.

    Args:
        cal: the model's :class:`~effstack.compress.calibrate.Calibration`.
        method: calibration method whose ranges to use.
        x: evaluation inputs; reference: the float model's outputs on ``x``.
        deadline: a ``time.perf_counter()`` value; layers not scored by then are left out of the table
            (the fallback then only considers the layers it has scores for).

    Example:
        >>> rows = layer_sensitivity(cal, "minmax", x, ref)   # doctest: +SKIP
        >>> rows[0].layer, rows[0].snr_db                     # doctest: +SKIP
        ('/3/Conv', 12.5)
    """
    rows = []
    for layer in cal.layers:
        if deadline is not None and rows and time.perf_counter() > deadline:
            break
        out = run_onnx(cal.build(method, only=(layer,)), x, threads)
        rows.append(LayerSensitivity(layer, torch_name(layer), round(snr_db(out, reference), 2)))
    return sorted(rows, key=lambda r: (r.snr_db, r.layer))
