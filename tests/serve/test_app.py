"""The server over HTTP on 127.0.0.1: the real tritonclient (JSON and binary), errors, batching, overload, metrics."""

from __future__ import annotations

import gzip
import json
import threading

import numpy as np
import pytest

from .conftest import gated_runner, wait_until

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def mlp_server(tiny_mlp_model):
    """tiny_mlp on the torch engine (real numbers to compare), max batch 4, 4 KiB... no: 64 KiB request limit."""
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.config import ServingConfig
    from effstack.serve.repository import ModelRepository, ModelRunner
    from effstack.serve.server import BackgroundServer

    config = ServingConfig(model="effstack.testing:tiny_mlp", name="tiny_mlp", engine="torch", max_batch=4, threads=1)
    runner = ModelRunner.build(config, "tiny_mlp", model=tiny_mlp_model)
    repo = ModelRepository({}, runners={"tiny_mlp": runner})
    with BackgroundServer(create_app(repo, ServerOptions(max_request_bytes=64 * 1024))) as srv:
        srv.repository = repo
        yield srv


def _reference(model, x):
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infers(mlp_server, tiny_mlp_model, binary):
    import tritonclient.http as tc

    client = tc.InferenceServerClient(mlp_server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny_mlp")
    meta = client.get_model_metadata("tiny_mlp")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get_model_config("tiny_mlp")["max_batch_size"] == 4
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("tiny_mlp", [inp], outputs=[tc.InferRequestedOutput("output", binary_data=binary)],
                          request_id="r1")
    np.testing.assert_allclose(result.as_numpy("output"), _reference(tiny_mlp_model, x), rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r1"
    versioned = client.infer("tiny_mlp", [inp], model_version="1")  # no outputs named: binary outputs
    np.testing.assert_allclose(versioned.as_numpy("output"), result.as_numpy("output"), rtol=1e-6)


def test_tritonclient_sees_errors_as_exceptions(mlp_server):
    import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(mlp_server.url.removeprefix("http://"))
    inp = tc.InferInput("input", [1, 15], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 15), np.float32))
    with pytest.raises(InferenceServerException, match="shape") as info:
        client.infer("tiny_mlp", [inp])
    assert info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model") as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404"


def _infer_doc(shape=(1, 16), datatype="FP32", data=None, name="input"):
    n = int(np.prod(shape))
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype,
                        "data": data if data is not None else [0.5] * n}]}


def _binary(x):
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize("case, status, match", [
    ("unknown model", 404, "unknown model 'nope'"),
    ("unknown version", 404, "no version '7'"),
    ("wrong shape", 400, "shape"),
    ("wrong datatype", 400, "datatype FP32"),
    ("too many samples", 400, "1..4 samples"),
    ("truncated binary", 400, "truncated"),
    ("bad header length", 400, "Inference-Header-Content-Length"),
    ("invalid json", 400, "not valid JSON"),
    ("not an object", 400, "JSON object"),
    ("oversized body", 413, "limit"),
    ("bad gzip", 400, "corrupt"),
    ("unknown route", 404, "no endpoint"),
    ("wrong method", 405, "not allowed"),
])
def test_client_mistakes_get_4xx_with_a_structured_body(mlp_server, case, status, match):
    url = mlp_server.url + "/v2/models/tiny_mlp/infer"
    x = np.zeros((1, 16), np.float32)
    body, headers = _binary(x)
    call = {
        "unknown model": lambda: httpx.post(mlp_server.url + "/v2/models/nope/infer", json=_infer_doc()),
        "unknown version": lambda: httpx.post(mlp_server.url + "/v2/models/tiny_mlp/versions/7/infer",
                                              json=_infer_doc()),
        "wrong shape": lambda: httpx.post(url, json=_infer_doc(shape=(1, 8))),
        "wrong datatype": lambda: httpx.post(url, json=_infer_doc(datatype="FP64")),
        "too many samples": lambda: httpx.post(url, json=_infer_doc(shape=(5, 16))),
        "truncated binary": lambda: httpx.post(url, content=body[:-10], headers=headers),
        "bad header length": lambda: httpx.post(url, content=body, headers={"Inference-Header-Content-Length": "x"}),
        "invalid json": lambda: httpx.post(url, content=b'{"inputs": [', headers={"Content-Type": "application/json"}),
        "not an object": lambda: httpx.post(url, json=[1, 2, 3]),
        "oversized body": lambda: httpx.post(url, content=b" " * (65 * 1024)),
        "bad gzip": lambda: httpx.post(url, content=b"not gzip", headers={"Content-Encoding": "gzip"}),
        "unknown route": lambda: httpx.get(mlp_server.url + "/v3/whatever"),
        "wrong method": lambda: httpx.get(url),
    }[case]
    r = call()
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert match in r.json()["error"]


def test_gzip_body_and_oversized_after_decompression(mlp_server):
    url = mlp_server.url + "/v2/models/tiny_mlp/infer"
    r = httpx.post(url, content=gzip.compress(json.dumps(_infer_doc()).encode()), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 4]
    bomb = gzip.compress(b" " * (1024 * 1024))  # 1 MiB of spaces: small compressed, over the limit inflated
    r = httpx.post(url, content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413


def test_server_and_repository_endpoints(mlp_server):
    base = mlp_server.url
    assert httpx.get(base + "/v2").json()["extensions"] == ["binary_tensor_data", "model_repository"]
    assert httpx.get(base + "/v2/health/live").json() == {"live": True}
    assert httpx.get(base + "/v2/models/tiny_mlp/versions/1/ready").json() == {"ready": True}
    assert httpx.post(base + "/v2/repository/index").json() == [
        {"name": "tiny_mlp", "version": "1", "state": "READY", "reason": ""}]
    doc = httpx.get(base + "/openapi.json").json()
    assert "/v2/models/{name}/infer" in doc["paths"]


def test_metrics_count_requests_batches_and_failures(mlp_server):
    base = mlp_server.url
    for _ in range(3):
        assert httpx.post(base + "/v2/models/tiny_mlp/infer", json=_infer_doc(shape=(2, 16))).status_code == 200
    httpx.post(base + "/v2/models/tiny_mlp/infer", json=_infer_doc(shape=(1, 3)))
    text = httpx.get(base + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("effstack_") and 'model="tiny_mlp"' in line:
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    assert values['effstack_inference_request_success_total{model="tiny_mlp",version="1"}'] >= 3
    assert values['effstack_inference_request_failure_total{model="tiny_mlp",reason="invalid",version="1"}'] >= 1
    samples = values['effstack_inference_count_total{model="tiny_mlp",version="1"}']
    batches = values['effstack_inference_exec_count_total{model="tiny_mlp",version="1"}']
    assert samples >= 6 and 1 <= samples / batches <= 4  # the average batch size, the Triton way
    for name in ("effstack_queue_duration_seconds_count", "effstack_compute_duration_seconds_count",
                 "effstack_batch_size_count", "effstack_request_duration_seconds_count",
                 "effstack_queue_samples", "effstack_model_ready"):
        assert any(k.startswith(name) for k in values), name
    assert values['effstack_queue_limit_samples{model="tiny_mlp",version="1"}'] >= 1
    assert values['effstack_compute_pace{model="tiny_mlp",version="1"}'] > 0


def test_each_inference_reports_its_stages_in_server_timing_and_metrics(mlp_server, server_factory, tiny_mlp_model):
    from effstack.serve.metrics import STAGES

    base = mlp_server.url
    x = np.zeros((2, 16), np.float32)
    body, headers = _binary(x)
    r = httpx.post(base + "/v2/models/tiny_mlp/infer", content=body, headers=headers)
    assert r.status_code == 200
    timing = {}
    for part in r.headers["Server-Timing"].split(","):
        name, _, dur = part.strip().partition(";dur=")
        timing[name] = float(dur)
    assert list(timing) == list(STAGES) and all(v >= 0 for v in timing.values())
    assert timing["compute"] > 0 and sum(v for k, v in timing.items() if k != "total") <= timing["total"] + 0.01
    text = httpx.get(base + "/metrics").text
    for stage in STAGES[:-1]:  # the total is effstack_request_duration_seconds
        assert f'effstack_request_stage_duration_seconds_count{{model="tiny_mlp",stage="{stage}",version="1"}}' in text
    assert 'stage="total"' not in text
    assert "Server-Timing" not in httpx.post(base + "/v2/models/tiny_mlp/infer", json=_infer_doc(shape=(1, 3))).headers
    runner, _ = gated_runner(tiny_mlp_model)
    quiet = server_factory(runners={"gated": runner}, server_timing=False)
    r = httpx.post(quiet.url + "/v2/models/gated/infer", json=_infer_doc())
    assert r.status_code == 200 and "Server-Timing" not in r.headers


def _post_in_thread(url, doc, results, i):
    def go():
        results[i] = httpx.post(url, json=doc, timeout=30)

    t = threading.Thread(target=go)
    t.start()
    return t


def test_concurrent_http_requests_form_batches(server_factory, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=8)
    srv = server_factory(runners={"gated": runner})
    url = srv.url + "/v2/models/gated/infer"
    gate.gate.clear()
    results: dict[int, httpx.Response] = {}
    threads = [_post_in_thread(url, _infer_doc(data=[0.0] * 16), results, 0)]
    wait_until(lambda: gate.running == 1, "the first batch to start")
    threads += [_post_in_thread(url, _infer_doc(data=[float(i)] * 16), results, i) for i in range(1, 6)]
    wait_until(lambda: runner.batcher.queue.samples == 5, "five requests to queue")
    gate.gate.set()
    for t in threads:
        t.join()
    assert gate.batches == [1, 5]
    for i, r in results.items():
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0 * i]


def test_overload_gets_503_with_retry_after_and_timeouts_504(server_factory, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=1, queue_capacity=2)
    srv = server_factory(runners={"gated": runner})
    url = srv.url + "/v2/models/gated/infer"
    gate.gate.clear()
    results: dict[int, httpx.Response] = {}
    threads = [_post_in_thread(url, _infer_doc(), results, 0)]
    wait_until(lambda: gate.running == 1, "the first batch to start")
    threads += [_post_in_thread(url, _infer_doc(), results, i) for i in (1, 2)]
    wait_until(lambda: runner.batcher.queue.samples == 2, "the queue to fill")
    r = httpx.post(url, json=_infer_doc())
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and "overloaded" in r.json()["error"]
    gate.gate.set()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results.values())
    # a request whose timeout passes while it waits: 504, and it is never computed
    gate.gate.clear()
    gate.batches.clear()
    t = _post_in_thread(url, _infer_doc(), results, 9)
    wait_until(lambda: gate.running == 1, "a batch to start")
    late = httpx.post(url, json={**_infer_doc(), "parameters": {"timeout": 1000}})
    assert late.status_code == 504 and "timeout" in late.json()["error"]
    gate.gate.set()
    t.join()
    assert gate.batches == [1]


def test_unload_finishes_in_flight_requests_then_load_serves_again(server_factory, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=2)
    srv = server_factory(runners={"gated": runner})
    url = srv.url + "/v2/models/gated/infer"
    gate.gate.clear()
    results: dict[int, httpx.Response] = {}
    threads = [_post_in_thread(url, _infer_doc(data=[1.0] * 16), results, 0)]
    wait_until(lambda: gate.running == 1, "the first batch to start")
    threads.append(_post_in_thread(url, _infer_doc(data=[2.0] * 16), results, 1))
    wait_until(lambda: runner.batcher.queue.samples == 1, "the second request to queue")
    unloaded: dict[int, httpx.Response] = {}
    unloader = threading.Thread(target=lambda: unloaded.setdefault(0, httpx.post(
        srv.url + "/v2/repository/models/gated/unload", timeout=30)))
    unloader.start()
    wait_until(lambda: srv.repository.index()[0]["state"] == "UNLOADING", "the unload to begin")
    refused = httpx.post(url, json=_infer_doc())
    assert refused.status_code in (404, 503)
    gate.gate.set()
    for t in [*threads, unloader]:
        t.join()
    assert [results[i].json()["outputs"][0]["data"] for i in (0, 1)] == [[2.0], [4.0]]  # none dropped
    assert unloaded[0].status_code == 200
    assert httpx.get(srv.url + "/v2/models/gated/ready").status_code == 503
    assert httpx.post(url, json=_infer_doc()).status_code == 404
    # load builds it again from its config (the null engine this time) with a new max batch
    r = httpx.post(srv.url + "/v2/repository/models/gated/load", timeout=60,
                   json={"parameters": {"config": json.dumps({"max_batch": 3})}})
    assert r.status_code == 200, r.text
    assert httpx.get(srv.url + "/v2/models/gated/config").json()["max_batch_size"] == 3
    assert httpx.post(url, json=_infer_doc(shape=(3, 16))).status_code == 200
    r = httpx.post(srv.url + "/v2/repository/models/gated/load",
                   json={"parameters": {"config": json.dumps({"model": "/etc/passwd"})}})
    assert r.status_code == 400 and "may change only" in r.json()["error"]


def test_bearer_token(server_factory, tiny_mlp_model):
    runner, _ = gated_runner(tiny_mlp_model)
    srv = server_factory(runners={"gated": runner}, token="s3cret")
    assert httpx.get(srv.url + "/v2/health/ready").status_code == 200  # probes need no token
    r = httpx.get(srv.url + "/v2/models/gated")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "Bearer" in r.json()["error"]
    assert httpx.get(srv.url + "/v2/models/gated", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(srv.url + "/v2/models/gated", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_binds_localhost_by_default():
    from effstack.serve.app import ServerOptions

    assert ServerOptions().host == "127.0.0.1"


def _request(chunks, headers):
    from starlette.requests import Request

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(k.encode(), v.encode()) for k, v in headers]}
    return Request(scope, receive)


def test_binary_bodies_are_read_once_into_a_buffer_that_aligns_the_tensors():
    import asyncio

    import numpy as np

    from effstack.serve.app import ALIGN_BYTES, read_body
    from effstack.serve.errors import ProtocolError

    head, tensor = b'{"inputs": []}', np.arange(1000, dtype=np.float32).tobytes()
    body = head + tensor
    chunks = [body[i : i + 999] for i in range(0, len(body), 999)]
    got = asyncio.run(read_body(_request(chunks, [("content-length", str(len(body)))]), 1 << 20, align_at=len(head)))
    assert bytes(got) == body
    x = np.frombuffer(got[len(head):], np.float32)
    assert x.ctypes.data % ALIGN_BYTES == 0 and x[999] == 999  # used where it lies: no copy to align it
    plain = asyncio.run(read_body(_request(chunks, [("content-length", str(len(body)))]), 1 << 20))
    assert isinstance(plain, bytearray) and plain == body  # JSON bodies: as before
    for declared in (len(body) - 1, len(body) + 1):  # a body that disagrees with its Content-Length
        with pytest.raises(ProtocolError, match="Content-Length"):
            asyncio.run(read_body(_request(chunks, [("content-length", str(declared))]), 1 << 20, align_at=len(head)))
