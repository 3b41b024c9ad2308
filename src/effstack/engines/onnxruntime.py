"""ONNX Runtime on the CPU: fp32, and int8 by static QDQ quantization.

INT8 recipe (``quantize_static``): QDQ format, per-channel symmetric int8 weights, **uint8 activations**.
uint8 x int8 is the operand pair of the VNNI dot-product instruction (``vpdpbusd``) and of MLAS's
AVX2 kernels, and with it ONNX Runtime fused every DQ -> Conv -> Q of ResNet-18 into a ``QLinearConv``.
With int8 activations (onnxruntime 1.32, measured on an AVX2 machine; the VNNI machine was not
available) 11 of 20 convolutions stayed float behind DequantizeLinear, at 1.3-1.8x the uint8 latency.
On CPUs without VNNI the uint8 x int8 products are summed in int16 and can saturate, so weights are
then quantized to 7 bits (``reduce_range``), as ONNX Runtime's guide advises; knobs override both.
The model goes through ``quant_pre_process`` (shape inference + basic graph optimization) first:
without it, on ResNet-18, only 4 of 20 convolutions fused into ``QLinearConv``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..errors import ArtifactError, ConfigError, EngineError, one_line
from ..hardware import has_int8_dot_product
from .._files import atomic_file, cache_dir
from ..export._cache import hash_arrays, hash_text, safe_name
from ..export.onnx import export_onnx
from .base import Engine, Session, SessionOptions, calibration_batches, count_precisions

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["OnnxRuntimeEngine", "OnnxRuntimeSession", "quantize_onnx", "count_onnx_precision",
           "onnx_layer_precisions"]

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_ACTIVATIONS = {"uint8": "QUInt8", "int8": "QInt8"}
# knob -> (allowed values or a type, default); None default means "resolved at load time"
_KNOBS: dict[str, tuple[Any, Any]] = {
    "graph_optimization": (tuple(_LEVELS), "all"),
    "execution_mode": (tuple(_MODES), "sequential"),
    "inter_op_threads": (int, 1),
    "spinning": (bool, None),  # None: onnxruntime's default (worker threads spin while waiting)
    "calibration": (tuple(_CALIBRATION), "minmax"),
    "activations": (tuple(_ACTIVATIONS), "uint8"),
    "per_channel": (bool, True),
    "reduce_range": (bool, None),  # None: True on x86 CPUs without VNNI
}
_INT8_KNOBS = ("calibration", "activations", "per_channel", "reduce_range")

# compute ops of an optimized ONNX Runtime graph, by the precision they execute in
_INT8_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
             "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeLSTM", "QLinearConvTranspose"}
_FLOAT_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedGemm", "FusedMatMul", "NhwcFusedConv",
              "Attention", "MultiHeadAttention", "GroupQueryAttention", "Einsum", "LSTM", "GRU", "RNN"}
_LOW_BIT_OPS = {"MatMulNBits": "int4", "MatMulBnb4": "int4"}
_ONNX_FLOAT = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}  # onnx.TensorProto element types


def resolve_knobs(knobs: dict[str, Any], precision: str) -> dict[str, Any]:
    """Validate ``knobs`` and fill in defaults (int8-only knobs only for int8).

    Raises:
        ConfigError: an unknown knob or a value out of range.
    """
    unknown = sorted(set(knobs) - set(_KNOBS))
    if unknown:
        raise ConfigError(f"unknown onnxruntime knob {unknown[0]!r}; use one of: {', '.join(_KNOBS)}")
    out: dict[str, Any] = {}
    for key, (allowed, default) in _KNOBS.items():
        if key in _INT8_KNOBS and precision != "int8":
            if key in knobs:
                raise ConfigError(f"onnxruntime knob {key!r} applies to int8 only; drop it or ask for int8")
            continue
        value = knobs.get(key, default)
        if value is None and key == "reduce_range":
            value = not has_int8_dot_product()
        if value is None:
            continue
        value = _coerce(value, allowed)
        if isinstance(allowed, tuple):
            value = str(value).lower()
            if value not in allowed:
                raise ConfigError(f"onnxruntime knob {key!r} must be one of {', '.join(allowed)}, got {knobs[key]!r}")
        elif allowed is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"onnxruntime knob {key!r} must be a positive integer, got {value!r}")
        elif not isinstance(value, bool):
            raise ConfigError(f"onnxruntime knob {key!r} must be true or false, got {value!r}")
        out[key] = value
    return out


def _coerce(value: Any, allowed: Any) -> Any:
    """Accept the strings a command line gives ("2", "false") for integer and boolean knobs."""
    if isinstance(value, str) and allowed is int and value.strip().isdigit():
        return int(value)
    if isinstance(value, str) and allowed is bool and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    return value


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime, CPU execution provider.

    Knobs (all recorded by ``settings()``): ``graph_optimization`` (disable | basic | extended | all),
    ``execution_mode`` (sequential | parallel), ``inter_op_threads`` (1), ``spinning`` (bool); for int8
    ``calibration`` (minmax | entropy | percentile), ``activations`` (uint8 | int8), ``per_channel``
    (True), ``reduce_range`` (default: True on x86 without VNNI).
    """

    name = "onnxruntime"
    precisions = ("fp32", "int8")

    def serving_knobs(self) -> dict[str, Any]:
        """Served, the worker threads do not spin while waiting for work. Spinning threads keep their cores busy
        between runs, so the server's event loop waits for a core to read, batch and answer requests: on 2 vCPUs
        (Zen 4) one 2-thread session of EfficientNet-Lite0 fp32 held p99 130 ms up to 63.8/s spinning and
        112.5/s not (p50 at 60/s: 32.4 against 13.5 ms)."""
        return {"spinning": False}

    def load(self, model: "LoadedModel", options: SessionOptions) -> "OnnxRuntimeSession":
        """Export (cached), quantize for int8 (cached), and open an InferenceSession.

        Raises:
            PrecisionError: precision other than fp32/int8.
            ConfigError: a bad knob.
            MissingDependencyError: onnxruntime or onnx is missing.
            ArtifactError: the ONNX file is corrupt.
            EngineError: quantization failed.
        """
        self.check(options)
        ort = require("onnxruntime")
        knobs = resolve_knobs(options.knobs, options.precision)
        path = export_onnx(model)
        if options.precision == "int8":
            path = quantize_onnx(model, path, options, knobs)
        so = session_options(ort, options, knobs)
        sess = open_session(ort, path, so, cached=path != model.onnx_path)
        return OnnxRuntimeSession(model, options, sess, path, knobs, so)


def session_options(ort: Any, options: SessionOptions, knobs: dict[str, Any]) -> Any:
    """An ``onnxruntime.SessionOptions`` for ``options`` and resolved ``knobs``."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.n_threads
    so.inter_op_num_threads = knobs["inter_op_threads"]
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[knobs["graph_optimization"]])
    so.execution_mode = getattr(ort.ExecutionMode, _MODES[knobs["execution_mode"]])
    so.log_severity_level = 3  # errors only: the NCHWc and quantization warnings are noise here
    if "spinning" in knobs:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if knobs["spinning"] else "0")
    return so


def open_session(ort: Any, path: Path, so: Any, cached: bool = True) -> Any:
    """Open an InferenceSession on the CPU provider, translating a corrupt file into ArtifactError.

    ``cached``: the file is effstack's own (export or quantization cache), so deleting it is the fix.
    """
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = one_line(exc, 160)
        if "protobuf" in text.lower() or "load model" in text.lower() or "invalid" in text.lower():
            fix = "delete it so it is built again" if cached else "check it with onnx.checker.check_model"
            raise ArtifactError(f"ONNX Runtime cannot read {str(path)!r} ({text}); {fix}") from None
        raise EngineError(f"ONNX Runtime cannot open {str(path)!r}: {text}") from None


class OnnxRuntimeSession(Session):
    """An InferenceSession with its input/output names fixed, so ``run`` is one call."""

    def __init__(self, model: "LoadedModel", options: SessionOptions, sess: Any, path: Path,
                 knobs: dict[str, Any], so: Any):
        super().__init__("onnxruntime", model, options)
        self.sess = sess
        self.path = path
        self.knobs = knobs
        self._so = so
        self._outputs = [sess.get_outputs()[0].name]
        self._input = sess.get_inputs()[0].name
        self._run = sess.run  # bound once: run() is on the timed path
        self._layers: dict[str, str] | None = None

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._run(self._outputs, {self._input: x})[0]

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threads": self._so.intra_op_num_threads, "provider": "CPUExecutionProvider"}
        out.update(self.knobs)
        if self.precision == "int8":
            out["weights"] = "int8 per-channel" if self.knobs["per_channel"] else "int8 per-tensor"
            out["format"] = "QDQ"
        return out

    def executed_precision(self) -> dict[str, int]:
        """Compute nodes of the graph ONNX Runtime actually runs, by precision (e.g. ``{"int8": 20}``)."""
        return count_precisions(self.layer_precisions())

    def layer_precisions(self) -> dict[str, str]:
        """Compute nodes of the optimized graph ONNX Runtime runs -> their precision."""
        if self._layers is None:
            self._layers = onnx_layer_precisions(self.path, self.knobs["graph_optimization"])
        return dict(self._layers)

    def close(self) -> None:
        self.sess = None
        self._run = None  # type: ignore[assignment]


def count_onnx_precision(path: Path, level: str = "all") -> dict[str, int]:
    """Count compute nodes by executed precision in the graph ONNX Runtime builds from ``path``."""
    return count_precisions(onnx_layer_precisions(path, level))


def onnx_layer_precisions(path: Path, level: str = "all") -> dict[str, str]:
    """Compute node name -> executed precision in the graph ONNX Runtime builds from ``path``.

    The optimized graph is saved (same optimization level, CPU provider) and inspected: fused
    ``QLinearConv``/``QGemm``/``*Integer`` nodes run int8; a ``Conv`` still fed by ``DequantizeLinear``
    runs in float, and is named so.
    """
    ort = require("onnxruntime")
    onnx = require("onnx")
    with tempfile.TemporaryDirectory(prefix="effstack-ort-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    weights = {t.name: t.data_type for t in graph.initializer}
    values = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)}
    layers: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        op = node.op_type
        if op in _INT8_OPS:
            kind = "int8"
        elif op in _LOW_BIT_OPS:
            kind = _LOW_BIT_OPS[op]
        elif op in _FLOAT_OPS:
            # the weight's element type when it is a constant, else the activation's; fp32 when unknown
            elem = weights.get(node.input[1]) if len(node.input) > 1 else None
            elem = elem or values.get(node.input[0], 1)
            kind = _ONNX_FLOAT.get(elem, "fp32")
        else:
            continue
        layers[node.name or f"{op}_{i}"] = kind
    return layers


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over in-memory batches."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.name = name
        self.batches = batches
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def pre_process(model: "LoadedModel", src: Path | str, dst: Path | str) -> None:
    """ONNX Runtime's ``quant_pre_process`` (shape inference + fusions) of ``src`` into ``dst``.

    Its symbolic shape inference gives up on a graph with a dynamic sample axis (a text model's sequence) and,
    giving up, saves a debug copy (``sym_shape_infer_temp.onnx`` plus a uuid-named ``.data`` file) into the
    process's working directory, so for such models it is skipped: ONNX's own shape inference still runs.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=bool(model.input.dynamic))


def quantize_onnx(model: "LoadedModel", src: Path, options: SessionOptions, knobs: dict[str, Any]) -> Path:
    """Static QDQ int8 quantization of ``src``, cached by model, settings and calibration data.

    Raises:
        EngineError: onnxruntime's quantizer failed.
    """
    ort = require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    batches = calibration_batches(model, options)
    settings = {k: knobs[k] for k in _INT8_KNOBS}
    key = hash_text(model.fingerprint, sorted(settings.items()), ort.__version__, hash_arrays(batches),
                    *(["matmul-only"] if model.input.vocab is not None else []))
    out = cache_dir("onnxruntime") / f"{safe_name(model.name)}-{model.fingerprint}-int8-{key}.onnx"
    if out.is_file():
        return out
    with atomic_file(out) as tmp:
        pre = tmp.with_name(tmp.stem + "-pre.onnx")
        try:
            try:  # shape inference + fusions let the quantizer place QDQ pairs the fusions can absorb
                pre_process(model, src, pre)
                source = pre
            except Exception:  # pre-processing is an optimisation; quantize the raw graph if it fails
                source = src
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress notes
                quantize_static(
                    str(source), str(tmp), _Reader(model.input.name, batches),
                    quant_format=QuantFormat.QDQ,
                    per_channel=knobs["per_channel"],
                    reduce_range=knobs["reduce_range"],
                    activation_type=getattr(QuantType, _ACTIVATIONS[knobs["activations"]]),
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, _CALIBRATION[knobs["calibration"]]),
                    # a text encoder: only its matrix products (its mask Add holds float32's lowest value)
                    op_types_to_quantize=["MatMul", "Gemm"] if model.input.vocab is not None else None,
                )
        except Exception as exc:
            raise EngineError(
                f"ONNX Runtime int8 quantization of {model.name!r} failed: {one_line(exc, 200)}"
            ) from None
        finally:
            pre.unlink(missing_ok=True)
    return out
