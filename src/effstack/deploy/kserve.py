"""``effstack deploy kserve BUNDLE``: a KServe ``InferenceService`` whose custom predictor runs ``effstack serve``.

The manifest is written, not applied: effstack has no cluster to talk to. It describes one predictor
container that serves the bundle over the Open Inference Protocol (v2) on port 8080, so KServe's v2 clients,
``tritonclient`` and ``effstack loadtest`` all work against it:

* ``storageUri`` (``--storage-uri``, e.g. ``s3://models/resnet50``) is where the bundle folder lives;
  KServe's storage initializer copies it to ``/mnt/models``, which the container serves;
* the plan becomes resources and scaling: each pod is one instance, requesting (and limited to) the plan's
  threads per instance in CPUs, with ``--threads`` set to match; ``minReplicas`` 1, ``maxReplicas`` the
  plan's instance count; ``containerConcurrency`` the admission limit the queue allows (so KServe's activator
  does not pile up requests the batcher would refuse anyway);
* readiness is ``GET /v2/health/ready`` (ready once the model has loaded and warmed up), liveness
  ``GET /v2/health/live``.

KServe's ``protocolVersion`` field belongs to its model-format and framework predictors, not to custom
containers; the manifest states the protocol as the ``effstack.io/protocol-version: v2`` annotation and in
the container's command, ports and probes, which is what a v2 client needs.

The output is YAML through PyYAML when it is installed, else JSON (which is valid YAML); either parses
with ``yaml.safe_load``.

>>> print(kserve_yaml("bundles/resnet50", image="ghcr.io/me/effstack:0.1"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["API_VERSION", "DEFAULT_IMAGE", "PORT", "kserve_manifest", "kserve_yaml"]

API_VERSION = "serving.kserve.io/v1beta1"
DEFAULT_IMAGE = "effstack:latest"
PORT = 8080
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
MEMORY_PER_PARAM_BYTES = 16  # weights, a copy inside the engine and activations: a rough request, not a limit
MIN_MEMORY_MI = 512


def _dns_name(name: str) -> str:
    """A Kubernetes object name (RFC 1123 label, at most 63 characters) from a model name."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not label:
        raise ConfigError(f"cannot make a Kubernetes name of {name!r}; give --name with letters or digits")
    return label if label[0].isalpha() else f"m-{label}"[:63]


def _memory_mi(manifest: dict[str, Any], bundle: Path) -> int:
    """A memory request: from the model's parameter count when the manifest has it, else its files."""
    size = sum(f.stat().st_size for f in bundle.iterdir() if f.is_file())
    params = (manifest.get("config") or {}).get("params") or 0
    estimate = max(int(params) * MEMORY_PER_PARAM_BYTES, 4 * size)
    return max(MIN_MEMORY_MI, -(-estimate // (1 << 20)) + 256)


def kserve_manifest(bundle: str | Path, *, image: str = DEFAULT_IMAGE, storage_uri: str | None = None,
                    name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """The ``InferenceService`` document (a dict) for ``bundle``.

    Args:
        bundle: a bundle folder (verified against its manifest).
        image: the container image with effstack installed (``pip install 'effstack[serve,onnx]'``).
        storage_uri: where the cluster finds the bundle (default ``pvc://effstack-bundles/<bundle name>``).
        name: the InferenceService's name (default: the model's, made DNS-safe).
        namespace: its namespace (default: none, i.e. the one ``kubectl apply`` uses).

    Raises:
        ArtifactError: not a bundle, or a bundle whose files do not match their hashes.
        ConfigError: a name that cannot become a Kubernetes name.
    """
    from ..ladder.bundle import read_bundle

    folder = Path(bundle).expanduser()
    manifest, config = read_bundle(folder)
    model_name = config.name or folder.name
    threads = config.threads_per_instance()
    cpu = str(threads)
    memory = f"{_memory_mi(manifest, folder)}Mi"
    serve = ["effstack", "serve", MODEL_DIR, "--name", model_name, "--host", "0.0.0.0", "--port", str(PORT),
             "--instances", "1", "--threads", str(threads)]
    probe = {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": "kserve-container",
        "image": image,
        "command": serve,
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": PORT}, "initialDelaySeconds": 5, **probe},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": PORT}, "initialDelaySeconds": 15, **probe},
        "env": [{"name": "STORAGE_URI", "value": storage_uri or f"pvc://effstack-bundles/{folder.resolve().name}"},
                {"name": "OMP_NUM_THREADS", "value": cpu}],
    }
    metadata: dict[str, Any] = {
        "name": _dns_name(name or model_name),
        "labels": {"app.kubernetes.io/name": _dns_name(model_name), "app.kubernetes.io/managed-by": "effstack"},
        "annotations": {"effstack.io/protocol-version": "v2", "effstack.io/model": model_name,
                        "effstack.io/fingerprint": str(manifest.get("fingerprint", "")),
                        "effstack.io/latency-budget-ms": str(config.latency_budget_ms or "")},
    }
    if namespace:
        metadata["namespace"] = namespace
    predictor = {"minReplicas": 1, "maxReplicas": max(1, config.instance_count()),
                 "containerConcurrency": config.queue_capacity + config.max_batch, "containers": [container]}
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}


def kserve_yaml(bundle: str | Path, **options: Any) -> str:
    """:func:`kserve_manifest` as YAML text (JSON, which YAML reads too, when PyYAML is missing)."""
    doc = kserve_manifest(bundle, **options)
    try:
        import yaml
    except ImportError:
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
