"""The other-processes CPU meter: ranges and arithmetic (never how busy the machine is)."""

from __future__ import annotations

import os
import time

from effstack.measure.cpu import OtherCpu, read_proc_stat


def test_meter_reports_within_bounds():
    with OtherCpu() as meter:
        end = time.perf_counter() + 0.1
        while time.perf_counter() < end:  # keep this process busy: its CPU must not count as "other"
            pass
    u = meter.usage
    if not u.available:  # not Linux: degrade to None, never raise
        assert u.other_pct_core is None
        return
    cores = u.machine_cores
    assert cores >= 1
    assert 0.0 <= u.other_pct_core <= 100.0 * cores
    assert 0.0 <= u.other_pct_machine <= 100.0
    assert u.self_pct_core >= 0.0
    assert u.noisy(threshold_pct_core=100.0 * cores + 1) is False


def _write_stat(path, busy_ticks: int, cpus: int = 2) -> None:
    lines = [f"cpu  {busy_ticks} 0 0 1000 0 0 0 0 0 0"]
    lines += [f"cpu{i} 0 0 0 500 0 0 0 0 0 0" for i in range(cpus)]
    path.write_text("\n".join(lines) + "\nintr 0\n")


def test_meter_arithmetic_and_clamp(tmp_path):
    stat = tmp_path / "stat"
    _write_stat(stat, 0)
    busy, cpus = read_proc_stat(stat)
    assert (busy, cpus) == (0.0, 2)
    hz = os.sysconf("SC_CLK_TCK")
    with OtherCpu(stat) as meter:
        _write_stat(stat, 1000 * hz)  # others "took" 1000 CPU-seconds: far more than 2 cores can
    u = meter.usage
    assert u.available and u.machine_cores == 2
    assert u.other_pct_core == 200.0 and u.other_pct_machine == 100.0  # clamped to the machine
    assert u.noisy()


def test_meter_without_proc_stat(tmp_path):
    with OtherCpu(tmp_path / "missing") as meter:
        pass
    assert meter.usage.available is False
    assert meter.usage.other_pct_core is None and meter.usage.noisy() is False
