"""InputSpec.image_like: deterministic, standardised, and unlike white noise it survives global pooling."""

import numpy as np
import pytest

from effstack.models.spec import InputSpec


def test_image_like_is_deterministic_and_standardised():
    spec = InputSpec((3, 32, 40))
    a, b = spec.image_like(5, seed=3), spec.image_like(5, seed=3)
    assert a.shape == (5, 3, 32, 40) and a.dtype == np.float32 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, spec.image_like(5, seed=4))
    np.testing.assert_allclose(a.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(a.std(axis=(1, 2, 3)), 1, atol=1e-4)
    spec.validate(a)


def test_non_images_fall_back_to_example():
    for spec in (InputSpec((10,), layout="NC"), InputSpec((3, 8, 8)), InputSpec((3, 32, 32), dtype="int64")):
        np.testing.assert_array_equal(spec.image_like(2, seed=1), spec.example(2, seed=1))


def test_pooled_features_differ_between_samples_unlike_white_noise():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    spec = InputSpec((3, 64, 64))

    def spread(x):  # how much the pooled features vary between samples, relative to their size
        with torch.no_grad():
            f = net(torch.from_numpy(x)).numpy()
        return float(f.std(axis=0).mean() / (np.abs(f).mean() + 1e-9))

    assert spread(spec.image_like(32, seed=1)) > 3 * spread(spec.example(32, seed=1))
