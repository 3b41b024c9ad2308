"""``effstack index build --ray``: image decoding and embedding on Ray Data actors, the index on the driver.

:class:`RayEmbedPaths` has the contract of :meth:`effstack.search.embed.Embedder.embed_paths` (it yields
``(paths, embeddings)`` batch by batch and hands unreadable images to ``on_error``), so the build loop adds
each batch to the index and acknowledges it as before, and an interrupted build resumes the same way. Each
actor loads its own :class:`~effstack.search.embed.Embedder` with the arguments the driver's was loaded with
and a share of its threads, and checks that its fingerprint is the driver's: an actor that computed other
embeddings (another model, layer or view) would corrupt the index, and is refused in one line.

INT8 embedders are not spread: each actor would calibrate on its own, and its quantized weights could differ
from the driver's; build INT8 indexes without ``--ray``.

>>> source = RayEmbedPaths(embedder, load_args, actors=2)        # doctest: +SKIP
>>> for paths, vectors in source.embed_paths(paths, on_error): ...    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .cluster import require_ray

__all__ = ["RayEmbedPaths", "actors_for"]

PURPOSE = "effstack index build --ray"


def actors_for(model: Any, actors: int | None = None) -> int:
    """The actor count: ``actors``, else a bundle's instance count, else 1 (a model spec has no plan)."""
    if actors is not None:
        return actors
    from ..ladder.bundle import is_bundle, read_bundle

    source = getattr(model, "source", model)
    if isinstance(source, (str, Path)) and is_bundle(Path(source).expanduser()):
        return read_bundle(Path(source).expanduser())[1].instance_count()
    return 1


def _absolute(model: Any) -> Any:
    """The model spec with a path made absolute: actors need not start in the driver's folder."""
    import dataclasses

    source = getattr(model, "source", model)
    if not isinstance(source, (str, Path)) or not Path(source).expanduser().exists():
        return model
    full = str(Path(source).expanduser().resolve())
    return dataclasses.replace(model, source=full) if dataclasses.is_dataclass(model) else full


class _EmbedActor:
    """One Ray Data actor: an embedder of its own; maps a batch of image paths to embeddings and errors."""

    def __init__(self, load_args: dict[str, Any], fingerprint: str):
        from effstack.search import load_embedder

        self.embedder = load_embedder(**load_args)
        if self.embedder.fingerprint != fingerprint:
            raise ConfigError(f"a Ray actor's embedder has fingerprint {self.embedder.fingerprint}, the driver's "
                              f"{fingerprint}; build without --ray")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(str(p)) for p in batch["path"]]
        row = {p: i for i, p in enumerate(paths)}
        errors = [""] * len(paths)

        def failed(path: Path, exc: Exception) -> None:
            errors[row[path]] = str(exc)

        vectors = np.zeros((len(paths), self.embedder.dim), np.float32)  # (batch, dim); unreadable rows stay 0
        for good, emb in self.embedder.embed_paths(paths, failed):
            vectors[[row[p] for p in good]] = emb
        return {"path": np.array([str(p) for p in paths], dtype=object), "vector": vectors,
                "error": np.array(errors, dtype=object)}

    def __del__(self) -> None:
        embedder = getattr(self, "embedder", None)
        if embedder is not None:
            embedder.close()


class RayEmbedPaths:
    """``embed_paths`` on a pool of Ray Data actors, for a driver-side :class:`~effstack.search.embed.Embedder`.

    Args:
        embedder: the driver's embedder (its fingerprint is what every actor must reproduce).
        load_args: the keyword arguments of :func:`~effstack.search.load_embedder` it was loaded with.
        actors: the pool size; each actor gets ``threads // actors`` of the threads asked for (at least one).

    Raises:
        MissingDependencyError: Ray Data is not installed.
        ConfigError: an INT8 embedder, or fewer than one actor.
    """

    def __init__(self, embedder: Any, load_args: dict[str, Any], actors: int = 1):
        require_ray("data", PURPOSE)
        if actors < 1:
            raise ConfigError(f"the Ray actor pool needs at least one actor, got {actors}")
        if embedder.session.precision == "int8" or embedder.calibration:
            raise ConfigError("an INT8 index cannot be built with --ray (each actor would calibrate on its own); "
                              "build it without --ray")
        from ..engines.base import available_cores

        threads = load_args.get("threads") or available_cores()
        self.num_cpus = max(1, threads // actors)
        self.actors = actors
        self.batch = embedder.batch
        self.fingerprint = embedder.fingerprint
        self.load_args = {**load_args, "model": _absolute(load_args["model"]), "threads": self.num_cpus,
                          "calibration": None}

    def embed_paths(self, paths: Sequence[Path], on_error: Callable[[Path, Exception], None] | None = None
                    ) -> Iterator[tuple[list[Path], np.ndarray]]:
        """Yield ``(paths, embeddings)`` as the actors finish batches (not in input order); unreadable images go
        to ``on_error`` (else :class:`InputError` is raised)."""
        import ray.data

        if not paths:
            return
        ray.data.DataContext.get_current().enable_progress_bars = False
        blocks = max(1, min(-(-len(paths) // self.batch), 4 * self.actors))  # enough to feed every actor
        ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks).map_batches(
            _EmbedActor, fn_constructor_kwargs={"load_args": self.load_args, "fingerprint": self.fingerprint},
            batch_size=self.batch, num_cpus=self.num_cpus, compute=ray.data.ActorPoolStrategy(size=self.actors),
            batch_format="numpy")
        for b in ds.iter_batches(batch_format="numpy", batch_size=None):
            good = [i for i, e in enumerate(b["error"]) if not e]
            for i, e in enumerate(b["error"]):
                if e:
                    exc = InputError(str(e))
                    if on_error is None:
                        raise exc
                    on_error(Path(str(b["path"][i])), exc)
            if good:
                yield [Path(str(b["path"][i])) for i in good], np.asarray(b["vector"][good], np.float32)
