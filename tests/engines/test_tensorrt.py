"""TensorRT engine: imports and answers cleanly without tensorrt or a GPU; knob checks need neither."""

from __future__ import annotations

import subprocess
import sys

import pytest

from effstack.engines import SessionOptions, get_engine
from effstack.engines.tensorrt import TensorRtEngine, _knobs
from effstack.errors import ConfigError, EngineUnavailableError, MissingDependencyError


def test_module_imports_without_pulling_in_tensorrt():
    assert TensorRtEngine.name == "tensorrt" and TensorRtEngine.device == "cuda"
    assert TensorRtEngine.precisions == ("fp32", "fp16", "int8")
    code = "import sys, effstack.engines.tensorrt as m; m.TensorRtEngine().unavailable_reason(); " \
           "assert 'tensorrt' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unavailable_here_is_a_reason_not_a_crash():
    reason = TensorRtEngine().unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a CUDA GPU are available on this machine")
    assert isinstance(reason, str) and "\n" not in reason
    with pytest.raises((MissingDependencyError, EngineUnavailableError)) as info:
        get_engine("tensorrt")
    assert "\n" not in str(info.value)


def test_knobs_default_and_validate():
    assert _knobs(SessionOptions(batch=4)) == {"max_batch": 32, "workspace_mb": 4096, "optimization_level": 3}
    assert _knobs(SessionOptions(batch=64))["max_batch"] == 64
    with pytest.raises(ConfigError, match="max_batch"):
        _knobs(SessionOptions(batch=8, knobs={"max_batch": 4}))
    with pytest.raises(ConfigError, match="unknown tensorrt knob"):
        _knobs(SessionOptions(knobs={"workspace": 1}))
