"""Digit glyph masks: procedural pen strokes (a handwriting look) and the machine's TrueType fonts.

Strokes are skeletons in a unit box (``u`` right, ``v`` down) drawn through smooth Catmull-Rom
splines with a jittered pen path, slant and width; a stroke whose first and last points coincide is a
closed loop. Several writing styles per digit (a ``1`` with or without flag and base, an open or
closed ``4``, a ``7`` with a bar, ...).
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["STYLES", "font_files", "stroke_mask", "font_mask"]

P = list[tuple[float, float]]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 10, start: float = -np.pi / 2) -> P:
    pts = [(cx + rx * np.cos(start + 2 * np.pi * k / n), cy + ry * np.sin(start + 2 * np.pi * k / n))
           for k in range(n)]
    return [*pts, pts[0]]


_TOP_BOWL_9 = [(0.78, 0.28), (0.6, 0.48), (0.35, 0.5), (0.2, 0.3), (0.32, 0.06), (0.58, 0.0), (0.78, 0.12), (0.78, 0.28)]
_LOWER_3 = [(0.45, 0.47), (0.78, 0.6), (0.82, 0.82), (0.55, 1.0), (0.18, 0.9)]

# digit -> writing styles; a style is a list of strokes; a stroke is a list of (u, v) points
STYLES: dict[int, list[list[P]]] = {
    0: [[_ellipse(0.5, 0.5, 0.32, 0.5)], [_ellipse(0.5, 0.5, 0.38, 0.5, start=-2.0)]],
    1: [[[(0.5, 0.0), (0.5, 1.0)]],
        [[(0.22, 0.25), (0.52, 0.0), (0.5, 1.0)]],
        [[(0.22, 0.25), (0.52, 0.0), (0.5, 1.0)], [(0.22, 1.0), (0.8, 1.0)]],
        [[(0.3, 0.15), (0.55, 0.0), (0.45, 1.0)]],
        [[(0.1, 0.45), (0.35, 0.2), (0.58, 0.0), (0.5, 1.0)]]],
    2: [[[(0.18, 0.25), (0.38, 0.03), (0.65, 0.03), (0.8, 0.25), (0.68, 0.52), (0.18, 1.0)], [(0.18, 1.0), (0.85, 1.0)]],
        [[(0.2, 0.2), (0.5, 0.0), (0.8, 0.2), (0.7, 0.5), (0.35, 0.85), (0.18, 0.95), (0.3, 0.8), (0.5, 0.95), (0.85, 1.0)]]],
    3: [[[(0.2, 0.12), (0.5, 0.0), (0.78, 0.14), (0.75, 0.35), (0.45, 0.47)], _LOWER_3],
        [[(0.2, 0.0), (0.8, 0.0), (0.45, 0.45)], _LOWER_3]],
    4: [[[(0.65, 1.0), (0.65, 0.0)], [(0.65, 0.0), (0.12, 0.66), (0.88, 0.66)]],
        [[(0.3, 0.0), (0.18, 0.6), (0.88, 0.6)], [(0.68, 0.15), (0.68, 1.0)]],
        [[(0.35, 0.0), (0.2, 0.62), (0.85, 0.62)], [(0.72, 0.0), (0.62, 1.0)]]],
    5: [[[(0.8, 0.0), (0.28, 0.0)], [(0.28, 0.0), (0.24, 0.45)],
         [(0.24, 0.45), (0.55, 0.38), (0.8, 0.55), (0.8, 0.8), (0.55, 1.0), (0.18, 0.92)]],
        [[(0.78, 0.0), (0.3, 0.02), (0.25, 0.42), (0.6, 0.4), (0.8, 0.65), (0.6, 0.97), (0.2, 0.9)]]],
    6: [[[(0.75, 0.03), (0.45, 0.15), (0.25, 0.5), (0.24, 0.8), (0.45, 1.0), (0.7, 0.95), (0.8, 0.75),
          (0.65, 0.55), (0.4, 0.55), (0.25, 0.72)]],
        [[(0.7, 0.0), (0.3, 0.4), (0.22, 0.75), (0.4, 1.0), (0.7, 0.95), (0.78, 0.72), (0.55, 0.52), (0.3, 0.65)]]],
    7: [[[(0.18, 0.0), (0.82, 0.0)], [(0.82, 0.0), (0.62, 0.45), (0.42, 1.0)]],
        [[(0.18, 0.0), (0.82, 0.0)], [(0.82, 0.0), (0.45, 1.0)], [(0.35, 0.52), (0.78, 0.48)]],
        [[(0.18, 0.18), (0.18, 0.0), (0.82, 0.0)], [(0.82, 0.0), (0.55, 0.5), (0.5, 1.0)]]],
    8: [[[(0.5, 0.47), (0.26, 0.3), (0.3, 0.07), (0.5, 0.0), (0.7, 0.07), (0.74, 0.3), (0.5, 0.47),
          (0.22, 0.7), (0.3, 0.94), (0.5, 1.0), (0.7, 0.94), (0.78, 0.7), (0.5, 0.47)]],
        [_ellipse(0.5, 0.24, 0.22, 0.24, 8, np.pi / 2), _ellipse(0.5, 0.74, 0.28, 0.26, 8, -np.pi / 2)]],
    9: [[_TOP_BOWL_9, [(0.78, 0.15), (0.76, 1.0)]],
        [_TOP_BOWL_9, [(0.78, 0.15), (0.72, 0.7), (0.45, 1.0)]],
        [_TOP_BOWL_9, [(0.78, 0.15), (0.75, 0.75), (0.6, 1.0), (0.3, 0.95)]]],
}


def _closed(pts: np.ndarray) -> bool:
    return bool(abs(pts[0, 0] - pts[-1, 0]) + abs(pts[0, 1] - pts[-1, 1]) < 1e-9)


_T = np.linspace(0, 1, 6, endpoint=False)[None, :, None]  # spline samples per span, shape (1, steps, 1)


def _catmull_rom(pts: np.ndarray, closed: bool) -> np.ndarray:
    """Points of a Catmull-Rom spline through ``pts`` ``(n, 2)`` (``closed``: the ends coincide)."""
    if len(pts) < 3:
        return pts
    ext = np.vstack([pts[-2], pts, pts[1]]) if closed else np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    p0, p1, p2, p3 = (ext[k:len(ext) - 3 + k, None, :] for k in range(4))  # each (spans, 1, 2)
    t = _T
    out = 0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
    return np.vstack([out.reshape(-1, 2), pts[-1:]])


def stroke_mask(rng: np.random.Generator, digit: int, canvas: int, box: tuple[float, float, float, float],
                strength: float) -> tuple[np.ndarray, dict]:
    """A ``(canvas, canvas)`` float mask of ``digit`` drawn as pen strokes inside ``box`` (x0, y0, x1, y1).

    Returns the mask and a description (``{"source": "stroke", "style": i}``).
    """
    styles = STYLES[digit]
    style = int(rng.integers(len(styles)))
    x0, y0, x1, y1 = box
    slant = rng.uniform(-0.15, 0.35) * strength
    jitter = 0.035 * strength
    pen = (x1 - x0 + y1 - y0) / 2 * (rng.uniform(0.1, 0.28) if strength > 0 else 0.16)
    img = Image.new("L", (canvas, canvas), 0)
    d = ImageDraw.Draw(img)
    for stroke in styles[style]:
        pts = np.asarray(stroke, np.float64)
        closed = _closed(pts)
        pts = pts + rng.normal(0, jitter, pts.shape)
        if closed:
            pts[-1] = pts[0]
        pts[:, 0] += (0.5 - pts[:, 1]) * slant
        curve = _catmull_rom(pts, closed)
        xy = np.stack([x0 + curve[:, 0] * (x1 - x0), y0 + curve[:, 1] * (y1 - y0)], 1)
        flat = [tuple(p) for p in xy.tolist()]
        d.line(flat, fill=255, width=max(1, int(round(pen))))  # dense samples: no joint needed
        r = pen / 2
        for px, py in (flat[0], flat[-1]):
            d.ellipse([px - r, py - r, px + r, py + r], fill=255)
    return np.asarray(img, np.float32) / 255.0, {"source": "stroke", "style": style}


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType fonts on this machine (``$EFFSTACK_FONTS`` folder first, then the usual system folders)."""
    roots = [os.environ.get("EFFSTACK_FONTS", ""), "/usr/share/fonts", "/usr/local/share/fonts",
             os.path.expanduser("~/.fonts"), "/Library/Fonts", "C:/Windows/Fonts"]
    found: list[str] = []
    for root in filter(None, roots):
        found += glob.glob(os.path.join(root, "**", "*.ttf"), recursive=True)
    return tuple(sorted(set(found)))


@functools.lru_cache(maxsize=256)
def _font(path: str, px: int):
    try:
        return ImageFont.truetype(path, px) if path else ImageFont.load_default(px)
    except OSError:
        return ImageFont.load_default(px)


def font_mask(rng: np.random.Generator, digit: int, canvas: int, box: tuple[float, float, float, float],
              strength: float) -> tuple[np.ndarray, dict]:
    """A ``(canvas, canvas)`` float mask of ``digit`` typeset in a random font, size and weight inside ``box``."""
    files = font_files()
    path = files[int(rng.integers(len(files)))] if files else ""
    x0, y0, x1, y1 = box
    px = max(6, int(round((y1 - y0) / 0.73)))  # digit height is ~0.73 em in common fonts
    weight = int(round(rng.uniform(0, 0.05) * strength * (y1 - y0)))
    img = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(img).text(((x0 + x1) / 2, (y0 + y1) / 2), str(digit), fill=255, font=_font(path, px),
                             anchor="mm", stroke_width=weight, stroke_fill=255)
    return np.asarray(img, np.float32) / 255.0, {"source": "font", "font": os.path.basename(path) or "default"}
