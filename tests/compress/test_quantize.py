"""quantize(): plain PTQ, sensitivity fallback, speed guard (with injected figures), calibration cache, bad input.

Models are trained here in seconds on scikit-learn's bundled digits; no downloads, no timing thresholds.
"""

import numpy as np
import pytest

from effstack.compress import QuantizeConfig, quantize
from effstack.compress.calibrate import Calibration
from effstack.compress.guard import speed_verdict
from effstack.errors import ConfigError, InputError
from effstack.models import ModelSpec, load_model
from effstack.testing.trained import digits_data

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")


def fake_measure(int8: float = 200.0, fp32: float = 100.0):
    """Samples/s by what the session really runs: int8 kernels or not (no timing in tests)."""
    def measure(session, x):
        return int8 if session.executed_precision().get("int8") else fp32
    return measure


@pytest.fixture(scope="module")
def digits():
    return digits_data("test")


@pytest.fixture(scope="module")
def plain():
    return load_model("effstack.testing.trained:digits_cnn")


@pytest.fixture(scope="module")
def sensitive():
    return load_model(ModelSpec("effstack.testing.trained:digits_cnn", options={"outlier": 300.0}))


def test_config_validates_and_round_trips():
    c = QuantizeConfig(engine="ort", method="entropy", max_drop="1%", samples=64)
    assert c.engine == "onnxruntime" and c.max_drop == "1%"
    assert QuantizeConfig.from_dict(c.to_dict()) == c
    for bad in ({"method": "kl"}, {"engine": "torch"}, {"samples": 0}, {"max_drop": "x"}, {"task": "seg"},
                {"speedup_min": -1}):
        with pytest.raises(ConfigError):
            QuantizeConfig(**bad)
    with pytest.raises(ConfigError, match="unknown quantize setting"):
        QuantizeConfig.from_dict({"foo": 1})


def test_plain_ptq_passes(plain, digits):
    r = quantize(plain, QuantizeConfig(try_methods=False), digits, measure=fake_measure())
    assert r.accepted, r.reason
    assert r.kept_float == [] and r.sensitivity == []
    assert r.metric == "top-1 accuracy" and r.fp32_score > 80
    assert r.drop <= 1.0 and r.speedup == pytest.approx(2.0)
    assert r.model_path is not None and r.model_path.is_file()
    assert r.executed_precision.get("int8", 0) >= 4


def test_sensitive_model_fails_plain_and_passes_after_fallback(sensitive, digits):
    r = quantize(sensitive, QuantizeConfig(try_methods=False), digits, measure=fake_measure())
    plain_attempt = r.attempts[0]
    assert plain_attempt["kept_float"] == [] and plain_attempt["drop"] > 1.0  # plain PTQ fails
    assert r.sensitivity[0].layer == "/0/Conv" and r.sensitivity[0].module == "0"  # the outlier layer is named
    assert r.accepted, r.reason
    assert "/0/Conv" in r.kept_float and r.drop <= 1.0


@pytest.mark.parametrize("needed,most", [(1, 10), (3, 10), (7, 10), (10, 10), (11, 10), (37, 53)])
def test_fallback_search_finds_the_fewest_float_layers(needed, most):
    from effstack.compress.quantize import _fewest_float_layers

    tried = []

    def passes(k):
        tried.append(k)
        return k >= needed

    found = _fewest_float_layers(passes, most, deadline=float("inf"))
    assert found == (needed <= most)
    if found:  # the last passing build tried is the one kept: it must be the smallest passing k
        assert min(k for k in tried if k >= needed) == needed
        assert [k for k in tried if k >= needed][-1] == needed
    assert len(tried) <= 2 * max(1, most).bit_length() + 1  # logarithmic, not one build per layer
    assert _fewest_float_layers(passes, most, deadline=0.0) is False  # out of time: nothing tried


def test_sensitivity_stops_at_its_deadline(sensitive, digits):
    import time

    from effstack.compress.sensitivity import layer_sensitivity, run_onnx

    x = digits[0][:32]
    cal = Calibration(sensitive, x)
    ref = run_onnx(cal.float_path, x)
    assert len(layer_sensitivity(cal, "minmax", x, ref)) == len(cal.layers) > 1
    rows = layer_sensitivity(cal, "minmax", x, ref, deadline=time.perf_counter() - 1)
    assert len(rows) == 1  # one layer is always scored, then the deadline stops the pass


def test_without_fallback_nothing_is_accepted(sensitive, digits, tmp_path):
    r = quantize(sensitive, QuantizeConfig(try_methods=False, fallback=False), digits, measure=fake_measure())
    assert not r.accepted and r.model_path is None and "no INT8 build" in r.reason
    with pytest.raises(ConfigError, match="rejected"):
        r.save(tmp_path / "out.onnx")
    assert not list(tmp_path.iterdir())


def test_int8_not_faster_is_rejected_naming_the_winner(plain, digits, tmp_path):
    r = quantize(plain, QuantizeConfig(try_methods=False), digits, measure=fake_measure(int8=90.0, fp32=100.0))
    assert not r.accepted and r.model_path is None
    assert "fp32 wins" in r.reason and r.best_float == "fp32"
    assert r.speedup == pytest.approx(0.9)
    with pytest.raises(ConfigError):
        r.save(tmp_path / "out.onnx")


def test_speed_verdict_names_float_layers():
    v = speed_verdict(100.0, {"fp32": 80.0, "bf16": 120.0}, 1.1, ["/0/Conv", "/9/Gemm"])
    assert not v.passed and v.best_float == "bf16"
    assert "bf16 wins" in v.reason and "/0/Conv" in v.reason
    assert speed_verdict(300.0, {"fp32": 100.0}, 2.5).passed


def test_second_method_does_not_rerun_float_model(plain, digits):
    cal = Calibration(plain, digits[0][:64])
    paths = {cal.build(m) for m in ("minmax", "entropy", "percentile")}
    cal.build("minmax", exclude=("/0/Conv",))
    assert len(paths) == 3 and cal.float_runs == 1


def test_agreement_and_embedding_metrics(digits):
    x, _ = digits
    cnn = load_model("effstack.testing.trained:digits_cnn")
    r = quantize(cnn, QuantizeConfig(try_methods=False), (x, None), measure=fake_measure())
    assert r.metric == "top-1 agreement with fp32" and r.fp32_score == 100.0 and r.accepted
    emb = load_model("effstack.testing.trained:digits_embedder")
    r = quantize(emb, QuantizeConfig(task="embedding", try_methods=False, max_drop="10"), (x[:200], None),
                 measure=fake_measure())
    assert r.metric.startswith("recall@10") and r.int8_score > 80


def test_bad_input_is_one_line(plain, digits):
    x, _ = digits
    cases = [
        (None, "no calibration data"),
        ((x[:0], None), "no calibration data"),
        ((np.zeros((4, 3, 8, 8), np.float32), None), "must have shape"),
        ((x, np.full(len(x), 12)), "outside the model's 10 classes"),
    ]
    for data, msg in cases:
        with pytest.raises(InputError, match=msg) as e:
            quantize(plain, QuantizeConfig(), data, measure=fake_measure())
        assert "\n" not in str(e.value)


def test_synthetic_calibration(plain):
    r = quantize(plain, QuantizeConfig(synthetic=True, samples=32, try_methods=False, max_drop="100"),
                 None, measure=fake_measure())
    assert r.metric == "top-1 agreement with fp32" and r.accepted


def test_openvino_runs_the_same_qdq_model(sensitive, digits):
    pytest.importorskip("openvino")
    r = quantize(sensitive, QuantizeConfig(engine="openvino", try_methods=False), digits, measure=fake_measure())
    assert r.accepted, r.reason
    assert "/0/Conv" in r.kept_float
    assert r.executed_precision.get("int8", 0) >= 1


def test_qat_recovers_what_ptq_cannot(sensitive, digits):
    train = digits_data("train")
    cfg = QuantizeConfig(try_methods=False, fallback=False, qat_epochs=2)
    ptq = quantize(sensitive, QuantizeConfig(try_methods=False, fallback=False, qat_epochs=0), digits,
                   measure=fake_measure())
    assert not ptq.accepted and ptq.drop > 1.0
    r = quantize(sensitive, cfg, digits, train=train, measure=fake_measure())
    assert r.accepted, r.reason
    assert r.method == "qat+minmax" and r.kept_float == [] and r.drop <= 1.0
    assert r.executed_precision.get("int8", 0) >= 4  # the QAT model runs every compute layer in int8


def test_float_layers_names_what_did_not_run_int8(plain, digits):
    from effstack.compress.guard import float_layers
    from effstack.engines import SessionOptions, get_engine

    cal = Calibration(plain, digits[0][:64])
    path = cal.build("minmax", exclude=("/5/Conv",))
    m = load_model(str(path), input=plain.input)
    with get_engine("onnxruntime").load(m, SessionOptions("fp32")) as s:
        names = float_layers(s)
        v = speed_verdict(100.0, {"fp32": 100.0}, 1.1, names)
    assert any(n.startswith("/5/Conv") for n in names), names  # the excluded layer really runs float
    assert "/5/" in v.reason


def test_a_method_with_the_same_ranges_is_not_built_twice(sensitive, digits):
    # min-max fails on the outlier model; at ONNX Runtime's default histogram settings entropy's ranges are
    # exactly min-max's, so it is skipped rather than built and scored again
    r = quantize(sensitive, QuantizeConfig(fallback=False), digits, measure=fake_measure())
    built = [a["method"] for a in r.attempts if not a["kept_float"]]
    assert len(built) == len(set(built))
    assert r.skipped.get("entropy") == "same ranges as minmax" and "entropy" not in built
