"""The ``digits`` recipe: one digit 0-9 per image, handwritten-looking pen strokes or typeset glyphs,
under domain randomization (font, weight, size, rotation, shear, perspective, elastic distortion, pen
width, slant, foreground and background colour and texture, clutter, occluders, blur, noise, JPEG).

Label: ``{"label": d, "class": "d", "source": "stroke" | "font", "style" | "font": ...}``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import randomize as rz
from .core import Recipe
from .glyphs import font_mask, stroke_mask

__all__ = ["RECIPE", "render", "STROKE_FRACTION"]

STROKE_FRACTION = 0.7  # share of handwritten-looking samples; the rest are typeset in the machine's fonts


def _glyph_box(rng: np.random.Generator, canvas: int, strength: float) -> tuple[float, float, float, float]:
    s = min(strength, 1.0)
    height = canvas * (0.7 + rng.uniform(-0.15, 0.05) * s)
    width = height * (0.62 + rng.uniform(-0.15, 0.15) * s)
    cx, cy = canvas / 2, canvas / 2
    return cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2


def render(rng: np.random.Generator, digit: int, size: int, strength: float) -> tuple[np.ndarray, dict]:
    """Draw ``digit`` on a ``(size, size, 3)`` uint8 image; returns the image and its label."""
    canvas = max(32, 2 * size)  # the glyph is drawn at twice the size (at least 32 px): anti-aliased edges
    box = _glyph_box(rng, canvas, strength)
    draw = stroke_mask if rng.random() < STROKE_FRACTION else font_mask
    mask, how = draw(rng, digit, canvas, box, strength)
    if canvas != size:  # everything else happens at the output size: 4x fewer pixels
        mask = np.asarray(Image.fromarray(mask, mode="F").resize((size, size), Image.BOX), np.float32)
    field = rz.elastic_field(rng, size, strength) if strength > 0 and rng.random() < 0.7 else None
    mask = rz.warp(mask, rz.homography(rng, size, strength), field)

    fg, bg = rz.contrasting_colours(rng, strength)
    back = rz.draw_clutter(rng, rz.to_uint8(rz.texture(rng, size, size, bg, strength)), strength, max_items=3)
    ink = rz.texture(rng, size, size, fg, strength * 0.5) if rng.random() < 0.5 else fg
    m = mask[..., None]
    img = rz.to_uint8(back * np.float32(1 / 255) * (1 - m) + ink * m)
    img = rz.draw_occluders(rng, img, strength, p=0.25, max_area=0.05)
    img = rz.camera_artefacts(rng, img, strength)
    return np.asarray(img, np.uint8), {"label": digit, "class": str(digit), **how}


RECIPE = Recipe("digits", tuple(str(d) for d in range(10)), render)
