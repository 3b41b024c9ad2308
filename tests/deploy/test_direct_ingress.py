"""``effstack deploy ray --ingress direct``: each replica serves the Open Inference Protocol itself (Ray Serve's
direct ingress), on a cluster of its own (never one already running in the process)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")
tc = pytest.importorskip("tritonclient.http")

from effstack.deploy.cluster import local_ray
from effstack.deploy.ray_serve import RayServeApp
from effstack.errors import ConfigError
from effstack.serve.server import free_port

from .test_ray_serve import _reference

pytestmark = pytest.mark.timeout(180)


def test_direct_ingress_replicas_serve_http_themselves_on_loopback(tiny_bundle):
    """--ingress direct: the replica's own server answers the same protocol (tritonclient), beside the proxy."""
    first = free_port()
    with RayServeApp.start(tiny_bundle, {"threads": 1}, port=free_port(), num_cpus=2, ingress="direct",
                           direct_port=first) as app:
        (url,) = app.direct_urls()
        port = int(url.rsplit(":", 1)[1])
        assert url.startswith("http://127.0.0.1:") and first <= port < first + 64
        x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
        for base in (url, app.url):  # the replica itself, and through the proxy
            client = tc.InferenceServerClient(base.removeprefix("http://"))
            inp = tc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            out = client.infer("tiny_mlp", [inp])
            np.testing.assert_allclose(out.as_numpy("output"), _reference(x), rtol=1e-4, atol=1e-5)


def test_an_unknown_ingress_is_refused_before_ray_starts(tiny_bundle):
    with pytest.raises(ConfigError, match="--ingress must be one of proxy, direct"):
        RayServeApp.start(tiny_bundle, ingress="side-door")


def test_direct_ingress_refuses_a_cluster_already_running(tiny_bundle):
    with local_ray(num_cpus=1), pytest.raises(ConfigError, match="needs a Ray cluster of its own"):
        RayServeApp.start(tiny_bundle, ingress="direct")
