"""The sweep: one model over engines x precisions x batch sizes, one isolated cell each.

>>> rows = bench("effstack.testing:tiny_cnn", ["null"], ["fp32"], [1, 4],
...              duration=0.2, progress=False, peak=False)        # doctest: +SKIP
>>> [(r.batch, r.scenario, r.status) for r in rows]            # doctest: +SKIP
[(1, 'single_stream', 'ok'), (4, 'offline', 'ok')]
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import (ConfigError, EngineUnavailableError, MissingDependencyError, UnknownEngineError,
                      one_line)
from .cell import Cell, base_row, run_cell
from .row import ResultRow, new_run_id
from .scenarios import SCENARIOS

__all__ = ["bench", "settle_peak"]


def _as_list(value: Any, what: str) -> list[Any]:
    items = [value] if isinstance(value, (str, int)) else list(value or [])
    if not items:
        raise ConfigError(f"give at least one {what}")
    return items


def _engine_knobs(knobs: dict[str, Any] | None, engine: str, engines: Sequence[str]) -> dict[str, Any]:
    """Knobs for one engine: shared keys, overridden by a dict under that engine's own name."""
    knobs = dict(knobs or {})
    shared = {k: v for k, v in knobs.items() if not (k in engines and isinstance(v, dict))}
    own = knobs.get(engine) if isinstance(knobs.get(engine), dict) else {}
    return {**shared, **own}


def bench(
    model_spec: Any,
    engines: Sequence[str] | str,
    precisions: Sequence[str] | str = ("fp32",),
    batches: Sequence[int] | int = (1,),
    scenario: str = "auto",
    duration: float = 5.0,
    threads: int | None = None,
    knobs: dict[str, Any] | None = None,
    isolate: bool = True,
    progress: bool = True,
    *,
    peak: bool | dict[str, Any] | None = True,
    rate_qps: float | None = None,
    repeats: int = 5,
    calibration_size: int | None = None,
    timeout_s: float = 600.0,
    run_id: str | None = None,
    on_row: Callable[[ResultRow], None] | None = None,
) -> list[ResultRow]:
    """Measure ``model_spec`` on every engine x precision x batch cell; one :class:`ResultRow` each.

    Cells whose engine is unknown give ``"error"`` rows; engines whose packages are missing, or
    that cannot run here, and precisions an engine lacks give ``"skipped"`` rows with the one-line
    reason; a cell that crashes, hangs past ``timeout_s`` or raises gives one ``"error"`` row and
    the sweep goes on. Each cell's timing starts only after its session is loaded and warmed up,
    so the first cell of an engine is not charged for exporting, quantizing or compiling (that
    time is in ``load_s``; engines cache those artifacts for the cells that follow).

    Args:
        model_spec: a ModelSpec or spec string (``"resnet50"``, ``"pkg.mod:factory"``, a file).
        engines / precisions / batches: the sweep's axes (a single value is fine).
        scenario: ``"auto"`` (single_stream at batch 1, offline above), ``"single_stream"``,
            ``"offline"`` or ``"server"`` (needs ``rate_qps``).
        duration: timed seconds per cell (after warm-up).
        threads: compute threads per session (None: all available cores).
        knobs: engine settings for every engine; a dict under an engine's name applies to that
            engine only, e.g. ``{"openvino": {"hint": "throughput"}}``.
        isolate: run each cell in a child process (a crash costs one row).
        progress: show a progress bar (cells done / total, current cell) on stderr.
        peak: True measures (or reads the cached) machine peak for the % of peak column; a
            :func:`~effstack.measure.peak.peak_rates` record uses that (a copy); False/None leaves it empty.
            A row that outruns the peak is its own peak (``peak_path`` ``observed:...``, fraction 1) and
            raises it for the rows after it (:func:`~effstack.measure.peak.raise_peak`); once the sweep ends,
            every row is judged against the final peak (:func:`settle_peak`).
        on_row: called with each row as soon as it is measured (e.g. to save partial results).

    Raises:
        ConfigError: an empty axis, an unknown scenario, non-positive duration or batch.

    Example:
        >>> rows = bench("resnet50", ["onnxruntime", "openvino"], ["fp32", "int8"], [1, 8])  # doctest: +SKIP
    """
    from ..engines import PRECISIONS, canonical, get_engine
    from ..models import ModelSpec

    spec = ModelSpec.coerce(model_spec)
    engine_names = [str(e) for e in _as_list(engines, "engine")]
    precision_list = [str(p) for p in _as_list(precisions, "precision")]
    batch_list = _as_list(batches, "batch size")
    if scenario != "auto" and scenario not in SCENARIOS:
        raise ConfigError(f"scenario must be auto or one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if scenario == "server" and not rate_qps:
        raise ConfigError("the server scenario needs a target rate; pass rate_qps (queries per second)")
    if not duration > 0:
        raise ConfigError(f"duration must be positive seconds, got {duration}")
    if any(not isinstance(b, int) or b < 1 for b in batch_list):
        raise ConfigError(f"batch sizes must be positive integers, got {batch_list}")
    run_id = run_id or new_run_id()

    # one plan entry per cell: either a Cell to run, or a row already decided (skipped / error)
    plan: list[tuple[Cell, str | None, str]] = []
    for name in engine_names:
        verdict, reason, engine = None, "", None
        try:
            engine = get_engine(name)
            name = canonical(name)
        except UnknownEngineError as exc:
            verdict, reason = "error", one_line(exc)
        except (MissingDependencyError, EngineUnavailableError) as exc:
            verdict, reason = "skipped", one_line(exc)
        except Exception as exc:  # an engine module that fails to import is that engine's problem only
            verdict, reason = "error", f"engine {name!r} failed to load: {one_line(exc)}"
        for precision in precision_list:
            for batch in batch_list:
                cell = Cell(model=spec.to_dict(), engine=name, precision=precision, batch=batch,
                            threads=threads, knobs=_engine_knobs(knobs, name, engine_names), scenario=scenario,
                            duration_s=duration, repeats=repeats, calibration_size=calibration_size,
                            rate_qps=rate_qps, run_id=run_id, timeout_s=timeout_s)
                v, r = verdict, reason
                if v is None and precision not in PRECISIONS:
                    v, r = "error", f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
                elif v is None and precision not in engine.precisions:
                    v, r = "skipped", (f"engine {name!r} runs {', '.join(engine.precisions)}, not {precision!r}")
                plan.append((cell, v, r))

    rows: list[ResultRow] = []
    with _progress(progress, len(plan)) as advance:
        peak_record = None
        if any(v is None for _, v, _ in plan):
            advance("measuring the machine's peak rates (cached after the first time)", done=False)
            peak_record = _peak(peak)
        for cell, verdict, reason in plan:
            advance(cell.label())
            if verdict is not None:
                row = base_row(cell).failed(verdict, reason)
            else:
                cell.peak = peak_record
                row = run_cell(cell, isolate=isolate)
                _raise_peak(peak_record, row)
            rows.append(row)
            if on_row is not None:
                on_row(row)
        advance(None)
    settle_peak(rows, peak_record)
    return rows


def _peak(peak: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(peak, dict):
        return copy.deepcopy(peak)  # rows that outrun it raise it (_raise_peak): not the caller's dict
    if not peak:
        return None
    from .peak import peak_rates

    try:
        return peak_rates()
    except Exception:  # the % of peak is a nicety; a failure to measure it must not stop the sweep
        return None


def settle_peak(rows: list[ResultRow], record: dict[str, Any] | None) -> None:
    """Judge every measured row against one peak: ``record`` raised by the fastest row of each precision.

    A sweep raises the peak as rows outrun it, so a row measured before a faster one was judged against a lower
    peak (two rows of one precision could both read 100%); this judges them all again against the final one.
    """
    if record is None:
        return
    for row in rows:
        _raise_peak(record, row)
    for row in rows:
        if row.ok:
            row.judge_peak(record)


def _raise_peak(record: dict[str, Any] | None, row: ResultRow) -> None:
    """A row that outran the peak (its ``peak_path`` says ``observed:...``) becomes the peak for the cells
    after it, and for later sweeps through the peak cache (:func:`~effstack.measure.peak.raise_peak`)."""
    from .peak import OBSERVED, raise_peak

    if record is None or not row.ok or not (row.peak_path or "").startswith(OBSERVED):
        return
    if row.peak_precision and row.peak_gops:
        raise_peak(record, row.peak_precision, row.peak_gops, row.peak_path or "")


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[..., None]]:
    """Yield ``advance(label, done=True)``: marks the previous cell done, shows ``label`` as current.

    ``done=False`` only changes the label (for work that is not a cell, like the peak measurement).
    """
    if not enabled:
        yield lambda label, done=True: None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # rich is a core dependency, but a progress bar is never worth failing for
        yield lambda label, done=True: None
        return
    # stderr, so that stdout stays clean for --json - style output; a slow refresh costs little CPU
    with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), refresh_per_second=2) as bar:
        task = bar.add_task("", total=total)
        started = [False]

        def advance(label: str | None, done: bool = True) -> None:
            if done and started[0]:
                bar.advance(task)
            started[0] = started[0] or done
            bar.update(task, description=label or "done")

        yield advance
