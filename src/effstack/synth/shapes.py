"""The ``shapes`` recipe: one convex 3D solid per image, seen by a pinhole camera.

Randomized: the solid's pose (uniform rotation, position in view), size, camera focal length, material
colour and shininess, light direction and colour, ambient level, background texture, clutter,
occluders, blur, noise and JPEG compression. Rendered with flat-shaded Blinn-Phong faces (a convex
solid needs no depth buffer: back faces are culled and front faces never overlap), drawn at twice the
size and downsampled.

Label (camera frame: x right, y down, z forward; pixel ``(u, v)`` covers ``[u, u+1) x [v, v+1)``)::

    {"label": 2, "class": "prism", "bbox": [x0, y0, x1, y1], "R": 3x3, "quaternion": [w, x, y, z],
     "t": [tx, ty, tz], "K": 3x3, "scale": s}

A model point ``p`` (see :data:`SOLIDS`) appears at pixel ``project(s * p, R, t, K)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from . import randomize as rz
from .core import Recipe

__all__ = ["RECIPE", "SOLIDS", "render", "project", "quaternion_to_matrix", "annotate"]


def _cube():
    v = np.array([[(i & 1) * 2 - 1, (i >> 1 & 1) * 2 - 1, (i >> 2 & 1) * 2 - 1] for i in range(8)], float) * 0.6
    return v, [[0, 2, 6, 4], [1, 3, 7, 5], [0, 1, 5, 4], [2, 3, 7, 6], [0, 1, 3, 2], [4, 5, 7, 6]]


def _pyramid():
    v = np.array([[-0.7, -0.7, -0.45], [0.7, -0.7, -0.45], [0.7, 0.7, -0.45], [-0.7, 0.7, -0.45], [0, 0, 0.85]])
    return v, [[0, 1, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]


def _prism(sides: int, radius: float, half: float):
    a = 2 * np.pi * np.arange(sides) / sides + np.pi / 2
    ring = np.stack([radius * np.cos(a), radius * np.sin(a)], 1)
    v = np.vstack([np.hstack([ring, np.full((sides, 1), -half)]), np.hstack([ring, np.full((sides, 1), half)])])
    faces = [list(range(sides)), list(range(sides, 2 * sides))]
    faces += [[i, (i + 1) % sides, sides + (i + 1) % sides, sides + i] for i in range(sides)]
    return v, faces


def _octahedron():
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float) * 0.9
    return v, [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]


# class name -> (vertices (V, 3) in model units, faces as vertex-index cycles); all fit in a unit sphere
SOLIDS: dict[str, tuple[np.ndarray, list[list[int]]]] = {
    "cube": _cube(),
    "pyramid": _pyramid(),
    "prism": _prism(3, 0.8, 0.6),
    "cylinder": _prism(16, 0.6, 0.7),
    "octahedron": _octahedron(),
}
CLASSES = tuple(SOLIDS)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` -> 3x3 rotation matrix."""
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``(N, 2)`` of model points ``(N, 3)`` under pose ``(R, t)`` and intrinsics ``K``."""
    cam = np.asarray(points, float) @ np.asarray(R, float).T + np.asarray(t, float)
    uvw = cam @ np.asarray(K, float).T
    return uvw[:, :2] / uvw[:, 2:3]


def _pose(rng: np.random.Generator, size: int, f: float) -> tuple[np.ndarray, np.ndarray, float]:
    q = rng.normal(size=4)  # a normalised 4D Gaussian is a uniform random rotation
    q = q / np.linalg.norm(q) * (1 if q[0] >= 0 else -1)
    z = rng.uniform(4.0, 6.5)
    scale = rng.uniform(0.8, 1.2)
    margin = scale * f / z  # projected radius bound, px
    centre = rng.uniform(size / 2 - max(0.0, size / 2 - margin), size / 2 + max(0.0, size / 2 - margin), 2)
    t = np.array([(centre[0] - size / 2) * z / f, (centre[1] - size / 2) * z / f, z])
    return q, t, scale


def _shade(rng: np.random.Generator, strength: float):
    """Material and light: ``colour(normal, view) -> RGB`` in [0, 1] for a face, in camera coordinates."""
    if strength > 0:
        albedo = rng.uniform(0.15, 1.0, 3)
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.3, 1.0)])
        light_rgb = 1 - rng.uniform(0, 0.3, 3) * min(strength, 1.0)
        ambient, ks, shine = rng.uniform(0.1, 0.45), rng.uniform(0, 0.6) * min(strength, 1.0), rng.uniform(4, 60)
    else:
        albedo, light, light_rgb = np.array([0.85, 0.55, 0.2]), np.array([0.4, -0.5, -1.0]), np.ones(3)
        ambient, ks, shine = 0.3, 0.2, 16.0
    light = light / np.linalg.norm(light)

    def colour(normal: np.ndarray, view: np.ndarray) -> np.ndarray:
        diffuse = max(0.0, float(normal @ light))
        half = light + view
        spec = max(0.0, float(normal @ (half / np.linalg.norm(half)))) ** shine
        return np.clip(albedo * (ambient + (1 - ambient) * diffuse) * light_rgb + ks * spec * light_rgb, 0, 1)

    return colour


def _draw_solid(img: Image.Image, alpha: Image.Image, verts: np.ndarray, faces: list[list[int]], R: np.ndarray,
                t: np.ndarray, K: np.ndarray, colour) -> None:
    """Draw the visible faces onto ``img`` (RGB) and their coverage onto ``alpha`` (L), in place."""
    cam = verts @ R.T + t  # (V, 3) camera coordinates
    centre = cam.mean(0)
    pix = project(verts, R, t, K)
    d, da = ImageDraw.Draw(img), ImageDraw.Draw(alpha)
    for face in faces:
        p = cam[face]
        normal = np.cross(p[1] - p[0], p[2] - p[0])
        normal /= np.linalg.norm(normal)
        mid = p.mean(0)
        if normal @ (mid - centre) < 0:  # orient outwards (faces are listed without a winding convention)
            normal = -normal
        if normal @ mid >= 0:  # facing away from the camera
            continue
        rgb = colour(normal, -mid / np.linalg.norm(mid))
        polygon = [tuple(q) for q in pix[face].tolist()]
        d.polygon(polygon, fill=tuple(int(c * 255 + 0.5) for c in rgb))
        da.polygon(polygon, fill=255)


def render(rng: np.random.Generator, cls: int, size: int, strength: float) -> tuple[np.ndarray, dict]:
    """Draw solid ``cls`` on a ``(size, size, 3)`` uint8 image; returns the image and its label."""
    name = CLASSES[cls]
    verts, faces = SOLIDS[name]
    f = size * (rng.uniform(1.0, 1.8) if strength > 0 else 1.4)
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    q, t, scale = _pose(rng, size, f)
    R = quaternion_to_matrix(q)
    ss = 2  # the solid is drawn at twice the size and downsampled (anti-aliased edges); the rest at size
    solid, alpha = Image.new("RGB", (size * ss, size * ss)), Image.new("L", (size * ss, size * ss))
    _draw_solid(solid, alpha, verts * scale, faces, R, t, np.diag([ss, ss, 1.0]) @ K, _shade(rng, strength))
    bg_colour = rng.uniform(0, 1, 3) if strength > 0 else np.full(3, 0.5)
    back = rz.draw_clutter(rng, rz.to_uint8(rz.texture(rng, size, size, bg_colour, strength)), strength, max_items=4)
    a = np.asarray(alpha.resize((size, size), Image.BOX), np.float32)[..., None] / 255
    premultiplied = np.asarray(solid.resize((size, size), Image.BOX), np.float32)  # black outside the solid
    img = np.clip(back * (1 - a) + premultiplied + 0.5, 0, 255).astype(np.uint8)
    img = rz.draw_occluders(rng, img, strength, p=0.3, max_area=0.04)
    img = rz.camera_artefacts(rng, img, strength)
    pix = project(verts * scale, R, t, K)
    x0, y0 = np.clip(pix.min(0), 0, size)
    x1, y1 = np.clip(pix.max(0), 0, size)
    label = {"label": cls, "class": name, "bbox": [round(float(v), 2) for v in (x0, y0, x1, y1)],
             "R": np.round(R, 6).tolist(), "quaternion": np.round(q, 6).tolist(), "t": np.round(t, 6).tolist(),
             "K": np.round(K, 6).tolist(), "scale": round(float(scale), 6)}
    return np.asarray(img, np.uint8), label


def annotate(img: Image.Image, label: dict, zoom: float = 1.0) -> None:
    """Draw the label on ``img`` (in place): bounding box, and the pose's axes (x red, y green, z blue)."""
    d = ImageDraw.Draw(img)
    d.rectangle([v * zoom for v in label["bbox"]], outline=(255, 255, 0))
    axes = np.vstack([np.zeros(3), np.eye(3) * 0.8]) * label["scale"]
    pts = project(axes, label["R"], label["t"], label["K"]) * zoom
    for k, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 128, 255)]):
        d.line([tuple(pts[0]), tuple(pts[k + 1])], fill=rgb, width=2)


RECIPE = Recipe("shapes", CLASSES, render, min_size=16, annotate=annotate)
