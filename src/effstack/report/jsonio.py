"""Result rows to and from JSON: ``{"schema": 1, "rows": [...], "machine": {...}, "versions": {...}}``.

Writes are atomic (:func:`atomic_write_text`: a temporary file in the same directory, then
``os.replace``), so a reader or a crash mid-write never leaves a half-written results file.

>>> import tempfile, pathlib
>>> from effstack.measure.row import ResultRow
>>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
>>> _ = write_rows(path, [ResultRow(model="m", engine="null")], machine={}, versions={})
>>> read_rows(path)[0].engine
'null'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._files import atomic_write_json, atomic_write_text
from ..measure.row import SCHEMA_VERSION, ResultRow, utc_now
from ..errors import ArtifactError

__all__ = ["atomic_write_text", "read_json", "write_rows", "read_rows", "read_report"]


def write_rows(
    path: str | os.PathLike[str],
    rows: Sequence[ResultRow],
    machine: dict[str, Any] | None = None,
    versions: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write rows (and the machine and versions they ran on) to ``path`` atomically.

    ``machine``/``versions`` default to those recorded in the first row that has them, else to
    the current machine's. ``extra`` adds top-level keys (e.g. the command line). Returns the path.

    Raises:
        ArtifactError: the file cannot be written (the message names the path).
    """
    path = Path(path).expanduser()
    if machine is None or versions is None:
        from ..hardware import library_versions, machine_info

        first = next((r for r in rows if r.machine), None)
        machine = machine if machine is not None else (first.machine if first else machine_info())
        versions = versions if versions is not None else (first.versions if first else library_versions())
    doc = {"schema": SCHEMA_VERSION, "written_at": utc_now(), **(extra or {}),
           "machine": machine, "versions": versions, "rows": [r.to_dict() for r in rows]}
    return atomic_write_json(path, doc, allow_nan=False)


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file, or raise :class:`ArtifactError` naming ``what`` it should have been.

    Example: ``read_json("serving.json", "serving config")``.
    """
    path = Path(path).expanduser()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{what} {str(path)!r} does not exist; check the path") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {what} {str(path)!r}: {' '.join(str(exc).split())}") from None


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results file; ``"rows"`` holds :class:`ResultRow` objects, other keys are as written.

    Raises:
        ArtifactError: missing, unreadable, not JSON, or not an effstack results file.
    """
    doc = read_json(path, "results file")
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ArtifactError(f"{str(path)!r} is not an effstack results file (no 'rows' list)")
    return {**doc, "rows": [ResultRow.from_dict(r) for r in doc["rows"]]}


def read_rows(path: str | os.PathLike[str]) -> list[ResultRow]:
    """The rows of a results file written by :func:`write_rows` (see :func:`read_report`)."""
    return read_report(path)["rows"]
