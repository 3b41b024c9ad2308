"""``effstack deploy ray``: the bundle on a local Ray Serve cluster (127.0.0.1, 2 CPUs), answered by the real
tritonclient over the Open Inference Protocol, with the structured errors of ``effstack serve``."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")
tc = pytest.importorskip("tritonclient.http")

from effstack.deploy.ray_serve import RayServeApp
from effstack.serve.server import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ray_app(tiny_bundle):
    """One Ray Serve deployment for the module: one replica of one thread on a 2-CPU loopback cluster."""
    with RayServeApp.start(tiny_bundle, {"threads": 1}, port=free_port(), num_cpus=2) as app:
        yield app


def _reference(x: np.ndarray) -> np.ndarray:
    import torch

    from effstack.models import load_model

    with torch.inference_mode():
        return load_model("effstack.testing:tiny_mlp").module(torch.from_numpy(x)).numpy()


def test_replicas_follow_the_plan_and_listen_on_loopback(ray_app):
    assert ray_app.url.startswith("http://127.0.0.1:")
    assert ray_app.plan.num_cpus == 1 and ray_app.plan.max_replicas == 1
    assert httpx.get(f"{ray_app.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{ray_app.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{ray_app.url}/v2/models/tiny_mlp").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["platform"] == "effstack_onnxruntime"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_through_ray(ray_app, binary):
    client = tc.InferenceServerClient(ray_app.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("tiny_mlp")
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = client.infer("tiny_mlp", [inp], outputs=[tc.InferRequestedOutput("output", binary_data=binary)])
    np.testing.assert_allclose(out.as_numpy("output"), _reference(x), rtol=1e-4, atol=1e-5)


def test_bad_requests_get_the_structured_4xx_of_effstack_serve(ray_app):
    url = f"{ray_app.url}/v2/models/tiny_mlp/infer"
    r = httpx.post(url, content=b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", '
                                 b'"data": [1, 2, 3]}]}')
    assert r.status_code == 400
    assert "must have shape [N, 16]" in r.json()["error"]
    r = httpx.post(url, content=b"not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.post(f"{ray_app.url}/v2/models/nope/infer", content=b"{}")
    assert r.status_code == 404 and "unknown model 'nope'" in json.loads(r.content)["error"]

