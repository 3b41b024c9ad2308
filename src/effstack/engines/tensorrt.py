"""TensorRT on an NVIDIA GPU: fp32, fp16, and int8 by entropy calibration.

The engine is built from the exported ONNX file with one optimization profile over the batch axis
(1 .. max(options.batch, 32), tuned for ``options.batch``) and cached as a serialized plan keyed by the
model, precision, profile, TensorRT version and GPU. Buffers are torch CUDA tensors allocated once at
the largest batch; ``run`` copies through pinned host memory on a dedicated stream and calls
``execute_async_v3``. ``tensorrt`` is imported only inside functions, so this module imports (and
``unavailable_reason`` answers) on machines without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import is_installed, require
from ..errors import ConfigError, EngineError, EngineUnavailableError, InputError, PrecisionError, one_line
from .._files import atomic_file, cache_dir
from ..export._cache import hash_arrays, hash_text, safe_name
from ..export.onnx import export_onnx
from ..hardware import cuda_unavailable_reason
from .base import Engine, Session, SessionOptions, calibration_batches, iter_samples

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["TensorRtEngine", "TensorRtSession"]

_KNOBS = {"max_batch": None, "workspace_mb": 4096, "optimization_level": 3}
_COMPUTE_WORDS = ("conv", "gemm", "matrixmultiply", "fullyconnected", "deconv")
_FORMAT_PRECISION = (("int8", "int8"), ("fp8", "fp8"), ("bf16", "bf16"), ("fp16", "fp16"), ("half", "fp16"),
                     ("fp32", "fp32"), ("float", "fp32"))


def _knobs(options: SessionOptions) -> dict[str, int]:
    unknown = sorted(set(options.knobs) - set(_KNOBS))
    if unknown:
        raise ConfigError(f"unknown tensorrt knob {unknown[0]!r}; use one of: {', '.join(_KNOBS)}")
    out = {}
    for key, default in _KNOBS.items():
        value = options.knobs.get(key, default)
        if key == "max_batch" and value is None:
            value = max(options.batch, 32)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "optimization_level" else 1):
            raise ConfigError(f"tensorrt knob {key!r} must be a non-negative integer, got {value!r}")
        out[key] = value
    if out["max_batch"] < options.batch:
        raise ConfigError(f"tensorrt knob 'max_batch' ({out['max_batch']}) must be at least batch ({options.batch})")
    if out["optimization_level"] > 5:
        raise ConfigError(f"tensorrt knob 'optimization_level' must be 0..5, got {out['optimization_level']}")
    return out


class TensorRtEngine(Engine):
    """TensorRT. Knobs: ``max_batch`` (profile maximum), ``workspace_mb``, ``optimization_level`` (0..5)."""

    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    device = "cuda"

    def unavailable_reason(self) -> str | None:
        """Why this engine cannot run here (no tensorrt, no CUDA GPU), or None. Never raises."""
        if not is_installed("tensorrt"):
            return "tensorrt is not installed; install it with: pip install 'effstack[gpu]'"
        return cuda_unavailable_reason()

    def load(self, model: "LoadedModel", options: SessionOptions) -> "TensorRtSession":
        """Build (or load the cached) engine and allocate its buffers.

        Raises:
            PrecisionError: an unsupported precision (or int8 on a TensorRT without calibrators).
            ConfigError: a bad knob.
            EngineUnavailableError / MissingDependencyError: see :meth:`unavailable_reason`.
            EngineError: the ONNX parser or the builder failed.
        """
        self.check(options)
        trt = require("tensorrt")
        reason = self.unavailable_reason()
        if reason:
            raise EngineUnavailableError(f"engine 'tensorrt' cannot run here: {reason}")
        import torch

        knobs = _knobs(options)
        onnx_path = export_onnx(model)
        logger = trt.Logger(trt.Logger.WARNING)
        calib = calibration_batches(model, options) if options.precision == "int8" else []
        gpu = torch.cuda.get_device_name(0) + str(torch.cuda.get_device_capability(0))
        key = hash_text(model.fingerprint, options.precision, options.batch, sorted(knobs.items()), trt.__version__,
                        gpu, hash_arrays(calib) if calib else "")
        plan_path = cache_dir("tensorrt") / f"{safe_name(model.name)}-{model.fingerprint}-{options.precision}-{key}.plan"
        engine = None
        runtime = trt.Runtime(logger)
        if plan_path.is_file():
            engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())  # None if stale: rebuild
        if engine is None:
            plan = _build(trt, logger, model, onnx_path, options, knobs, calib, plan_path.with_suffix(".calib"))
            with atomic_file(plan_path) as tmp:
                tmp.write_bytes(plan)
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise EngineError(f"TensorRT built an engine for {model.name!r} but cannot deserialize it")
        return TensorRtSession(model, options, trt, engine, knobs, plan_path, gpu)


def _build(trt: Any, logger: Any, model: "LoadedModel", onnx_path: Path, options: SessionOptions,
           knobs: dict[str, int], calib: list[np.ndarray], calib_cache: Path) -> bytes:
    """Parse the ONNX file and build a serialized engine."""
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from TensorRT 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {str(onnx_path)!r}: {errors[:200] or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, knobs["workspace_mb"] << 20)
    config.builder_optimization_level = knobs["optimization_level"]
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for executed_precision()
    inp = network.get_input(0)
    sample = tuple(model.input.shape)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, *sample), (options.batch, *sample), (knobs["max_batch"], *sample))
    config.add_optimization_profile(profile)
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without an int8 kernel fall back to fp16
    calibrator = None
    if options.precision == "int8":
        if not hasattr(trt, "IInt8EntropyCalibrator2") or not hasattr(config, "int8_calibrator"):
            raise PrecisionError(
                "this TensorRT has no calibration-based int8; quantize the model to QDQ ONNX first, or use fp16"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, list(iter_samples(calib)), calib_cache)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT failed to build an engine for {model.name!r}; see the TensorRT log above")
    return bytes(plan)


def _make_calibrator(trt: Any, samples: list[np.ndarray], cache: Path) -> Any:
    """An entropy calibrator that feeds single samples from a CUDA buffer."""
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the binding needs the explicit base init
            self.samples = samples
            self.i = 0
            self.buffer = torch.empty(samples[0].shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i >= len(self.samples):
                return None
            self.buffer.copy_(torch.from_numpy(np.ascontiguousarray(self.samples[self.i], dtype=np.float32)))
            torch.cuda.synchronize()
            self.i += 1
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            with atomic_file(cache) as tmp:
                tmp.write_bytes(bytes(data))

    return _Calibrator()


class TensorRtSession(Session):
    """A TensorRT execution context with device and pinned host buffers sized for the largest batch."""

    def __init__(self, model: "LoadedModel", options: SessionOptions, trt: Any, engine: Any,
                 knobs: dict[str, int], plan_path: Path, gpu: str):
        import torch

        super().__init__("tensorrt", model, options)
        self._trt, self.engine, self.knobs, self.plan_path, self.gpu = trt, engine, knobs, plan_path, gpu
        self._torch = torch
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT cannot create an execution context for {model.name!r} (GPU memory?)")
        self.stream = torch.cuda.Stream()
        self.max_batch = knobs["max_batch"]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not outputs:
            raise EngineError(f"engine 'tensorrt' supports one input and at least one output, got {names}")
        self.in_name, self.out_name = inputs[0], outputs[0]
        # allocate every I/O tensor at the largest batch; addresses never change afterwards, since a
        # smaller batch uses the front of the same contiguous buffer
        self.context.set_input_shape(self.in_name, (self.max_batch, *model.input.shape))
        self.buffers: dict[str, Any] = {}
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"output {name!r} has a data-dependent shape {shape}; engine 'tensorrt' cannot run it")
            dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, int(self.buffers[name].data_ptr()))
        self.host_in = torch.empty(self.buffers[self.in_name].shape, dtype=self.buffers[self.in_name].dtype,
                                   pin_memory=True)
        self.host_out = torch.empty(self.buffers[self.out_name].shape, dtype=self.buffers[self.out_name].dtype,
                                    pin_memory=True)
        self._host_in_np, self._host_out_np = self.host_in.numpy(), self.host_out.numpy()
        self._n = self.max_batch

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n != self._n:
            if n > self.max_batch:
                raise InputError(
                    f"batch {n} exceeds this TensorRT engine's maximum {self.max_batch}; load it with batch={n} "
                    "or knobs={'max_batch': ...}"
                )
            self.context.set_input_shape(self.in_name, x.shape)
            self._n = n
        self._host_in_np[:n] = x
        with self._torch.cuda.stream(self.stream):
            self.buffers[self.in_name][:n].copy_(self.host_in[:n], non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execute_async_v3 failed; see the TensorRT log")
            self.host_out[:n].copy_(self.buffers[self.out_name][:n], non_blocking=True)
        self.stream.synchronize()
        return self._host_out_np[:n].copy()

    def executed_precision(self) -> dict[str, int]:
        """Compute layers of the built engine by the data type of their input, from the engine inspector."""
        try:
            inspector = self.engine.create_engine_inspector()
            # with a dynamic batch, formats read "N/A due to dynamic shapes" unless shapes are bound
            inspector.execution_context = self.context
            info = json.loads(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))
        except Exception:  # introspection is best effort; fall back to what was asked
            return {self.precision: 1}
        counts: dict[str, int] = {}
        for layer in info.get("Layers", []):
            if not isinstance(layer, dict):
                continue
            kind = str(layer.get("LayerType", "")).lower()
            if not any(w in kind for w in _COMPUTE_WORDS):
                continue
            io = layer.get("Inputs") or layer.get("Outputs") or [{}]
            fmt = str(io[0].get("Format/Datatype", "")).lower()
            prec = next((p for word, p in _FORMAT_PRECISION if word in fmt), "unknown")
            counts[prec] = counts.get(prec, 0) + 1
        return counts or {self.precision: 1}

    def settings(self) -> dict[str, Any]:
        return {"device": self.gpu, "opt_batch": self.options.batch, "tensorrt": self._trt.__version__, **self.knobs}

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.buffers = {}


def _torch_dtype(trt: Any, torch: Any, dt: Any) -> Any:
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
             "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}
    for name, torch_dtype in table.items():
        if hasattr(trt.DataType, name) and dt == getattr(trt.DataType, name):
            return torch_dtype
    raise EngineError(f"engine 'tensorrt' cannot hold tensors of type {dt}")
