"""Synthetic generators: determinism by seed, label correctness, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from effstack.errors import ConfigError
from effstack.synth import SynthConfig, generate, list_recipes, render_one, get_recipe
from effstack.synth import core
from effstack.synth.shapes import SOLIDS, project, quaternion_to_matrix


@pytest.mark.parametrize("recipe", ["digits", "shapes"])
def test_same_seed_same_images_and_labels(recipe):
    a = generate(SynthConfig(recipe, n=12, seed=7, size=32, workers=1))
    b = generate(SynthConfig(recipe, n=12, seed=7, size=32, workers=1))
    c = generate(SynthConfig(recipe, n=12, seed=8, size=32, workers=1))
    assert np.array_equal(a.images, b.images) and a.labels == b.labels
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (12, 32, 32, 3) and a.images.dtype == np.uint8


def test_sample_depends_on_index_not_on_how_work_is_split(monkeypatch):
    whole = generate(SynthConfig("digits", n=24, seed=3, workers=1))
    recipe = get_recipe("digits")
    for i in (0, 13, 23):
        img, label = render_one(recipe, 3, i, 32, 1.0)
        assert np.array_equal(img, whole.images[i]) and label == whole.labels[i]
    monkeypatch.setattr(core, "_PARALLEL_MIN", 0)  # force the process pool for a small run
    pooled = generate(SynthConfig("digits", n=24, seed=3, workers=2))
    assert np.array_equal(pooled.images, whole.images) and pooled.labels == whole.labels


def test_strength_zero_is_clean_and_strength_changes_images():
    clean = generate(SynthConfig("digits", n=10, seed=0, strength=0, workers=1)).images
    assert set(np.unique(clean[..., 0]) [[0, -1]]) == {0, 255}  # white ink on black
    assert np.array_equal(clean[..., 0], clean[..., 1])
    wild = generate(SynthConfig("digits", n=10, seed=0, strength=2, workers=1)).images
    assert not np.array_equal(clean, wild)


def test_classes_are_balanced_and_labels_name_them():
    batch = generate(SynthConfig("digits", n=30, seed=1, size=16, workers=1))
    assert batch.targets.tolist() == [i % 10 for i in range(30)]
    assert all(lab["class"] == str(lab["label"]) and lab["index"] == i for i, lab in enumerate(batch.labels))
    assert {lab["source"] for lab in batch.labels} == {"stroke", "font"}


def test_digit_labels_agree_with_real_handwriting():
    """A 5-nearest-neighbour vote among the real digits (training split) reads most renders as their label."""
    from effstack.data.optdigits import load_optdigits, optdigits_preprocess

    xr, yr = load_optdigits("train")
    batch = generate(SynthConfig("digits", n=100, seed=0, size=32, strength=0, workers=1))
    xs = optdigits_preprocess(batch.images).reshape(100, 1, 64)
    nearest = yr[np.argsort(((xs - xr.reshape(1, -1, 64)) ** 2).sum(-1), 1)[:, :5]]
    vote = np.array([np.bincount(r, minlength=10).argmax() for r in nearest])
    assert (vote == batch.targets).mean() >= 0.7  # chance is 0.1; a shuffled label would fail


def _silhouette(label: dict, size: int) -> np.ndarray:
    """The solid's silhouette from its label alone: the convex hull of its projected vertices."""
    pix = project(SOLIDS[label["class"]][0] * label["scale"], label["R"], label["t"], label["K"])
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in _convex_hull(pix).tolist()], fill=1)
    return np.asarray(img, bool)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    pts = sorted(map(tuple, points.tolist()))

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def test_shape_pose_labels_reproject_onto_the_rendered_object():
    size = 64
    batch = generate(SynthConfig("shapes", n=10, seed=5, size=size, strength=0, workers=1))
    for img, label in zip(batch.images, batch.labels):
        drawn = np.abs(img.astype(int) - 128).max(-1) > 3  # strength 0: a flat grey background
        hull = _silhouette(label, size)
        iou = (drawn & hull).sum() / (drawn | hull).sum()
        assert iou > 0.85, (label["class"], iou)
        ys, xs = np.nonzero(drawn)
        x0, y0, x1, y1 = label["bbox"]
        assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
        assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5
        u, v = project(np.zeros((1, 3)), label["R"], label["t"], label["K"])[0]
        assert drawn[int(v), int(u)]  # the solid's origin is inside it, so it projects onto it
        R = np.array(label["R"])
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-5) and np.allclose(quaternion_to_matrix(label["quaternion"]), R, atol=1e-5)
        assert label["class"] == get_recipe("shapes").classes[label["label"]]


def test_list_recipes():
    assert set(list_recipes()) == {"digits", "shapes"}


@pytest.mark.parametrize("kwargs, match", [
    ({"recipe": "digts", "n": 5}, "unknown recipe 'digts'.*Did you mean: digits"),
    ({"recipe": "digits", "n": 0}, "n must be an integer >= 1, got 0"),
    ({"recipe": "digits", "n": -3}, "n must be an integer >= 1, got -3"),
    ({"recipe": "digits", "n": 2.5}, "n must be an integer"),
    ({"recipe": "digits", "n": True}, "n must be an integer"),
    ({"recipe": "digits", "n": 5, "seed": -1}, "seed must be"),
    ({"recipe": "shapes", "n": 5, "size": 8}, r"size must be an integer in \[16, 1024\]"),
    ({"recipe": "digits", "n": 5, "strength": 4}, r"strength must be a number in \[0, 3\]"),
    ({"recipe": "digits", "n": 5, "workers": -1}, "workers must be"),
])
def test_bad_config_is_one_clear_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        SynthConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_config_round_trips_through_a_dict():
    config = SynthConfig("shapes", n=3, seed=2, size=24, strength=0.5)
    assert SynthConfig.from_dict(config.to_dict()) == config
