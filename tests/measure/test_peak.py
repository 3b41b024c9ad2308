"""The peak-rate cache (measurement faked) and the timing of paths."""

from __future__ import annotations

import json

from effstack.measure import peak


def _fake_measure(calls):
    def measure(threads, size):
        calls.append((threads, size))
        return {"rates": {"fp32": {"gops": 123.0, "best": 130.0, "path": "fake", "size": size, "candidates": {}}},
                "threads": threads, "size": size, "errors": {}}
    return measure


def test_peak_rates_are_cached_per_machine(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "_measure_all", _fake_measure(calls))
    first = peak.peak_rates()
    assert first["rates"]["fp32"]["gops"] == 123.0 and first["machine"]["cpu"]
    assert peak.peak_rates() == first and len(calls) == 1  # read back from the cache
    peak.peak_rates(refresh=True)
    assert len(calls) == 2
    peak.peak_rates(threads=1)  # another configuration: another key
    assert len(calls) == 3
    data = json.loads((tmp_path / "peak.json").read_text())
    assert len(data["entries"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["peak.json"]  # atomic: no temp files left
    assert peak.peak_for("fp32", first) == (123.0, "fake")
    assert peak.peak_for("int8", first) == (None, None)


def test_corrupt_cache_is_measured_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "_measure_all", _fake_measure(calls))
    (tmp_path / "peak.json").write_text("{not json")
    assert peak.peak_rates()["rates"]["fp32"]["gops"] == 123.0
    assert len(calls) == 1


def test_one_failing_path_does_not_lose_the_others(monkeypatch):
    def broken(size, threads):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(peak, "_PATHS", {"fp32": [("broken", broken)], "bf16": [], "int8": []})
    record = peak._measure_all(threads=1, size=64)
    assert record["rates"]["fp32"]["gops"] is None
    assert "no such kernel" in record["errors"]["fp32/broken"]


def test_unwritable_cache_only_costs_a_remeasurement(tmp_path, monkeypatch):
    calls = []
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("EFFSTACK_CACHE", str(blocker))
    monkeypatch.setattr(peak, "_measure_all", _fake_measure(calls))
    assert peak.peak_rates()["rates"]["fp32"]["gops"] == 123.0
    assert peak.peak_rates()["rates"]["fp32"]["gops"] == 123.0 and len(calls) == 2
