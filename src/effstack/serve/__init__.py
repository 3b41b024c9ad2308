"""Serving: an Open Inference Protocol (KServe v2) server with a dynamic batcher, and a load generator.

The batcher's decision (:mod:`~effstack.serve.batcher`) and the protocol (:mod:`~effstack.serve.protocol`)
are pure and import no web framework; the HTTP app (:mod:`~effstack.serve.app`) needs the ``serve`` extra.

>>> from effstack.serve import ServingConfig, BatchingPolicy
>>> ServingConfig("resnet50", latency_budget_ms=50).policy({1: 0.005, 8: 0.02}).batch_cap
6
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "BatchingPolicy": "batcher", "decide": "batcher", "Pending": "batcher", "Decision": "batcher",
    "BatchQueue": "batcher", "Batcher": "workers", "ServingConfig": "config", "ModelRunner": "repository",
    "ModelRepository": "repository", "resolve_target": "repository", "ServerOptions": "app", "create_app": "app",
    "ServerMetrics": "metrics", "BackgroundServer": "server", "run_server": "server",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
