"""Semantic text search on the image index's code: build, query, persistence, length-sorted batching, the model
check, and the HTTP service's text paths (a tiny BERT encoder built in code; servers on 127.0.0.1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("onnxruntime")

from effstack.cli.main import main  # noqa: E402
from effstack.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from effstack.search import Index  # noqa: E402
from effstack.search.text import (check_same_model, length_batches, load_text_embedder,  # noqa: E402
                                  text_embedder_from_manifest)
from effstack.testing.text import tiny_text_folder  # noqa: E402

# paragraphs of the tiny tokenizer's words, of very different lengths (1 to 24 words)
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "cat",
    "a red car on the road in the city and a blue car by the river with a green tree and a white house "
    "near the black road",
    "python code reads data from files",
    "the dog ran",
    "an image search server runs a fast engine on small batches of images",
    "bird",
    "the model writes tokens",
    "fish in the river",
    "a large index of texts is not slow with a small model and a fast engine",
    "green tree",
    "the lazy cat has a white house",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("textsearch")
    folder = tiny_text_folder(tmp / "tiny")
    (tmp / "texts.txt").write_text("\n\n".join(TEXTS) + "\n")
    out = tmp / "ix"
    rc = main(["index", "build", str(folder), "--texts", str(tmp / "texts.txt"), "--out", str(out),
               "--engine", "onnxruntime", "--batch", "3"])
    assert rc == 0
    return tmp, folder, out


@pytest.fixture(scope="module")
def embedder(env):
    emb = load_text_embedder(str(env[1]), engine="onnxruntime", batch=3)
    yield emb
    emb.close()


def test_build_records_model_corpus_and_dimension(env):
    from effstack.text.corpus import load_texts

    tmp, folder, out = env
    ix = Index.open(out)
    info = ix.info()
    assert info["modality"] == "text" and info["dim"] == 32 and info["count"] == len(TEXTS)
    assert ix.model["name"] == "tiny" and ix.model["modality"] == "text" and ix.model["engine"] == "onnxruntime"
    assert ix.data["fingerprint"] == load_texts(tmp / "texts.txt").fingerprint and ix.data["texts"] == len(TEXTS)
    assert [ix.path_of(str(i)) for i in range(len(TEXTS))] == TEXTS  # the texts themselves are stored


def test_query_by_text_answers_the_texts(env, capsys):
    _, _, out = env
    capsys.readouterr()
    assert main(["index", "query", str(out), TEXTS[5], "-k", "3", "--engine", "onnxruntime", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["hits"]) == 3 and set(doc["hits"][0]) == {"id", "score", "text"}
    assert doc["hits"][0]["id"] == "5" and doc["hits"][0]["text"] == TEXTS[5]
    assert doc["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4) and doc["hits"][1]["score"] < 0.9999
    assert main(["index", "query", str(out), "--id", "5", "-k", "2"]) == 0  # by stored id, itself left out
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("  5  " not in line for line in lines[:2])


def test_persisted_vectors_match_a_fresh_embedding_and_survive_reopen(env, embedder):
    _, _, out = env
    fresh = embedder.embed_texts(TEXTS)
    ix = Index.open(out)
    stored = np.stack([ix.vector(str(i)) for i in range(len(TEXTS))])
    np.testing.assert_allclose(stored, fresh, atol=1e-5)
    with Index.open(out, writable=True) as w:  # a change through the log, then a checkpoint
        w.remove(["1"])
    again = Index.open(out)
    assert "1" not in again and len(again) == len(TEXTS) - 1 and again.data == ix.data
    assert again.modality == "text" and again.search(fresh[3], 1)[0][0].text == TEXTS[3]
    with Index.open(out, writable=True) as w:
        w.add(["1"], fresh[1:2], [TEXTS[1]])


def test_length_sorted_batches_come_back_in_the_texts_order(embedder):
    batches = length_batches([5, 1, 9, 1, 3], 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]
    alone = np.concatenate([embedder.embed_texts([t]) for t in TEXTS])
    embedder.padded_tokens = embedder.real_tokens = 0
    together = embedder.embed_texts(TEXTS)
    np.testing.assert_allclose(together, alone, atol=1e-5)  # a row out of place would be another text's vector
    lengths = embedder.tokenizer.lengths(TEXTS)
    assert embedder.real_tokens == lengths.sum()
    assert embedder.padded_tokens < len(TEXTS) * lengths.max()  # not everything padded to the longest
    ids, texts, vectors = zip(*embedder.embed_windows([str(i) for i in range(len(TEXTS))], TEXTS))
    assert sum(ids, []) == [str(i) for i in range(len(TEXTS))] and sum(texts, []) == TEXTS
    with pytest.raises(InputError, match="no texts"):
        embedder.embed_ids([])


def test_a_different_model_is_refused(env, tmp_path, capsys):
    _, folder, out = env
    ix = Index.open(out)
    other_dim = load_text_embedder(str(tiny_text_folder(tmp_path / "a" / "tiny", hidden=16)), engine="torch")
    other_weights = load_text_embedder(str(tiny_text_folder(tmp_path / "b" / "tiny", seed=1)), engine="torch")
    other_name = load_text_embedder(str(tiny_text_folder(tmp_path / "other")), engine="torch")
    try:
        with pytest.raises(ArtifactError, match="embeds 16 values but the index holds 32"):
            check_same_model(ix.model, ix.dim, other_dim)
        with pytest.raises(ArtifactError, match="weights differ"):
            check_same_model(ix.model, ix.dim, other_weights)
        with pytest.raises(ArtifactError, match="built with 'tiny', not 'other'"):
            check_same_model(ix.model, ix.dim, other_name)
    finally:
        for e in (other_dim, other_weights, other_name):
            e.close()
    capsys.readouterr()
    rc = main(["index", "query", str(out), "a cat", "--model", str(tmp_path / "a" / "tiny"), "--engine", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and "embeds 16 values" in err and len(err.strip().splitlines()) == 1
    same = text_embedder_from_manifest(ix.model, ix.dim, engine="torch")  # the recorded model loads and matches
    same.close()
    with pytest.raises(ConfigError, match="not a text encoder"):
        load_text_embedder("effstack.testing:tiny_cnn", engine="torch")


def test_build_resumes_and_refuses_mistakes(env, tmp_path, capsys):
    tmp, folder, out = env
    capsys.readouterr()
    base = ["index", "build", str(folder), "--out", str(out), "--engine", "torch"]
    assert main(base + ["--texts", str(tmp / "texts.txt")]) == 0
    assert "indexed 0 texts" in capsys.readouterr().out
    (tmp_path / "other.txt").write_text("a different text\n\nand another\n")
    cases = [
        (base + ["--texts", str(tmp_path / "other.txt")], "built from other texts"),
        (base + ["--texts", str(tmp_path / "missing.txt")], "does not exist"),
        (["index", "build", str(folder), "--texts", "builtin", "--layer", "x", "--out", str(tmp_path / "n")],
         "--layer is for image indexes"),
        (["index", "query", str(out), "   "], "query text is empty"),
        (["index", "add", str(out), str(tmp / "texts.txt")], "is a text index"),
    ]
    for argv, text in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and text in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "n").exists()


# --- the HTTP service ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(env, tmp_path_factory):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from effstack.search.service import SearchService
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    from .helpers import THUMB, write_photos

    tmp = tmp_path_factory.mktemp("textsvc")
    write_photos(tmp / "photos", 4)
    image_ix = tmp / "images"
    assert main(["index", "build", THUMB, "--images", str(tmp / "photos"), "--out", str(image_ix),
                 "--engine", "torch"]) == 0
    text_ix = tmp / "texts"
    (tmp / "texts.txt").write_text("\n\n".join(TEXTS) + "\n")
    assert main(["index", "build", str(env[1]), "--texts", str(tmp / "texts.txt"), "--out", str(text_ix),
                 "--engine", "torch"]) == 0
    text_svc = SearchService.open(text_ix, engine="onnxruntime")
    image_svc = SearchService.open(image_ix, engine="torch")
    with BackgroundServer(create_app(ModelRepository({}), ServerOptions(port=0), extensions=[text_svc])) as t, \
            BackgroundServer(create_app(ModelRepository({}), ServerOptions(port=0), extensions=[image_svc])) as i:
        yield t.url, i.url, tmp


def test_service_answers_a_text_query(servers):
    import httpx

    url, _, _ = servers
    r = httpx.post(url + "/search/query", json={"text": TEXTS[9], "k": 4})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert len(doc["hits"]) == 4 and doc["hits"][0] == {"id": "9", "score": pytest.approx(1.0, abs=1e-4),
                                                         "text": TEXTS[9]}
    assert doc["took_ms"] >= doc["search_ms"] and doc["embed_ms"] > 0
    assert len(httpx.post(url + "/search/query?k=2", json={"text": "a cat"}).json()["hits"]) == 2
    assert all(h["id"] != "9" for h in httpx.get(url + "/search/query", params={"id": "9"}).json()["hits"])
    info = httpx.get(url + "/search/info").json()
    assert info["modality"] == "text" and info["data"]["texts"] == len(TEXTS) and info["dim"] == 32
    assert "Text search" in httpx.get(url + "/search").text


def test_service_adds_and_removes_texts(servers):
    import httpx

    url, _, _ = servers
    r = httpx.post(url + "/search/texts", json={"id": "new", "text": "a white bird on a green tree"})
    assert r.status_code == 200 and r.json() == {"id": "new", "count": len(TEXTS) + 1}
    hit = httpx.post(url + "/search/query", json={"text": "a white bird on a green tree", "k": 1}).json()["hits"][0]
    assert hit["id"] == "new" and hit["text"] == "a white bird on a green tree"
    assert httpx.delete(url + "/search/texts/new").json() == {"id": "new", "removed": True, "count": len(TEXTS)}


def test_service_mistakes_are_4xx_and_it_keeps_serving(servers):
    import httpx

    from .helpers import photo  # noqa: F401 (a real image's bytes below)

    url, image_url, tmp = servers
    png = (tmp / "photos" / "img000.png").read_bytes()
    q = url + "/search/query"
    bad = [
        (httpx.post(q, json={"text": ""}), 400, "query text is empty"),
        (httpx.post(q, json={"text": "   "}), 400, "query text is empty"),
        (httpx.post(q, json={"text": "cat", "k": 0}), 400, "k must be"),
        (httpx.post(q, json={"text": "cat", "k": 101}), 400, "k must be"),
        (httpx.post(q, json={"text": "cat", "k": "5"}), 400, "k must be"),
        (httpx.post(q + "?k=500", json={"text": "cat"}), 400, "k must be"),
        (httpx.post(q, json={"text": 7}), 400, "must be a string"),
        (httpx.post(q, json={"k": 3}), 400, 'no "text"'),
        (httpx.post(q, json={"text": "cat", "lang": "en"}), 400, "unknown field 'lang'"),
        (httpx.post(q, json=["cat"]), 400, "JSON object"),
        (httpx.post(q, content=b"{not json", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
        (httpx.post(q, content=png, headers={"Content-Type": "image/png"}), 400, "this index holds texts"),
        (httpx.post(q, content=b""), 400, "body is empty"),
        (httpx.post(q, json={"text": "x" * 20_001}), 400, "over the limit"),
        (httpx.post(url + "/search/images?id=a", content=png), 400, "this index holds texts"),
        (httpx.post(url + "/search/texts", json={"text": "cat"}), 400, 'needs a non-empty "id"'),
        (httpx.post(url + "/search/texts", json={"id": "a", "text": ""}), 400, "query text is empty"),
        (httpx.get(url + "/search/images/3/thumb"), 400, "no thumbnails"),
        (httpx.get(q, params={"id": "ghost"}), 404, "no text with id 'ghost'"),
        (httpx.delete(url + "/search/texts/ghost"), 404, "no text with id 'ghost'"),
        (httpx.post(image_url + "/search/query", json={"text": "a cat", "k": 3}), 400, "holds images, not texts"),
        (httpx.post(image_url + "/search/texts", json={"id": "a", "text": "cat"}), 400, "this index holds images"),
    ]
    for r, status, text in bad:
        assert r.status_code == status and text in r.json()["error"], (r.status_code, r.text)
    assert httpx.post(q, json={"text": "cat", "k": 1}).status_code == 200  # still serving
    assert httpx.get(url + "/search/info").json()["count"] == len(TEXTS)
    r = httpx.post(image_url + "/search/query?k=1", content=png)
    assert r.status_code == 200 and r.json()["hits"][0]["id"] == "img000.png"  # the image path is unchanged


def test_int8_build_records_its_calibration_and_a_query_quantizes_alike(env, tmp_path, capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    _, folder, _ = env
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(TEXTS) + "\n")
    out = tmp_path / "ix8"
    assert main(["index", "build", str(folder), "--texts", str(texts), "--out", str(out), "--engine", "openvino",
                 "--precision", "int8", "--calibration-samples", "6"]) == 0
    model = Index.open(out).model
    assert model["precision"] == "int8" and model["calibration"]["source"] == str(texts.resolve())
    assert model["calibration"]["samples"] == 6 and len(model["calibration"]["fingerprint"]) == 16
    capsys.readouterr()
    assert main(["index", "query", str(out), TEXTS[2], "-k", "1", "--engine", "openvino", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "2"
    texts.write_text("other words now\n\nand more of them\n")  # the calibration texts are gone
    assert main(["index", "query", str(out), "a cat", "--engine", "openvino"]) == 2
    assert "calibration texts" in capsys.readouterr().err
    assert main(["index", "query", str(out), "a cat", "--engine", "openvino", "--precision", "fp32"]) == 0
