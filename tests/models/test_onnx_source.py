"""A model that arrives as an ONNX file: loaded, validated, run by the ONNX engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effstack.errors import ArtifactError
from effstack.models import load_model
from effstack.testing import tiny_cnn

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(
        tiny_cnn(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["pixels"], output_names=["logits"],
        dynamic_axes={"pixels": {0: "n"}}, dynamo=False,
    )
    return path


def test_onnx_input_is_inferred(onnx_file):
    m = load_model(str(onnx_file))
    assert m.kind == "onnx" and m.module is None
    assert m.input.shape == (3, 32, 32) and m.input.name == "pixels"
    assert m.macs == load_model("effstack.testing:tiny_cnn").macs


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_onnx_file_runs_on_engine(onnx_file, engine):
    from effstack.engines import ENGINES, SessionOptions, get_engine

    if not ENGINES.is_available(engine):
        pytest.skip(f"{engine} not installed")
    m = load_model(str(onnx_file))
    x = m.input.example(2)
    with torch.inference_mode():
        ref = tiny_cnn()(torch.from_numpy(x)).numpy()
    with get_engine(engine).load(m, SessionOptions()) as s:
        np.testing.assert_allclose(s.infer(x), ref, rtol=1e-4, atol=1e-4)


def test_corrupt_onnx_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf" * 3)
    with pytest.raises(ArtifactError, match="is not a valid ONNX model") as info:
        load_model(str(bad))
    assert "\n" not in str(info.value)


def test_torch_engine_refuses_onnx_model(onnx_file):
    from effstack.engines import SessionOptions, get_engine
    from effstack.errors import EngineError

    with pytest.raises(EngineError, match="came as ONNX"):
        get_engine("torch").load(load_model(str(onnx_file)), SessionOptions())
