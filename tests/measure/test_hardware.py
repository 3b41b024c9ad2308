"""Machine description, library versions without imports, and the peak-rate cache (measurement faked)."""

from __future__ import annotations

import json
import subprocess
import sys

from effstack import hardware


def test_machine_info_structure():
    info = hardware.machine_info()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert 1 <= info["cores"] <= info["host_cores"]
    assert set(info["isa"]) <= set(hardware.ISA_FLAGS)
    assert info["python"].count(".") == 2


def test_library_versions_import_nothing():
    code = ("import sys; from effstack.hardware import library_versions; v = library_versions(); "
            "print(sorted(v) == sorted(%r), any(m in sys.modules for m in ('torch', 'onnxruntime', 'openvino')))"
            % list(hardware.LIBRARIES))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def _fake_measure(calls):
    def measure(threads, size):
        calls.append((threads, size))
        return {"rates": {"fp32": {"gops": 123.0, "best": 130.0, "path": "fake", "size": size, "candidates": {}}},
                "threads": threads, "size": size, "errors": {}}
    return measure


def test_peak_rates_are_cached_per_machine(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    monkeypatch.setattr(hardware, "_measure_all", _fake_measure(calls))
    first = hardware.peak_rates()
    assert first["rates"]["fp32"]["gops"] == 123.0 and first["machine"]["cpu"]
    assert hardware.peak_rates() == first and len(calls) == 1  # read back from the cache
    hardware.peak_rates(refresh=True)
    assert len(calls) == 2
    hardware.peak_rates(threads=1)  # another configuration: another key
    assert len(calls) == 3
    data = json.loads((tmp_path / "peak.json").read_text())
    assert len(data["entries"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no temp files left
    assert hardware.peak_for("fp32", first) == (123.0, "fake")
    assert hardware.peak_for("int8", first) == (None, None)


def test_corrupt_cache_is_measured_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    monkeypatch.setattr(hardware, "_measure_all", _fake_measure(calls))
    (tmp_path / "peak.json").write_text("{not json")
    assert hardware.peak_rates()["rates"]["fp32"]["gops"] == 123.0
    assert len(calls) == 1


def test_one_failing_path_does_not_lose_the_others(monkeypatch):
    def broken(size, threads):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(hardware, "_PATHS", {"fp32": [("broken", broken)], "bf16": [], "int8": []})
    record = hardware._measure_all(threads=1, size=64)
    assert record["rates"]["fp32"]["gops"] is None
    assert "no such kernel" in record["errors"]["fp32/broken"]
