"""PyTorch on a CUDA GPU: answers cleanly without one; on one, each precision is right and says what ran.

The conformance suite (test_conformance.py) covers accuracy against eager PyTorch for every precision;
these add the knobs, the no-GPU path, and what only this engine does (TF32, pinned staging, compile).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from effstack.engines import SessionOptions, canonical, get_engine
from effstack.engines.torch_cuda import TorchCudaEngine, resolve_knobs
from effstack.errors import ConfigError, EngineError, EngineUnavailableError, PrecisionError

from ..conftest import rel_error

_REASON = TorchCudaEngine().unavailable_reason()
gpu = pytest.mark.skipif(_REASON is not None, reason=f"torch_cuda: {_REASON}")


def _reference(model, x):
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def test_registered_with_an_alias_and_imports_nothing_from_cuda():
    assert canonical("cuda") == "torch_cuda"
    assert TorchCudaEngine.device == "cuda" and TorchCudaEngine.precisions == ("fp32", "fp16", "bf16")
    code = "import sys, effstack.engines; assert 'effstack.engines.torch_cuda' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_a_gpu_the_reason_is_one_line(tiny_cnn):
    if _REASON is None:
        pytest.skip("a CUDA GPU is visible here")
    assert "\n" not in _REASON and "CUDA" in _REASON
    with pytest.raises(EngineUnavailableError) as info:
        get_engine("torch_cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(EngineUnavailableError, match="cannot run here"):
        TorchCudaEngine().load(tiny_cnn, SessionOptions(precision="fp16"))


def test_knobs_default_and_validate():
    k = resolve_knobs(SessionOptions())
    assert k == {"channels_last": True, "compile": False, "mode": None, "tf32": False, "cudnn_benchmark": True,
                 "device_index": 0, "staging": "pinned", "copy_threads": None}
    assert resolve_knobs(SessionOptions(knobs={"mode": "reduce-overhead"}))["compile"] is True  # a mode compiles
    given = resolve_knobs(SessionOptions(knobs={"channels_last": "false", "device_index": "1"}))
    assert given == {**k, "channels_last": False, "device_index": 1}
    for knobs, match in [({"streams": 2}, "unknown torch_cuda knob"), ({"compile": "maybe"}, "true or false"),
                         ({"mode": "fastest"}, "'mode' must be one of"), ({"device_index": -1}, "GPU number"),
                         ({"staging": "mapped"}, "pinned or direct"), ({"copy_threads": 0}, "positive integer")]:
        with pytest.raises(ConfigError, match=match):
            resolve_knobs(SessionOptions(knobs=knobs))
    with pytest.raises(ConfigError, match="fp32 only"):
        resolve_knobs(SessionOptions(precision="fp16", knobs={"tf32": True}))
    with pytest.raises(PrecisionError, match="int8"):
        TorchCudaEngine().check(SessionOptions(precision="int8"))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 1e-2), ("bf16", 2e-2)])
def test_each_precision_matches_eager_and_reports_its_layers(tiny_resnet, precision, tolerance):
    x = tiny_resnet.input.example(5, seed=2)
    ref = _reference(tiny_resnet, x)
    with get_engine("torch_cuda").load(tiny_resnet, SessionOptions(precision=precision, batch=2)) as s:
        y = s.infer(x)  # larger than the warm-up batch: the pinned buffer grows
        y1 = s.infer(x[:1])
        layers = s.layer_precisions()
        settings = s.settings()
    assert y.dtype == np.float32 and y.shape == ref.shape and y1.shape == (1, *ref.shape[1:])
    assert rel_error(y, ref) <= tolerance
    assert layers and set(layers.values()) == {precision}
    assert settings["tf32"] is False and "cuda:0" in settings["device"]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("knobs", [{"staging": "direct"}, {"copy_threads": 3}])
def test_staging_paths_give_the_same_result(tiny_cnn, knobs, monkeypatch):
    import effstack.engines.torch_cuda as tc

    monkeypatch.setattr(tc, "_PARALLEL_COPY_BYTES", 0)  # a tiny batch takes the parallel copy too
    x = tiny_cnn.input.example(7, seed=5)
    with get_engine("torch_cuda").load(tiny_cnn, SessionOptions(batch=7, knobs=knobs)) as s:
        assert rel_error(s.infer(x), _reference(tiny_cnn, x)) <= 1e-4
        assert s.settings()["staging"] == knobs.get("staging", "pinned")


@gpu
@pytest.mark.gpu
def test_tf32_is_off_for_fp32_unless_asked(tiny_cnn):
    import torch

    with get_engine("torch_cuda").load(tiny_cnn, SessionOptions(knobs={"tf32": True})) as s:
        assert torch.backends.cudnn.allow_tf32 is True
        assert set(s.executed_precision()) == {"tf32"}
    with get_engine("torch_cuda").load(tiny_cnn, SessionOptions()) as s:
        assert torch.backends.cudnn.allow_tf32 is False
        assert set(s.executed_precision()) == {"fp32"}


@gpu
@pytest.mark.gpu
def test_compiled_session_matches_eager(tiny_cnn):
    x = tiny_cnn.input.example(4, seed=9)
    with get_engine("torch_cuda").load(tiny_cnn, SessionOptions(batch=4, knobs={"compile": True})) as s:
        assert s.settings()["compile"] is True
        assert rel_error(s.infer(x), _reference(tiny_cnn, x)) <= 1e-4


@gpu
@pytest.mark.gpu
def test_onnx_model_and_missing_gpu_index_are_one_line(tiny_cnn, tmp_path):
    import torch

    with pytest.raises(ConfigError, match="GPU"):
        get_engine("torch_cuda").load(tiny_cnn, SessionOptions(knobs={"device_index": torch.cuda.device_count()}))
    from effstack.export.onnx import export_onnx
    from effstack.models import load_model

    onnx_model = load_model(str(export_onnx(tiny_cnn)))
    with pytest.raises(EngineError, match="came as ONNX"):
        get_engine("torch_cuda").load(onnx_model, SessionOptions())
