"""The efficiency ladder: stack every technique under a latency budget and an accuracy tolerance.

>>> from effstack.ladder import Budget, Ladder, Variant   # doctest: +SKIP
>>> result = Ladder(Variant("m", model), Budget(7.0, "1.0"), workbench.measure).climb()   # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "Budget": "core",
    "Candidate": "core",
    "Measured": "core",
    "Rung": "core",
    "Ladder": "runner",
    "LadderResult": "runner",
    "Shrunk": "runner",
    "Variant": "runner",
    "Workbench": "workbench",
    "run_ladder": "pipeline",
    "write_bundle": "bundle",
    "read_bundle": "bundle",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
