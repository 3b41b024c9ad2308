"""Distilling a text encoder into a student with fewer layers: the layer choice, training, saving, loading."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from effstack.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from effstack.models import load_model  # noqa: E402
from effstack.testing.text import tiny_text_folder  # noqa: E402
from effstack.text.corpus import builtin_corpus  # noqa: E402
from effstack.text.data import text_data  # noqa: E402
from effstack.text.distill import (TextDistillConfig, distill_text, kept_layers, save_student,  # noqa: E402
                                   student_from_teacher)
from effstack.text.quality import embed  # noqa: E402


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 2-layer teacher whose layers matter: BERT's initial weights (std 0.02) barely change a text, so a
    1-layer copy would already agree; scaled up, the second layer moves every embedding."""
    m = load_model(str(tiny_text_folder(tmp_path_factory.mktemp("teacher"), layers=2)))
    with torch.no_grad():
        for name, p in m.module.backbone.encoder.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.mul_(15)
    return m


@pytest.fixture(scope="module")
def data(teacher):
    return text_data(teacher, builtin_corpus(limit=400), eval_count=48, seq_len=24)


def test_kept_layers_are_evenly_spaced_and_end_with_the_last():
    assert kept_layers(6, 3) == [1, 3, 5] and kept_layers(2, 1) == [1] and kept_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError):
        kept_layers(2, 3)


def test_student_copies_embeddings_and_chosen_layers(teacher):
    student, keep = student_from_teacher(teacher, 1)
    assert keep == [1] and len(student.backbone.encoder.layer) == 1
    assert student.backbone.config.num_hidden_layers == 1 and teacher.module.backbone.config.num_hidden_layers == 2
    t, s = teacher.module.state_dict(), student.state_dict()
    assert torch.equal(s["backbone.embeddings.word_embeddings.weight"], t["backbone.embeddings.word_embeddings.weight"])
    assert torch.equal(s["backbone.encoder.layer.0.output.dense.weight"], t["backbone.encoder.layer.1.output.dense.weight"])
    with pytest.raises(ConfigError, match="text encoder"):
        student_from_teacher(torch.nn.Linear(2, 2))


def test_training_raises_agreement_and_the_folder_loads(teacher, data, tmp_path):
    r = distill_text(teacher, data.train_ids, TextDistillConfig(layers=1, epochs=3, lr=1e-3, progress=False),
                     eval_ids=data.eval_ids)
    assert r.layers == [1] and len(r.history) == 3
    assert r.after.cosine_mean > r.before.cosine_mean + 0.1, (r.before, r.after)
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    out = save_student(r.module, tmp_path / "student", teacher.meta["text"]["folder"])
    loaded = load_model(str(out))
    assert loaded.meta["text"]["layers"] == 1 and (out / "tokenizer.json").is_file()
    np.testing.assert_allclose(embed(loaded, data.eval_ids), embed(r.module, data.eval_ids), atol=1e-5)
    assert not list(tmp_path.glob(".student*"))  # the temporary folder is gone


def test_bad_inputs(teacher, tmp_path):
    with pytest.raises(InputError, match="integer"):
        distill_text(teacher, np.zeros((4, 8), np.float32))
    with pytest.raises(ConfigError, match="layers"):
        TextDistillConfig(layers=0)
    with pytest.raises(ConfigError, match="loss"):
        TextDistillConfig(loss="kl")
    with pytest.raises(ArtifactError, match="tokenizer"):
        save_student(teacher.module, tmp_path / "x", tmp_path)
