"""A bounded fuzzing run generated from the server's own OpenAPI document: no request may get a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from effstack.serve.openapi import document

schema = schemathesis.openapi.from_dict(document())
MODEL = "fuzzed"


@pytest.fixture(scope="module")
def fuzz_server(tiny_mlp_model):
    """Its own server (fuzzed load/unload calls must not disturb other tests), null engine, small limits."""
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.config import ServingConfig
    from effstack.serve.repository import ModelRepository, ModelRunner
    from effstack.serve.server import BackgroundServer

    config = ServingConfig(model="effstack.testing:tiny_mlp", name=MODEL, engine="null", max_batch=4,
                           queue_capacity=64)
    runner = ModelRunner.build(config, MODEL, model=tiny_mlp_model)
    repo = ModelRepository({}, runners={MODEL: runner})
    with BackgroundServer(create_app(repo, ServerOptions(max_request_bytes=256 * 1024))) as srv:
        yield srv


@schema.parametrize()
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_errors(case, fuzz_server):
    # aim most requests at the real model so bodies reach the parser; load/unload keep fuzzed names (404)
    if "name" in (case.path_parameters or {}) and "/repository/" not in case.path:
        case.path_parameters["name"] = MODEL
    if "version" in (case.path_parameters or {}):
        case.path_parameters["version"] = "1"
    if case.headers and case.path.endswith("/infer"):
        case.headers.pop("Inference-Header-Content-Length", None)  # else most bodies stop at the header check
    response = case.call(base_url=fuzz_server.url, timeout=10)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400 and response.status_code != 405:
        assert "error" in response.json()
