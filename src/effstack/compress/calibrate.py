"""Calibration for static INT8: run the float model once, derive ranges for any method, build QDQ models.

ONNX Runtime's calibrators each run the float model themselves, so trying ``entropy`` after ``minmax``
would run it twice. Here the float model (augmented to output every tensor a quantized node reads) runs
**once** over the calibration samples; the raw activations are kept in memory by a :class:`Calibration`
and every method's ranges are computed from them (min-max directly; entropy and percentile with ONNX
Runtime's own ``HistogramCollector`` and its default settings). Ranges are handed to ``quantize_static``
through its ``calibration_cache_path``, so it never calibrates again, and every QDQ build with a
different set of float layers (sensitivity, fallback) reuses them.

Memory: the activations of all calibration samples are held (e.g. a 32×32 CNN: a few MB per 100
samples; ResNet-50 at 224²: ~100 MB per sample), so keep ``samples`` small for big inputs.

>>> cal = Calibration(model, x[:64])                        # doctest: +SKIP
>>> path = cal.build("entropy", exclude=("/3/Conv",))       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..errors import EngineError, InputError, one_line
from ..export._cache import atomic_file, cache_dir, hash_arrays, hash_text, safe_name
from ..export.onnx import export_onnx

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["COMPUTE_OPS", "METHODS", "Calibration", "compute_layers"]

METHODS = ("minmax", "entropy", "percentile")
_TRANSPARENT = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Relu", "Clip",
                "Resize", "Slice", "Gather", "Split")
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the layers that do the multiply-accumulates


def compute_layers(path: Path) -> list[str]:
    """Names of the compute nodes (Conv/Gemm/MatMul) of an ONNX file, in graph order."""
    onnx = require("onnx")
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in COMPUTE_OPS]


class Calibration:
    """Activation statistics of one model on one calibration set, and the QDQ models built from them.

    Args:
        model: the float model (torch or ONNX).
        samples: calibration batch ``(N, *input.shape)``, float32, N >= 1.
        per_channel / reduce_range: weight quantization (per-channel int8; 7-bit on CPUs without VNNI).

    Raises:
        InputError: no samples, or samples whose shape does not fit the model.
    """

    def __init__(self, model: LoadedModel, samples: np.ndarray, per_channel: bool = True,
                 reduce_range: bool = False):
        if samples is None or len(samples) == 0:
            raise InputError("no calibration data: pass at least one sample (or use a synthetic set)")
        self.model = model
        self.samples = model.input.validate(np.asarray(samples))
        self.per_channel, self.reduce_range = bool(per_channel), bool(reduce_range)
        self.key = hash_text(model.fingerprint, hash_arrays([self.samples]), self.per_channel, self.reduce_range)
        self.folder = cache_dir("quantize") / f"{safe_name(model.name)}-{model.fingerprint}"
        self.float_path = self._preprocess()
        self.layers = compute_layers(self.float_path)
        self._activations: dict[str, np.ndarray] | None = None
        self._ranges: dict[str, Path] = {}
        self.float_runs = 0  # how many times the float model ran over the calibration set (tests pin 1)

    # -- the float model, pre-processed once ---------------------------------------------------------

    def _preprocess(self) -> Path:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        src = export_onnx(self.model)
        out = self.folder / "float-pre.onnx"
        if out.is_file():
            return out
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(out) as tmp:
            try:  # shape inference + fusions let the quantizer place QDQ pairs the fusions can absorb
                quant_pre_process(str(src), str(tmp))
            except Exception:  # an optimisation only: quantize the raw graph if it fails
                tmp.write_bytes(Path(src).read_bytes())
        return out

    # -- activations: the one float run ---------------------------------------------------------------

    def activations(self) -> dict[str, np.ndarray]:
        """Every calibrated tensor's values over the calibration set (runs the float model the first time)."""
        if self._activations is None:
            from onnxruntime.quantization.calibrate import HistogramCalibrater

            with tempfile.TemporaryDirectory(prefix="effstack-calib-") as tmp:
                cal = HistogramCalibrater(str(self.float_path), None, str(Path(tmp) / "augmented.onnx"))
                cal.augment_graph()
                cal.create_inference_session()
                names = [o.name for o in cal.infer_session.get_outputs()]
                keep = [n for n in names if n in cal.tensors_to_calibrate]
                stacks: dict[str, list[np.ndarray]] = {n: [] for n in keep}
                name = cal.infer_session.get_inputs()[0].name
                for i in range(0, len(self.samples), 16):
                    outs = cal.infer_session.run(keep, {name: self.samples[i: i + 16]})
                    for n, o in zip(keep, outs):
                        stacks[n].append(np.array(o, copy=True))
                self.float_runs += 1
                del cal
            self._activations = {n: np.concatenate(v) for n, v in stacks.items()}
        return self._activations

    def ranges(self, method: str) -> Path:
        """A calibration-cache file (ONNX Runtime's format) with ``method``'s ranges, computed once per method."""
        if method not in METHODS:
            from ..errors import ConfigError

            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
        if method in self._ranges:
            return self._ranges[method]
        from onnxruntime.quantization.calibrate import (
            CalibrationMethod,
            HistogramCollector,
            TensorsData,
            save_tensors_data,
        )

        acts = self.activations()
        quiet = contextlib.redirect_stdout(io.StringIO())  # the collectors print progress notes
        if method == "minmax":
            data: dict[str, Any] = {n: (np.array(a.min(), np.float32), np.array(a.max(), np.float32))
                                    for n, a in acts.items()}
            kind = CalibrationMethod.MinMax
        else:  # ONNX Runtime's defaults for each method (create_calibrator)
            opts = ({"symmetric": False, "num_bins": 128, "num_quantized_bins": 128, "percentile": 99.999}
                    if method == "entropy" else
                    {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 128, "percentile": 99.999})
            collector = HistogramCollector(method=method, scenario="same", **opts)
            with quiet:
                collector.collect({n: [a] for n, a in acts.items()})
                data = collector.compute_collection_result()
            kind = CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.Percentile
        out = self.folder / f"ranges-{self.key}-{method}.json"
        with atomic_file(out) as tmp:
            save_tensors_data(TensorsData(kind, data), tmp)
        self._ranges[method] = out
        return out

    def _with_upstream(self, exclude: tuple[str, ...]) -> tuple[str, ...]:
        """Add the quantization-transparent ops (MaxPool, Reshape, ...) right before each excluded layer.

        Without them ONNX Runtime carries the quantized tensor through the MaxPool to the excluded layer's
        input, quantizes its float weight at load time and runs it as QLinearConv anyway.
        """
        if not exclude:
            return exclude
        onnx = require("onnx")
        nodes = onnx.load(str(self.float_path)).graph.node
        prod = {o: n for n in nodes for o in n.output}
        out = set(exclude)
        for n in nodes:
            if n.name not in exclude or not n.input:
                continue
            up = prod.get(n.input[0])
            while up is not None and up.op_type in _TRANSPARENT and up.name not in out:
                out.add(up.name)
                up = prod.get(up.input[0]) if up.input else None
        return tuple(out)

    # -- QDQ builds -----------------------------------------------------------------------------------

    def build(self, method: str, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> Path:
        """A QDQ INT8 ONNX file with ``method``'s ranges, ``exclude`` layers left float (cached by content).

        ``only``: quantize just these compute layers (used to measure one layer's sensitivity).

        Raises:
            EngineError: ONNX Runtime's quantizer failed.
        """
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        ranges = self.ranges(method)
        exclude = self._with_upstream(exclude)
        exclude, sel = tuple(sorted(exclude)), tuple(sorted(only)) if only is not None else None
        out = self.folder / f"int8-{hash_text(self.key, method, exclude, sel)}.onnx"
        if out.is_file():
            return out
        kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[method]
        with atomic_file(out) as tmp:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    quantize_static(
                        str(self.float_path), str(tmp), None, quant_format=QuantFormat.QDQ,
                        per_channel=self.per_channel, reduce_range=self.reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=kind,
                        nodes_to_exclude=list(exclude) or None, nodes_to_quantize=list(sel) if sel else None,
                        calibration_cache_path=str(ranges),
                    )
            except Exception as exc:
                raise EngineError(f"INT8 quantization of {self.model.name!r} failed: {one_line(exc, 200)}") from None
            if exclude:
                _unquantize_inputs(tmp, set(exclude))
        return out


def _unquantize_inputs(path: Path, names: set[str]) -> None:
    """Feed the excluded nodes their float activations, not a Q->DQ pair.

    The quantizer leaves an excluded Conv's weight float but its input can still arrive through
    QuantizeLinear->DequantizeLinear (QDQ propagation through MaxPool etc.); ONNX Runtime's optimizer then
    quantizes the float weight itself (``WeightBiasQuantization``) and runs the layer as a QLinearConv,
    so the layer would not stay float. Rewiring the input to the tensor before the Q pair prevents that.
    """
    onnx = require("onnx")
    model = onnx.load(str(path))
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    for node in g.node:
        if node.name not in names:
            continue
        for i, name in enumerate(node.input):
            dq = prod.get(name)
            q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    while True:  # drop the Q/DQ nodes nothing reads any more
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    onnx.save(model, str(path))
