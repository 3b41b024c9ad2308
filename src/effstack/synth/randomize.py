"""Randomizers shared by the recipes: geometry, textures, clutter, occluders and camera artefacts.

Every function takes a :class:`numpy.random.Generator` and a randomization ``strength`` (0 = none, 1 =
the default ranges, above 1 = wider still) and works on float images in ``[0, 1]``: masks ``(H, W)``
and colour images ``(H, W, 3)``. Only numpy and Pillow are used, so worker processes start fast.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "homography", "elastic_field", "warp", "texture", "contrasting_colours", "draw_clutter",
    "draw_occluders", "camera_artefacts", "to_uint8", "luminance",
]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``(..., 3)`` colours."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=rgb.dtype)


def homography(rng: np.random.Generator, size: int, strength: float, *, rotate: float = 15.0,
               shear: float = 0.3, scale: tuple[float, float] = (0.75, 1.1), shift: float = 0.08,
               perspective: float = 0.06) -> np.ndarray:
    """A random 3x3 map from output pixel coordinates to source coordinates (rotation, shear, scale,
    aspect, shift and a perspective tilt), centred on the image; the identity when ``strength`` is 0."""
    c = (size - 1) / 2.0
    s = strength
    angle = np.deg2rad(rng.uniform(-rotate, rotate) * s)
    sh = rng.uniform(-shear, shear) * s
    lo, hi = 1 + (scale[0] - 1) * s, 1 + (scale[1] - 1) * s
    zoom = rng.uniform(min(lo, hi), max(lo, hi))
    aspect = np.exp(rng.uniform(-0.2, 0.2) * s)
    ca, sa = np.cos(angle), np.sin(angle)
    a = np.array([[ca, -sa], [sa, ca]]) @ np.array([[1, sh], [0, 1]]) @ np.diag([zoom * aspect, zoom / aspect])
    fwd = np.eye(3)
    fwd[:2, :2] = a
    fwd[2, :2] = rng.uniform(-perspective, perspective, 2) * s / size
    t = rng.uniform(-shift, shift, 2) * s * size
    to_centre, from_centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]]), np.array([[1, 0, c], [0, 1, c], [0, 0, 1.0]])
    fwd = from_centre @ np.array([[1, 0, t[0]], [0, 1, t[1]], [0, 0, 1.0]]) @ fwd @ to_centre
    return np.linalg.inv(fwd)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a ``cells x cells`` random grid upsampled bicubically to ``(h, w)``."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32)


def elastic_field(rng: np.random.Generator, size: int, strength: float, alpha: float = 0.05) -> np.ndarray:
    """A smooth random displacement field ``(2, size, size)`` in pixels (elastic distortion)."""
    amp = alpha * size * strength
    cells = int(rng.integers(3, 6))
    return np.stack([_smooth_noise(rng, size, size, cells), _smooth_noise(rng, size, size, cells)]) * amp


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(ys, xs)``, each ``(h, w)`` float32 (cached: read-only)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def warp(img: np.ndarray, h_inv: np.ndarray, field: np.ndarray | None = None) -> np.ndarray:
    """Resample ``img`` (``(H, W)`` or ``(H, W, C)``) at ``h_inv @ (x, y, 1)`` plus ``field``; bilinear, zero outside."""
    hgt, wid = img.shape[:2]
    ys, xs = _grid(hgt, wid)
    if field is not None:
        xs, ys = xs + field[0], ys + field[1]
    den = h_inv[2, 0] * xs + h_inv[2, 1] * ys + h_inv[2, 2]
    sx = (h_inv[0, 0] * xs + h_inv[0, 1] * ys + h_inv[0, 2]) / den
    sy = (h_inv[1, 0] * xs + h_inv[1, 1] * ys + h_inv[1, 2]) / den
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    pad = np.pad(img, [(1, 1), (1, 1)] + [(0, 0)] * (img.ndim - 2))
    x0 = np.clip(x0 + 1, 0, wid + 1)
    y0 = np.clip(y0 + 1, 0, hgt + 1)
    x1, y1 = np.clip(x0 + 1, 0, wid + 1), np.clip(y0 + 1, 0, hgt + 1)
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = pad[y0, x0] * (1 - fx) + pad[y0, x1] * fx
    bottom = pad[y1, x0] * (1 - fx) + pad[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray, strength: float) -> np.ndarray:
    """An ``(h, w, 3)`` surface around ``colour``: flat, a gradient, smooth blotches or stripes."""
    base = np.broadcast_to(colour.astype(np.float32), (h, w, 3)).copy()
    kind = rng.choice(4, p=[0.4, 0.2, 0.25, 0.15]) if strength > 0 else 0
    amp = 0.35 * min(strength, 1.5)
    if kind == 1:
        ang = rng.uniform(0, 2 * np.pi)
        ys, xs = _grid(h, w)
        ramp = ((xs - w / 2) * np.cos(ang) + (ys - h / 2) * np.sin(ang)) / max(h, w)
        base += ramp[..., None] * rng.uniform(-1, 1, 3).astype(np.float32) * amp * 2
    elif kind == 2:
        noise = _smooth_noise(rng, h, w, int(rng.integers(4, 12)))
        base += noise[..., None] * rng.uniform(-1, 1, 3).astype(np.float32) * amp
    elif kind == 3:
        ang = rng.uniform(0, np.pi)
        ys, xs = _grid(h, w)
        period = rng.uniform(3, 12) * h / 32
        wave = np.sin((xs * np.cos(ang) + ys * np.sin(ang)) * 2 * np.pi / period)
        base += wave[..., None] * rng.uniform(-1, 1, 3).astype(np.float32) * amp * 0.5
    return np.clip(base, 0, 1)


def contrasting_colours(rng: np.random.Generator, strength: float, min_contrast: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB colours whose luma differs by at least ``min_contrast``.

    At ``strength`` 0: white ink on black, like a scanned and inverted bitmap.
    """
    if strength <= 0:
        return np.ones(3, np.float32), np.zeros(3, np.float32)
    need = max(min_contrast, 0.8 - 0.5 * min(strength, 1.0))
    for _ in range(20):
        fg, bg = rng.uniform(0, 1, (2, 3)).astype(np.float32)
        if abs(luminance(fg) - luminance(bg)) >= need:
            return fg, bg
    return (np.ones(3, np.float32), np.zeros(3, np.float32)) if rng.random() < 0.5 else (
        np.zeros(3, np.float32), np.ones(3, np.float32))


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def draw_clutter(rng: np.random.Generator, img: np.ndarray, strength: float, max_items: int = 4) -> np.ndarray:
    """``img`` (uint8 ``(H, W, 3)``) with random lines, arcs and ellipses drawn on: distractors behind the object."""
    count = int(rng.integers(0, max_items + 1) * min(strength, 1.5)) if strength > 0 else 0
    if not count:
        return img
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    w, h = pil.size
    for _ in range(count):
        x0, y0, x1, y1 = (rng.uniform(-0.2, 1.2, 4) * [w, h, w, h]).tolist()
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        width = int(rng.integers(1, max(2, w // 16)))
        kind = rng.integers(3)
        if kind == 0:
            d.line([(x0, y0), (x1, y1)], fill=_random_colour(rng), width=width)
        elif kind == 1:
            d.arc(box, *rng.uniform(0, 360, 2).tolist(), fill=_random_colour(rng), width=width)
        else:
            d.ellipse(box, outline=_random_colour(rng), width=width)
    return np.asarray(pil)


def draw_occluders(rng: np.random.Generator, img: np.ndarray, strength: float, p: float = 0.3,
                   max_area: float = 0.08) -> np.ndarray:
    """With probability ``p * strength``, ``img`` (uint8) with one small rectangle or blob (<= ``max_area``) on top."""
    if rng.random() >= p * strength:
        return img
    h, w = img.shape[:2]
    side = np.sqrt(max_area * w * h) * rng.uniform(0.4, 1.0, 2)
    cx, cy = rng.uniform(0.1, 0.9, 2) * [w, h]
    box = [cx - side[0] / 2, cy - side[1] / 2, cx + side[0] / 2, cy + side[1] / 2]
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    (d.rectangle if rng.random() < 0.5 else d.ellipse)(box, fill=_random_colour(rng))
    return np.asarray(pil)


def camera_artefacts(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Blur, sensor noise and JPEG compression of a uint8 image, each random and scaled by ``strength``."""
    if strength <= 0:
        return img
    if rng.random() < 0.6:
        radius = rng.uniform(0, 0.6) * strength * img.shape[1] / 32
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))
    if rng.random() < 0.6:
        noise = rng.normal(0, rng.uniform(0, 0.08) * 255 * strength, img.shape).astype(np.float32)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4 * min(strength, 1.0):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(15, 90)))
        img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` image -> uint8 ``[0, 255]``."""
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
