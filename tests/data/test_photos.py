"""The photos: data spec: real photographs the packages ship, expanded into deterministic edited variants."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from effstack.cli.quantize import load_data
from effstack.data import resolve_data
from effstack.data.photos import build_photos, photo_arrays, source_photos, write_photo_folder
from effstack.errors import ConfigError, InputError
from effstack.evaluate import near_duplicate_recall
from effstack.models import InputSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None or
                                importlib.util.find_spec("skimage") is None,
                                reason="scikit-learn and scikit-image ship the photographs")

SPEC = "photos:sklearn?n=3&size=32"


def test_source_photos_are_the_real_photographs_sorted():
    photos = source_photos()
    names = [name for name, _ in photos]
    assert names == sorted(names) and len(names) == len(set(names))
    assert {"chelsea", "coffee", "rocket", "astronaut", "camera", "china", "flower"} <= set(names)
    assert not {"horse", "logo", "color", "phantom", "chessboard_GRAY", "chessboard_RGB"} & set(names)
    assert all(img.mode == "RGB" for _, img in photos)
    assert [name for name, _ in source_photos("sklearn")] == ["china", "flower"]


def test_same_spec_is_byte_identical_and_the_seed_matters():
    a, b = build_photos(SPEC), build_photos(SPEC)
    assert a.images.shape == (6, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.images.tobytes() == b.images.tobytes() and a.edits == b.edits
    other = build_photos(SPEC + "&seed=1")
    assert np.array_equal(other.images[0], a.images[0])          # the canonical view does not depend on it
    assert not np.array_equal(other.images[1:3], a.images[1:3])


def test_train_split_never_repeats_an_eval_image():
    ev, tr = build_photos(SPEC), build_photos(SPEC + "&split=train")
    assert tr.groups.tolist() == ev.groups.tolist()
    assert "centre" not in tr.edits
    assert not any(np.array_equal(t, e) for t in tr.images for e in ev.images)


def test_variant_0_is_the_centre_crop():
    ps = build_photos(SPEC)
    for group, (name, img) in enumerate(source_photos("sklearn")):
        w, h = img.size
        side = 32 / (32 + 32) * min(w, h)
        box = tuple(round(v) for v in ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2))
        want = np.asarray(img.crop(box).resize((32, 32), Image.BICUBIC))
        i = group * 3
        assert ps.edits[i] == "centre" and ps.variants[i] == 0 and ps.names[group] == name
        assert np.array_equal(ps.images[i], want)
        assert ps.edits[i + 1] != "centre"


def test_canonical_view_matches_efficientnet_lite_preprocessing():
    from effstack.models.efficientnet_lite import preprocess, preprocess_spec

    x, _, groups = photo_arrays("photos:sklearn?n=1", preprocess_spec("efficientnet_lite0"))
    assert x.shape == (2, 3, 224, 224) and groups.tolist() == [0, 1]
    for i, (_, img) in enumerate(source_photos("sklearn")):
        np.testing.assert_allclose(x[i], preprocess(img, "efficientnet_lite0"), atol=1e-6)


def test_dataset_groups_and_labels():
    ds = resolve_data(SPEC)
    assert (len(ds), ds.class_names, ds.input_shape) == (6, ("china", "flower"), (3, 32, 32))
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.labels[3]["photo"] == "flower" and ds.labels[3]["group"] == 1 and ds.labels[3]["edit"] == "centre"
    assert set(ds.labels[4]) == {"label", "group", "photo", "edit"} and ds.labels[4]["edit"]
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and -1 <= float(x.min()) and float(x.max()) <= 1 and y == 0


@pytest.mark.parametrize("text, match", [
    ("photos:all?colour=red", "does not take option.*colour"),
    ("photos:all?n=0", r"n must be an integer in \[1, "),
    ("photos:all?n=two", "n must be an integer"),
    ("photos:all?split=test", "split must be one of eval, train, got 'test'"),
    ("photos:all?labels=class", "labels must be one of group, reference"),
    ("photos:imagenet", "photos target must be one of all, skimage, sklearn, matplotlib"),
    ("photos:all?size=0", "size must be an integer"),
])
def test_bad_specs_are_one_line_config_errors(text, match):
    with pytest.raises(ConfigError, match=match) as info:
        resolve_data(text)
    assert "\n" not in str(info.value)


def test_reference_labels_come_from_the_model_and_are_cached(monkeypatch, tmp_path):
    import torch

    from effstack.models import load_model

    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    spec = "photos:sklearn?n=2&size=24&labels=reference&reference=effstack.testing:tiny_cnn"
    ds = resolve_data(spec)
    ref = load_model("effstack.testing:tiny_cnn")   # takes 32 x 32: the 24 x 24 variants are resized
    x, _, _ = photo_arrays("photos:sklearn?n=2&size=24", ref.input)
    with torch.inference_mode():
        want = ref.module(torch.from_numpy(x)).argmax(1).tolist()
    assert ds.targets.tolist() == want and ds.num_classes == 10
    assert [lab["group"] for lab in ds.labels] == [0, 0, 1, 1]
    (cached,) = (tmp_path / "photos").glob("reference-*.json")
    doc = json.loads(cached.read_text())
    assert doc["labels"] == want and doc["fingerprint"] == ref.fingerprint
    cached.write_text(json.dumps({**doc, "labels": [7, 7, 7, 7]}))   # the second build must read it
    assert resolve_data(spec).targets.tolist() == [7, 7, 7, 7]
    assert resolve_data(spec.replace("n=2", "n=3")).targets.tolist() != [7] * 6


def test_min_confidence_keeps_the_variants_the_reference_is_sure_of(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path))
    spec = "photos:sklearn?n=4&size=24&labels=reference&reference=effstack.testing:tiny_cnn"
    full = resolve_data(spec)
    (cached,) = (tmp_path / "photos").glob("reference-*.json")
    doc = json.loads(cached.read_text())
    conf = np.array(doc["confidence"])
    assert len(conf) == 8 and ((0 < conf) & (conf <= 1)).all()
    doc["confidence"] = [0.9, 0.1, 0.5, 0.2, 0.95, 0.3, 0.29, 0.8]  # set by hand: the filter must follow it
    cached.write_text(json.dumps(doc))
    kept = resolve_data(spec + "&min_confidence=0.3")
    want = [0, 2, 4, 5, 7]
    assert [lab["edit"] for lab in kept.labels] == [full.labels[i]["edit"] for i in want]
    assert kept.targets.tolist() == full.targets[want].tolist()
    x, y, groups = photo_arrays(spec + "&min_confidence=0.3", InputSpec((3, 32, 32)))
    assert len(x) == len(y) == 5 and groups.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(InputError, match="lower min_confidence"):
        resolve_data(spec + "&min_confidence=0.99")
    for bad in ("min_confidence=1.5", "min_confidence=x"):
        with pytest.raises(ConfigError, match="min_confidence"):
            resolve_data(spec + "&" + bad)
    with pytest.raises(ConfigError, match="needs labels=reference"):
        resolve_data("photos:sklearn?n=2&size=24&min_confidence=0.3")


def test_photo_arrays_normalise_like_a_hand_computation():
    spec = InputSpec((3, 16, 16), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    ps = build_photos(SPEC)
    x, y, groups = photo_arrays(SPEC, spec)                     # made at 32, resized to the model's 16
    small = np.stack([np.asarray(Image.fromarray(a).resize((16, 16), Image.BICUBIC)) for a in ps.images])
    want = (small / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    assert x.shape == (6, 3, 16, 16) and x.dtype == np.float32 and y.dtype == groups.dtype == np.int64
    np.testing.assert_allclose(x, want.transpose(0, 3, 1, 2), atol=1e-5)
    assert y.tolist() == groups.tolist() == [0, 0, 0, 1, 1, 1]
    native, _, _ = photo_arrays("photos:sklearn?n=3", spec)    # no size: made at the model's side
    at16 = build_photos("photos:sklearn?n=3&size=16").images
    np.testing.assert_allclose(native, ((at16 / 255.0 - spec.mean) / np.array(spec.std)).transpose(0, 3, 1, 2),
                               atol=1e-5)


def test_cli_load_data_takes_a_photos_spec():
    x, y = load_data("photos:sklearn?n=2", InputSpec((3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3))
    assert x.shape == (4, 3, 32, 32) and y is None             # scored by agreement with fp32
    np.testing.assert_allclose(x[0], photo_arrays("photos:sklearn?n=2&size=32")[0][0], atol=1e-6)


def test_write_photo_folder_layout(tmp_path):
    from effstack.search.embed import list_images

    out = write_photo_folder("photos:sklearn?n=2&size=32", tmp_path / "photos")
    ids = [p.relative_to(out).as_posix() for p in list_images(out)]
    assert ids == ["china/000.png", "china/001.png", "flower/000.png", "flower/001.png"]
    assert json.loads((out / "groups.json").read_text()) == dict(zip(ids, [0, 0, 1, 1]))
    ps = build_photos("photos:sklearn?n=2&size=32")
    assert np.array_equal(np.asarray(Image.open(out / "flower/001.png")), ps.images[3])
    write_photo_folder("photos:sklearn?n=1&size=32", out)      # an earlier photo folder is replaced whole
    assert sorted(p.name for p in (out / "china").iterdir()) == ["000.png"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="out_dir must be a new or empty folder"):
        write_photo_folder("photos:sklearn?n=1&size=32", tmp_path / "other")


def test_near_duplicate_recall_hand_examples():
    e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert near_duplicate_recall(e, np.array([0, 0, 1, 1])) == 100.0
    # sample 1 sits closer to group 1 than to its own group; 0's and 3's nearest are their own group
    e = np.array([[1.0, 0.0], [0.3, 1.0], [0.0, 1.0], [-0.2, 1.0]])
    assert near_duplicate_recall(e, np.array([0, 0, 1, 1])) == 75.0
    assert near_duplicate_recall(e, np.array([0, 0, 1, 1]), k=3) == 100.0
    # a sample alone in its group is no query (nothing to find), but it can still be a wrong neighbour
    assert near_duplicate_recall(e, np.array([0, 0, 1, 2])) == 50.0
    with pytest.raises(InputError, match="at least two samples"):
        near_duplicate_recall(e, np.arange(4))
    with pytest.raises(ConfigError, match="k must be at least 1"):
        near_duplicate_recall(e, np.zeros(4), k=0)
    with pytest.raises(InputError, match="groups"):
        near_duplicate_recall(e, np.zeros(3))
