"""Recipes, their configuration and parallel, seed-deterministic generation.

Sample ``i`` of a run is drawn from ``numpy.random.default_rng([seed, i])`` and its class is
``i % num_classes``, so the output depends only on (recipe, n, seed, size, strength): not on the number
of worker processes or how the work is split.

>>> batch = generate(SynthConfig("digits", n=20, seed=1, size=32, workers=1))
>>> batch.images.shape, batch.labels[3]["label"]
((20, 32, 32, 3), 3)
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["Recipe", "SynthConfig", "SynthBatch", "RECIPES", "get_recipe", "list_recipes", "generate", "render_one"]

RECIPES: Registry[Any] = Registry("recipe", error=ConfigError)
RECIPES.register("digits", "effstack.synth.digits:RECIPE",
                 summary="handwritten-looking and typeset digits 0-9 with heavy domain randomization")
RECIPES.register("shapes", "effstack.synth.shapes:RECIPE",
                 summary="3D solids with random pose, light, material and background; class, bbox, 6-DoF pose")

MAX_SIZE = 1024
_PARALLEL_MIN = 256  # below this many images a worker pool costs more than it saves


@dataclass(frozen=True)
class Recipe:
    """A generator: ``render(rng, cls, size, strength) -> (uint8 (size, size, 3) image, label dict)``.

    The label dict holds at least ``"label"`` (the class index) and must be JSON-serialisable.
    ``annotate(pil_image, label, zoom)``, if given, draws the label onto a preview tile.
    """

    name: str
    classes: tuple[str, ...]
    render: Callable[[np.random.Generator, int, int, float], tuple[np.ndarray, dict]]
    min_size: int = 8
    annotate: Callable[[Any, dict, float], None] | None = None


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name``.

    Raises:
        ConfigError: no recipe of that name (the message lists them and suggests close matches).
    """
    return RECIPES.get(name)


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line summary."""
    return {n: RECIPES.entry(n).summary for n in RECIPES.names()}


def _check_int(name: str, value: Any, low: int, hint: str, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be an integer {span}, got {value!r}; {hint}")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    recipe: a name from :func:`list_recipes`. n: number of images. seed: all randomness derives from it.
    size: side of the square images in pixels. strength: randomization strength (0 = clean, canonical
    renders; 1 = the default ranges; up to 3 = wider still). workers: worker processes (0 = one per core,
    at most 8; small runs stay in-process).

    Raises:
        ConfigError: an unknown recipe or a value out of range.
    """

    recipe: str
    n: int
    seed: int = 0
    size: int = 32
    strength: float = 1.0
    workers: int = 0

    def __post_init__(self) -> None:
        recipe = get_recipe(self.recipe)
        _check_int("n", self.n, 1, "ask for at least one image")
        _check_int("seed", self.seed, 0, "use a non-negative integer")
        _check_int("size", self.size, recipe.min_size, f"the {self.recipe} recipe draws {recipe.min_size}+ pixel images",
                   MAX_SIZE)
        _check_int("workers", self.workers, 0, "use 0 for one per core")
        s = self.strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 3:
            raise ConfigError(f"strength must be a number in [0, 3], got {s!r}; 1 is the default randomization")
        object.__setattr__(self, "strength", float(s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "SynthConfig":
        return cls(**doc)


@dataclass
class SynthBatch:
    """Generated images ``(N, size, size, 3)`` uint8, one label dict per image, and the class names."""

    images: np.ndarray
    labels: list[dict]
    classes: tuple[str, ...]
    config: SynthConfig

    @property
    def targets(self) -> np.ndarray:
        """Class indices ``(N,)`` int64."""
        return np.array([lab["label"] for lab in self.labels], np.int64)


def render_one(recipe: Recipe, seed: int, index: int, size: int, strength: float) -> tuple[np.ndarray, dict]:
    """Sample ``index`` of the run with ``seed``: the same image and label whoever renders it."""
    rng = np.random.default_rng([seed, index])
    image, label = recipe.render(rng, index % len(recipe.classes), size, strength)
    return image, {"index": index, **label}


def _render_range(name: str, seed: int, start: int, stop: int, size: int, strength: float):
    recipe = get_recipe(name)
    out = np.empty((stop - start, size, size, 3), np.uint8)
    labels = []
    for j, i in enumerate(range(start, stop)):
        out[j], label = render_one(recipe, seed, i, size, strength)
        labels.append(label)
    return start, out, labels


def _workers(requested: int, n: int) -> int:
    if n < _PARALLEL_MIN:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or min(cores, 8), -(-n // 64)))


def generate(config: SynthConfig, progress: bool = False) -> SynthBatch:
    """Render ``config.n`` images, in ``config.workers`` processes when it is worth it.

    Args:
        config: what to render (see :class:`SynthConfig`).
        progress: show a rich progress bar on stderr.

    Raises:
        ConfigError: raised by :class:`SynthConfig` for bad settings.

    Example:
        >>> generate(SynthConfig("shapes", n=4, size=48, workers=1)).labels[0]["class"]
        'cube'
    """
    recipe = get_recipe(config.recipe)
    n, workers = config.n, _workers(config.workers, config.n)
    images = np.empty((n, config.size, config.size, 3), np.uint8)
    labels: list[dict] = [{}] * n
    chunk = max(16, min(1024, -(-n // (workers * 8))))
    ranges = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    args = (config.recipe, config.seed)
    with _bar(progress, n, f"synth {config.recipe}") as advance:
        if workers == 1:
            done = (_render_range(*args, a, b, config.size, config.strength) for a, b in ranges)
            _collect(done, images, labels, advance)
        else:
            # fork like torch's DataLoader workers (the children use only numpy and Pillow), so a script
            # without an ``if __name__ == "__main__"`` guard still works; spawn where fork does not exist
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(_render_range, *args, a, b, config.size, config.strength) for a, b in ranges]
                _collect((f.result() for f in futures), images, labels, advance)
    return SynthBatch(images, labels, recipe.classes, config)


def _collect(done, images: np.ndarray, labels: list[dict], advance: Callable[[int], None]) -> None:
    for start, out, labs in done:
        images[start:start + len(out)] = out
        labels[start:start + len(out)] = labs
        advance(len(out))


class _bar:
    """``with _bar(enabled, total, title) as advance: advance(k)``; a rich bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, title: str):
        self.enabled, self.total, self.title = enabled, total, title
        self._progress = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda k: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn(f"[bold]{self.title}[/]"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True), refresh_per_second=4)
        self._progress.__enter__()
        task = self._progress.add_task("", total=self.total)
        return lambda k: self._progress.update(task, advance=k)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
