"""ONNX Runtime engine: settings and knobs, INT8 that really runs INT8, caching, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from effstack.engines import SessionOptions, get_engine  # noqa: E402
from effstack.errors import ArtifactError, ConfigError  # noqa: E402
from effstack.models import InputSpec, LoadedModel, load_model  # noqa: E402

from ..conftest import rel_error, snr_db  # noqa: E402


def _reference(model, x):
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def test_fp32_defaults_are_recorded(tiny_cnn):
    with get_engine("ort").load(tiny_cnn, SessionOptions(threads=1)) as s:
        settings = s.settings()
        so = s.sess.get_session_options()
        x = tiny_cnn.input.example(2)
        assert rel_error(s.infer(x), _reference(tiny_cnn, x)) <= 1e-4
        assert s.executed_precision() == {"fp32": 4}  # 3 convolutions + the classifier
    assert settings["threads"] == 1 == so.intra_op_num_threads
    assert settings["inter_op_threads"] == 1 == so.inter_op_num_threads
    assert settings["graph_optimization"] == "all"
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert settings["execution_mode"] == "sequential" and so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_knobs_reach_the_session_and_the_settings(tiny_cnn):
    knobs = {"graph_optimization": "basic", "execution_mode": "parallel", "inter_op_threads": "2", "spinning": False}
    with get_engine("onnxruntime").load(tiny_cnn, SessionOptions(threads=2, knobs=knobs)) as s:
        so = s.sess.get_session_options()
        settings = s.settings()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL and so.inter_op_num_threads == 2
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert {k: settings[k] for k in knobs} == {**knobs, "inter_op_threads": 2}  # recorded; "2" parsed


@pytest.mark.parametrize(
    "knobs, precision, message",
    [
        ({"graph_optimisation": "all"}, "fp32", "unknown onnxruntime knob 'graph_optimisation'"),
        ({"execution_mode": "fast"}, "fp32", "must be one of sequential, parallel"),
        ({"inter_op_threads": 0}, "fp32", "must be a positive integer"),
        ({"calibration": "entropy"}, "fp32", "applies to int8 only"),
        ({"calibration": "kl"}, "int8", "must be one of minmax, entropy, percentile"),
    ],
)
def test_bad_knobs_are_one_line_config_errors(tiny_cnn, knobs, precision, message):
    with pytest.raises(ConfigError, match=message) as info:
        get_engine("onnxruntime").load(tiny_cnn, SessionOptions(precision=precision, knobs=knobs))
    assert "\n" not in str(info.value)


def test_int8_runs_int8_kernels_and_stays_close(tiny_cnn):
    x = tiny_cnn.input.example(4, seed=5)
    with get_engine("onnxruntime").load(tiny_cnn, SessionOptions(precision="int8")) as s:
        y = s.infer(x)
        counts = s.executed_precision()
        settings = s.settings()
    assert counts == {"int8": 4}, counts  # every Conv and the Gemm fused into QLinearConv / QGemm
    assert snr_db(y, _reference(tiny_cnn, x)) >= 25
    assert settings["calibration"] == "minmax" and settings["activations"] == "uint8"
    assert settings["format"] == "QDQ" and settings["weights"] == "int8 per-channel"
    assert isinstance(settings["reduce_range"], bool)


def test_executed_precision_sees_unfused_qdq_as_float(tiny_cnn):
    # without graph optimization the QDQ pairs stay, so each Conv runs in float on dequantized tensors
    options = SessionOptions(precision="int8", knobs={"graph_optimization": "disable"})
    with get_engine("onnxruntime").load(tiny_cnn, options) as s:
        assert s.executed_precision() == {"fp32": 4}


def test_int8_cache_is_keyed_by_method_and_reused(tiny_resnet, monkeypatch):
    import onnxruntime.quantization as q

    engine = get_engine("onnxruntime")
    calib = [tiny_resnet.input.example(2, seed=s) for s in range(3)]
    a = engine.load(tiny_resnet, SessionOptions(precision="int8", calibration=calib))
    b = engine.load(tiny_resnet, SessionOptions(precision="int8", calibration=calib,
                                                knobs={"calibration": "percentile"}))
    assert a.path != b.path and a.path.is_file() and b.path.is_file()
    assert b.settings()["calibration"] == "percentile" and b.executed_precision().get("int8", 0) > 0

    def no_quantize(*args, **kwargs):
        raise AssertionError("quantize_static called on a cache hit")

    monkeypatch.setattr(q, "quantize_static", no_quantize)
    again = engine.load(tiny_resnet, SessionOptions(precision="int8", calibration=[c.copy() for c in calib]))
    assert again.path == a.path
    other = [tiny_resnet.input.example(2, seed=s + 10) for s in range(3)]
    with pytest.raises(Exception, match="quantize_static called"):  # new data -> new key -> quantizes
        engine.load(tiny_resnet, SessionOptions(precision="int8", calibration=other))


def test_run_is_the_plain_session_call(tiny_cnn):
    x = tiny_cnn.input.example(3, seed=2)
    with get_engine("onnxruntime").load(tiny_cnn, SessionOptions()) as s:
        direct = s.sess.run(["output"], {tiny_cnn.input.name: x})[0]
        np.testing.assert_array_equal(s.run(x), direct)
        assert s.run_many(x, 3) == 9


def test_onnx_file_with_other_names_runs(tiny_cnn, tmp_path):
    import torch

    path = tmp_path / "named.onnx"
    x = torch.from_numpy(tiny_cnn.input.example(2))
    torch.onnx.export(tiny_cnn.module, (x,), str(path), input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)
    model = load_model(str(path))
    with get_engine("onnxruntime").load(model, SessionOptions()) as s:
        y = s.infer(x.numpy())
    assert rel_error(y, _reference(tiny_cnn, x.numpy())) <= 1e-4


def test_corrupt_onnx_file_is_one_line_artifact_error(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not an ONNX model")
    model = LoadedModel("corrupt", spec=None, input=InputSpec(shape=(3, 8, 8)), onnx_path=bad, fingerprint="1" * 16)
    with pytest.raises(ArtifactError, match="corrupt.onnx") as info:
        get_engine("onnxruntime").load(model, SessionOptions())
    assert "\n" not in str(info.value)
