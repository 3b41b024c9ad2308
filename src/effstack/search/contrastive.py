"""``effstack train-embedder``: an image embedder trained by contrastive self-supervision (SimCLR's NT-Xent).

No labels and no downloads: each step takes a batch of images (synthetic "photos" drawn here, plus any
unlabelled images the user points at), makes two random views of each (crop and resize, flip, colour
jitter, greyscale, JPEG recompression) and trains the network so that the two views of one image are each
other's nearest neighbours among all ``2B`` views. Those edits are exactly what near-duplicate search must
see through. The saved model is the backbone (pooled 128-d features); the projection head is only for
training.

>>> from effstack.search.contrastive import ContrastiveConfig, train_embedder      # doctest: +SKIP
>>> train_embedder(ContrastiveConfig(steps=500), "embedder.pt")                   # doctest: +SKIP
>>> # then: effstack index build effstack.search.contrastive:embedder_net --weights embedder.pt ...
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..models.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec

__all__ = ["FACTORY", "ContrastiveConfig", "embedder_net", "nt_xent", "synthetic_photo", "train_embedder"]

FACTORY = "effstack.search.contrastive:embedder_net"
SIZE = 64  # the network's input side; training views and queries are resized to it
_BASE = 96  # the side source images are kept at before random crops


def embedder_net(width: int = 16, seed: int = 0) -> Any:
    """The embedding backbone: 5 conv-BN-ReLU stages, global average pool -> ``8 * width`` features.

    Input (3, 64, 64) normalised with ImageNet's mean and std. About 10 MMAC per image at width 16.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = width
    net = nn.Sequential(*block(3, w, 2), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),
                        *block(4 * w, 8 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.input_spec = InputSpec(shape=(3, SIZE, SIZE), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return net.eval()


def synthetic_photo(rng: np.random.Generator, size: int = _BASE) -> np.ndarray:
    """A random 'photo' (uint8 HxWx3): a colour gradient, a few filled shapes, some texture."""
    from PIL import Image, ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b, c = rng.random((3, 3)).astype(np.float32)
    base = np.clip(a + (b - a) * xx[..., None] + (c - a) * yy[..., None], 0, 1)
    img = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.line(box, fill=fill, width=int(rng.integers(1, 6)))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(float(rng.random()))), np.float32)
    arr += rng.normal(0, rng.random() * 12, arr.shape)  # sensor-like noise
    return np.clip(arr, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ContrastiveConfig:
    """How to train.

    steps: optimiser steps. batch: images per step (2 views each). lr: AdamW learning rate (cosine decay).
    temperature: NT-Xent temperature. synthetic: synthetic photos drawn once as the training pool.
    images: a folder of the user's unlabelled images, mixed into the pool. images_share: the fraction of each
    batch drawn from those images (they are the domain the index will hold, and a few dozen photos among
    thousands of synthetic ones would otherwise hardly ever meet in a batch as each other's negatives).
    width: network width.
    seed: everything is deterministic by it (on one thread).
    """

    steps: int = 400
    batch: int = 64
    lr: float = 2e-3
    temperature: float = 0.2
    synthetic: int = 4000
    images: str | None = None
    images_share: float = 0.25
    width: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch < 2:
            raise ConfigError(f"batch must be at least 2 (each image's negatives are the others), got {self.batch}")
        if not 0 < self.temperature <= 10 or not 0 < self.lr < 1:
            raise ConfigError(f"temperature must be in (0, 10] and lr in (0, 1), got {self.temperature}, {self.lr}")
        if not 0 <= self.images_share <= 1:
            raise ConfigError(f"images_share must be within [0, 1], got {self.images_share}")
        if self.synthetic < 0 or (self.synthetic == 0 and not self.images):
            raise ConfigError("give synthetic images (synthetic >= 1) or a folder of images to train on")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
    """SimCLR's normalised-temperature cross-entropy: each view's positive is the other view of its image.

    z1, z2: (B, D) projections of the two views. Returns the mean loss over the 2B views.
    """
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))  # a view is not its own positive or negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def _augment() -> Any:
    import torchvision.transforms.v2 as T

    return T.Compose([
        T.RandomResizedCrop(SIZE, scale=(0.3, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4)], p=0.8),  # no hue: its HSV round trip costs most of the step
        T.RandomGrayscale(0.1),
        T.RandomApply([T.JPEG((20, 95))], p=0.5),
    ])


def _load_folder(folder: str) -> list[np.ndarray]:
    from PIL import Image

    from .embed import list_images

    out = []
    for p in list_images(folder):
        try:
            with Image.open(p) as img:
                img = img.convert("RGB")
                img.thumbnail((2 * _BASE, 2 * _BASE))
                out.append(np.asarray(img))
        except OSError:
            continue
    if not out:
        raise InputError(f"no readable images in {folder!r}; give a folder of JPEG/PNG images")
    return out


def batch_indices(rng: np.random.Generator, n_synthetic: int, n_user: int, batch: int, share: float) -> np.ndarray:
    """One step's pool indices (synthetic images first in the pool, the user's after), without repeats.

    ``round(share * batch)`` of them come from the user's images (all of them when there are fewer, all of the
    batch when there are no synthetic ones), the rest from the synthetic images.

    >>> batch_indices(np.random.default_rng(0), n_synthetic=100, n_user=3, batch=8, share=0.25).tolist()[:2]
    [101, 102]
    """
    from_user = n_user if not n_synthetic else min(n_user, round(share * batch))
    from_user = min(max(from_user, batch - n_synthetic), batch)  # too few synthetic ones: fill with the user's
    return np.concatenate([n_synthetic + rng.choice(n_user, from_user, replace=False),
                           rng.choice(n_synthetic, batch - from_user, replace=False)]).astype(int)


def train_embedder(config: ContrastiveConfig, out: str | Path,
                   on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train :func:`embedder_net` with NT-Xent and save its state dict to ``out`` (atomically).

    Returns a summary (loss at start and end, steps per second, the pool's size). Load the result with
    ``load_embedder(ModelSpec(FACTORY, weights=out))`` or ``effstack index build FACTORY --weights out``.

    Raises:
        ConfigError: bad settings. InputError: an image folder without readable images.
    """
    import torch
    from torch import nn

    from .._files import atomic_file

    rng = np.random.default_rng(config.seed)
    pool: list[np.ndarray] = [synthetic_photo(rng) for _ in range(config.synthetic)]
    n_synthetic = len(pool)
    if config.images:
        pool += _load_folder(config.images)
    tensors = [torch.from_numpy(np.ascontiguousarray(p.transpose(2, 0, 1))) for p in pool]  # uint8 (3, H, W)
    torch.manual_seed(config.seed)
    backbone = embedder_net(config.width, config.seed)
    feat = 8 * config.width
    head = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(inplace=True), nn.Linear(feat, 128))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    warm = max(1, config.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    aug = _augment()
    batch = min(config.batch, len(tensors))
    pick = functools.partial(batch_indices, n_synthetic=n_synthetic, n_user=len(pool) - n_synthetic, batch=batch,
                             share=config.images_share)
    backbone.train()
    head.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(config.steps):
        idx = pick(rng)
        views = [torch.stack([aug(tensors[i]) for i in idx]) for _ in range(2)]  # 2 x (B, 3, 64, 64) uint8
        x1, x2 = [((v.float() / 255.0) - mean) / std for v in views]
        loss = nt_xent(head(backbone(x1)), head(backbone(x2)), config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step + 1, losses[-1])
    seconds = time.perf_counter() - t0
    backbone.eval()
    path = Path(out).expanduser()
    with atomic_file(path) as tmp:
        torch.save(backbone.state_dict(), tmp)
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    return {"out": str(path), "config": config.to_dict(), "pool": len(pool), "steps_per_s": config.steps / seconds,
            "seconds": seconds, "loss_first10": first, "loss_last10": last, "factory": FACTORY,
            "chance_loss": float(np.log(2 * batch - 1))}


def augment_copies(image: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` edited copies of a uint8 HxWx3 photo: crop, flip, colour change, JPEG, alone and combined."""
    import io

    from PIL import Image, ImageEnhance

    rng = np.random.default_rng(seed)
    img = Image.fromarray(image)
    out = []
    for i in range(n):
        edit = img
        w, h = edit.size
        if i % 4 in (0, 3) or rng.random() < 0.3:  # crop 70-95 % of each side
            fw, fh = rng.uniform(0.7, 0.95, 2)
            x0, y0 = int(rng.uniform(0, 1 - fw) * w), int(rng.uniform(0, 1 - fh) * h)
            edit = edit.crop((x0, y0, x0 + int(fw * w), y0 + int(fh * h)))
        if i % 4 in (1, 3) or rng.random() < 0.3:
            edit = edit.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if i % 4 in (2, 3) or rng.random() < 0.3:
            edit = ImageEnhance.Color(edit).enhance(rng.uniform(0.5, 1.5))
            edit = ImageEnhance.Brightness(edit).enhance(rng.uniform(0.7, 1.3))
            edit = ImageEnhance.Contrast(edit).enhance(rng.uniform(0.7, 1.3))
        buf = io.BytesIO()
        edit.save(buf, "JPEG", quality=int(rng.integers(25, 80)))
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return out


def photos(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs (no download) as uint8 RGB, by name.

    Raises:
        MissingDependencyError: scikit-image is not installed.
    """
    from .._optional import require

    data = require("skimage.data", "the near-duplicate benchmark's photographs")
    names = names or ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                      "rocket", "colorwheel", "logo", "stereo_motorcycle", "camera", "moon", "page", "brick",
                      "grass", "gravel", "clock", "text", "cell", "microaneurysms", "horse")
    out = {}
    for name in names:
        try:
            a = getattr(data, name)()
        except Exception:  # some need pooch to fetch; the bundled ones do not
            continue
        a = np.asarray(a[0] if isinstance(a, tuple) else a)
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        out[name] = np.ascontiguousarray(a[..., :3].astype(np.uint8))
    return out
