"""Run ONE engine/precision/batch cell, isolated in a subprocess so a crash costs one row.

``python -m effstack.measure.cell`` reads a JSON :class:`Cell` on stdin and writes the result row
as JSON on the last line of stdout (library chatter is diverted to stderr, so that line stands
alone). The parent turns a crash, a segfault, a timeout or a raised exception into one row with
status ``"error"`` and a one-line reason that quotes the end of the child's stderr.

>>> from effstack.models import ModelSpec
>>> cell = Cell(model=ModelSpec("effstack.testing:tiny_cnn").to_dict(), engine="null", duration_s=0.2)
>>> row = run_cell(cell, isolate=False)              # doctest: +SKIP
>>> row.status, row.throughput > 0                   # doctest: +SKIP
('ok', True)
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineUnavailableError, MissingDependencyError, PrecisionError, one_line
from .row import ResultRow

__all__ = ["Cell", "run_cell", "execute_cell", "scenario_for"]

_SRC = Path(__file__).resolve().parents[2]  # the directory holding the effstack package


@dataclass
class Cell:
    """One cell of a sweep: everything the child process needs, as plain JSON.

    model: ``ModelSpec.to_dict()``; scenario: ``"auto"`` (single_stream at batch 1, offline above),
    ``"single_stream"``, ``"offline"`` or ``"server"`` (needs ``rate_qps``); calibration_size:
    synthetic calibration samples for INT8 (None: the engine's default); peak: a
    :func:`effstack.measure.peak.peak_rates` record for the % of peak (None: not computed).
    """

    model: dict[str, Any]
    engine: str
    precision: str = "fp32"
    batch: int = 1
    threads: int | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    scenario: str = "auto"
    duration_s: float = 5.0
    repeats: int = 5
    calibration_size: int | None = None
    rate_qps: float | None = None
    seed: int = 0
    run_id: str = ""
    timeout_s: float = 600.0
    noisy_threshold_pct: float = 10.0
    peak: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown cell fields {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def label(self) -> str:
        source = str(self.model.get("source", "?"))
        return f"{short_name(source)} · {self.engine} {self.precision} b{self.batch}"


def short_name(source: str) -> str:
    """A model's display name from its source: factory attribute, file stem, or the name itself."""
    if ":" in source and not source.startswith(("/", ".")) and not Path(source).exists():
        return source.rpartition(":")[2]
    return Path(source).stem if ("/" in source or "." in Path(source).name) else source


def scenario_for(cell: Cell) -> str:
    """Resolve ``"auto"``: single_stream at batch 1, offline at larger batches."""
    if cell.scenario == "auto":
        return "single_stream" if cell.batch == 1 else "offline"
    return cell.scenario


def base_row(cell: Cell) -> ResultRow:
    """A row with the cell's configuration, the machine and the versions filled in."""
    from ..hardware import library_versions, machine_info

    source = str(cell.model.get("source", ""))
    return ResultRow(
        run_id=cell.run_id, model=short_name(source), model_source=source, engine=cell.engine,
        precision=cell.precision, batch=cell.batch, threads=cell.threads, settings=dict(cell.knobs),
        scenario=scenario_for(cell), machine=machine_info(), versions=library_versions(),
    )


def execute_cell(cell: Cell) -> ResultRow:
    """Run the cell in this process; every exception becomes a row (never raises).

    Missing packages, an engine that cannot run here, or a precision the engine lacks give
    ``"skipped"``; anything else that fails gives ``"error"``. Timing starts only after the
    session is loaded (exports, quantization and compilation are in ``load_s``) and warmed up.
    """
    row = base_row(cell)
    try:
        _execute(cell, row)
    except (MissingDependencyError, EngineUnavailableError) as exc:
        row.failed("skipped", one_line(exc))
    except PrecisionError as exc:
        from ..engines.base import PRECISIONS

        row.failed("error" if cell.precision not in PRECISIONS else "skipped", one_line(exc))
    except Exception as exc:  # the point of a cell: one failure is one row, not a lost sweep
        row.failed("error", one_line(exc))
    return row


def _execute(cell: Cell, row: ResultRow) -> None:
    from ..engines import canonical, get_engine
    from ..engines.base import SessionOptions, session_kernel_isa
    from ..models import ModelSpec, load_model
    from . import scenarios

    scenario = scenario_for(cell)
    if scenario not in scenarios.SCENARIOS:
        raise ConfigError(f"scenario must be auto or one of {', '.join(scenarios.SCENARIOS)}, got {scenario!r}")
    if scenario == "server" and not cell.rate_qps:
        raise ConfigError("the server scenario needs a target rate; pass rate_qps (queries per second)")
    row.engine = canonical(cell.engine)
    engine = get_engine(row.engine)
    options = SessionOptions(precision=cell.precision, threads=cell.threads, batch=cell.batch,
                             knobs=dict(cell.knobs))  # validates precision, threads and batch
    engine.check(options)  # a precision the engine lacks: skipped before loading the model
    model = load_model(ModelSpec.from_dict(cell.model))
    row.model, row.model_fingerprint = model.name, model.fingerprint
    row.macs_per_sample, row.params = model.macs, model.params
    if cell.calibration_size:
        calibration = [model.input.example(1, seed=1000 + i) for i in range(int(cell.calibration_size))]
        options = replace(options, calibration=calibration)
    t0 = time.perf_counter()
    session = engine.load(model, options)
    row.load_s = time.perf_counter() - t0
    with session:
        row.threads = options.n_threads
        x = model.input.example(cell.batch, seed=0)
        if scenario == "single_stream":
            result = scenarios.single_stream(session, x, cell.duration_s, repeats=cell.repeats)
        elif scenario == "offline":
            result = scenarios.offline(session, x, cell.duration_s, repeats=cell.repeats)
        else:
            result = scenarios.server(session, x, cell.rate_qps, cell.duration_s, seed=cell.seed)
        row.executed_counts = dict(session.executed_precision())
        row.kernel_isa = session_kernel_isa(session)
        row.settings = dict(session.settings())
    from ..engines.base import summarize_precision

    row.executed_precision = summarize_precision(row.executed_counts)
    # the measured peaks are the CPU's: a GPU engine's row gets no fraction rather than a wrong one
    row.fill(result, cell.peak if engine.device == "cpu" else None, cell.noisy_threshold_pct)


def run_cell(cell: Cell | dict[str, Any], isolate: bool = True, timeout_s: float | None = None) -> ResultRow:
    """Run one cell and return its row; never raises for a failing cell.

    Args:
        cell: a :class:`Cell` or its dict.
        isolate: run in a child process (``python -m effstack.measure.cell``) so that a segfault
            or a hang costs one row; False runs in this process (tests, debugging).
        timeout_s: kill the child after this many seconds (default: ``cell.timeout_s``, 600).

    Example:
        >>> row = run_cell(Cell(model={"source": "resnet18"}, engine="openvino", precision="int8"))  # doctest: +SKIP
    """
    cell = cell if isinstance(cell, Cell) else Cell.from_dict(cell)
    if not isolate:
        return execute_cell(cell)
    timeout = float(timeout_s if timeout_s is not None else cell.timeout_s)
    env = dict(os.environ)
    # the child must import this very effstack, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SRC), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "effstack.measure.cell"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,  # own group: kill it whole
    )
    try:
        out, err = proc.communicate(json.dumps(cell.to_dict()), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return base_row(cell).failed("error", f"timed out after {timeout:g} s{_tail(err)}")
    row = _parse_row(out)
    if row is not None:
        return row  # the child reported (ok, skipped or error), even if it crashed while exiting
    rc = proc.returncode
    if rc < 0:
        try:
            what = f"crashed with {signal.Signals(-rc).name}"
        except ValueError:
            what = f"crashed with signal {-rc}"
    else:
        what = f"exited with code {rc} without a result"
    return base_row(cell).failed("error", what + _tail(err))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group, started above
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _parse_row(stdout: str) -> ResultRow | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
            return ResultRow.from_dict(d) if isinstance(d, dict) and "schema" in d else None
        except Exception:  # not JSON, or not a row this version can read
            return None
    return None


def _tail(stderr: str, limit: int = 300) -> str:
    """``; stderr: <last meaningful line>`` (a Python fatal-error line beats a traceback frame)."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    fatal = [ln for ln in lines if ln.startswith("Fatal Python error")]
    text = fatal[-1] if fatal else lines[-1]
    return "; stderr: " + (text if len(text) <= limit else text[: limit - 1] + "…")


def main() -> None:
    """Child entry point: a JSON cell on stdin, the JSON row as the last line of stdout."""
    faulthandler.enable()  # a segfault prints a Python traceback to stderr for the parent's reason
    sys.stdout.flush()
    row_fd = os.dup(1)
    os.dup2(2, 1)  # everything else (C libraries included) writes to stderr from here on
    try:
        cell = Cell.from_dict(json.loads(sys.stdin.read()))
        row = execute_cell(cell)
    except Exception as exc:  # an unreadable cell description
        row = ResultRow().failed("error", f"cannot read the cell description: {one_line(exc)}")
    sys.stdout.flush()
    sys.stderr.flush()
    with os.fdopen(row_fd, "w") as out:
        out.write("\n" + json.dumps(row.to_dict()) + "\n")
        out.flush()
    # skip interpreter teardown: some runtimes crash or dawdle while unloading, and the row is out
    os._exit(0)


if __name__ == "__main__":
    main()
