"""Machine description and library versions without imports (the peak rates: test_peak.py)."""

from __future__ import annotations

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
