"""What the planner searches over: :class:`Candidate` configurations, the :class:`Grid` of valid ones,
and the :class:`Measurement` of one candidate.

>>> grid = Grid.build(["a", "b"], ["fp32"], [1, 8], instances=[1, 2], threads=[1, 2], cores=2,
...                   supported=lambda engine: ("fp32",))
>>> len(grid), grid.families()[0]
(12, ('a', 'fp32', 1, 1))
>>> [why for what, why in grid.rejected]
['uses 4 cores, more than the 2 this machine has']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError, one_line

__all__ = ["Candidate", "Measurement", "Grid", "Family"]

Family = tuple[str, str, int, int]  # (engine, precision, instances, threads): a candidate without its batch


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _from_dict(cls: type, d: Any) -> Any:
    from ..train.config import config_from_dict

    return config_from_dict(cls, d, cls.__name__)


@dataclass(frozen=True, order=True)
class Candidate:
    """One complete serving configuration: ``instances`` sessions of ``engine`` at ``precision``,
    each with ``threads`` compute threads, each fed batches of ``batch`` samples.

    Raises:
        ConfigError: an empty engine or precision, or a non-positive batch, instances or threads.

    Example:
        >>> c = Candidate("onnxruntime", "int8", batch=8, instances=2, threads=1)
        >>> c.label(), Candidate.from_dict(c.to_dict()) == c
        ('onnxruntime int8 b8 2x1', True)
    """

    engine: str
    precision: str = "fp32"
    batch: int = 1
    instances: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("engine", "precision"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"candidate {name} must be a non-empty name, got {getattr(self, name)!r}")
        for name in ("batch", "instances", "threads"):
            _positive_int(f"candidate {name}", getattr(self, name))

    @property
    def family(self) -> Family:
        return (self.engine, self.precision, self.instances, self.threads)

    @property
    def cores(self) -> int:
        return self.instances * self.threads

    def label(self) -> str:
        """``engine precision bBATCH INSTANCESxTHREADS``."""
        return f"{self.engine} {self.precision} b{self.batch} {self.instances}x{self.threads}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class Measurement:
    """What measuring one candidate gave.

    throughput: samples/s with every instance busy; p50_ms / p99_ms: latency of one batch under that
    load; samples: samples timed; seconds: seconds asked for; error: one line when it failed (then the
    numbers are None); other_cpu_pct: other processes' CPU during the timed part, in % of one core (None:
    not metered), to judge how far to trust the figure on a shared machine; kernel_isa: the widest
    instruction set of the engine's kernels, read back from what it compiled (``"amx"``, ``"avx512"``;
    ``""``: the engine cannot tell), which the search prefers on AMX CPUs (:mod:`effstack.plan.prefer`).

    Example:
        >>> Measurement(throughput=100.0, p50_ms=1.0, p99_ms=2.0, samples=50, seconds=0.5).ok
        True
        >>> Measurement.failed("boom", 0.5).ok
        False
    """

    throughput: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    samples: int = 0
    seconds: float = 0.0
    error: str = ""
    other_cpu_pct: float | None = None
    kernel_isa: str = ""

    def __post_init__(self) -> None:
        if not self.error and (self.throughput is None or self.p99_ms is None):
            raise ConfigError("a measurement without an error needs throughput and p99_ms; pass error=... instead")
        for name in ("throughput", "p50_ms", "p99_ms"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"measurement {name} must be a finite non-negative number, got {value!r}")

    @property
    def ok(self) -> bool:
        return not self.error

    @classmethod
    def failed(cls, error: BaseException | str, seconds: float = 0.0) -> "Measurement":
        text = one_line(error) if isinstance(error, BaseException) else " ".join(str(error).split())
        return cls(seconds=seconds, error=text or "failed")

    def meets(self, budget_ms: float) -> bool:
        """True when it succeeded and its p99 is within ``budget_ms``."""
        return self.ok and self.p99_ms is not None and self.p99_ms <= budget_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        return _from_dict(cls, d)


def _registry_precisions(engine: str) -> tuple[str, ...]:
    """The precisions ``engine`` runs here; raises effstack errors when it is unknown or not installed."""
    from ..engines import get_engine

    return tuple(get_engine(engine).precisions)


def _axis(values: Iterable[Any], name: str, cast: Callable[[Any], Any]) -> tuple[Any, ...]:
    items = tuple(dict.fromkeys(cast(v) for v in ([values] if isinstance(values, (str, int)) else values)))
    if not items:
        raise ConfigError(f"the grid needs at least one {name}; pass one or more")
    return items


@dataclass(frozen=True)
class Grid:
    """The valid candidates of a search, and what was left out with the reason (``(what, why)`` pairs).

    Build one with :meth:`build`; a Grid made directly takes the candidates as given.
    """

    candidates: tuple[Candidate, ...]
    rejected: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.candidates:
            why = "; ".join(f"{what}: {reason}" for what, reason in self.rejected) or "no axes given"
            raise ConfigError(f"the search grid has no valid candidate ({why}); widen the grid")
        object.__setattr__(self, "candidates", tuple(dict.fromkeys(self.candidates)))

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self):
        return iter(self.candidates)

    def families(self) -> list[Family]:
        """Distinct (engine, precision, instances, threads), in grid order."""
        return list(dict.fromkeys(c.family for c in self.candidates))

    def batches(self, family: Family) -> list[int]:
        """The batch sizes of ``family`` in the grid, ascending."""
        return sorted(c.batch for c in self.candidates if c.family == family)

    @classmethod
    def build(
        cls,
        engines: Sequence[str] | str,
        precisions: Sequence[str] | str,
        batches: Sequence[int] | int,
        instances: Sequence[int] | int = (1,),
        threads: Sequence[int] | int = (1,),
        *,
        cores: int | None = None,
        supported: Callable[[str], Sequence[str]] | None = None,
    ) -> "Grid":
        """Every engine x precision x batch x instances x threads that can run here.

        Left out, each with its reason in :attr:`rejected`: engines that are unknown, not installed or
        cannot run here; precisions an engine does not run; instances x threads above ``cores``.

        Args:
            cores: the machine's cores (default: the cores this process may use).
            supported: ``engine -> precisions it runs`` (raising an effstack error when it cannot run);
                default: effstack's engine registry. Tests pass their own.

        Raises:
            ConfigError: an empty axis, a non-positive size, or no valid candidate at all.

        Example:
            >>> len(Grid.build("null", "fp32", [1, 2, 4], instances=[1, 2], threads=1, cores=2))
            6
        """
        from ..errors import EffstackError

        supported = supported or _registry_precisions
        if cores is None:
            from ..hardware import available_cores

            cores = available_cores()
        cores = _positive_int("cores", cores)
        engine_list = _axis(engines, "engine", str)
        precision_list = _axis(precisions, "precision", str)
        batch_list = sorted(_axis(batches, "batch size", lambda v: _positive_int("batch size", v)))
        instance_list = _axis(instances, "instance count", lambda v: _positive_int("instances", v))
        thread_list = _axis(threads, "thread count", lambda v: _positive_int("threads", v))
        rejected: list[tuple[str, str]] = []
        layouts = []
        for n in instance_list:
            for t in thread_list:
                if n * t > cores:
                    rejected.append((f"{n}x{t}", f"uses {n * t} cores, more than the {cores} this machine has"))
                else:
                    layouts.append((n, t))
        candidates = []
        for engine in engine_list:
            try:
                runs = tuple(supported(engine))
            except EffstackError as exc:
                rejected.append((engine, one_line(exc)))
                continue
            for precision in precision_list:
                if precision not in runs:
                    rejected.append((f"{engine} {precision}", f"engine runs {', '.join(runs)} here"))
                    continue
                candidates += [Candidate(engine, precision, b, n, t) for n, t in layouts for b in batch_list]
        return cls(tuple(candidates), tuple(rejected))
