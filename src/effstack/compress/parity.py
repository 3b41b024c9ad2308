"""Parity: does the same quantized model give the same answers on every runtime?

Runs one QDQ ONNX file on ONNX Runtime and on OpenVINO (whichever are installed), and the float model
in PyTorch (or ONNX Runtime for an ONNX-only model) as the reference; each pair gets top-1 agreement and
output SNR. A low figure between two runtimes is the "different answers on different runtimes" failure.

>>> rows = parity(model, result.model_path, x)       # doctest: +SKIP
>>> print(format_parity(rows))                        # doctest: +SKIP
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import is_installed
from ..evaluate.accuracy import agreement, snr_db
from .sensitivity import run_onnx

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["format_parity", "parity"]


def _float_reference(model: LoadedModel, x: np.ndarray) -> tuple[str, np.ndarray]:
    if model.module is not None:
        import torch

        with torch.inference_mode():
            return "pytorch fp32", np.concatenate([model.module(torch.from_numpy(x[i: i + 64])).numpy()
                                                   for i in range(0, len(x), 64)])
    return "onnxruntime fp32", run_onnx(model.onnx_path, x)


def _openvino(path: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([np.array(compiled(x[i: i + 64])[0]) for i in range(0, len(x), 64)])


def parity(model: LoadedModel, int8_path: str | Path, x: np.ndarray) -> list[dict[str, Any]]:
    """Agreement and SNR between every pair of {float reference, ORT int8, OpenVINO int8} outputs.

    Args:
        model: the float model; int8_path: a QDQ ONNX file (e.g. ``QuantizeResult.model_path``);
        x: inputs ``(N, *input.shape)``.

    Returns rows ``{"a", "b", "top1_agreement", "snr_db"}``.

    Raises:
        InputError: ``x`` does not fit the model.
    """
    x = model.input.validate(np.ascontiguousarray(x))
    outs: dict[str, np.ndarray] = dict([_float_reference(model, x)])
    if is_installed("onnxruntime"):
        outs["onnxruntime int8"] = run_onnx(int8_path, x)
    if is_installed("openvino"):
        outs["openvino int8"] = _openvino(Path(int8_path), x)
    rows = []
    for a, b in combinations(outs, 2):
        ya, yb = outs[a], outs[b]
        rows.append({"a": a, "b": b, "top1_agreement": round(agreement(ya, yb), 2) if ya.ndim == 2 else None,
                     "snr_db": round(snr_db(ya, yb), 2)})
    return rows


def format_parity(rows: list[dict[str, Any]]) -> str:
    """The parity rows as a small text table."""
    lines = [f"{'runtime A':<18} {'runtime B':<18} {'top-1 agree %':>13} {'SNR dB':>8}"]
    for r in rows:
        agree = "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.2f}"
        lines.append(f"{r['a']:<18} {r['b']:<18} {agree:>13} {r['snr_db']:>8.2f}")
    return "\n".join(lines)
