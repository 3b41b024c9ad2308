"""PyTorch on an NVIDIA GPU: fp32 (TF32 off unless asked), fp16 and bf16, eager or through torch.compile.

The model is copied to the GPU once and cast to the asked precision (weights and activations, not
autocast: inference has no master weights to keep). ``run`` stages the batch through pinned host
memory, copies it on a dedicated stream, runs the model there and copies the output back; the result is
on the host when ``run`` returns, so every scenario's timer sees the whole round trip, transfers included
(what a client of a served model waits for).

Two traps, the GPU's versions of OpenVINO's silent bf16 (see ``openvino.py``):

* PyTorch lets cuDNN convolutions use TF32 by default, so "fp32" would silently run with a 10-bit
  mantissa; this engine switches TF32 off for fp32 unless the ``tf32`` knob asks for it, and then reports
  the layers as ``tf32``. The switches are process-wide in PyTorch, and recorded in ``settings()``.
* ``torch.backends.cudnn.benchmark`` picks the fastest convolution algorithm per input shape on the
  first call of that shape; sessions warm up at ``options.batch`` so no timed call pays for the search.

Copies: a large batch's float32 input is bigger than the network's work on a fast GPU (ResNet-50 at
batch 256: 154 MB; on an H200 the fp16 compute took 15 ms and the host->GPU DMA 3 ms, but copying the
numpy array into pinned memory on one thread took 27 ms). So ``staging=pinned`` copies large batches into
the pinned buffer on several threads (numpy releases the GIL while it copies), and ``staging=direct``
hands the pageable array to the CUDA driver, which stages it itself.

Knobs: ``channels_last`` (default true: tensor cores want NHWC), ``compile`` (default false),
``mode`` (torch.compile's mode, e.g. ``max-autotune`` or ``reduce-overhead`` for CUDA graphs),
``tf32`` (default false), ``cudnn_benchmark`` (default true), ``device_index`` (default 0),
``staging`` (pinned | direct), ``copy_threads`` (threads for the pinned copy; default min(8, cores)).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, EngineError, EngineUnavailableError, PrecisionError, one_line
from ..hardware import cuda_unavailable_reason
from .base import Engine, Session, SessionOptions, count_precisions, row_slices

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["TorchCudaEngine", "TorchCudaSession", "resolve_knobs"]

_KNOBS = {"channels_last": True, "compile": False, "mode": None, "tf32": False, "cudnn_benchmark": True,
          "device_index": 0, "staging": "pinned", "copy_threads": None}
_STAGING = ("pinned", "direct")
_PARALLEL_COPY_BYTES = 8 << 20  # below this one thread copies faster than several can be started
_COMPUTE = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "MultiheadAttention")
_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"torch_cuda knob {key!r} must be true or false, got {value!r}")


def resolve_knobs(options: SessionOptions) -> dict[str, Any]:
    """Validate the knobs and fill the defaults.

    Raises:
        ConfigError: an unknown knob or a bad value.
    """
    unknown = sorted(set(options.knobs) - set(_KNOBS))
    if unknown:
        raise ConfigError(f"unknown torch_cuda knob {unknown[0]!r}; use one of: {', '.join(_KNOBS)}")
    out = {**_KNOBS, **options.knobs}
    for key in ("channels_last", "compile", "tf32", "cudnn_benchmark"):
        out[key] = _flag(key, out[key])
    if out["mode"] not in _MODES:
        modes = ", ".join(m for m in _MODES if m)
        raise ConfigError(f"torch_cuda knob 'mode' must be one of {modes}, got {out['mode']!r}")
    if out["mode"] is not None:
        out["compile"] = True
    index = out["device_index"]
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"torch_cuda knob 'device_index' must be a GPU number (0, 1, ...), got {index!r}")
    out["device_index"] = index
    if out["staging"] not in _STAGING:
        raise ConfigError(f"torch_cuda knob 'staging' must be pinned or direct, got {out['staging']!r}")
    threads = out["copy_threads"]
    if threads is not None:
        if isinstance(threads, str) and threads.strip().isdigit():
            threads = int(threads)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"torch_cuda knob 'copy_threads' must be a positive integer, got {threads!r}")
        out["copy_threads"] = threads
    if out["tf32"] and options.precision != "fp32":
        raise ConfigError("torch_cuda knob 'tf32' applies to fp32 only; drop it or ask for fp32")
    return out


class TorchCudaEngine(Engine):
    """PyTorch on a CUDA GPU (fp32, fp16, bf16). See the module docstring for the knobs."""

    name = "torch_cuda"
    precisions = ("fp32", "fp16", "bf16")
    device = "cuda"

    def unavailable_reason(self) -> str | None:
        """Why this engine cannot run here (no CUDA build of PyTorch, no GPU), or None. Never raises."""
        return cuda_unavailable_reason()

    def check(self, options: SessionOptions) -> None:
        super().check(options)
        if options.precision == "bf16":
            import torch

            if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                raise PrecisionError("this GPU has no bf16 support (it needs compute capability 8.0 or later); "
                                     "ask for fp16 or fp32")

    def load(self, model: "LoadedModel", options: SessionOptions) -> "TorchCudaSession":
        """Copy the model to the GPU at the asked precision and warm it up at ``options.batch``.

        Raises:
            PrecisionError, ConfigError: see :meth:`check` and :func:`resolve_knobs`.
            EngineUnavailableError: no CUDA GPU. EngineError: the model came as ONNX, or compiling failed.
        """
        self.check(options)
        knobs = resolve_knobs(options)
        reason = self.unavailable_reason()
        if reason:
            raise EngineUnavailableError(f"engine 'torch_cuda' cannot run here: {reason}")
        if model.module is None:
            raise EngineError(f"engine 'torch_cuda' needs a PyTorch model, but {model.name!r} came as ONNX; "
                              "use tensorrt or onnxruntime")
        import torch

        if knobs["device_index"] >= torch.cuda.device_count():
            raise ConfigError(f"torch_cuda knob 'device_index' is {knobs['device_index']}, but this machine has "
                              f"{torch.cuda.device_count()} GPU(s)")
        session = TorchCudaSession(model, options, knobs)
        try:  # cuDNN's algorithm search, and compilation, happen here rather than in a timed call
            session.run(model.input.example(options.batch))
        except torch.cuda.OutOfMemoryError:
            session.close()
            raise EngineError(f"the GPU ran out of memory for {model.name!r} at batch {options.batch}; "
                              "try a smaller batch") from None
        except Exception as exc:
            session.close()
            raise EngineError(f"torch_cuda failed to run {model.name!r}: {one_line(exc, 200)}") from None
        return session


class TorchCudaSession(Session):
    """A model on one GPU. ``run`` copies in, computes, copies out, and returns a host numpy array."""

    def __init__(self, model: "LoadedModel", options: SessionOptions, knobs: dict[str, Any]):
        import torch

        super().__init__("torch_cuda", model, options)
        self._torch = torch
        self.knobs = knobs
        self.device = torch.device("cuda", knobs["device_index"])
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[options.precision]
        # process-wide switches: TF32 only when asked, cuDNN's per-shape algorithm search
        torch.backends.cuda.matmul.allow_tf32 = knobs["tf32"]
        torch.backends.cudnn.allow_tf32 = knobs["tf32"]
        torch.backends.cudnn.benchmark = knobs["cudnn_benchmark"]
        self._channels_last = knobs["channels_last"] and len(model.input.shape) == 3
        module = copy.deepcopy(model.module).eval().to(self.device, self.dtype)
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._eager = module
        self.module = torch.compile(module, mode=knobs["mode"]) if knobs["compile"] else module
        self.stream = torch.cuda.Stream(self.device)
        self._pinned: Any = None
        self.copy_threads = knobs["copy_threads"] or max(1, min(8, options.n_threads))
        self._copier: Any = None

    def _stage(self, x: np.ndarray) -> Any:
        """``x`` where the GPU copy reads it: pinned memory (a buffer kept between calls, grown when a batch
        is larger, filled on several threads for large batches), or ``x`` itself with ``staging=direct``."""
        torch = self._torch
        if self.knobs["staging"] == "direct":
            return torch.from_numpy(x)
        n = x.size
        if self._pinned is None or self._pinned.numel() < n:
            self._pinned = torch.empty(n, dtype=torch.float32, pin_memory=True)
        buf = self._pinned[:n].view(x.shape)
        dst = buf.numpy()
        parts = min(self.copy_threads, x.shape[0]) if x.nbytes >= _PARALLEL_COPY_BYTES else 1
        if parts <= 1:
            dst[...] = x
            return buf
        if self._copier is None:
            from concurrent.futures import ThreadPoolExecutor

            self._copier = ThreadPoolExecutor(self.copy_threads, thread_name_prefix="effstack-stage")
        done = [self._copier.submit(np.copyto, dst[rows], x[rows]) for rows in row_slices(x.shape[0], parts)]
        for f in done:
            f.result()
        return buf

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        host = self._stage(x)
        with torch.cuda.stream(self.stream), torch.inference_mode():
            t = host.to(self.device, non_blocking=True).to(self.dtype)
            if self._channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            y = self.module(t)
            if isinstance(y, (tuple, list)):
                y = y[0]
            out = y.float().cpu()  # waits for the stream: the result is on the host
        return out.numpy()

    def _precision_name(self) -> str:
        return "tf32" if self.knobs["tf32"] else self.precision

    def layer_precisions(self) -> dict[str, str]:
        """Each compute layer -> the dtype its weights hold on the GPU (``tf32`` when TF32 is on)."""
        names = {self._torch.float32: self._precision_name(), self._torch.float16: "fp16",
                 self._torch.bfloat16: "bf16"}
        out = {}
        for name, m in self._eager.named_modules():
            weight = getattr(m, "weight", None)
            if type(m).__name__ in _COMPUTE and weight is not None:
                out[name or type(m).__name__] = names.get(weight.dtype, str(weight.dtype).replace("torch.", ""))
        return out

    def executed_precision(self) -> dict[str, int]:
        return count_precisions(self.layer_precisions()) or {self._precision_name(): 1}

    def settings(self) -> dict[str, Any]:
        torch = self._torch
        return {
            "device": f"{torch.cuda.get_device_name(self.device)} (cuda:{self.device.index})",
            "capability": ".".join(map(str, torch.cuda.get_device_capability(self.device))),
            "channels_last": self._channels_last, "compile": self.knobs["compile"], "mode": self.knobs["mode"],
            "tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "staging": self.knobs["staging"], "copy_threads": self.copy_threads,
            "torch": torch.__version__, "cuda": torch.version.cuda,
        }

    def close(self) -> None:
        if self._copier is not None:
            self._copier.shutdown(wait=True)
            self._copier = None
        self.module = self._eager = None
        self._pinned = None
        try:
            self._torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - closing must not raise
            pass
