"""The public surface: __all__ is pinned, and `import effstack` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import effstack
from effstack.engines import ENGINES, get_engine, list_engines
from effstack.errors import MissingDependencyError, UnknownEngineError

PUBLIC = [
    "Engine", "EffstackError", "InputSpec", "LoadedModel", "MissingDependencyError", "ModelSpec", "ResultRow",
    "Session", "SessionOptions", "UserError", "__version__", "bench", "export_onnx", "export_openvino",
    "get_engine", "list_engines", "load_model", "machine_info", "peak_rates",
]


def test_all_is_pinned():
    assert sorted(effstack.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(effstack, name) is not None


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


HEAVY = {"onnxruntime", "openvino", "tensorrt", "nncf", "torch"}


def test_import_effstack_is_light():
    assert not HEAVY & _imported_after("import effstack")


def test_listing_engines_imports_no_engine():
    loaded = _imported_after("from effstack.engines import list_engines; list_engines(available_only=True)")
    assert not {"onnxruntime", "openvino", "tensorrt", "nncf"} & loaded


def test_unknown_engine_suggests():
    with pytest.raises(UnknownEngineError, match="Did you mean: openvino"):
        get_engine("openvnio")


def test_aliases():
    assert type(get_engine("ort")).name == "onnxruntime"


def test_missing_optional_package_names_the_extra(monkeypatch):
    import effstack.registry as registry

    monkeypatch.setattr(registry, "is_installed", lambda name: name != "onnxruntime")
    with pytest.raises(MissingDependencyError, match=r"pip install 'effstack\[onnx\]'") as info:
        get_engine("onnxruntime")
    assert "\n" not in str(info.value)
    assert "onnxruntime" not in list_engines(available_only=True)


def test_every_engine_is_listed():
    assert set(ENGINES.names()) >= {"torch", "torch_compile", "onnxruntime", "openvino", "tensorrt", "null"}


def test_bench_verb_survives_importing_the_measure_package():
    import effstack.measure.scenarios  # noqa: F401  (a subpackage import must not shadow the verb)

    assert callable(effstack.bench) and effstack.bench.__name__ == "bench"
