"""Embeddings from a layer, image decoding, and the ``effstack index`` commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from effstack.cli.main import main  # noqa: E402
from effstack.errors import ConfigError, InputError  # noqa: E402
from effstack.models.spec import InputSpec  # noqa: E402
from effstack.search import Index, decode_image, list_images, load_embedder  # noqa: E402

from .helpers import THUMB, near_duplicate, write_photos  # noqa: E402


def test_default_layer_is_the_pooled_features_before_the_classifier():
    emb = load_embedder("effstack.testing:tiny_cnn", engine="torch")
    assert emb.layer == "11:input" and emb.dim == 32
    y = emb.embed(emb.input.example(3))
    assert y.shape == (3, 32) and np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    named = load_embedder("effstack.testing:tiny_cnn", engine="torch", layer="5")  # a (N, 32, 16, 16) map, pooled
    assert named.layer == "5" and named.dim == 32 and named.fingerprint != emb.fingerprint
    assert load_embedder(THUMB, engine="torch").layer == "output"
    with pytest.raises(ConfigError, match="layer must be a node of the model, got 'nope'"):
        load_embedder("effstack.testing:tiny_cnn", engine="torch", layer="nope")


def test_decode_image(tmp_path):
    (path,) = write_photos(tmp_path, 1)
    spec = InputSpec(shape=(3, 20, 30))
    x = decode_image(path, spec)
    assert x.shape == (3, 20, 30) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert decode_image(path.read_bytes(), InputSpec(shape=(1, 8, 8))).shape == (1, 8, 8)
    with pytest.raises(InputError, match="the uploaded image cannot be read as an image"):
        decode_image(b"not an image", spec)
    (tmp_path / ".hidden.png").write_bytes(path.read_bytes())
    assert list_images(tmp_path) == [path]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    write_photos(tmp / "photos", 12)
    (tmp / "photos" / "broken.jpg").write_text("not a picture")
    out = tmp / "ix"
    assert main(["index", "build", THUMB, "--images", str(tmp / "photos"), "--out", str(out), "--engine", "torch",
                 "--batch", "5"]) == 0
    return tmp, out


def test_build_then_resume(built, capsys):
    tmp, out = built
    assert sorted(Index.open(out).ids) == [f"img{i:03d}.png" for i in range(12)]
    write_photos(tmp / "photos", 2, start=12)
    assert main(["index", "build", THUMB, "--images", str(tmp / "photos"), "--out", str(out), "--engine", "torch"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "indexed 2 images" in text and "12 already there" in text
    assert len(Index.open(out)) == 14


def test_query_finds_the_near_duplicate(built, capsys):
    tmp, out = built
    q = near_duplicate(5, tmp / "query.jpg")
    assert main(["index", "query", str(out), str(q), "-k", "3", "--engine", "torch", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hits"][0]["id"] == "img005.png" and doc["hits"][0]["path"].endswith("img005.png")
    assert len(doc["hits"]) == 3 and doc["hits"][0]["score"] >= doc["hits"][1]["score"]
    assert main(["index", "query", str(out), "--id", "img005.png", "-k", "2"]) == 0
    assert "img005.png" not in capsys.readouterr().out.splitlines()[0]


def test_add_and_remove(built, capsys, tmp_path):
    _, out = built
    extra = write_photos(tmp_path / "more", 2, start=40)
    assert main(["index", "add", str(out), str(extra[0]), str(tmp_path / "more"), "--engine", "torch"]) == 0
    ix = Index.open(out)
    assert "img040.png" in ix and "img041.png" in ix
    assert main(["index", "remove", str(out), "img040.png", "img041.png", "missing"]) == 0
    assert "removed 2 images; 1 ids were not in the index" in capsys.readouterr().out
    assert "img040.png" not in Index.open(out)


def test_errors_are_one_line_exit_2(built, capsys, tmp_path):
    tmp, out = built
    assert main(["index", "query", str(tmp_path / "none"), "--id", "x"]) == 2
    assert "no index at" in capsys.readouterr().err
    # a different model cannot resume (or add to) this index
    rc = main(["index", "build", "effstack.testing:tiny_cnn", "--images", str(tmp / "photos"), "--out", str(out),
               "--engine", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and "was built with thumb_embedder" in err and len(err.strip().splitlines()) == 1
    assert main(["index", "query", str(out), "--id", "nope"]) == 2
    assert "no image with id 'nope'" in capsys.readouterr().err
    assert main(["index", "query", str(out)]) == 2
    assert main(["index", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 0)[0])["model"]["layer"] == "output"
