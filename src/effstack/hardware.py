"""The machine: CPU model, cores, ISA flags, memory and library versions.

Every result row carries :func:`machine_info` and :func:`library_versions`. The measured peak
matrix-product rates (a row's "% of peak") are timed by :mod:`effstack.measure.peak`.

>>> info = machine_info()
>>> info["cores"] >= 1
True
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import one_line

__all__ = ["cpu_kind", "machine_info", "library_versions", "available_cores", "cpu_flags", "has_int8_dot_product",
           "has_native_bf16", "amx_usable", "amx_tiles_enabled", "cuda_unavailable_reason"]

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8")
AMX_KINDS = ("int8", "bf16")  # amx_int8 / amx_bf16: what the tiles multiply
LIBRARIES = ("effstack", "numpy", "torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


def available_cores() -> int:
    """Logical cores this process may run on (its CPU affinity), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _first_processor() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo as key -> value ({} where it cannot be read); the fields
    that matter here (model name, vendor, family, flags) are the same for every processor."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                break
            continue
        key, _, value = line.partition(":")
        block.setdefault(key.strip(), value.strip())
    return block


def _cpuinfo() -> tuple[str, set[str]]:
    block = _first_processor()
    return block.get("model name") or platform.processor() or platform.machine(), set(block.get("flags", "").split())


def _cpu_identity() -> tuple[str, int | None]:
    """(vendor_id, cpu family) from /proc/cpuinfo: ("AuthenticAMD", 25); ("", None) where unknown."""
    block = _first_processor()
    family = block.get("cpu family", "")
    return block.get("vendor_id", ""), int(family) if family.isdigit() else None


def cpu_kind(flags: frozenset[str] | None = None, vendor: str | None = None, family: int | None = None,
             model: str | None = None) -> str:
    """A short name for this CPU's kind, for ``results/<cpu-kind>/``: vendor, generation, the ISA tier that decides
    speed. ``amd-zen3-avx2``, ``amd-zen5-avx512-vnni-bf16``, ``intel-xeon-amx``; unknown parts are left out.

    Example:
        >>> cpu_kind(frozenset({"avx2", "fma"}), "AuthenticAMD", 25, "AMD EPYC")
        'amd-zen3-avx2'
    """
    if flags is None:
        flags = cpu_flags()
    if vendor is None or family is None:
        vendor, family = _cpu_identity()
    model = model if model is not None else _cpuinfo()[0]
    if "amx_int8" in flags:
        tier = "amx"
    elif "avx512_vnni" in flags:
        tier = "avx512-vnni-bf16" if "avx512_bf16" in flags else "avx512-vnni"
    elif "avx512f" in flags:
        tier = "avx512"
    elif "avx_vnni" in flags:
        tier = "avx2-vnni"
    elif "avx2" in flags:
        tier = "avx2"
    else:
        tier = platform.machine().lower() or "cpu"
    parts = []
    if vendor == "AuthenticAMD":
        parts.append("amd")
        # family 25 (0x19) is Zen 3 and Zen 4 (Zen 4 adds AVX-512); 26 (0x1A) is Zen 5; 23 (0x17) Zen 1/2
        zen = {23: "zen2", 25: "zen4" if "avx512f" in flags else "zen3", 26: "zen5"}.get(family or 0)
        parts += [zen] if zen else []
    elif vendor == "GenuineIntel":
        parts += ["intel"] + (["xeon"] if "xeon" in model.lower() else [])
    return "-".join([*parts, tier])


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


# Linux arch_prctl: the AMX tile data (XSAVE feature 18, XTILEDATA) is off for a process until it asks for it
_SYS_ARCH_PRCTL = 158  # x86-64 syscall number
_ARCH_GET_XCOMP_PERM, _ARCH_REQ_XCOMP_PERM = 0x1022, 0x1023
_XFEATURE_XTILEDATA = 18


@functools.lru_cache(maxsize=1)
def amx_tiles_enabled() -> bool:
    """True when the OS lets this process use the AMX tile registers (Linux 5.16+ on x86-64).

    Asks for the XTILEDATA permission (``arch_prctl(ARCH_REQ_XCOMP_PERM, 18)``), as oneDNN does before its
    first AMX kernel, then reads it back (``ARCH_GET_XCOMP_PERM``, bit 18). Any failure (another OS, an older
    kernel, a hypervisor that hides the tiles, a seccomp filter) counts as not enabled; never raises.
    """
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return xtiledata_permitted(_arch_prctl)


def xtiledata_permitted(arch_prctl: Callable[[int, int], tuple[int, int]]) -> bool:
    """The permission logic of :func:`amx_tiles_enabled` over ``arch_prctl(code, arg) -> (rc, mask)``
    (the real syscall, or a fake in tests): granted already, or granted once requested; errors count as no.

    Example:
        >>> xtiledata_permitted(lambda code, arg: (0, 1 << 18))
        True
    """
    def granted() -> bool:
        rc, mask = arch_prctl(_ARCH_GET_XCOMP_PERM, 0)
        return rc == 0 and bool(mask >> _XFEATURE_XTILEDATA & 1)

    try:
        if granted():
            return True
        arch_prctl(_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)
        return granted()
    except Exception:  # no libc, no syscall: no tiles
        return False


def _arch_prctl(code: int, arg: int) -> tuple[int, int]:
    """``syscall(SYS_arch_prctl, code, ...)``: GET passes a pointer to the mask it fills, REQ the feature."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_uint64(0)
    value = ctypes.byref(mask) if code == _ARCH_GET_XCOMP_PERM else ctypes.c_ulong(arg)
    rc = libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(code), value)
    return int(rc), int(mask.value)


def amx_usable(kind: str | None = None) -> bool:
    """True when AMX tile kernels can run here: ``/proc/cpuinfo`` lists ``amx_tile`` (and ``amx_int8`` or
    ``amx_bf16`` when ``kind`` is ``"int8"`` or ``"bf16"``) and the OS enabled the tiles
    (:func:`amx_tiles_enabled`; tests replace it, and :func:`cpu_flags`, to take both ways).

    Raises:
        ConfigError: ``kind`` is not None, ``"int8"`` or ``"bf16"``.

    Example:
        >>> amx_usable("int8") in (True, False)
        True
    """
    if kind is not None and kind not in AMX_KINDS:
        from .errors import ConfigError

        raise ConfigError(f"AMX kind must be one of {', '.join(AMX_KINDS)} or None, got {kind!r}")
    flags = cpu_flags()
    if "amx_tile" not in flags or (kind is not None and f"amx_{kind}" not in flags):
        return False  # no syscall where the CPU has no tiles
    return amx_tiles_enabled()


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
    ``["avx2", "avx512f", "avx512_vnni"]``), ``amx`` (AMX tiles listed *and* enabled by the OS),
    ``memory_gb``, ``os``, ``kernel``, ``python``.

    Example:
        >>> sorted(machine_info())[:4]
        ['amx', 'cores', 'cpu', 'host_cores']
    """
    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "kind": cpu_kind(frozenset(flags), model=model),
        "cores": available_cores(),
        "host_cores": os.cpu_count() or 1,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "amx": "amx_tile" in flags and amx_tiles_enabled(),
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


if __name__ == "__main__":  # python -m effstack.hardware
    print(json.dumps({"machine": machine_info(), "versions": library_versions()}, indent=1))
