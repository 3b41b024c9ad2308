"""Small models trained here in seconds on scikit-learn's bundled digits (8×8, 10 classes; no download).

``digits_cnn(outlier=...)`` builds a model made sensitive to INT8 on purpose: one channel of the first
convolution is scaled up by ``outlier`` and the next convolution's matching weights scaled down by the
same factor, so the float function is unchanged but that activation tensor's range is huge and a
per-tensor 8-bit grid crushes every other channel to zero.

>>> from effstack.models import load_model
>>> m = load_model("effstack.testing.trained:digits_cnn")   # doctest: +SKIP
>>> x, y = digits_data("test")                              # doctest: +SKIP
"""

from __future__ import annotations

import functools

import numpy as np

from ..models.spec import InputSpec

__all__ = ["digits_cnn", "digits_data", "digits_embedder", "train_classifier"]


@functools.lru_cache(maxsize=4)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 - 0.5) / 0.5  # [-1, 1]
    return x[:, None], d.target.astype(np.int64)


def digits_data(split: str = "train", size: int = 8, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x ``(N, channels, size, size)`` float32, y int64. ``train``: 1200 samples, ``test``: 597."""
    x, y = _digits()
    sl = slice(0, 1200) if split == "train" else slice(1200, None)
    x, y = x[sl], y[sl]
    if size != 8:
        x = np.kron(x, np.ones((1, 1, size // 8, size // 8), np.float32))  # nearest upscaling
    if channels != 1:
        x = np.repeat(x, channels, axis=1)
    return np.ascontiguousarray(x), y


def train_classifier(module, x: np.ndarray, y: np.ndarray, epochs: int = 8, seed: int = 0, lr: float = 3e-3):
    """Adam + cross-entropy, batch 64, deterministic by seed; returns the module in eval mode."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            opt.step()
    return module.eval()


def _cnn(width: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10),
    )


@functools.lru_cache(maxsize=8)
def _trained(width: int, epochs: int, seed: int):
    x, y = digits_data("train")
    return train_classifier(_cnn(width), x, y, epochs, seed).state_dict()


def digits_cnn(outlier: float = 0.0, width: int = 16, epochs: int = 8, seed: int = 0):
    """A 3-conv classifier of 8×8 digits (~97 % test top-1); ``outlier`` > 0 makes layer ``0`` INT8-hostile."""
    import torch

    torch.manual_seed(seed)
    model = _cnn(width)
    model.load_state_dict(_trained(width, epochs, seed))
    if outlier:
        with torch.no_grad():  # function-preserving: ReLU(a*z)/a == ReLU(z) for a > 0
            model[0].weight[0] *= outlier
            model[0].bias[0] *= outlier
            model[2].weight[:, 0] /= outlier
    model.input_spec = InputSpec(shape=(1, 8, 8))
    return model.eval()


def digits_embedder(width: int = 16, epochs: int = 8, seed: int = 0):
    """The trained digits CNN without its classifier head: a ``(N, 2*width)`` embedding model."""
    model = digits_cnn(0.0, width, epochs, seed)
    emb = model[:-1]
    emb.input_spec = InputSpec(shape=(1, 8, 8))
    return emb.eval()
