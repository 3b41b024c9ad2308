"""OpenVINO engine: fp32 really f32, hints and streams read back, INT8 via NNCF, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("onnx")

from effstack.engines import SessionOptions, get_engine  # noqa: E402
from effstack.engines.openvino import OpenVinoEngine, cpu_has_bf16  # noqa: E402
from effstack.errors import ArtifactError, ConfigError, PrecisionError  # noqa: E402
from effstack.models import InputSpec, LoadedModel  # noqa: E402

from ..conftest import rel_error, snr_db  # noqa: E402


def _reference(model, x):
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def test_fp32_runs_f32_not_the_bf16_default(tiny_cnn):
    x = tiny_cnn.input.example(2, seed=1)
    with get_engine("openvino").load(tiny_cnn, SessionOptions(threads=1)) as s:
        y = s.infer(x)
        counts = s.executed_precision()
        settings = s.settings()
    assert counts == {"fp32": 4}  # 3 convolutions + the fully connected layer, none in bf16
    assert settings["inference_precision"] == "f32"
    assert settings["threads"] == 1
    assert rel_error(y, _reference(tiny_cnn, x)) <= 1e-4


def test_kernels_are_read_back_from_the_compiled_model(tiny_cnn):
    from effstack.engines.base import KERNEL_ISAS, kernel_isa, session_kernel_isa

    with get_engine("openvino").load(tiny_cnn, SessionOptions(threads=1)) as s:
        kernels = s.kernels()
        isa = session_kernel_isa(s)
    assert sum(kernels.values()) == 4  # one kernel name per compute layer
    assert isa == kernel_isa(kernels) and isa in (*KERNEL_ISAS, "other")  # "avx512" here, "amx" on an AMX Xeon


@pytest.mark.parametrize("batch, hint", [(1, "latency"), (8, "throughput")])
def test_hint_defaults_by_batch_and_is_read_back(tiny_cnn, batch, hint):
    with get_engine("openvino").load(tiny_cnn, SessionOptions(threads=2, batch=batch)) as s:
        settings = s.settings()
    assert settings["hint"] == hint
    for key in ("streams", "threads", "inference_precision", "optimal_requests"):
        assert key in settings
    if hint == "latency":
        assert settings["streams"] == 1


def test_explicit_knobs_win_and_are_recorded(tiny_cnn):
    knobs = {"hint": "throughput", "streams": 1}
    with get_engine("openvino").load(tiny_cnn, SessionOptions(threads=2, knobs=knobs)) as s:
        settings = s.settings()
        compiled_streams = int(s.compiled.get_property("NUM_STREAMS"))
    assert settings["hint"] == "throughput" and settings["streams"] == 1 == compiled_streams


def test_run_many_keeps_requests_in_flight_and_matches_run(tiny_resnet):
    x = tiny_resnet.input.example(4, seed=3)
    with get_engine("openvino").load(tiny_resnet, SessionOptions(threads=2, batch=4)) as s:
        y = s.run(x)
        assert s.run_many(x, 5) == 20
        np.testing.assert_array_equal(s.run(x), y)
        y2 = s.run(x[:1])  # outputs are copies: a later inference must not change an earlier result
    assert y2.shape == (1, 10) and not np.shares_memory(y, y2)


def test_run_splits_a_batch_over_the_streams(tiny_resnet):
    x = tiny_resnet.input.example(5, seed=4)
    ref = _reference(tiny_resnet, x)
    options = SessionOptions(batch=8, knobs={"hint": "throughput", "streams": 2})
    with get_engine("openvino").load(tiny_resnet, options) as s:
        assert s.settings()["streams"] == 2 and len(s._requests) == 2
        for n in (1, 2, 5):  # one part, a part per sample, uneven parts (2 + 3)
            y = s.run(np.ascontiguousarray(x[:n]))
            assert y.shape == ref[:n].shape and rel_error(y, ref[:n]) <= 1e-4
        first = s.run(x)
        s.run(x[::-1].copy())  # the next call reuses the requests' buffers: the first result was copied out
        assert rel_error(first, ref) <= 1e-4


def test_int8_runs_int8_layers(tiny_cnn, monkeypatch):
    import nncf

    x = tiny_cnn.input.example(4, seed=5)
    calib = [tiny_cnn.input.example(4, seed=s) for s in range(3)]  # 12 samples
    options = SessionOptions(precision="int8", calibration=calib)
    with get_engine("openvino").load(tiny_cnn, options) as s:
        y = s.infer(x)
        counts = s.executed_precision()
        settings = s.settings()
    assert counts == {"int8": 4}, counts
    assert snr_db(y, _reference(tiny_cnn, x)) >= 25
    assert settings["subset_size"] == 12 and settings["preset"] == "performance"
    assert settings["overflow_fix"] in ("enable", "first_layer")

    def no_quantize(*args, **kwargs):
        raise AssertionError("nncf.quantize called on a cache hit")

    monkeypatch.setattr(nncf, "quantize", no_quantize)
    with get_engine("openvino").load(tiny_cnn, options) as again:
        assert again.xml == s.xml


def test_int8_keep_float_first_leaves_the_stem_float(tiny_cnn):
    calib = [tiny_cnn.input.example(4, seed=s) for s in range(2)]
    options = SessionOptions(precision="int8", calibration=calib, knobs={"keep_float": "depthwise,first"})
    with get_engine("openvino").load(tiny_cnn, options) as s:
        counts = s.executed_precision()
        keep = s.settings()["keep_float"]
    assert keep == "first,depthwise"  # normalised, and recorded
    assert counts == {"int8": 3, "fp32": 1}, counts  # the first of the 3 convolutions stays float


def test_int8_full_bias_correction_is_recorded_and_cached_apart(tiny_cnn):
    calib = [tiny_cnn.input.example(4, seed=s) for s in range(2)]
    engine = get_engine("openvino")
    with engine.load(tiny_cnn, SessionOptions(precision="int8", calibration=calib)) as fast, \
            engine.load(tiny_cnn, SessionOptions(precision="int8", calibration=calib,
                                                 knobs={"bias_correction": "full"})) as full:
        assert "bias_correction" not in fast.settings() and full.settings()["bias_correction"] == "full"
        assert full.xml != fast.xml
        assert full.executed_precision() == fast.executed_precision() == {"int8": 4}


def test_bf16_runs_bf16_or_is_refused_here(tiny_cnn):
    engine = get_engine("openvino")
    if not cpu_has_bf16():
        assert "bf16" not in engine.precisions and "bf16" in OpenVinoEngine.precisions
        with pytest.raises(PrecisionError, match="no bf16 support") as info:
            engine.load(tiny_cnn, SessionOptions(precision="bf16"))
        assert "\n" not in str(info.value)
        return
    with engine.load(tiny_cnn, SessionOptions(precision="bf16")) as s:
        assert s.settings()["inference_precision"] == "bf16"
        assert s.executed_precision().get("bf16", 0) > 0


@pytest.mark.parametrize("has_bf16", [True, False])
def test_int8_float_precision_knob_is_checked_against_the_cpu_both_ways(monkeypatch, has_bf16):
    import effstack.engines.openvino as ov_engine

    monkeypatch.setattr(ov_engine, "cpu_has_bf16", lambda: has_bf16)
    options = SessionOptions(precision="int8", batch=4, knobs={"float_precision": "BF16"})
    if has_bf16:
        assert ov_engine.resolve_knobs(options)["float_precision"] == "bf16"
    else:
        with pytest.raises(PrecisionError, match="no bf16 support") as info:
            ov_engine.resolve_knobs(options)
        assert "\n" not in str(info.value)
    default = ov_engine.resolve_knobs(SessionOptions(precision="int8", batch=4, knobs={"float_precision": "fp32"}))
    assert "float_precision" not in default  # the default is not recorded


def test_int8_float_layers_run_bf16_with_the_knob_where_the_cpu_has_it(tiny_cnn):
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 (the refusal is tested with the check forced both ways)")
    engine = get_engine("openvino")
    knobs = {"keep_float": "first"}
    with engine.load(tiny_cnn, SessionOptions(precision="int8", batch=2, knobs=knobs)) as f32, \
            engine.load(tiny_cnn, SessionOptions(precision="int8", batch=2,
                                                 knobs={**knobs, "float_precision": "bf16"})) as bf16:
        assert f32.settings()["inference_precision"] == "f32"
        assert bf16.settings()["inference_precision"] == "bf16" and bf16.settings()["float_precision"] == "bf16"
        assert bf16.xml == f32.xml  # the same quantized file: only the compile setting differs
        assert bf16.executed_precision().get("bf16", 0) > 0 and bf16.executed_precision().get("int8", 0) > 0


@pytest.mark.parametrize(
    "knobs, precision, message",
    [
        ({"hints": "latency"}, "fp32", "unknown openvino knob 'hints'"),
        ({"hint": "fast"}, "fp32", "must be latency or throughput"),
        ({"streams": 0}, "fp32", "must be a positive integer"),
        ({"subset_size": 8}, "fp32", "applies to int8 only"),
        ({"overflow_fix": "maybe"}, "int8", "must be one of enable, first_layer, disable"),
        ({"keep_float": "stem"}, "int8", "must list first and/or depthwise"),
        ({"keep_float": "first"}, "fp32", "applies to int8 only"),
        ({"bias_correction": "slow"}, "int8", "must be fast or full"),
        ({"bias_correction": "full"}, "fp32", "applies to int8 only"),
        ({"float_precision": "fp16"}, "int8", "must be fp32 or bf16"),
        ({"float_precision": "bf16"}, "bf16", "applies to int8 only"),
    ],
)
def test_bad_knobs_are_one_line_config_errors(tiny_cnn, knobs, precision, message):
    with pytest.raises(ConfigError, match=message) as info:
        get_engine("openvino").load(tiny_cnn, SessionOptions(precision=precision, knobs=knobs))
    assert "\n" not in str(info.value)


def test_corrupt_onnx_file_is_one_line_artifact_error(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not an ONNX model")
    model = LoadedModel("corrupt", spec=None, input=InputSpec(shape=(3, 8, 8)), onnx_path=bad, fingerprint="2" * 16)
    with pytest.raises(ArtifactError, match="corrupt.onnx") as info:
        get_engine("openvino").load(model, SessionOptions())
    assert "\n" not in str(info.value)
