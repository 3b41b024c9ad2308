"""What every benchmark script does with its result dict at the end: stamp it and write it as JSON, atomically."""

from __future__ import annotations

import json
import sys
from typing import Any


def write_json(path: str, result: dict[str, Any]) -> None:
    """Add the command line, machine and library versions to ``result`` and write it to ``path``."""
    from effstack.hardware import library_versions, machine_info
    from effstack.report.jsonio import atomic_write_text

    result.update(command=sys.argv, machine=machine_info(), versions=library_versions())
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {path}")
