"""OpenVINO on the CPU: fp32, bf16, and int8 by NNCF post-training quantization.

Two traps this module exists to avoid (see MEASURED.md):

* The CPU plugin's default inference precision is bf16 on CPUs that have it, so "fp32" must set
  ``INFERENCE_PRECISION_HINT=f32`` or it silently runs bf16. On a CPU without bf16 the plugin silently
  runs f32 instead of bf16, so there an engine instance does not offer bf16 (:class:`PrecisionError`).
* The performance hint matters as much as precision: LATENCY (one stream) at batch 1, THROUGHPUT
  (several streams, driven asynchronously by :meth:`OpenVinoSession.run_many`) at larger batches.

Settings read back from the compiled model (not what was asked for) go into ``settings()``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..errors import ArtifactError, ConfigError, EngineError, PrecisionError, one_line
from .._files import cache_dir
from ..export._cache import hash_arrays, hash_text, safe_name
from ..export.openvino import export_openvino, save_ir
from .base import (Engine, Session, SessionOptions, calibration_batches, count_precisions, iter_samples,
                   row_slices)
from ..hardware import has_int8_dot_product

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["OpenVinoEngine", "OpenVinoSession", "quantize_ir", "count_ov_precision", "ov_layer_precisions",
           "ov_kernels"]

_HINTS = ("latency", "throughput")
_PRESETS = ("performance", "mixed")
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: layers NNCF left float run f32
_OVERFLOW = {"enable": "ENABLE", "first_layer": "FIRST_LAYER", "disable": "DISABLE"}
_KEEP_FLOAT = ("first", "depthwise")  # convolutions an int8 build may leave float (knob keep_float)
_BIAS_CORRECTION = ("fast", "full")
_INT8_KNOBS = ("subset_size", "preset", "overflow_fix", "keep_float", "bias_correction", "float_precision")
_FLOAT_PRECISIONS = ("fp32", "bf16")  # what an int8 build's float layers may run at (knob float_precision)
_KNOBS = ("hint", "streams") + _INT8_KNOBS
# runtime layer types that do the multiply-accumulates, and how their runtimePrecision reads
_COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
                   "BinaryConvolution", "ScaledDotProductAttention", "ScaledAttn", "RNNCell", "RNNSeq"}
_PRECISION_NAMES = {"u8": "int8", "i8": "int8", "bf16": "bf16", "f16": "fp16", "f32": "fp32",
                    "u4": "int4", "i4": "int4", "nf4": "int4", "f64": "fp64"}


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    """One ``openvino.Core`` per process: it loads the plugins once and is safe to share."""
    ov = require("openvino")
    return ov.Core()


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin lists BF16 among its capabilities (False when openvino is missing)."""
    try:
        return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no openvino, or no CPU plugin: load() will say so
        return False


def resolve_knobs(options: SessionOptions) -> dict[str, Any]:
    """Validate the knobs and fill defaults (hint: latency at batch 1, else throughput).

    Raises:
        ConfigError: an unknown knob or a bad value.
    """
    knobs = dict(options.knobs)
    unknown = sorted(set(knobs) - set(_KNOBS))
    if unknown:
        raise ConfigError(f"unknown openvino knob {unknown[0]!r}; use one of: {', '.join(_KNOBS)}")
    for key in _INT8_KNOBS:
        if key in knobs and options.precision != "int8":
            raise ConfigError(f"openvino knob {key!r} applies to int8 only; drop it or ask for int8")
    out: dict[str, Any] = {}
    hint = str(knobs.get("hint", "latency" if options.batch == 1 else "throughput")).lower()
    if hint not in _HINTS:
        raise ConfigError(f"openvino knob 'hint' must be latency or throughput, got {knobs['hint']!r}")
    out["hint"] = hint
    if knobs.get("streams") is not None:
        out["streams"] = _positive_int("streams", knobs["streams"])
    if options.precision == "int8":
        out["subset_size"] = _positive_int("subset_size", knobs.get("subset_size", 32))
        preset = str(knobs.get("preset", "performance")).lower()
        if preset not in _PRESETS:
            raise ConfigError(f"openvino knob 'preset' must be performance or mixed, got {knobs['preset']!r}")
        out["preset"] = preset
        # without VNNI, u8 x i8 products are summed in int16 and saturate: NNCF's overflow fix quantizes
        # weights to 7 bits (on an AVX2 test machine a tiny ResNet went from 22 dB to 44 dB SNR)
        fix = str(knobs.get("overflow_fix", "first_layer" if has_int8_dot_product() else "enable")).lower()
        if fix not in _OVERFLOW:
            raise ConfigError(
                f"openvino knob 'overflow_fix' must be one of {', '.join(_OVERFLOW)}, got {knobs['overflow_fix']!r}"
            )
        out["overflow_fix"] = fix
        if knobs.get("keep_float") not in (None, "", "none"):
            out["keep_float"] = _keep_float(knobs["keep_float"])
        bias = str(knobs.get("bias_correction", "fast")).lower()
        if bias not in _BIAS_CORRECTION:
            raise ConfigError(f"openvino knob 'bias_correction' must be fast or full, got {knobs['bias_correction']!r}")
        if bias != "fast":  # the default stays out of the recorded knobs (and of the cache key)
            out["bias_correction"] = bias
        floats = str(knobs.get("float_precision", "fp32")).lower()
        if floats not in _FLOAT_PRECISIONS:
            raise ConfigError(f"openvino knob 'float_precision' must be fp32 or bf16, got {knobs['float_precision']!r}")
        if floats == "bf16" and not cpu_has_bf16():
            raise PrecisionError("openvino knob float_precision=bf16: this CPU has no bf16 support (OpenVINO would "
                                 "silently run f32); drop the knob")
        if floats != "fp32":  # a compile setting: not part of the quantized file's cache key
            out["float_precision"] = floats
    return out


def _keep_float(value: Any) -> str:
    """``"depthwise,first"`` -> ``"first,depthwise"`` (checked, in a fixed order)."""
    parts = [p.strip().lower() for p in (value.split(",") if isinstance(value, str) else value)]
    bad = [p for p in parts if p not in _KEEP_FLOAT]
    if bad or not parts:
        raise ConfigError(f"openvino knob 'keep_float' must list {' and/or '.join(_KEEP_FLOAT)}, got {value!r}; "
                          "e.g. keep_float=first,depthwise")
    return ",".join(k for k in _KEEP_FLOAT if k in parts)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"openvino knob {key!r} must be a positive integer, got {value!r}")
    return value


class OpenVinoEngine(Engine):
    """OpenVINO CPU plugin.

    Knobs: ``hint`` (latency | throughput), ``streams`` (NUM_STREAMS); for int8 ``subset_size`` (32, at most
    the number of calibration samples), ``preset`` (performance | mixed), ``overflow_fix``
    (enable | first_layer | disable; default enable on CPUs without VNNI, else first_layer), ``keep_float``
    (convolutions left float: ``first``, the one that sees the pixels, and/or ``depthwise``, the grouped
    ones; e.g. ``first,depthwise``; default none), ``bias_correction`` (fast, the default | full: NNCF's
    bias correction that re-runs the model layer by layer on the calibration set, slower to build),
    ``float_precision`` (fp32, the default | bf16: the layers left float run in bf16, on CPUs with BF16).
    """

    name = "openvino"
    precisions = ("fp32", "bf16", "int8")  # what OpenVINO offers; an instance keeps what this CPU runs

    def __init__(self) -> None:
        # narrowed per machine, so that sweeps and conformance tests do not ask for a bf16 the CPU plugin
        # would silently run as f32
        if not cpu_has_bf16():
            self.precisions = tuple(p for p in type(self).precisions if p != "bf16")

    def check(self, options: SessionOptions) -> None:
        """Raise :class:`PrecisionError` for a precision OpenVINO, or this CPU, cannot run."""
        if options.precision == "bf16" and "bf16" not in self.precisions:
            raise PrecisionError(
                "this CPU has no bf16 support (OpenVINO would silently run f32); ask for fp32 or int8"
            )
        super().check(options)

    def shared_instance_knobs(self, n: int) -> dict[str, Any]:
        """One compiled model, one stream per instance."""
        return {"hint": "throughput", "streams": n}

    def load(self, model: "LoadedModel", options: SessionOptions) -> "OpenVinoSession":
        """Convert to IR (cached), quantize for int8 (cached), and compile for the CPU.

        Raises:
            PrecisionError: a precision this engine or this CPU cannot run (bf16 without BF16 support).
            ConfigError: a bad knob.
            MissingDependencyError: openvino (or nncf for int8) is missing.
            ArtifactError: the model file cannot be read or converted.
            EngineError: compilation or quantization failed.
        """
        self.check(options)
        require("openvino")
        knobs = resolve_knobs(options)
        core = _core()
        xml = export_openvino(model)
        if options.precision == "int8":
            xml = quantize_ir(model, xml, options, knobs)
        try:
            ov_model = core.read_model(str(xml))
        except Exception as exc:
            raise ArtifactError(
                f"OpenVINO cannot read {str(xml)!r} ({one_line(exc, 160)}); delete it so it is built again"
            ) from None
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": knobs["hint"].upper(),
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[knobs.get("float_precision", options.precision)],
            "INFERENCE_NUM_THREADS": options.n_threads,
        }
        if "streams" in knobs:
            config["NUM_STREAMS"] = knobs["streams"]
        try:
            compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as exc:
            raise EngineError(f"OpenVINO cannot compile {model.name!r} for the CPU: {one_line(exc, 200)}") from None
        return OpenVinoSession(model, options, compiled, xml, knobs)


class OpenVinoSession(Session):
    """One compiled model; ``run`` splits a batch over the streams, ``run_many`` uses an AsyncInferQueue.

    With several streams (the THROUGHPUT hint), one InferRequest would keep one stream busy and leave the
    others idle: ResNet-50 INT8 at batch 8 ran at half the offline rate that way on 2 cores. So ``run``
    cuts a batch into one near-equal part per stream (at most one per sample), runs the parts at once
    and joins the outputs: the batch's latency is then about that of its largest part on one stream.
    """

    def __init__(self, model: "LoadedModel", options: SessionOptions, compiled: Any, xml: Path,
                 knobs: dict[str, Any]):
        super().__init__("openvino", model, options)
        self.compiled = compiled
        self.xml = xml
        self.knobs = knobs
        self._resolved = _read_properties(compiled)
        self._requests = [compiled.create_infer_request() for _ in range(max(1, self._resolved["streams"]))]
        self._infer = self._requests[0].infer  # bound once: run() is on the timed path
        self._queue: Any = None

    def run(self, x: np.ndarray) -> np.ndarray:
        # share_inputs: no input copy (x is C-contiguous, validated; row slices of it are too); the output
        # is copied out of the request's buffer, which the next inference overwrites
        parts = min(len(self._requests), x.shape[0])
        if parts <= 1:
            return self._infer({0: x}, share_inputs=True)[0]
        requests = self._requests[:parts]
        for request, rows in zip(requests, row_slices(x.shape[0], parts)):
            request.start_async({0: x[rows]}, share_inputs=True)
        outputs = []
        for request in requests:
            request.wait()
            outputs.append(request.get_output_tensor(0).data)
        return np.concatenate(outputs)

    def run_many(self, x: np.ndarray, n: int) -> int:
        """Keep OPTIMAL_NUMBER_OF_INFER_REQUESTS requests in flight so every stream stays busy."""
        if self._queue is None:
            import openvino as ov

            self._queue = ov.AsyncInferQueue(self.compiled, self._resolved["optimal_requests"])
        start = self._queue.start_async  # blocks while every request is busy
        for _ in range(n):
            start({0: x}, share_inputs=True)
        self._queue.wait_all()
        return n * x.shape[0]

    def concurrency(self) -> int:
        return int(self._resolved["optimal_requests"])

    def instances(self, n: int) -> list[Session]:
        """``n`` sessions on this compiled model, each with its own infer request (compile it with
        ``streams`` = n so that each gets a stream; more requests than streams queue inside OpenVINO)."""
        if n < 1:
            raise ConfigError(f"instances must be at least 1, got {n}")
        return [OpenVinoStream(self, i) for i in range(n)]

    def settings(self) -> dict[str, Any]:
        out = dict(self._resolved)
        out.update({k: v for k, v in self.knobs.items() if k in _INT8_KNOBS})
        out["device"] = "CPU"
        return out

    def executed_precision(self) -> dict[str, int]:
        """Compute layers of the compiled (runtime) model by their ``runtimePrecision``."""
        return count_ov_precision(self.compiled)

    def layer_precisions(self) -> dict[str, str]:
        """Compute layers of the compiled (runtime) model -> their ``runtimePrecision``."""
        return ov_layer_precisions(self.compiled)

    def kernels(self) -> dict[str, int]:
        """Compute layers of the compiled (runtime) model by their ``primitiveType`` (the kernel that runs)."""
        return ov_kernels(self.compiled)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.wait_all()
        self._queue = None
        self._requests = []
        self._infer = None  # type: ignore[assignment]
        self.compiled = None


class OpenVinoStream(Session):
    """One instance of a shared :class:`OpenVinoSession`: its own infer request, one batch at a time."""

    def __init__(self, parent: OpenVinoSession, index: int):
        super().__init__("openvino", parent.model, parent.options)
        self.parent = parent
        self.index = index
        self._infer = parent.compiled.create_infer_request().infer

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._infer({0: x}, share_inputs=True)[0]

    def executed_precision(self) -> dict[str, int]:
        return self.parent.executed_precision()

    def layer_precisions(self) -> dict[str, str]:
        return self.parent.layer_precisions()

    def kernels(self) -> dict[str, int]:
        return self.parent.kernels()

    def settings(self) -> dict[str, Any]:
        return {**self.parent.settings(), "instance": self.index}

    def close(self) -> None:  # the parent owns the compiled model
        self._infer = None  # type: ignore[assignment]


def _read_properties(compiled: Any) -> dict[str, Any]:
    """What the plugin resolved: hint, streams, threads, precision, and the number of requests to run."""
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return {
        "hint": str(compiled.get_property("PERFORMANCE_HINT")).lower(),
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "inference_precision": getattr(precision, "get_type_name", lambda: str(precision))(),
        "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
    }


def count_ov_precision(compiled: Any) -> dict[str, int]:
    """Count the compute layers of a compiled model's runtime graph by executed precision."""
    return count_precisions(ov_layer_precisions(compiled))


def _compute_ops(compiled: Any) -> Iterator[tuple[Any, Any]]:
    """``(op, rt_info)`` of each compute layer in a compiled model's runtime graph."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" in rt and rt["layerType"].astype(str) in _COMPUTE_LAYERS:
            yield op, rt


def ov_layer_precisions(compiled: Any) -> dict[str, str]:
    """Compute layer name -> executed precision in a compiled model's runtime graph."""
    layers: dict[str, str] = {}
    for op, rt in _compute_ops(compiled):
        raw = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "f32"
        layers[op.get_friendly_name()] = _PRECISION_NAMES.get(raw.lower(), raw.lower())
    return layers


def ov_kernels(compiled: Any) -> dict[str, int]:
    """Count the compute layers of a compiled model's runtime graph by kernel (rt_info ``primitiveType``,
    e.g. ``brgconv_avx512_amx_I8`` where AMX runs an int8 convolution)."""
    return dict(Counter(rt["primitiveType"].astype(str) for _, rt in _compute_ops(compiled) if "primitiveType" in rt))


def quantize_ir(model: "LoadedModel", xml: Path, options: SessionOptions, knobs: dict[str, Any]) -> Path:
    """NNCF post-training int8 quantization of the fp32 IR, cached by model, settings and data.

    Raises:
        MissingDependencyError: nncf is not installed.
        EngineError: NNCF failed.
    """
    ov = require("openvino")
    nncf = require("nncf", "OpenVINO int8 quantization")
    samples = list(iter_samples(calibration_batches(model, options)))  # NNCF counts subset_size in samples
    knobs["subset_size"] = subset = min(knobs["subset_size"], len(samples))  # record what was really used
    keep, bias = knobs.get("keep_float"), knobs.get("bias_correction", "fast")
    transformer = model.input.vocab is not None or "text" in model.meta  # token ids in: a text encoder
    key = hash_text(model.fingerprint, knobs["preset"], knobs["overflow_fix"], subset, hash_arrays(samples),
                    nncf.__version__, ov.__version__, *([keep] if keep else []), *([bias] if bias != "fast" else []),
                    *(["transformer"] if transformer else []))
    out = cache_dir("openvino") / f"{safe_name(model.name)}-{model.fingerprint}-int8-{key}.xml"
    if out.is_file() and out.with_suffix(".bin").is_file():
        return out
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    try:
        fp32 = _core().read_model(str(xml))
        quantized = nncf.quantize(
            fp32,
            nncf.Dataset(samples),
            preset=preset[knobs["preset"]],
            subset_size=subset,
            fast_bias_correction=bias == "fast",
            # NNCF's transformer scheme: keeps the attention softmax/mask path and LayerNorm float, SmoothQuant
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=_float_scope(nncf, fp32, keep),
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                overflow_fix=getattr(nncf.OverflowFix, _OVERFLOW[knobs["overflow_fix"]])
            ),
        )
    except Exception as exc:
        raise EngineError(f"NNCF int8 quantization of {model.name!r} failed: {one_line(exc, 200)}") from None
    save_ir(quantized, out)
    return out


def _float_scope(nncf: Any, ov_model: Any, keep: str | None) -> Any:
    """The NNCF ignored scope of ``keep_float``: the first convolution by name, grouped ones by type.

    On CPUs without VNNI every int8 weight is cut to 7 bits (the overflow fix); the first convolution of a
    mobile network and its depthwise ones are where that costs most (EfficientNet-Lite0's pooled features on
    2 AVX2 cores: cosine 0.969 to fp32 quantized whole, 0.992 with both kept float, for part of int8's speed-up;
    see benchmarks/photo_search.py).
    """
    if not keep:
        return None
    names, types = [], []
    if "first" in keep:
        first = next((op for op in ov_model.get_ordered_ops() if op.get_type_name() == "Convolution"), None)
        names = [first.get_friendly_name()] if first is not None else []
    if "depthwise" in keep:
        types = ["GroupConvolution"]
    return nncf.IgnoredScope(names=names, types=types, validate=False)

