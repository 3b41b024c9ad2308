"""The machine's measured peak matrix-product rates per precision (the denominator of "% of peak").

Nothing is hard-coded: each precision is timed on this machine with every installed path (ONNX Runtime's
MLAS products, OpenVINO's matrix product and convolution, which take its VNNI / AMX kernels where the CPU
has them, PyTorch's ``torch._int_mm`` and oneDNN products), the fastest wins and is named, and the record is
cached per machine and library versions in ``<cache>/peak.json`` (:func:`effstack._files.cache_dir`).
``effstack peak`` and ``python -m effstack.measure.peak [--refresh]`` print it.

A micro-benchmark can still be outrun by a whole engine (convolutions that stay in cache, kernels no
micro-benchmark reaches), and a fraction of peak above 1 is a contradiction. So a measured rate is treated
as what it is, a lower bound of the machine's peak: a row that outruns the peak becomes the peak
(:func:`peak_for` returns the larger of the micro-benchmark and the best observation, with its path named
``observed:<engine>/<model> b<batch>``), and :func:`raise_peak` records it in the cache for later rows. A
row's ``peak_fraction`` therefore never exceeds 1.

>>> peak_for("fp32", {"rates": {"fp32": {"gops": 120.0, "path": "onnxruntime"}}})
(120.0, 'onnxruntime')
>>> peak_for("fp32", {"rates": {"fp32": {"gops": 120.0, "path": "onnxruntime",
...                                      "observed": {"gops": 150.0, "path": "observed:openvino/m b8"}}}})
(150.0, 'observed:openvino/m b8')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._files import atomic_write_json, cache_dir
from ..errors import ArtifactError
from ..hardware import library_versions, machine_info

__all__ = ["PEAK_PRECISIONS", "OBSERVED", "peak_rates", "peak_for", "raise_peak", "observed_path"]

PEAK_PRECISIONS = ("fp32", "bf16", "int8")
PEAK_SCHEMA = 1
OBSERVED = "observed:"  # the prefix of a peak path that is a measured row, not a micro-benchmark


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
    path = cache_dir(create=False) / "peak.json"
    cache = _read_cache(path)
    entries = cache.get("entries", {})
    if not refresh and key in entries:
        return entries[key]
    record = _measure_all(threads, size)
    record.update(machine=info, versions=versions, key=key,
                  measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    entries = {**_read_cache(path).get("entries", {}), key: record}  # re-read: another process may have written
    with contextlib.suppress(ArtifactError):  # an unwritable cache only costs a re-measurement next time
        atomic_write_json(path, {"schema": PEAK_SCHEMA, "entries": entries}, sort_keys=True)
    return record


def peak_for(precision: str, rates: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """``(gops, path)`` of the peak for ``precision`` from a :func:`peak_rates` record: the fastest
    micro-benchmark path, or the fastest observed row where one outran it (see :func:`raise_peak`)."""
    if not rates:
        return None, None
    entry = rates.get("rates", {}).get(precision) or {}
    gops, path = entry.get("gops"), entry.get("path")
    seen = entry.get("observed") or {}
    if gops is not None and seen.get("gops") is not None and seen["gops"] > gops:
        return seen["gops"], seen.get("path")
    return gops, path


def observed_path(engine: str, model: str, batch: int) -> str:
    """The peak path of a row that outran the micro-benchmarks: ``observed:openvino/resnet50 b8``."""
    return f"{OBSERVED}{engine}/{model} b{batch}"


def raise_peak(record: dict[str, Any] | None, precision: str, gops: float, path: str,
               persist: bool = True) -> bool:
    """Raise ``record``'s peak for ``precision`` to an observed rate, when it is higher than the current peak.

    A measured rate is a lower bound of what the machine can do, so it replaces a slower micro-benchmark as
    the denominator of later rows; the micro-benchmark's own figure stays in the record. With ``persist``
    the observation also goes into the cache entry the record came from (a record measured by
    :func:`peak_rates`, which carries its ``key``), so later sweeps start from it; ``--refresh`` forgets it.

    Returns:
        True when the peak was raised (False: no record, no micro-benchmark peak for ``precision``, or
        ``gops`` is not above the current peak).

    Example:
        >>> rec = {"rates": {"int8": {"gops": 100.0, "path": "onnxruntime"}}}
        >>> raise_peak(rec, "int8", 130.0, "observed:openvino/m b8", persist=False), peak_for("int8", rec)
        (True, (130.0, 'observed:openvino/m b8'))
    """
    current, _ = peak_for(precision, record)
    if record is None or current is None or not gops > current:
        return False
    seen = {"gops": float(gops), "path": path,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    record["rates"][precision]["observed"] = seen
    key = record.get("key")
    if persist and key:
        path_ = cache_dir(create=False) / "peak.json"
        entries = _read_cache(path_).get("entries", {})
        if key in entries and precision in entries[key].get("rates", {}):
            entries[key]["rates"][precision]["observed"] = seen
            with contextlib.suppress(ArtifactError):  # an unwritable cache only loses the observation
                atomic_write_json(path_, {"schema": PEAK_SCHEMA, "entries": entries}, sort_keys=True)
    return True


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

    ``make(size, threads)`` builds a call of about ``2 * size**3`` operations (a square product; a path
    whose call does another count, like a convolution, says so in the call's ``flop`` attribute). A small
    probe estimates the rate first, so an emulated path (bf16 or int8 on a CPU without those units runs
    ~100x slower) is timed at a size that fits the budget instead of taking minutes; fast paths are timed
    at ``max_size``, where the rate is near its plateau.
    """
    fn = make(probe, threads)
    if fn is None:
        return None
    fn()  # first call: allocation, kernel selection, JIT
    t0 = time.perf_counter()
    fn()
    rate = _flop(fn, probe) / max(time.perf_counter() - t0, 1e-9)  # FLOP/s
    # aim for calls of ~budget/8 so that 5 rounds fit the budget (the probe's rate understates
    # the large-size rate, which errs towards a larger size)
    size = int((rate * budget_s / 8 / 2) ** (1 / 3)) // 64 * 64
    size = min(max(size, probe), max_size)
    if size != probe:
        fn = make(size, threads)
        if fn is None:
            return None
    median, best = _time_rate(fn, _flop(fn, size) / 1e9, budget_s)
    return median, best, size


def _flop(fn: Callable[[], Any], size: int) -> float:
    """Operations in one call of ``fn``: its ``flop`` attribute, else a square product's ``2 * size**3``."""
    return float(getattr(fn, "flop", 2.0 * size**3))


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
        x, w = _ov_operands(kind, a, (size, size), rng)
        request = _ov_request(ov.Model([ops.matmul(x, w, False, True)], [a], "peak"), kind, threads)
        if request is None:
            return None  # e.g. bf16 asked on a CPU without bf16 units: it silently ran f32
        data = rng.standard_normal((size, size), dtype=np.float32)
        return lambda: request.infer({0: data})

    return make


# ResNet-like 3x3 convolution: channels in = out, spatial size; the batch grows with the size asked for
_CONV_CHANNELS, _CONV_HW, _CONV_K = 256, 14, 3


def _ov_conv_path(kind: str) -> Callable[[int, int], Callable[[], Any] | None]:
    """OpenVINO's convolution kernels (brgconv: VNNI, AMX where the CPU has it): what CNN rows run, and on
    some CPUs faster than any matrix product (a ResNet-50 INT8 row outran every product path on AMX).

    ``size`` picks the batch so that one call does about ``2 * size**3`` operations; the exact count is the
    call's ``flop`` attribute.
    """
    def make(size: int, threads: int) -> Callable[[], Any] | None:
        if not _installed("openvino"):
            return None
        import numpy as np
        import openvino as ov
        import openvino.opset13 as ops

        c, hw, k = _CONV_CHANNELS, _CONV_HW, _CONV_K
        per_sample = 2.0 * c * c * k * k * hw * hw
        n = max(1, round(2.0 * size**3 / per_sample))
        rng = np.random.default_rng(0)
        a = ops.parameter([n, c, hw, hw], ov.Type.f32, name="a")
        pads = [k // 2, k // 2]
        x, w = _ov_operands(kind, a, (c, c, k, k), rng)
        request = _ov_request(ov.Model([ops.convolution(x, w, [1, 1], pads, pads, [1, 1])], [a], "peak_conv"),
                              kind, threads)
        if request is None:
            return None
        data = rng.standard_normal((n, c, hw, hw), dtype=np.float32)

        def run() -> Any:
            return request.infer({0: data})

        run.flop = n * per_sample  # type: ignore[attr-defined]
        return run

    return make


def _ov_operands(kind: str, a: Any, weight_shape: tuple[int, ...], rng: Any) -> tuple[Any, Any]:
    """The activation and weight of a peak graph on parameter ``a``: for int8 the pattern NNCF writes
    (FakeQuantize on activations, int8 weights -> Convert -> Multiply by a per-output scale), which OpenVINO's
    low-precision transformations turn into an int8 kernel; else ``a`` and float weights."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    if kind != "int8":
        return a, ops.constant(rng.standard_normal(weight_shape, dtype=np.float32) * np.float32(0.05))
    lo, hi = np.float32(-4.0), np.float32(4.0)
    w8 = ops.constant(rng.integers(-127, 127, weight_shape, dtype=np.int8))
    scale = np.full((weight_shape[0],) + (1,) * (len(weight_shape) - 1), 0.01, np.float32)
    return ops.fake_quantize(a, lo, hi, lo, hi, 256), ops.multiply(ops.convert(w8, ov.Type.f32), ops.constant(scale))


def _ov_request(model: Any, kind: str, threads: int) -> Any | None:
    """An infer request of ``model`` compiled for ``kind`` on one latency stream, or None when its kernels did
    not really run that precision (:func:`_ov_ran`)."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "bf16" if kind == "bf16" else "f32"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    if not _ov_ran(compiled, {"fp32": ("f32",), "bf16": ("bf16",), "int8": ("i8", "u8")}[kind]):
        return None
    return compiled.create_infer_request()


def _ov_ran(compiled: Any, want: tuple[str, ...]) -> bool:
    """True when the compiled model's matrix-product (or convolution) node ran in one of ``want`` precisions."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer in ("FullyConnected", "MatMul", "Gemm", "Convolution"):
            precision = info["runtimePrecision"].astype(str).lower() if "runtimePrecision" in info else ""
            return precision in want
    return False


def _installed(name: str) -> bool:
    from .._optional import is_installed

    return is_installed(name)


# fastest-first guesses; all are timed and the maximum wins (its name is the row's peak_path)
_PATHS: dict[str, list[tuple[str, Callable[[int, int], Callable[[], Any] | None]]]] = {
    # no fp32 convolution: OpenVINO's ran at under half its fp32 product on the Zen 4 (AVX-512) test machine
    "fp32": [("onnxruntime", _ort_path("fp32")), ("openvino", _ov_path("fp32")), ("torch", _torch_path("fp32"))],
    "bf16": [("openvino", _ov_path("bf16")), ("openvino-conv", _ov_conv_path("bf16")), ("torch", _torch_path("bf16"))],
    "int8": [("openvino", _ov_path("int8")), ("openvino-conv", _ov_conv_path("int8")),
             ("onnxruntime", _ort_path("int8")), ("torch", _torch_path("int8"))],
}


if __name__ == "__main__":  # python -m effstack.measure.peak [--refresh]
    print(json.dumps(peak_rates(refresh="--refresh" in sys.argv), indent=1))
