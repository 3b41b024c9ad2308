"""The ladder on a text encoder, end to end on a tiny one: token ids, recall@10 scoring, guarded INT8, a student."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from effstack.errors import ConfigError  # noqa: E402
from effstack.ladder import Budget  # noqa: E402
from effstack.ladder.pipeline import run_ladder  # noqa: E402
from effstack.models import load_model  # noqa: E402
from effstack.testing.text import tiny_text_folder  # noqa: E402
from effstack.text.corpus import builtin_corpus  # noqa: E402
from effstack.text.data import ladder_data  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(tiny_text_folder(tmp_path_factory.mktemp("tiny"))))


def test_text_ladder_end_to_end(tiny):
    data, text = ladder_data(tiny, builtin_corpus(limit=200), eval_count=32, seq_len=16)
    r = run_ladder(tiny, budget=Budget(1000.0, "50"), data=data, engines=("onnxruntime",), precisions=(),
                   seconds=0.03, max_batch=2, layout=False, distill_epochs=1, progress=False)
    steps = {rung.step: rung for rung in r.rungs}
    assert steps["baseline"].measured.accuracy == 100.0  # recall@10 of itself
    assert steps["prune"].status == "skipped" and "distillation" in steps["prune"].reason
    int8 = steps["int8"]
    assert int8.status in ("kept", "rejected") and int8.measured.accuracy <= 100.0
    assert int8.details["quantize"]["attempts"][0]["cosine"] > 0.9
    d = steps["distill"]
    assert d.status in ("kept", "rejected") and d.details["student_layers"] == 1
    assert d.details["after"]["texts"] == 32 and d.config.batch <= 2
    assert steps["distill_int8"].status in ("kept", "rejected", "skipped")
    assert r.rungs[0].config.engine == "torch" and text.seq_len == 16
    json.dumps(r.to_dict(), default=str)  # the JSON the CLI writes


def test_text_student_must_be_a_layer_count(tiny):
    with pytest.raises(ConfigError, match="number of layers"):
        run_ladder(tiny, budget=Budget(1000.0), student="resnet18", progress=False)
