"""Calibration for static INT8: run the float model once, derive ranges for any method, build QDQ models.

ONNX Runtime's calibrators each run the float model themselves, so trying ``entropy`` after ``minmax``
would run it twice. Here the float model (augmented to output every tensor a quantized node reads) runs
**once** over the calibration samples, and that one pass collects every method's statistics: running
min/max, and ONNX Runtime's own ``HistogramCollector`` (its default settings) for entropy and percentile.
Ranges are handed to ``quantize_static`` through its ``calibration_cache_path``, so it never calibrates
again, and every QDQ build with a different set of float layers (sensitivity, fallback) reuses them.

Memory: the pass is streamed in chunks of samples whose activations fit ``chunk_bytes`` (256 MiB by
default; ResNet-50 at 224² has ~100 MB of activations a sample, so 2 samples a chunk), and only the
statistics are kept, so the sample count is bounded by time, not memory.

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
from .._files import atomic_file, cache_dir
from ..export._cache import hash_arrays, hash_text, safe_name
from ..export.onnx import export_onnx

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["CHUNK_BYTES", "COMPUTE_OPS", "METHODS", "Calibration", "compute_layers"]

METHODS = ("minmax", "entropy", "percentile")
CHUNK_BYTES = 256 * 2**20  # activations held at once during calibration
_HISTOGRAM_OPTIONS = {  # ONNX Runtime's defaults for each method (quantization.calibrate.create_calibrator)
    "entropy": {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128, "percentile": 99.999},
    "percentile": {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 128, "percentile": 99.999},
}
_TRANSPARENT = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Relu", "Clip",
                "Resize", "Slice", "Gather", "Split")
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the layers that do the multiply-accumulates


GRAPH_PASSES = "v2"  # the float graph's rewrites before quantizing (v2: zero Pads folded into their Convs)


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
        chunk_bytes: activation bytes held at once while calibrating (the samples run in chunks this big).
        methods: the methods whose statistics the float pass collects (a method asked for later that is
            not among them costs a second pass); histograms cost time, so a min-max-only user can skip them.
        op_types: quantize (and calibrate) only these ONNX op types (None: every op the quantizer knows).
            Transformers pass ``("MatMul", "Gemm")``: their attention-mask Add carries float32's lowest
            value, which no int8 range holds (and whose histogram cannot even be binned).

    Raises:
        InputError: no samples, or samples whose shape does not fit the model.
    """

    def __init__(self, model: LoadedModel, samples: np.ndarray, per_channel: bool = True,
                 reduce_range: bool = False, *, chunk_bytes: int = CHUNK_BYTES,
                 methods: tuple[str, ...] = METHODS, op_types: tuple[str, ...] | None = None):
        if samples is None or len(samples) == 0:
            raise InputError("no calibration data: pass at least one sample (or use a synthetic set)")
        self.model = model
        self.samples = model.input.validate(np.asarray(samples))
        self.per_channel, self.reduce_range = bool(per_channel), bool(reduce_range)
        self.chunk_bytes = max(1, int(chunk_bytes))
        self.methods = tuple(m for m in METHODS if m in methods)
        self.chunk_size = 0  # samples a chunk, set by the float pass
        self.op_types = tuple(op_types) if op_types else None
        # the chunk budget is in the key: entropy/percentile histograms depend on how the samples are chunked
        self.key = hash_text(model.fingerprint, hash_arrays([self.samples]), self.per_channel, self.reduce_range,
                             self.chunk_bytes, GRAPH_PASSES, *([self.op_types] if self.op_types else []))
        self.folder = cache_dir("quantize") / f"{safe_name(model.name)}-{model.fingerprint}"
        self.float_path = self._preprocess()
        self.layers = compute_layers(self.float_path)
        self._stats: dict[str, Any] | None = None
        self._ranges: dict[str, Path] = {}
        self._bounds: dict[str, dict[str, tuple[Any, ...]]] = {}
        self.float_runs = 0  # how many times the float model ran over the calibration set (tests pin 1)

    # -- the float model, pre-processed once ---------------------------------------------------------

    def _preprocess(self) -> Path:
        import onnx

        from ..engines.onnxruntime import pre_process

        from ..export.graph import fold_pads

        src = export_onnx(self.model)
        out = self.folder / f"float-pre-{GRAPH_PASSES}.onnx"
        if out.is_file():
            return out
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(out) as tmp:
            try:  # shape inference + fusions let the quantizer place QDQ pairs the fusions can absorb
                pre_process(self.model, src, tmp)
            except Exception:  # an optimisation only: quantize the raw graph if it fails
                tmp.write_bytes(Path(src).read_bytes())
            graph = onnx.load(str(tmp))
            if fold_pads(graph):  # exact; without it a Q/DQ pair splits each Pad from its Conv
                onnx.save(graph, str(tmp))
        return out

    # -- activation statistics: the one float pass, streamed in chunks -----------------------------------

    def statistics(self) -> dict[str, Any]:
        """Every method's statistics over the calibration set (runs the float model the first time).

        ``{"minmax": {tensor: (min, max)}, "entropy": HistogramCollector, "percentile": HistogramCollector}``
        (only the methods given to the constructor). The augmented float model runs over the samples
        ``chunk_size`` at a time; each chunk's activations are folded into running min/max and ONNX
        Runtime's histograms, then dropped, so memory holds one chunk of activations, not the whole set.
        """
        if self._stats is None:
            from onnxruntime.quantization.calibrate import (
                HistogramCalibrater,
                HistogramCollector,
            )

            stats: dict[str, Any] = {"minmax": {}}
            for m in self.methods:  # ONNX Runtime's defaults for each method (create_calibrator)
                if m != "minmax":
                    stats[m] = HistogramCollector(method=m, scenario="same", **_HISTOGRAM_OPTIONS[m])
            with tempfile.TemporaryDirectory(prefix="effstack-calib-") as tmp:
                cal = HistogramCalibrater(str(self.float_path), list(self.op_types or []) or None, str(Path(tmp) / "augmented.onnx"))
                cal.augment_graph()
                cal.create_inference_session()
                sess = cal.infer_session
                keep = [o.name for o in sess.get_outputs() if o.name in cal.tensors_to_calibrate]
                name = sess.get_inputs()[0].name
                # one sample's activations size the chunks (it runs again in the first chunk: cheap)
                per_sample = max(1, sum(int(o.nbytes) for o in sess.run(keep, {name: self.samples[:1]})))
                size = self.chunk_size = int(min(len(self.samples), max(1, self.chunk_bytes // per_sample)))
                for i in range(0, len(self.samples), size):
                    self._accumulate(stats, dict(zip(keep, sess.run(keep, {name: self.samples[i: i + size]}))))
                self.float_runs += 1
                del cal, sess
            self._stats = stats
        return self._stats

    @staticmethod
    def _accumulate(stats: dict[str, Any], chunk: dict[str, np.ndarray]) -> None:
        """Fold one chunk's activations (``{tensor: (n, ...)}``) into the running statistics."""
        bounds = stats["minmax"]
        for n, a in chunk.items():
            lo, hi = (np.array(a.min(), np.float32), np.array(a.max(), np.float32)) if a.size else \
                (np.array(0, np.float32), np.array(0, np.float32))
            if n in bounds:
                lo, hi = np.minimum(bounds[n][0], lo), np.maximum(bounds[n][1], hi)
            bounds[n] = (lo, hi)
        with contextlib.redirect_stdout(io.StringIO()):  # the collectors print progress notes
            for m, collector in stats.items():
                if m != "minmax":
                    collector.collect(chunk)

    def ranges(self, method: str) -> Path:
        """A calibration-cache file (ONNX Runtime's format) with ``method``'s ranges, computed once per method.

        All three equal what ONNX Runtime computes from every activation at once (the earlier keep-everything
        code) when the calibration set fits in one chunk. Over several chunks:

        - min-max: exact.
        - entropy: the merged histogram (ONNX Runtime's incremental one, which grows past 128 bins when a
          later chunk's range is larger) is re-binned to the 128 bins over ``[-max|x|, max|x|]`` the
          one-shot histogram has, so the KL search sees the same grid. At these defaults (128 bins, 128
          quantized bins) the search has one candidate, the whole range, so entropy ranges are exactly the
          min-max ones, chunked or not; without the re-binning they depended on the chunking (a bound moved
          by up to 39% of max |x| on the digits CNN with 1-sample chunks).
        - percentile: ONNX Runtime's incremental absolute-value histogram (2048 bins set by the first
          chunk, widened at the same bin width), so a threshold can move by about one bin of it, 1/2048 of
          the first chunk's max |x| (measured: at most 0.05% of the range on the digits CNN).
        """
        if method not in METHODS:
            from ..errors import ConfigError

            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
        if method in self._ranges:
            return self._ranges[method]
        from onnxruntime.quantization.calibrate import (
            CalibrationMethod,
            TensorsData,
            save_tensors_data,
        )

        if method not in self.methods:  # not collected in the first pass: collect it now (a second float run)
            self.methods, self._stats = (*self.methods, method), None
        stats = self.statistics()
        if method == "minmax":
            data: dict[str, Any] = dict(stats["minmax"])
            kind = CalibrationMethod.MinMax
        else:
            collector = _one_shot_grid(stats[method]) if method == "entropy" else stats[method]
            with contextlib.redirect_stdout(io.StringIO()):
                data = collector.compute_collection_result()
            kind = CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.Percentile
        out = self.folder / f"ranges-{self.key}-{method}.json"
        with atomic_file(out) as tmp:
            save_tensors_data(TensorsData(kind, data), tmp)
        self._ranges[method] = out
        # min-max values are (lowest, highest); the histogram methods' also carry the histogram behind them
        self._bounds[method] = {n: tuple(tuple(np.ravel(b).tolist()) for b in getattr(v, "range_value", v)[:2])
                                for n, v in data.items()}
        return out

    def bounds(self, method: str) -> dict[str, tuple[Any, ...]]:
        """``{tensor: (lowest, highest)}`` (each a tuple of floats): the ranges :meth:`ranges` wrote for
        ``method`` (computed if needed)."""
        self.ranges(method)
        return self._bounds[method]

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
                        op_types_to_quantize=list(self.op_types) if self.op_types else None,
                    )
            except Exception as exc:
                raise EngineError(f"INT8 quantization of {self.model.name!r} failed: {one_line(exc, 200)}") from None
            if exclude:
                _unquantize_inputs(tmp, set(exclude))
        return out


def _one_shot_grid(collector: Any) -> Any:
    """A copy of an entropy ``HistogramCollector`` whose merged histograms are re-binned to the grid a
    single collect over all the data would have had: ``num_bins`` bins over ``[-t, t]``, t = max |x|.

    Counts are moved assuming a uniform density inside each merged bin.
    """
    from onnxruntime.quantization.calibrate import HistogramCollector

    out = HistogramCollector(method=collector.method, symmetric=collector.symmetric, num_bins=collector.num_bins,
                             num_quantized_bins=collector.num_quantized_bins, percentile=collector.percentile,
                             scenario=collector.scenario)
    for name, (hist, edges, lo, hi, threshold) in collector.histogram_dict.items():
        t = np.array(max(abs(lo), abs(hi)), dtype=edges.dtype)
        if len(hist) != collector.num_bins and t > 0:
            grid = np.linspace(-t, t, collector.num_bins + 1, dtype=edges.dtype)  # np.histogram's edges
            cdf = np.concatenate([[0.0], np.cumsum(hist, dtype=np.float64)])
            hist = np.rint(np.diff(np.interp(grid.astype(np.float64), edges.astype(np.float64), cdf)))
            hist, edges, threshold = hist.astype(np.int64), grid, t
        out.histogram_dict[name] = (hist, edges, lo, hi, threshold)
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
