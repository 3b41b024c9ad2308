"""The machine: CPU model, cores, ISA flags, memory, library versions, and measured peak rates.

Every result row carries :func:`machine_info` and :func:`library_versions`, and its fraction of the
machine's *measured* peak (:func:`peak_rates`) for the precision that actually ran. Nothing here is
hard-coded: the peak is timed on this machine with the fastest matrix-product path installed, and
cached per machine and library versions.

>>> info = machine_info()
>>> info["cores"] >= 1
True
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import one_line

__all__ = ["machine_info", "library_versions", "peak_rates", "peak_for", "cache_dir", "available_cores",
           "cuda_unavailable_reason"]

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8")
LIBRARIES = ("effstack", "numpy", "torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")
PEAK_PRECISIONS = ("fp32", "bf16", "int8")
PEAK_SCHEMA = 1


def available_cores() -> int:
    """Logical cores this process may run on (its CPU affinity), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break  # the first processor's block is enough: flags are uniform
    return model, flags


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    return frozenset(_cpuinfo()[1])


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def has_int8_dot_product() -> bool:
    """True when the CPU has an 8-bit dot-product instruction (x86 VNNI or AMX; ARM is assumed to).

    Without one, u8 x s8 products are summed in int16 and can saturate, so quantizers must keep
    weights to 7 bits (ONNX Runtime's reduce_range, NNCF's overflow fix). Unknown CPUs count as having it.
    """
    if not _is_x86():
        return True
    flags = cpu_flags()
    return not flags or bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def has_native_bf16() -> bool:
    """True when bf16 matrix products run in hardware (AVX512_BF16 / AMX on x86, BF16 on ARM).

    Elsewhere bf16 is emulated: PyTorch's autocast ran ResNet-50 at 0.2 images/s against 14 in fp32 on
    an AVX2-only CPU, and OpenVINO silently runs f32.
    """
    flags = cpu_flags()
    if _is_x86():
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return "bf16" in flags


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1024**3, 1)
    except Exception:
        return None


def machine_info() -> dict[str, Any]:
    """A small dict describing this machine, for result rows and the peak-rate cache key.

    Keys: ``cpu`` (model name), ``cores`` (logical cores available to this process),
    ``host_cores`` (all logical cores), ``isa`` (the flags of interest that are present, e.g.
    ``["avx2", "avx512f", "avx512_vnni"]``), ``memory_gb``, ``os``, ``kernel``, ``python``.

    Example:
        >>> sorted(machine_info())[:3]
        ['cores', 'cpu', 'host_cores']
    """
    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "cores": available_cores(),
        "host_cores": os.cpu_count() or 1,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "memory_gb": _memory_gb(),
        "os": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of the libraries that decide speed (None when not installed).

    Read from package metadata; nothing is imported, so this is cheap and safe in any process.

    Example:
        >>> "numpy" in library_versions()
        True
    """
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cache_dir() -> Path:
    """``$EFFSTACK_CACHE`` if set, else ``~/.cache/effstack``."""
    env = os.environ.get("EFFSTACK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "effstack"


# --- peak rates -----------------------------------------------------------------------------------


def _cache_key(info: dict[str, Any], versions: dict[str, str | None], threads: int, size: int) -> str:
    basis = {"cpu": info["cpu"], "cores": info["cores"], "isa": info["isa"], "threads": threads, "size": size,
             "versions": {k: versions.get(k) for k in ("numpy", "torch", "onnxruntime", "openvino")}}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and data.get("schema") == PEAK_SCHEMA else {}
    except (OSError, ValueError):
        return {}


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    # temp file in the same directory + os.replace: readers never see a half-written file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def peak_rates(refresh: bool = False, threads: int | None = None, size: int = 2048) -> dict[str, Any]:
    """The machine's peak matrix-product rates per precision, measured once and cached.

    Each precision is timed on every installed path (ONNX Runtime / OpenVINO / PyTorch) with a
    square product of up to ``size`` (smaller for slow, emulated paths) on ``threads`` threads; the
    fastest median wins. A path counts only when its
    kernels really ran that precision (OpenVINO's runtime model is inspected), so a machine without
    bf16 units gets the honest, slow emulated bf16 figure rather than a disguised fp32 one.

    Args:
        refresh: measure again even when a cached result exists.
        threads: compute threads (default: all cores available to this process).
        size: the largest square matrix size (each path gets about 1 s, ~10-20 s in all).

    Returns:
        ``{"rates": {"fp32": {"gops": 480.2, "best": 490.0, "path": "onnxruntime",
        "candidates": {"onnxruntime": 480.2, "torch": 211.0, ...}}, "bf16": {...}, "int8": {...}},
        "threads": 2, "size": 2048, "measured_at": "...", "machine": {...}, "versions": {...},
        "errors": {"int8/torch": "RuntimeError: ..."}}``. Rates are GFLOP/s (GOP/s for int8);
        a precision no path could run has ``gops`` None.

    Example:
        >>> peak_rates()["rates"]["fp32"]["gops"]  # doctest: +SKIP
        481.7
    """
    info, versions = machine_info(), library_versions()
    threads = threads or info["cores"]
    key = _cache_key(info, versions, threads, size)
    path = cache_dir() / "peak.json"
    cache = _read_cache(path)
    entries = cache.get("entries", {})
    if not refresh and key in entries:
        return entries[key]
    record = _measure_all(threads, size)
    record.update(machine=info, versions=versions, key=key,
                  measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    entries = {**_read_cache(path).get("entries", {}), key: record}  # re-read: another process may have written
    try:
        _write_atomic(path, {"schema": PEAK_SCHEMA, "entries": entries})
    except OSError:
        pass  # an unwritable cache only costs a re-measurement next time
    return record


def peak_for(precision: str, rates: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """``(gops, path)`` of the measured peak for ``precision`` from a :func:`peak_rates` record."""
    if not rates:
        return None, None
    entry = rates.get("rates", {}).get(precision) or {}
    return entry.get("gops"), entry.get("path")


def _measure_all(threads: int, size: int) -> dict[str, Any]:
    rates: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for precision in PEAK_PRECISIONS:
        candidates: dict[str, tuple[float, float, int]] = {}
        for name, make in _PATHS[precision]:
            try:
                measured = _measure_path(make, threads, size)
            except Exception as exc:  # one broken path must not lose the others
                errors[f"{precision}/{name}"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                continue
            if measured is not None:  # None: not installed, or did not really run this precision
                candidates[name] = measured
        if candidates:
            best = max(candidates, key=lambda n: candidates[n][0])
            median, top, n = candidates[best]
            rates[precision] = {"gops": round(median, 1), "best": round(top, 1), "path": best, "size": n,
                                "candidates": {k: round(v[0], 1) for k, v in candidates.items()}}
        else:
            rates[precision] = {"gops": None, "best": None, "path": None, "size": None, "candidates": {}}
    return {"rates": rates, "threads": threads, "size": size, "errors": errors}


def _measure_path(make: Callable[[int, int], Callable[[], Any] | None], threads: int, max_size: int,
                  budget_s: float = 1.0, probe: int = 512) -> tuple[float, float, int] | None:
    """(median GOP/s, best GOP/s, size) of one path, or None when the path cannot run here.

    A small probe product estimates the rate first, so an emulated path (bf16 or int8 on a CPU
    without those units runs ~100x slower) is timed at a size that fits the budget instead of
    taking minutes; fast paths are timed at ``max_size``, where the rate is near its plateau.
    """
    fn = make(probe, threads)
    if fn is None:
        return None
    fn()  # first call: allocation, kernel selection, JIT
    t0 = time.perf_counter()
    fn()
    rate = 2.0 * probe**3 / max(time.perf_counter() - t0, 1e-9)  # FLOP/s
    # aim for calls of ~budget/8 so that 5 rounds fit the budget (the probe's rate understates
    # the large-size rate, which errs towards a larger size)
    size = int((rate * budget_s / 8 / 2) ** (1 / 3)) // 64 * 64
    size = min(max(size, probe), max_size)
    if size != probe:
        fn = make(size, threads)
        if fn is None:
            return None
    median, best = _time_rate(fn, 2.0 * size**3 / 1e9, budget_s)
    return median, best, size


def _time_rate(fn: Callable[[], Any], gop: float, budget_s: float = 1.0, repeats: int = 5) -> tuple[float, float]:
    """(median, best) GOP/s over ``repeats`` timed rounds of about ``budget_s / repeats`` each."""
    fn()  # warm-up at this size
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    if one > budget_s / 2:
        repeats = 3  # a slow path: a few single calls are enough and keep the total bounded
    calls = max(1, int(budget_s / repeats / max(one, 1e-6)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(gop * calls / (time.perf_counter() - t0))
    return statistics.median(rates), max(rates)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[Any]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


def _torch_path(kind: str) -> Callable[[int, int], Callable[[], Any] | None]:
    def make(size: int, threads: int) -> Callable[[], Any] | None:
        if not _installed("torch"):
            return None
        import torch

        g = torch.Generator().manual_seed(0)
        if kind == "int8":
            a = torch.randint(-128, 127, (size, size), dtype=torch.int8, generator=g)
            b = torch.randint(-128, 127, (size, size), dtype=torch.int8, generator=g)
            op = lambda: torch._int_mm(a, b)  # noqa: E731  int8 x int8 -> int32 (oneDNN)
        else:
            dtype = torch.bfloat16 if kind == "bf16" else torch.float32
            a = torch.randn(size, size, generator=g).to(dtype)
            b = torch.randn(size, size, generator=g).to(dtype)
            op = lambda: torch.mm(a, b)  # noqa: E731

        def run() -> Any:
            # set threads per call: other code in this process may change torch's global setting
            with _torch_threads(threads), torch.inference_mode():
                return op()

        return run

    return make


def _ort_path(kind: str) -> Callable[[int, int], Callable[[], Any] | None]:
    def make(size: int, threads: int) -> Callable[[], Any] | None:
        if not (_installed("onnxruntime") and _installed("onnx")):
            return None
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        if kind == "int8":  # MatMulInteger: uint8 activations x int8 weights -> int32 (MLAS u8s8)
            a = rng.integers(0, 255, (size, size), dtype=np.uint8)
            w = rng.integers(-127, 127, (size, size), dtype=np.int8)
            node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
            a_type, y_type = TensorProto.UINT8, TensorProto.INT32
        else:
            a = rng.standard_normal((size, size), dtype=np.float32)
            w = rng.standard_normal((size, size), dtype=np.float32)
            node = helper.make_node("MatMul", ["A", "B"], ["Y"])
            a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        graph = helper.make_graph(
            [node], "peak", [helper.make_tensor_value_info("A", a_type, [size, size])],
            [helper.make_tensor_value_info("Y", y_type, [size, size])], [numpy_helper.from_array(w, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"A": a})

    return make


def _ov_path(kind: str) -> Callable[[int, int], Callable[[], Any] | None]:
    def make(size: int, threads: int) -> Callable[[], Any] | None:
        if not _installed("openvino"):
            return None
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops

        rng = np.random.default_rng(0)
        a = ops.parameter([size, size], ov.Type.f32, name="a")
        if kind == "int8":
            # the pattern NNCF writes: FakeQuantize on activations, int8 weights -> Convert -> Multiply;
            # OpenVINO's low-precision transformations turn it into an int8 product
            lo, hi = np.float32(-4.0), np.float32(4.0)
            x = ops.fake_quantize(a, lo, hi, lo, hi, 256)
            w8 = ops.constant(rng.integers(-127, 127, (size, size), dtype=np.int8))
            w = ops.multiply(ops.convert(w8, ov.Type.f32), ops.constant(np.full((size, 1), 0.01, np.float32)))
        else:
            x, w = a, ops.constant(rng.standard_normal((size, size), dtype=np.float32))
        model = ov.Model([ops.matmul(x, w, False, True)], [a], "peak")
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "bf16" if kind == "bf16" else "f32"}
        compiled = ov.Core().compile_model(model, "CPU", config)
        if not _ov_ran(compiled, {"fp32": ("f32",), "bf16": ("bf16",), "int8": ("i8", "u8")}[kind]):
            return None  # e.g. bf16 asked on a CPU without bf16 units: it silently ran f32
        request = compiled.create_infer_request()
        data = rng.standard_normal((size, size), dtype=np.float32)
        return lambda: request.infer({0: data})

    return make


def _ov_ran(compiled: Any, want: tuple[str, ...]) -> bool:
    """True when the compiled model's matrix-product node ran in one of ``want`` precisions."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer in ("FullyConnected", "MatMul", "Gemm"):
            precision = info["runtimePrecision"].astype(str).lower() if "runtimePrecision" in info else ""
            return precision in want
    return False


def _installed(name: str) -> bool:
    from ._optional import is_installed

    return is_installed(name)


# fastest-first guesses; all are timed and the maximum wins
_PATHS: dict[str, list[tuple[str, Callable[[int, int], Callable[[], Any] | None]]]] = {
    "fp32": [("onnxruntime", _ort_path("fp32")), ("openvino", _ov_path("fp32")), ("torch", _torch_path("fp32"))],
    "bf16": [("openvino", _ov_path("bf16")), ("torch", _torch_path("bf16"))],
    "int8": [("openvino", _ov_path("int8")), ("onnxruntime", _ort_path("int8")), ("torch", _torch_path("int8"))],
}


def cuda_unavailable_reason() -> str | None:
    """Why no CUDA GPU can be used here (no CUDA build of PyTorch, no GPU, a broken driver), or None.

    Never raises: engine listings call it on machines without any GPU.
    """
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except Exception as exc:  # a broken CUDA install must not crash the listing
        return f"cannot query CUDA: {one_line(exc, 120)}"
    return None


if __name__ == "__main__":  # python -m effstack.hardware [--refresh]
    print(json.dumps({"machine": machine_info(), "versions": library_versions(),
                      "peak": peak_rates(refresh="--refresh" in sys.argv)}, indent=1))

