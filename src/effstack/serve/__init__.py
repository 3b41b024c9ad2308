"""Serving: an Open Inference Protocol (KServe v2) server with a dynamic batcher, and a load generator.

The batcher's decision (:mod:`~effstack.serve.batcher`) and the protocol (:mod:`~effstack.serve.protocol`)
are pure and import no web framework; the HTTP app (:mod:`~effstack.serve.app`) needs the ``serve`` extra.

>>> from effstack.serve import ServingConfig, BatchingPolicy
>>> ServingConfig("resnet50", latency_budget_ms=50).policy({1: 0.005, 8: 0.02}).batch_cap
8
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BatchingPolicy": "batcher", "decide": "batcher", "Pending": "batcher", "Decision": "batcher",
    "BatchQueue": "batcher", "Batcher": "workers", "ServingConfig": "config", "ModelRunner": "repository",
    "ModelRepository": "repository", "resolve_target": "repository", "ServerOptions": "app", "create_app": "app",
    "ServerMetrics": "metrics", "BackgroundServer": "server", "run_server": "server", "loadtest": "loadtest",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'effstack.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
