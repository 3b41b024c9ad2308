"""Text quality scores, and the INT8 guard on a text encoder (real token ids, both engines, the cosine floor)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from effstack.errors import ConfigError, InputError  # noqa: E402
from effstack.models import load_model  # noqa: E402
from effstack.testing.text import tiny_text_folder  # noqa: E402
from effstack.text.corpus import builtin_corpus  # noqa: E402
from effstack.text.data import text_data, unpad  # noqa: E402
from effstack.text.quality import TextQuality, compare, cosine_rows, embed, score_text  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(tiny_text_folder(tmp_path_factory.mktemp("tiny"))))


@pytest.fixture(scope="module")
def data(tiny):
    return text_data(tiny, builtin_corpus(limit=200), eval_count=48, seq_len=24)


def test_compare_identical_and_perturbed():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 8))
    same = compare(ref, ref)
    assert (same.cosine_mean, same.cosine_min, same.recall_at_10) == pytest.approx((1.0, 1.0, 100.0))
    noisy = compare(ref + rng.normal(scale=0.5, size=ref.shape), ref)
    assert noisy.cosine_min < noisy.cosine_mean < 1.0 and noisy.recall_at_10 < 100.0
    flipped = cosine_rows(-ref, ref)
    np.testing.assert_allclose(flipped, -1.0)
    assert same.holds(0.0) and not noisy.holds(0.5) and not same.holds(0.0, min_cosine=1.01)


def test_compare_rejects_bad_shapes():
    with pytest.raises(InputError):
        compare(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(InputError, match="two"):
        compare(np.ones((1, 3)), np.ones((1, 3)))


def test_text_data_splits_pads_and_holds_out(tiny, data):
    assert data.eval_ids.shape == (48, 24) and data.train_ids.shape == (152, 24)
    assert data.eval_ids.dtype == np.int64 and data.describe()["seq_len"] == 24
    held = {tuple(r) for r in unpad(data.eval_ids)}
    assert all(len(r) >= 2 for r in held)  # [CLS] ... [SEP]
    with pytest.raises(InputError, match="seq_len"):
        text_data(tiny, builtin_corpus(limit=20), seq_len=999)
    with pytest.raises(InputError, match="at least 3"):
        text_data(tiny, ["one text", "two"])


def test_score_text_of_the_model_against_itself_and_a_session(tiny, data):
    pytest.importorskip("onnxruntime")
    from effstack.engines import SessionOptions, get_engine

    assert score_text(tiny, tiny, data.eval_ids).recall_at_10 == 100.0
    with get_engine("onnxruntime").load(tiny, SessionOptions("fp32")) as s:
        q = score_text(s, tiny, data.eval_ids)
    assert q.cosine_min > 0.99999 and q.recall_at_10 == 100.0 and q.texts == 48
    assert isinstance(q, TextQuality) and q.to_dict()["k"] == 10


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_int8_guard_on_token_ids(tiny, data, engine):
    """Static INT8 of the matrix products only, calibrated on real token ids; the guard scores recall@10 and
    cosine, and a cosine floor above what INT8 reaches rejects it."""
    pytest.importorskip("onnxruntime")
    if engine == "openvino":
        pytest.importorskip("openvino")
    from effstack.compress import QuantizeConfig, quantize

    cfg = dict(engine=engine, task="embedding", speed_check=False, try_methods=False, fallback=False,
               max_drop="10", samples=32)
    ok = quantize(tiny, QuantizeConfig(**cfg), (data.eval_ids, None))
    assert ok.accepted, ok.reason
    row = ok.attempts[0]
    assert 0.99 < row["cosine"] < 1.0 and row["score"] > 90
    strict = quantize(tiny, QuantizeConfig(**cfg, min_cosine=0.999999), (data.eval_ids, None))
    assert not strict.accepted and "cosine" in strict.reason
    with pytest.raises(ConfigError, match="min_cosine"):
        QuantizeConfig(min_cosine=2.0)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engine_int8_calibrates_on_token_ids(tiny, data, engine):
    """The engines' own INT8 (ORT static on matrix products, NNCF's transformer scheme) keep int64 ids and
    accept calibration batches of different lengths."""
    pytest.importorskip("onnxruntime")
    if engine == "openvino":
        pytest.importorskip("nncf")
    from effstack.engines import SessionOptions, get_engine

    calib = [data.train_ids[:8, :12], data.train_ids[8:16]]  # two lengths
    with get_engine(engine).load(tiny, SessionOptions("int8", calibration=calib)) as s:
        q = score_text(s, tiny, data.eval_ids)
        assert "int8" in s.executed_precision()
    assert q.cosine_mean > 0.99 and q.recall_at_10 > 80
