"""Shared fixtures: one export/quantization cache per test session, tiny models built in code."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Keep every cache (ONNX exports, INT8 builds, peak rates) inside the test session's temp folder."""
    path = tmp_path_factory.mktemp("effstack-cache")
    old = os.environ.get("EFFSTACK_CACHE")
    os.environ["EFFSTACK_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EFFSTACK_CACHE", None)
    else:
        os.environ["EFFSTACK_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_cnn():
    from effstack.models import load_model

    return load_model("effstack.testing:tiny_cnn")


@pytest.fixture(scope="session")
def tiny_resnet():
    from effstack.models import load_model

    return load_model("effstack.testing:tiny_resnet")


def rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| relative to max |ref|."""
    return float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def snr_db(y: np.ndarray, ref: np.ndarray) -> float:
    """Signal-to-noise ratio of ``y`` against ``ref`` in decibels."""
    noise = float(np.sum((y.astype(np.float64) - ref) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


# /proc/cpuinfo flags of the three CPU kinds this project has run on (the ones effstack's checks read)
CPU_KINDS = {
    "zen3-avx2": ("avx2", "fma"),
    "zen5-avx512-vnni-bf16": ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"),
    "xeon-amx": ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                 "amx_int8"),
}


# EFFSTACK_TEST_CPU=zen5-avx512-vnni-bf16 make test: the whole suite in this process sees that CPU's flags, so the
# other CPU kind's branches of every test run here (bf16 autocast is emulated where the CPU lacks it: slow, right)
if os.environ.get("EFFSTACK_TEST_CPU"):
    from effstack import hardware as _hardware

    _forced_flags = frozenset(CPU_KINDS[os.environ["EFFSTACK_TEST_CPU"]])
    _hardware.cpu_flags = lambda: _forced_flags
    _hardware._is_x86 = lambda: True
    _hardware.amx_tiles_enabled = lambda: "amx_tile" in _forced_flags  # a forced AMX CPU has its tiles enabled


@pytest.fixture
def force_cpu(monkeypatch):
    """``force_cpu("zen3-avx2")`` (or a tuple of flags): effstack's feature checks see that x86 CPU.

    The OS is taken to have enabled the AMX tiles of a CPU that lists them; ``tiles=False`` forces the other
    case (flags present, tiles off), so no AMX path depends on the machine either. Code paths that differ by
    CPU are tested both ways with it, so no test depends on the machine it runs on.
    """
    from effstack import hardware

    def force(kind, tiles=True):
        flags = frozenset(CPU_KINDS[kind] if isinstance(kind, str) else kind)
        monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
        monkeypatch.setattr(hardware, "_is_x86", lambda: True)
        monkeypatch.setattr(hardware, "amx_tiles_enabled", lambda: tiles and "amx_tile" in flags)
        return flags

    return force


@pytest.fixture
def load_benchmark(monkeypatch):
    """``load_benchmark("serving_stages")``: the module ``benchmarks/serving_stages.py``, imported for this test
    (registered in ``sys.modules`` for its dataclasses; the folder a benchmark puts first on ``sys.path`` is
    taken off again afterwards)."""
    import importlib.util
    import sys
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        monkeypatch.setattr(sys, "path", list(sys.path))
        spec.loader.exec_module(module)
        return module

    return load
