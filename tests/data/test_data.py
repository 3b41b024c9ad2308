"""DataSpec parsing and resolve_data: synthetic, image folder and the real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effstack.data import DataSpec, as_arrays, parse_data_spec, resolve_data
from effstack.data.optdigits import load_optdigits, optdigits_preprocess
from effstack.errors import ConfigError, InputError


@pytest.mark.parametrize("text, kind, target, options", [
    ("synth:digits?n=50&seed=1&size=64", "synth", "digits", {"n": 50, "seed": 1, "size": 64}),
    ("synth:shapes?strength=0.5", "synth", "shapes", {"strength": 0.5}),
    ("imagefolder:/data/x?size=32", "imagefolder", "/data/x", {"size": 32}),
    ("some/folder", "imagefolder", "some/folder", {}),
    ("sklearn:digits?split=test&size=32", "sklearn", "digits", {"split": "test", "size": 32}),
])
def test_parse_data_spec(text, kind, target, options):
    spec = parse_data_spec(text)
    assert spec == DataSpec(kind, target, options)
    assert parse_data_spec(str(spec)) == spec


@pytest.mark.parametrize("text, match", [
    ("", "must not be empty"),
    ("synth:?n=3", "names no synth target"),
    ("photos:", "names no photos target; e.g. 'photos:all'"),
    ("synth:digits?colour=red", "does not take option.*colour.*it takes: n, seed"),
    ("synth:digits?n", "must look like"),
])
def test_bad_specs(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_data_spec(text)


def test_synth_spec_gives_a_labelled_torch_dataset():
    ds = resolve_data("synth:digits?n=20&seed=2&size=16&workers=1")
    assert (len(ds), ds.num_classes, ds.input_shape) == (20, 10, (3, 16, 16))
    assert ds.class_names[3] == "3" and ds.mean == (0.5,) * 3
    x, y = ds[13]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 3
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    xa, ya = as_arrays(ds)
    assert np.array_equal(xa[13], x.numpy()) and ya.tolist() == [i % 10 for i in range(20)]
    again = resolve_data("synth:digits?n=20&seed=2&size=16&workers=1")
    assert np.array_equal(as_arrays(again)[0], xa)
    grey = resolve_data("synth:digits?n=4&size=16&channels=1&workers=1")
    assert grey.input_shape == (1, 16, 16)


def test_synth_spec_optdigits_preprocessing_matches_the_real_set():
    ds = resolve_data("synth:digits?n=10&workers=1&preprocess=optdigits")
    real = resolve_data("sklearn:digits?split=test")
    assert ds.input_shape == real.input_shape == (1, 8, 8)
    x, _ = as_arrays(ds)
    assert x.min() >= -1 and x.max() <= 1 and len(np.unique(x)) > 2


def test_shapes_spec_keeps_pose_labels():
    ds = resolve_data("synth:shapes?n=5&size=32&workers=1")
    assert ds.class_names[0] == "cube" and "quaternion" in ds.labels[4] and ds.labels[4]["label"] == 4


@pytest.mark.parametrize("text, error, match", [
    ("synth:digits?n=0", ConfigError, "n must be an integer >= 1, got 0"),
    ("synth:nope?n=3", ConfigError, "unknown recipe 'nope'"),
    ("synth:digits?n=3&preprocess=mnist", ConfigError, "preprocess must be one of"),
    ("synth:digits?n=3&channels=2", ConfigError, "channels must be 1 or 3"),
    ("sklearn:digits?split=val", ConfigError, "split must be one of train, test, all"),
    ("sklearn:digits?size=12", ConfigError, "multiple of 8"),
    ("sklearn:iris", ConfigError, "sklearn:digits"),
    ("imagefolder:/does/not/exist", InputError, "does not exist"),
])
def test_resolve_bad_input(text, error, match):
    with pytest.raises(error, match=match):
        resolve_data(text)


def test_empty_image_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="has no images"):
        resolve_data(str(tmp_path))


def test_real_digits_splits_and_upscaling():
    train, test = resolve_data("sklearn:digits?split=train"), resolve_data("sklearn:digits?split=test")
    assert (len(train), len(test)) == (1200, 597)
    big = resolve_data("sklearn:digits?split=test&size=32&channels=3")
    assert big.input_shape == (3, 32, 32)
    x8, y8 = as_arrays(test)
    x32, y32 = as_arrays(big)
    assert np.array_equal(y8, y32) and np.array_equal(x32[:, 0, ::4, ::4], x8[:, 0])
    xa, ya = load_optdigits("all")  # test = the last 597, scaled to [-1, 1] as effstack.testing.trained does
    assert np.allclose((xa[1200:, None] / 16 - 0.5) / 0.5, x8) and np.array_equal(ya[1200:], y8)


def test_optdigits_preprocess_normalises_like_nist():
    img = np.zeros((3, 32, 32), np.uint8)
    img[0, 6:26, 14:17] = 255          # a thin bar: stretched to the minimum width (16 px = 4 columns)
    img[1, 2:30, 2:30] = 200           # a filled block on black
    img[1, 10:20, 10:20] = 0
    counts = optdigits_preprocess(img)
    assert counts.shape == (3, 8, 8) and counts.min() >= 0 and counts.max() <= 16
    assert (counts[0] > 0).any(0).sum() == 4 and (counts[0] > 0).any(1).all()
    assert (counts[1] > 0).any(0).sum() == 6  # widest glyphs fill 24 px = 6 columns, as in the real set
    assert counts[2].sum() == 0  # a blank image stays blank
    inverted = optdigits_preprocess(255 - img[:2])
    assert np.array_equal(inverted, counts[:2])  # dark ink on light paper reads the same


def test_load_optdigits_values():
    x, y = load_optdigits("all")
    assert x.shape == (1797, 8, 8) and x.max() == 16 and set(y.tolist()) == set(range(10))


def test_as_arrays_of_other_datasets():
    x = np.zeros((4, 1, 2, 2), np.float32)
    y = np.arange(4)
    assert as_arrays((x, y))[0].shape == (4, 1, 2, 2)
    pairs = [(torch.zeros(1, 2, 2), i) for i in range(4)]
    xs, ys = as_arrays(pairs)
    assert xs.shape == (4, 1, 2, 2) and ys.tolist() == [0, 1, 2, 3]
