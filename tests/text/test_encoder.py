"""The text encoder: loading a Hugging Face folder, padding invariance, dynamic-length export, bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from effstack.errors import InputError, UnknownModelError  # noqa: E402
from effstack.models import InputSpec, load_model  # noqa: E402
from effstack.testing.text import tiny_text_folder  # noqa: E402
from effstack.text.corpus import builtin_corpus, load_texts, split  # noqa: E402
from effstack.text.tokenize import TextTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(tiny_text_folder(tmp_path_factory.mktemp("tiny"))))


def test_loads_as_a_dynamic_length_token_model(tiny):
    assert tiny.input.dtype == "int64" and tiny.input.dynamic == (0,) and tiny.input.shape == (32,)
    assert tiny.meta["text"]["pad_id"] == 0 and tiny.params > 0


def test_padding_never_changes_an_embedding(tiny):
    tok = TextTokenizer.from_model(tiny)
    texts = ["the quick brown fox jumps over the lazy dog", "a cat"]
    together = tiny.module(torch.from_numpy(tok.encode(texts))).numpy()
    alone = np.concatenate([tiny.module(torch.from_numpy(tok.encode([t]))).numpy() for t in texts])
    padded = tiny.module(torch.from_numpy(tok.encode(texts, pad_to=32))).numpy()
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(padded, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)


def test_onnx_export_keeps_the_sequence_axis_dynamic(tiny, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from effstack.export.onnx import export_onnx

    graph = onnx.load(str(export_onnx(tiny, cache_dir=tmp_path))).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "axis1"]


def test_tokenizer_truncates_and_refuses_bad_input(tiny):
    tok = TextTokenizer.from_model(tiny)
    assert tok.encode(["the " * 100]).shape == (1, 32)
    with pytest.raises(InputError, match="list of strings"):
        tok.encode("one string")
    with pytest.raises(InputError, match="text 1"):
        tok.encode(["fine", 3])


def test_input_spec_checks_dynamic_axes():
    spec = InputSpec((8,), dtype="int64", layout="NL", dynamic=(0,), vocab=50)
    assert spec.fits((3,)) and not spec.fits((9,)) and not spec.fits((0,))
    with pytest.raises(InputError, match="1..8"):
        spec.validate(np.zeros((2, 9), np.int64))
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert "dynamic" not in InputSpec((3, 4, 4)).to_dict()
    assert spec.example(4).max() < 50


def test_unknown_text_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UnknownModelError):
        load_model(str(tmp_path / "missing-folder"))


def test_builtin_corpus_is_deterministic_and_splits():
    a, b = builtin_corpus(limit=200), builtin_corpus(limit=200)
    assert len(a) == 200 and a.fingerprint == b.fingerprint
    train, held = split(a, 50)
    assert len(held) == 50 and len(train) == 150 and not set(held.texts) & set(train.texts)


def test_load_texts_reads_paragraphs_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\n\nsecond one\n")
    (tmp_path / "b.jsonl").write_text('{"text": "third"}\n')
    assert load_texts(tmp_path).texts == ("first paragraph", "second one", "third")
    (tmp_path / "c.jsonl").write_text("not json\n")
    with pytest.raises(InputError, match="c.jsonl:1"):
        load_texts(tmp_path)
