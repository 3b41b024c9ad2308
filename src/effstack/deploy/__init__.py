"""Scale a bundle out without changing it: Ray Serve (online), Ray Data (offline batches), KServe (a manifest).

::

    effstack deploy ray BUNDLE             replicas of 'effstack serve' on a local Ray cluster (127.0.0.1)
    effstack batch-infer BUNDLE --data SPEC --out DIR    Ray Data map_batches over an actor pool
    effstack deploy kserve BUNDLE > isvc.yaml            an InferenceService running 'effstack serve'

Ray is the optional ``ray`` extra (``pip install 'effstack[ray]'``); importing this package never imports it.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "RayServeApp": "ray_serve", "ReplicaPlan": "ray_serve", "replica_plan": "ray_serve",
    "BatchPlan": "batch", "BatchResult": "batch", "batch_infer": "batch", "batch_plan": "batch",
    "kserve_manifest": "kserve", "kserve_yaml": "kserve", "local_ray": "cluster", "loopback_env": "cluster",
    "require_ray": "cluster", "RayEmbedPaths": "embed",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
