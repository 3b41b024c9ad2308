"""``effstack index build BUNDLE``: a ladder bundle's artifact, engine and fingerprint make the index."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("faiss")
pytest.importorskip("onnxruntime")

from effstack.cli.main import main
from effstack.errors import ArtifactError
from effstack.search import Index, load_embedder
from effstack.testing.bundles import write_test_bundle

from .helpers import THUMB, near_duplicate, write_photos


def _bundle(tmp_path, source: str, name: str, engines: tuple[str, ...] = ("onnxruntime",)):
    """A bundle written from a ladder of ``source`` on ``engines`` (ONNX Runtime: model.onnx; none: the torch
    baseline, model.ts); the measurements are made up."""
    return write_test_bundle(tmp_path / name, source, engines)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundles")
    write_photos(tmp / "photos", 6)
    return tmp, _bundle(tmp, "effstack.testing:tiny_cnn", "cnn"), _bundle(tmp, THUMB, "thumb")


def test_bundle_embedder_cuts_the_onnx_classifier_and_uses_the_bundle_engine(bundles):
    _, cnn, thumb = bundles
    emb = load_embedder(str(cnn))
    assert emb.session.engine == "onnxruntime" and emb.dim == 32 and not emb.note  # pooled features, not 10 logits
    assert emb.layer.endswith("Gemm:input") and emb.describe()["bundle"] == str(cnn)
    torch_emb = load_embedder("effstack.testing:tiny_cnn", engine="torch")  # the same features from the module
    x = emb.input.example(3)
    assert abs(emb.embed(x) - torch_emb.embed(x)).max() < 1e-4
    out = load_embedder(str(thumb))  # no classifier to cut: its output, with a note
    assert out.layer == "output" and "its output is embedded" in out.note and out.dim == 48
    assert out.fingerprint != emb.fingerprint


def test_index_build_from_a_bundle_query_and_refuse_another_model(bundles, capsys, tmp_path):
    tmp, cnn, thumb = bundles
    out = tmp_path / "ix"
    assert main(["index", "build", str(thumb), "--images", str(tmp / "photos"), "--out", str(out)]) == 0
    assert "its output is embedded" in capsys.readouterr().err
    model = Index.open(out).model
    assert model["bundle"] == str(thumb) and model["engine"] == "onnxruntime" and model["note"]
    dup = near_duplicate(2, tmp_path / "dup.jpg")
    assert main(["index", "query", str(out), str(dup), "-k", "3", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "img002.png"
    # resuming with another bundle's model is refused in one line
    assert main(["index", "build", str(cnn), "--images", str(tmp / "photos"), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fingerprint" in err


def test_a_wrong_or_replaced_bundle_is_refused_in_one_line(bundles, capsys, tmp_path):
    tmp, cnn, _ = bundles
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"kind": "something else"}')
    assert main(["index", "build", str(fake), "--images", str(tmp / "photos"), "--out", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not an effstack bundle manifest" in err
    with pytest.raises(ArtifactError, match="is not an effstack bundle"):
        load_embedder(str(tmp_path))  # a plain folder
    # an index whose bundle was replaced by a different model is refused when queried
    import shutil

    copy = tmp_path / "cnn"
    shutil.copytree(cnn, copy)
    out = tmp_path / "ix"
    assert main(["index", "build", str(copy), "--images", str(tmp / "photos"), "--out", str(out)]) == 0
    shutil.rmtree(copy)
    shutil.copytree(bundles[2], copy)
    capsys.readouterr()
    assert main(["index", "query", str(out), "--id", "img001.png"]) == 0  # by id: no model needed
    assert main(["index", "query", str(out), str(tmp / "photos" / "img001.png")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its model changed" in err


def test_a_torchscript_bundle_embeds_its_output_with_a_note(tmp_path):
    ts = _bundle(tmp_path, "effstack.testing:tiny_cnn", "ts", engines=())
    assert (ts / "model.ts").is_file()
    emb = load_embedder(str(ts))
    assert emb.session.engine == "torch" and emb.layer == "output" and emb.dim == 10
    assert "cannot be cut from the TorchScript model" in emb.note
