"""The engine protocol: one small interface every runtime sits behind.

An :class:`Engine` turns a :class:`~effstack.models.LoadedModel` into a :class:`Session` for one
precision and set of options. A session runs numpy batches and says which precision its kernels
*actually* executed, so an "INT8" build that silently runs in float is visible.

Engines never import their runtime at module import time of ``effstack.engines``; each engine
module imports it inside its functions (through :func:`effstack._optional.require`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ConfigError, PrecisionError

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
NOT_OBSERVED = "not observed"  # a layer's precision the engine could not read back (never the one asked for)


@dataclass(frozen=True)
class SessionOptions:
    """How to build a session.

    precision: the precision asked for (``fp32``, ``bf16``, ``fp16``, ``int8``).
    threads: compute threads for this session (None: all cores the process may use).
    batch: the batch size the session will mostly see (engines that specialise on it may use it).
    knobs: engine-specific settings, recorded verbatim in every result row
        (e.g. OpenVINO ``{"hint": "throughput", "streams": 2}``).
    calibration: sample batches for INT8 calibration (None: the engine draws synthetic ones).
    """

    precision: str = "fp32"
    threads: int | None = None
    batch: int = 1
    knobs: dict[str, Any] = field(default_factory=dict)
    calibration: Sequence[np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1, got {self.batch}")

    @property
    def n_threads(self) -> int:
        return self.threads or available_cores()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class Session(ABC):
    """A model ready to run on one engine at one precision."""

    engine: str
    precision: str

    def __init__(self, engine: str, model: "LoadedModel", options: SessionOptions):
        self.engine = engine
        self.precision = options.precision
        self.model = model
        self.options = options
        self.input = model.input

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch (already validated, C-contiguous) and return the first output as numpy."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Validate ``x`` against the model's :class:`InputSpec`, then :meth:`run` it."""
        return self.run(self.input.validate(x))

    def run_many(self, x: np.ndarray, n: int) -> int:
        """Run the batch ``x`` ``n`` times as fast as the engine can (throughput path).

        Engines with an asynchronous API (OpenVINO's infer-request queue) override this to keep
        several requests in flight; the default is a plain loop. Returns the number of samples run.
        """
        for _ in range(n):
            self.run(x)
        return n * x.shape[0]

    def concurrency(self) -> int:
        """How many calls :meth:`run_many` keeps in flight at once (1 for a plain loop)."""
        return 1

    def instances(self, n: int) -> list["Session"]:
        """``n`` sessions that share this one's compiled model and run at the same time.

        Only engines whose :meth:`Engine.shared_instance_knobs` offers sharing implement it: OpenVINO gives
        each one of the compiled model's streams, which ran ResNet-50 INT8 about twice as fast per sample here
        as two separately compiled one-thread models. The returned sessions are closed with this one.
        """
        raise NotImplementedError(f"engine {self.engine!r} cannot share a session between instances")

    def executed_precision(self) -> dict[str, int]:
        """Count of compute operations by the precision their kernels actually ran in.

        E.g. ``{"int8": 54, "fp32": 3}``; layers an engine could not read back count under :data:`NOT_OBSERVED`
        (the PyTorch engines before their first run). This base default returns the precision asked for.
        """
        return {self.precision: 1}

    def layer_precisions(self) -> dict[str, str]:
        """Each compute layer's name -> the precision its kernel actually ran (``"int8"``, ``"fp32"``, ...).

        Read from what the engine built (ONNX Runtime's optimized graph, OpenVINO's runtime model), so a
        layer the runtime left in float shows up here by name. Empty for engines that cannot tell.
        """
        return {}

    def kernels(self) -> dict[str, int]:
        """The kernel implementations the compute layers run, by name -> count, read back from what the
        engine built (OpenVINO's runtime model: ``{"brgconv_avx512_amx_I8": 52, "brgemm_avx512_amx_I8": 1}``).

        Empty for engines that cannot tell (ONNX Runtime and PyTorch pick their kernels inside a call).
        :func:`kernel_isa` names the instruction set they use.
        """
        return {}

    def settings(self) -> dict[str, Any]:
        """The resolved settings that affect speed (threads, streams, hints, ...), for the result row."""
        return {"threads": self.options.n_threads, **self.options.knobs}

    def close(self) -> None:
        """Release the engine's resources."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine(ABC):
    """A runtime that builds sessions. Subclasses set the class attributes and implement :meth:`load`."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    device: ClassVar[str] = "cpu"

    def check(self, options: SessionOptions) -> None:
        """Raise :class:`PrecisionError` when this engine cannot run ``options.precision``."""
        if options.precision not in self.precisions:
            raise PrecisionError(
                f"engine {self.name!r} runs {', '.join(self.precisions)}, not {options.precision!r}; "
                "pick another precision or engine"
            )

    @abstractmethod
    def load(self, model: "LoadedModel", options: SessionOptions) -> Session:
        """Build a session for ``model`` (exporting or compiling as needed)."""

    def serving_knobs(self) -> dict[str, Any]:
        """Knobs a session built to be served gets unless the user set them: a server's event loop shares the
        cores with the engine's threads (none by default)."""
        return {}

    def shared_instance_knobs(self, n: int) -> dict[str, Any] | None:
        """Knobs under which one session serves ``n`` instances through :meth:`Session.instances`, or None
        when this engine's instances must be separate sessions (the default)."""
        return None


def row_slices(n: int, parts: int) -> list[slice]:
    """``parts`` near-equal, contiguous slices of ``n`` rows (for splitting a batch across workers).

    >>> row_slices(5, 2)
    [slice(0, 2, None), slice(2, 5, None)]
    """
    bounds = np.linspace(0, n, parts + 1).astype(int).tolist()
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def run_batches(session: "Session", x: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``session``'s outputs on ``x`` (N, ...), run ``chunk`` samples at a time and concatenated."""
    return np.concatenate([session.infer(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def count_precisions(layers: dict[str, str]) -> dict[str, int]:
    """``{"conv1": "int8", "fc": "fp32", "conv2": "int8"}`` -> ``{"int8": 2, "fp32": 1}``."""
    counts: dict[str, int] = {}
    for kind in layers.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# instruction-set families in kernel names, widest first (oneDNN / OpenVINO spell them this way)
KERNEL_ISAS = ("amx", "avx512", "avx2", "sse41", "ref")


def kernel_isa(kernels: dict[str, int]) -> str:
    """The widest instruction-set family named by any of ``kernels`` (a :meth:`Session.kernels` count):
    ``"amx"``, ``"avx512"``, ``"avx2"``, ``"sse41"``, ``"ref"``; ``"other"`` when no name says; ``""`` when
    the engine could not tell.

    Example:
        >>> kernel_isa({"brgconv_avx512_amx_I8": 52, "jit_avx512_I8": 1})
        'amx'
    """
    if not kernels:
        return ""
    names = " ".join(kernels).lower()
    return next((isa for isa in KERNEL_ISAS if isa in names), "other")


def session_kernel_isa(session: "Session") -> str:
    """:func:`kernel_isa` of a session's :meth:`~Session.kernels`; ``""`` when reading them fails (never raises:
    the read-back is informative only)."""
    try:
        return kernel_isa(session.kernels())
    except Exception:
        return ""


def summarize_precision(counts: dict[str, int]) -> str:
    """``{"int8": 54, "fp32": 3}`` -> ``"int8 95% (54/57), fp32 3"`` for tables."""
    total = sum(counts.values())
    if not total:
        return "?"
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    head, n = ranked[0]
    parts = [f"{head} {100 * n // total}% ({n}/{total})"] if len(ranked) > 1 else [head]
    parts += [f"{k} {v}" for k, v in ranked[1:]]
    return ", ".join(parts)


def calibration_batches(model: "LoadedModel", options: SessionOptions, n: int = 16) -> list[np.ndarray]:
    """The calibration batches to use: the user's, else ``n`` deterministic synthetic single samples.

    Float batches become float32; integer ones (token ids) keep the model's integer dtype. Batches may
    differ in length along a dynamic axis (every engine here calibrates batch by batch)."""
    if options.calibration is not None:
        dtype = np.dtype(model.input.dtype) if np.dtype(model.input.dtype).kind in "iu" else np.float32
        batches = [np.ascontiguousarray(b, dtype=dtype) for b in options.calibration]
        if not batches:
            raise ConfigError("calibration data is empty; pass at least one batch or leave it unset")
        return batches
    return [model.input.example(1, seed=1000 + i) for i in range(n)]


def iter_samples(batches: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """Split batches into single-sample batches (some calibrators want batch 1)."""
    for b in batches:
        for i in range(b.shape[0]):
            yield b[i : i + 1]
