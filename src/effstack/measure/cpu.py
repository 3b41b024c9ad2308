"""How much CPU *other* processes took while we measured: the noisy-neighbour meter.

On a shared machine a neighbour at the lowest priority can still take 20-40% of the CPU and halve
a throughput figure. The meter reads the machine's busy time from ``/proc/stat`` before and after
a run and subtracts this process's own CPU time (all its threads, from ``getrusage``); what is left
was spent by someone else. Linux only: elsewhere the fields are None and ``available`` is False.

>>> with OtherCpu() as meter:
...     sum(range(1000))
499500
>>> meter.usage.other_pct_core is None or meter.usage.other_pct_core >= 0
True
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = ["CpuUsage", "OtherCpu", "read_proc_stat"]

_PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuUsage:
    """CPU time over one measured interval.

    other_pct_core: other processes' CPU as % of one core (150 = one and a half cores busy).
    other_pct_machine: the same as % of all the machine's cores (0..100).
    self_pct_core: this process's CPU (all threads) as % of one core.
    machine_cores: CPUs counted in /proc/stat (the whole VM or host, not just our affinity).
    """

    wall_s: float
    other_pct_core: float | None
    other_pct_machine: float | None
    self_pct_core: float
    machine_cores: int | None
    available: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def noisy(self, threshold_pct_core: float = 10.0) -> bool:
        """True when others took more than ``threshold_pct_core`` % of one core."""
        return self.other_pct_core is not None and self.other_pct_core > threshold_pct_core


def read_proc_stat(path: Path = _PROC_STAT) -> tuple[float, int] | None:
    """(busy seconds summed over all CPUs, number of CPUs) from /proc/stat, or None if unreadable.

    Busy = user + nice + system + irq + softirq + steal (guest time is already inside user/nice;
    steal counts because a hypervisor neighbour slows us as much as a local one).
    """
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    if not lines or not lines[0].startswith("cpu "):
        return None
    fields = [int(v) for v in lines[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    return (user + nice + system + irq + softirq + steal) / ticks, max(cpus, 1)


def _self_cpu_s() -> float:
    # getrusage(RUSAGE_SELF) covers every thread of this process at microsecond resolution,
    # finer than /proc/stat's ticks; children are excluded on purpose (they are "others" unless
    # they are our own workers, which the caller then measures in the child itself)
    if resource is None:  # pragma: no cover - Windows
        t = os.times()
        return t.user + t.system
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class OtherCpu:
    """Context manager measuring other processes' CPU during the ``with`` block.

    After the block, :attr:`usage` holds a :class:`CpuUsage`. Values are clamped to
    [0, 100 * cores]: /proc/stat counts in 10 ms ticks, so short intervals are coarse (a run
    shorter than ~0.5 s gives a rough figure).

    Example:
        >>> with OtherCpu() as m:
        ...     pass
        >>> 0 <= (m.usage.other_pct_machine or 0) <= 100
        True
    """

    def __init__(self, stat_path: Path = _PROC_STAT):
        self._path = stat_path
        self.usage: CpuUsage | None = None

    def __enter__(self) -> "OtherCpu":
        self._stat0 = read_proc_stat(self._path)
        self._self0 = _self_cpu_s()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        self_s = max(_self_cpu_s() - self._self0, 0.0)
        stat1 = read_proc_stat(self._path)
        if self._stat0 is None or stat1 is None:
            self.usage = CpuUsage(wall, None, None, 100 * self_s / wall, None, False)
            return
        cores = stat1[1]
        other_s = max(stat1[0] - self._stat0[0] - self_s, 0.0)
        other_core = min(100 * other_s / wall, 100.0 * cores)
        self.usage = CpuUsage(
            wall_s=wall,
            other_pct_core=other_core,
            other_pct_machine=other_core / cores,
            self_pct_core=100 * self_s / wall,
            machine_cores=cores,
            available=True,
        )
