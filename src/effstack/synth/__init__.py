"""Synthetic labelled images with domain randomization, deterministic by seed.

Recipes: ``digits`` (handwritten-looking strokes and typeset glyphs, 10 classes) and ``shapes`` (3D
solids with class, bounding box and 6-DoF pose labels). ``strength`` scales every randomizer (0 = clean
canonical renders, 1 = default).

>>> from effstack.synth import SynthConfig, generate, write_dataset
>>> batch = generate(SynthConfig("digits", n=8, seed=1, size=32, workers=1))
>>> batch.images.shape, batch.labels[5]["label"]
((8, 32, 32, 3), 5)

``filter_by_teacher(teacher, (x, y), keep=0.25)`` keeps the samples a model trained on real data scores
best (:mod:`effstack.synth.filter`).

Also usable as data specs: ``effstack.data.resolve_data("synth:digits?n=50000&seed=1&size=64")``.
"""

from __future__ import annotations

from .core import RECIPES, Recipe, SynthBatch, SynthConfig, generate, get_recipe, list_recipes, render_one
from .filter import SCORES, FilterResult, filter_by_teacher
from .writer import check_output, preview_grid, write_dataset

__all__ = ["RECIPES", "Recipe", "SynthBatch", "SynthConfig", "generate", "get_recipe", "list_recipes",
           "render_one", "check_output", "preview_grid", "write_dataset", "FilterResult", "SCORES",
           "filter_by_teacher"]
