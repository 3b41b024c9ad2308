"""``effstack batch-infer BUNDLE --data SPEC --out DIR``: offline inference with Ray Data over an actor pool.

The data set a DataSpec names is read once on the driver (effstack's loaders give arrays), put in Ray's
object store once, and the dataset Ray Data streams is the sample indices (in-memory blocks): each
``map_batches`` call hands an actor a batch of indices, and the actor slices its rows out of the shared
array, which on one node is a zero-copy view. Indices travel with the outputs, so the result is written in
the data set's order whatever order the actors finish in.

Each actor builds the bundle's engine session the way an ``effstack serve`` instance does
(:meth:`~effstack.serve.repository.ModelRunner.build`: every batch size warmed up before the first real
batch). The pool is sized from the plan: ``instances`` actors sharing the plan's threads (so each gets its
threads per instance as CPUs), batches of the plan's ``max_batch`` (the batch the ladder measured); ``actors``
and ``batch_size`` override them.

The output folder is built next to its destination and swapped in whole (:func:`effstack._files.atomic_dir`)::

    DIR/
      predictions.npy   (N, ...) the model's outputs in data-set order   (--format npy, the default)
      labels.npy        (N,) the data set's labels
      predictions.parquet  columns index, label, output (one flattened list a row)   (--format parquet, instead)
      batch.json        what ran: bundle, data, plan, rows, seconds, samples/s

>>> result = batch_infer("bundles/tiny", "synth:digits?n=100", "out/preds")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError, MissingDependencyError
from .cluster import local_ray, require_ray

if TYPE_CHECKING:
    from ..serve.config import ServingConfig

__all__ = ["FORMATS", "BatchPlan", "BatchResult", "batch_infer", "batch_plan", "load_inputs", "run_batches"]

FORMATS = ("npy", "parquet")
MARKER = "batch.json"  # an output folder holds this; any other non-empty folder is refused
PURPOSE = "effstack batch-infer"
BLOCKS_PER_ACTOR = 4  # enough blocks to keep every actor busy, few enough that a block holds many batches


@dataclass(frozen=True)
class BatchPlan:
    """The actor pool: ``actors`` engine sessions of ``num_cpus`` CPUs, fed batches of ``batch_size``.

    config: one actor's serving config (one instance with ``num_cpus`` threads, max batch ``batch_size``).
    """

    config: ServingConfig
    actors: int
    num_cpus: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"actors": self.actors, "num_cpus": self.num_cpus, "batch_size": self.batch_size,
                "actor_config": self.config.to_dict()}


def batch_plan(config: ServingConfig, actors: int | None = None, batch_size: int | None = None) -> BatchPlan:
    """The actor pool of a serving config: ``instances`` actors (or ``actors``) sharing its threads.

    Raises:
        ConfigError: ``actors`` or ``batch_size`` below 1.

    Example:
        >>> from effstack.serve.config import ServingConfig
        >>> p = batch_plan(ServingConfig("m.onnx", engine="null", instances=2, threads=4, max_batch=16))
        >>> (p.actors, p.num_cpus, p.batch_size, p.config.instances)
        (2, 2, 16, 1)
    """
    for label, value in (("--actors", actors), ("--batch-size", batch_size)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigError(f"{label} must be at least 1, got {value}")
    pool = actors or config.instance_count()
    threads = max(1, config.total_threads() // pool)  # the plan's threads, shared by the pool
    size = batch_size or config.max_batch
    one = replace(config, instances=1, threads=threads, max_batch=size, latency_budget_ms=None,
                  latency_curve_ms=None)
    return BatchPlan(one, pool, threads, size)


class _Predictor:
    """The Ray Data actor: one engine session; maps a batch of sample indices to their outputs."""

    def __init__(self, config: dict[str, Any], inputs: Any):
        import ray

        from effstack.serve.config import ServingConfig
        from effstack.serve.repository import ModelRunner

        # ray.get of a top-level ref passed as an argument is resolved by Ray already; a list wraps it
        self.x = ray.get(inputs[0]) if isinstance(inputs, list) else inputs
        self.runner = ModelRunner.build(ServingConfig.from_dict(config))
        self.run = self.runner.sessions[0].run

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(batch["data"], dtype=np.int64)
        start = time.time()  # wall clock: comparable across the actors' processes on one machine
        # a batch is a run of consecutive indices (blocks are ranges): a slice is a view of the shared array,
        # where fancy indexing copied the whole batch (19 MB at 32 images of 224x224x3)
        contiguous = bool(np.all(np.diff(ids) == 1))
        y = np.asarray(self.run(self.x[ids[0]:ids[-1] + 1] if contiguous else self.x[ids]))
        return {"id": ids, "output": y, "start": np.full(len(ids), start), "end": np.full(len(ids), time.time())}

    def __del__(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()


def run_batches(x: np.ndarray, plan: BatchPlan, marks: list[tuple[float, float, int]] | None = None) -> np.ndarray:
    """Run every row of ``x`` through the plan's actor pool on the running Ray cluster; outputs in ``x``'s order.

    ``marks``, when given, gets ``(start, end, rows)`` of every batch the actors computed (``time.time()``
    when an actor began and finished it): rows over ``max(end) - min(start)`` is the pool's rate once its
    actors run, their start-up (model load, warm-up) left out.

    Raises:
        MissingDependencyError: Ray Data is not installed.
    """
    ray = require_ray("data", PURPOSE)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ref = ray.put(x)
    # the indices as in-memory blocks: a read task (ray.data.range) would take a CPU the actors need, and on a
    # cluster whose CPUs the pool fills exactly, the pool then never starts
    ids = ray.data.from_numpy(_blocks(len(x), plan))
    ds = ids.map_batches(
        _Predictor, fn_constructor_kwargs={"config": plan.config.to_dict(), "inputs": [ref]},
        batch_size=plan.batch_size, num_cpus=plan.num_cpus, compute=ray.data.ActorPoolStrategy(size=plan.actors), batch_format="numpy")
    out: np.ndarray | None = None
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        y = b["output"]
        if out is None:
            out = np.empty((len(x), *y.shape[1:]), dtype=y.dtype)
        out[b["id"]] = y
        if marks is not None:
            marks.append((float(b["start"].min()), float(b["end"].max()), len(y)))
    assert out is not None, "an empty data set is refused before Ray starts"
    return out


def _blocks(n: int, plan: BatchPlan) -> list[np.ndarray]:
    """The indices 0..n-1 in whole batches, a few blocks per actor (one block would feed one actor only)."""
    batches = -(-n // plan.batch_size)
    count = max(1, min(batches, BLOCKS_PER_ACTOR * plan.actors))
    per = -(-batches // count) * plan.batch_size
    return [np.arange(i, min(i + per, n), dtype=np.int64) for i in range(0, n, per)]


@dataclass(frozen=True)
class BatchResult:
    """What :func:`batch_infer` wrote and how fast: ``rows`` samples in ``seconds`` (actor start-up included)."""

    out: Path
    files: tuple[str, ...]
    rows: int
    seconds: float
    plan: BatchPlan

    @property
    def throughput(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ConfigError(f"{str(out)!r} exists and is not an 'effstack batch-infer' output; "
                          "choose an empty or new folder")


def load_inputs(data: Any, config: ServingConfig) -> tuple[np.ndarray, np.ndarray]:
    """The data set's samples as the model's input dtype, checked against its input shape."""
    from ..data import as_arrays, resolve_data
    from ..models import load_model

    x, y = as_arrays(resolve_data(data))
    if len(x) == 0:
        raise InputError(f"the data set {str(data)!r} is empty; give a spec with samples")
    spec = load_model(config.model).input
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise InputError(f"the data set's samples have shape {list(x.shape[1:])} but the bundle's model takes "
                         f"{list(spec.shape)}; give a data spec of that shape (e.g. ?size=)")
    return np.ascontiguousarray(x, dtype=np.float32 if spec.dtype == "bfloat16" else spec.dtype), y


def batch_infer(target: str | Path, data: Any, out: str | Path, *, overrides: dict[str, Any] | None = None,
                fmt: str = "npy", actors: int | None = None, batch_size: int | None = None,
                num_cpus: int | None = None) -> BatchResult:
    """Predict every sample of ``data`` with the bundle at ``target`` on a local Ray cluster; write ``out``.

    Args:
        target: a bundle folder (or serving.json / model spec, as for ``effstack serve``).
        data: a DataSpec (``"synth:digits?n=1000&size=32"``, an image folder, ...).
        out: the output folder (replaced whole if it holds an earlier output; other folders are refused).
        overrides: serving settings given as flags (engine, threads, ...; flag > file).
        fmt: ``npy`` or ``parquet``. actors / batch_size: override the plan's pool and batch.
        num_cpus: CPUs of the local cluster (default: this machine's).

    Raises:
        MissingDependencyError: Ray Data (or pyarrow, for parquet) is not installed.
        ArtifactError, ConfigError, InputError: a bad bundle, settings, output folder or data set.
    """
    from .._files import atomic_dir, atomic_write_json
    from .ray_serve import resolve_one

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    require_ray("data", PURPOSE)
    out = Path(out).expanduser()
    _check_out(out)
    config = resolve_one(target, overrides)
    plan = batch_plan(config, actors, batch_size)
    x, labels = load_inputs(data, config)
    start = time.perf_counter()
    with local_ray(num_cpus):
        y = run_batches(x, plan)
    seconds = time.perf_counter() - start
    with atomic_dir(out) as tmp:
        files = _write(tmp, fmt, y, labels)
        atomic_write_json(tmp / MARKER, {
            "bundle": str(target), "data": str(data), "format": fmt, "rows": len(y), "output_shape": list(y.shape),
            "seconds": round(seconds, 4), "samples_per_s": round(len(y) / seconds, 3) if seconds else None,
            "plan": plan.to_dict()})
    return BatchResult(out, (*files, MARKER), len(y), seconds, plan)


def _write(folder: Path, fmt: str, y: np.ndarray, labels: np.ndarray) -> tuple[str, ...]:
    if fmt == "npy":
        np.save(folder / "predictions.npy", y)
        np.save(folder / "labels.npy", labels)
        return "predictions.npy", "labels.npy"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # Ray Data brings pyarrow; say which extra, not pyarrow's own name
        raise MissingDependencyError("pyarrow", "ray", "Parquet output of effstack batch-infer") from exc

    table = pa.table({"index": np.arange(len(y), dtype=np.int64), "label": labels,
                      "output": pa.array(list(y.reshape(len(y), -1)))})
    pq.write_table(table, folder / "predictions.parquet")
    return ("predictions.parquet",)
