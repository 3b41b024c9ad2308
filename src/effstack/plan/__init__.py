"""The planner: search engine x precision x batch x instances x threads under a p99 latency budget.

>>> from effstack.plan import Grid, plan, measure_real                                  # doctest: +SKIP
>>> grid = Grid.build(["onnxruntime", "openvino"], ["fp32", "int8"], [1, 2, 4, 8, 16], instances=[1, 2],
...                   threads=[1, 2])                                                    # doctest: +SKIP
>>> result = plan(grid, functools.partial(measure_real, model), budget_ms=7.0)         # doctest: +SKIP
>>> candidate, measurement = result.choice()                                            # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "Candidate": "candidate", "Grid": "candidate", "Measurement": "candidate",
    "BudgetInfeasibleError": "search", "MODES": "search", "OBJECTIVES": "search", "PlanResult": "search",
    "cost_per_million": "search", "pareto_front": "search", "plan": "search",
    "measure_real": "real",
    "print_plan": "report", "write_plan": "report",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
