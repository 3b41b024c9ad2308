"""The server over gRPC on 127.0.0.1 beside HTTP: the real tritonclient.grpc, typed and raw tensors, status codes,
gRPC and HTTP requests batching together, auth."""

from __future__ import annotations

import asyncio
import socket
import threading

import numpy as np
import pytest

from .conftest import gated_runner, wait_until

grpc = pytest.importorskip("grpc")
tc = pytest.importorskip("tritonclient.grpc")
httpx = pytest.importorskip("httpx")

from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


def _serve(runners, **options):
    """HTTP and gRPC over one repository and one set of metrics (as ``effstack serve --grpc-port`` runs them)."""
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.grpc_server import GrpcServer
    from effstack.serve.metrics import ServerMetrics
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    repo = ModelRepository({}, runners=runners)
    metrics = ServerMetrics(repo.state)
    opts = ServerOptions(**options)
    srv = BackgroundServer(create_app(repo, opts, metrics), grpc=GrpcServer(repo, metrics, opts, port=0))
    srv.repository = repo
    return srv


@pytest.fixture(scope="module")
def mlp_server(tiny_mlp_model):
    from effstack.serve.config import ServingConfig
    from effstack.serve.repository import ModelRunner

    config = ServingConfig(model="effstack.testing:tiny_mlp", name="tiny_mlp", engine="torch", max_batch=4, threads=1)
    with _serve({"tiny_mlp": ModelRunner.build(config, "tiny_mlp", model=tiny_mlp_model)},
                max_request_bytes=64 * 1024) as srv:
        yield srv


@pytest.fixture
def serve():
    started = []

    def start(runners, **options):
        started.append(_serve(runners, **options).start())
        return started[-1]

    yield start
    for srv in started:
        srv.stop()


def _client(srv):
    return tc.InferenceServerClient(srv.grpc.address)


def _input(x, name="input", datatype="FP32"):
    inp = tc.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def _reference(model, x):
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


def test_health_metadata_config_and_index(mlp_server):
    client = _client(mlp_server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny_mlp") and client.is_model_ready("tiny_mlp", "1")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "effstack" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("tiny_mlp", as_json=True)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "16"]}]  # int64 as JSON text
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert meta["versions"] == ["1"]
    config = client.get_model_config("tiny_mlp").config
    assert config.max_batch_size == 4 and list(config.input[0].dims) == [16]
    index = client.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": "tiny_mlp", "version": "1", "state": "READY"}]
    client.close()


def test_infer_raw_matches_torch_and_http(mlp_server, tiny_mlp_model):
    client = _client(mlp_server)
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    result = client.infer("tiny_mlp", [_input(x)], outputs=[tc.InferRequestedOutput("output")], request_id="r1")
    y = result.as_numpy("output")
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, _reference(tiny_mlp_model, x), rtol=1e-5, atol=1e-6)
    assert result.get_response().id == "r1" and result.get_response().model_version == "1"
    versioned = client.infer("tiny_mlp", [_input(x)], model_version="1", priority=1, timeout=10_000_000)
    np.testing.assert_allclose(versioned.as_numpy("output"), y, rtol=1e-6)
    http = httpx.post(mlp_server.url + "/v2/models/tiny_mlp/infer", json={"inputs": [
        {"name": "input", "shape": [3, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}).json()
    np.testing.assert_allclose(np.array(http["outputs"][0]["data"]).reshape(3, 4), y, rtol=1e-6)
    client.close()


def _typed_request(values, shape=(1, 16), datatype="FP32", field="fp32_contents"):
    request = pb.ModelInferRequest(model_name="tiny_mlp", id="typed")
    t = request.inputs.add(name="input", datatype=datatype, shape=list(shape))
    getattr(t.contents, field).extend(values)
    return request


def test_infer_typed_contents(mlp_server, tiny_mlp_model):
    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 32
    with grpc.insecure_channel(mlp_server.grpc.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(_typed_request(x.ravel().tolist(), shape=(2, 16)), timeout=10)
        assert response.id == "typed" and [o.name for o in response.outputs] == ["output"]
        assert list(response.outputs[0].shape) == [2, 4] and response.outputs[0].datatype == "FP32"
        y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 4)
        np.testing.assert_allclose(y, _reference(tiny_mlp_model, x), rtol=1e-5, atol=1e-6)
        for request, match in [
            (_typed_request([0] * 16, field="int_contents"), "takes its values in contents.fp32_contents"),
            (_typed_request([0.5] * 15), "needs 16 values, contents.fp32_contents has 15"),
            (pb.ModelInferRequest(model_name="tiny_mlp", inputs=[pb.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=[1, 16])]), "has no values"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in info.value.details()


@pytest.mark.parametrize("case, code, match", [
    ("unknown model", "NOT_FOUND", "unknown model 'nope'"),
    ("unknown version", "NOT_FOUND", "no version '7'"),
    ("wrong shape", "INVALID_ARGUMENT", "must have shape [N, 16]"),
    ("wrong datatype", "INVALID_ARGUMENT", "must have datatype FP32, got 'FP64'"),
    ("unknown input", "INVALID_ARGUMENT", "unknown input 'x'"),
    ("too many samples", "INVALID_ARGUMENT", "1..4 samples"),
    ("unknown output", "INVALID_ARGUMENT", "unknown output 'nope'"),
    ("bad timeout", "INVALID_ARGUMENT", "timeout"),
])
def test_client_mistakes_get_status_codes_and_the_server_keeps_serving(mlp_server, case, code, match):
    client = _client(mlp_server)
    ok = np.zeros((1, 16), np.float32)
    call = {
        "unknown model": lambda: client.infer("nope", [_input(ok)]),
        "unknown version": lambda: client.get_model_metadata("tiny_mlp", "7"),
        "wrong shape": lambda: client.infer("tiny_mlp", [_input(np.zeros((1, 8), np.float32))]),
        "wrong datatype": lambda: client.infer("tiny_mlp", [_input(np.zeros((1, 16)), datatype="FP64")]),
        "unknown input": lambda: client.infer("tiny_mlp", [_input(ok, name="x")]),
        "too many samples": lambda: client.infer("tiny_mlp", [_input(np.zeros((5, 16), np.float32))]),
        "unknown output": lambda: client.infer("tiny_mlp", [_input(ok)], outputs=[tc.InferRequestedOutput("nope")]),
        "bad timeout": lambda: client.infer("tiny_mlp", [_input(ok)], timeout=-5),
    }[case]
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == f"StatusCode.{code}" and match in info.value.message()
    assert "\n" not in info.value.message()
    assert client.infer("tiny_mlp", [_input(ok)]).as_numpy("output").shape == (1, 4)
    client.close()


def test_raw_contents_must_fit_and_oversized_messages_are_refused(mlp_server):
    request = pb.ModelInferRequest(model_name="tiny_mlp")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 16])
    with grpc.insecure_channel(mlp_server.grpc.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for raw, match in [([b"\0" * 60], "needs 64 bytes, raw_input_contents[0] has 60"),
                           ([b"\0" * 64, b"\0" * 64], "2 entries for 1 inputs")]:
            del request.raw_input_contents[:]
            request.raw_input_contents.extend(raw)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in info.value.details()
        del request.raw_input_contents[:]
        request.raw_input_contents.append(b"\0" * (65 * 1024))  # over the 64 KiB limit the server was given
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _metric(srv, name, **labels):
    """The value of metric ``name`` whose labels include ``labels`` (0 when absent)."""
    for line in httpx.get(srv.url + "/metrics").text.splitlines():
        key, _, value = line.rpartition(" ")
        if key.startswith(name + "{") and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return float(value)
    return 0.0


def test_concurrent_grpc_and_http_requests_batch_together(serve, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=8)
    srv = serve({"gated": runner})
    url = srv.url + "/v2/models/gated/infer"
    gate.gate.clear()
    results: dict[int, np.ndarray] = {}

    def http(i):
        doc = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [float(i)] * 16}]}
        results[i] = np.array(httpx.post(url, json=doc, timeout=30).json()["outputs"][0]["data"])

    def grpc_call(i):
        return _infer_in_thread(srv, "gated", np.full((1, 16), i, np.float32), results, i)

    threads = [grpc_call(0)]
    threads[0].start()
    wait_until(lambda: gate.running == 1, "the first batch to start")
    threads += [grpc_call(1), threading.Thread(target=http, args=(2,)), grpc_call(3),
                threading.Thread(target=http, args=(4,)), grpc_call(5)]
    for t in threads[1:]:
        t.start()
    wait_until(lambda: runner.batcher.queue.samples == 5, "five requests to queue")
    gate.gate.set()
    for t in threads:
        t.join(30)
    assert gate.batches == [1, 5]  # three gRPC and two HTTP requests in one batch
    assert {i: r.tolist() for i, r in results.items()} == {i: [2.0 * i] for i in range(6)}
    assert _metric(srv, "effstack_inference_request_success_total", model="gated") == 6  # both transports, one registry
    assert _metric(srv, "effstack_inference_exec_count_total", model="gated") == 2


def _infer_in_thread(srv, model, x, results, i):
    """A thread (not started) whose gRPC request's output lands in ``results[i]``."""

    def go():
        client = _client(srv)
        results[i] = client.infer(model, [_input(x)]).as_numpy("output").ravel()
        client.close()

    return threading.Thread(target=go)


def test_overload_is_unavailable_and_timeouts_deadline_exceeded(serve, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=1, queue_capacity=2)
    srv = serve({"gated": runner})
    client = _client(srv)
    x = np.zeros((1, 16), np.float32)
    gate.gate.clear()
    results: dict[int, np.ndarray] = {}
    threads = [_infer_in_thread(srv, "gated", x, results, i) for i in range(3)]
    threads[0].start()
    wait_until(lambda: gate.running == 1, "the first batch to start")
    for t in threads[1:]:
        t.start()
    wait_until(lambda: runner.batcher.queue.samples == 2, "the queue to fill")
    with pytest.raises(InferenceServerException) as info:
        client.infer("gated", [_input(x)])
    assert info.value.status() == "StatusCode.UNAVAILABLE" and "overloaded" in info.value.message()
    request = pb.ModelInferRequest(model_name="gated", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 16])
    with grpc.insecure_channel(srv.grpc.address) as channel, pytest.raises(grpc.RpcError) as raw:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
    assert int(dict(raw.value.trailing_metadata())["retry-after"]) >= 1
    gate.gate.set()
    for t in threads:
        t.join(30)
    gate.gate.clear()
    gate.batches.clear()
    first = _infer_in_thread(srv, "gated", x, results, 3)
    first.start()
    wait_until(lambda: gate.running == 1, "a batch to start")
    with pytest.raises(InferenceServerException) as info:
        client.infer("gated", [_input(x)], timeout=1000)  # microseconds, as the protocol's parameter
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED" and "timeout" in info.value.message()
    gate.gate.set()
    first.join(30)
    assert gate.batches == [1]  # the late request was never computed
    assert _metric(srv, "effstack_inference_request_failure_total", model="gated", reason="overload") == 2
    assert _metric(srv, "effstack_inference_request_failure_total", model="gated", reason="timeout") == 1
    assert sorted(results) == [0, 1, 2, 3]  # every admitted request was answered
    client.close()


def test_a_client_deadline_cancels_the_queued_request(serve, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=1)
    srv = serve({"gated": runner})
    x = np.zeros((1, 16), np.float32)
    gate.gate.clear()
    results: dict[int, np.ndarray] = {}
    first = _infer_in_thread(srv, "gated", x, results, 0)
    first.start()
    wait_until(lambda: gate.running == 1, "the first batch to start")
    client = _client(srv)
    with pytest.raises(InferenceServerException) as info:  # the gRPC deadline, not the protocol's timeout
        client.infer("gated", [_input(x)], client_timeout=0.2)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    wait_until(lambda: runner.batcher.queue.samples == 0, "the abandoned request to leave the queue")
    gate.gate.set()
    first.join(30)
    assert gate.batches == [1] and sorted(results) == [0]  # it was never computed
    assert client.infer("gated", [_input(x)]).as_numpy("output").shape == (1, 1)
    client.close()


def test_bearer_token_in_metadata(serve, tiny_mlp_model):
    runner, _ = gated_runner(tiny_mlp_model)
    srv = serve({"gated": runner}, token="s3cret")
    client = _client(srv)
    assert client.is_server_live() and client.is_server_ready()  # probes need no token
    x = np.zeros((1, 16), np.float32)
    for headers in (None, {"authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as info:
            client.infer("gated", [_input(x)], headers=headers)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in info.value.message()
    ok = {"authorization": "Bearer s3cret"}
    assert client.get_model_metadata("gated", headers=ok).name == "gated"
    assert client.infer("gated", [_input(x)], headers=ok).as_numpy("output").shape == (1, 1)
    assert httpx.get(srv.url + "/v2/models/gated", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    client.close()


def test_a_taken_grpc_port_is_a_config_error(tiny_mlp_model):
    from effstack.errors import ConfigError
    from effstack.serve.app import ServerOptions
    from effstack.serve.grpc_server import GrpcServer
    from effstack.serve.metrics import ServerMetrics
    from effstack.serve.repository import ModelRepository

    repo = ModelRepository({})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = GrpcServer(repo, ServerMetrics(), ServerOptions(), port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match="pick another --grpc-port"):
            asyncio.run(server.start())
    with pytest.raises(ConfigError, match="0..65535"):
        GrpcServer(repo, ServerMetrics(), ServerOptions(), port=70000)


def test_serve_command_takes_grpc_port():
    from effstack.cli.main import build_parser

    args = build_parser().parse_args(["serve", "effstack.testing:tiny_mlp", "--grpc-port", "8001"])
    assert args.grpc_port == 8001
    assert build_parser().parse_args(["serve", "effstack.testing:tiny_mlp"]).grpc_port is None


def _parse_grpc(request, meta):
    """A ModelInferRequest through the same parser HTTP uses, against a one-input model ``meta``."""
    from effstack.serve.grpc_server import as_http_body
    from effstack.serve.protocol import TensorMeta, parse_infer_request

    body, n = as_http_body(request)
    return parse_infer_request(body, n, [meta], [TensorMeta("output", "FP32", [-1, 1])], 4)


@pytest.mark.parametrize("datatype, field, values, expected", [
    ("INT8", "int_contents", [-128, 127], np.array([[-128, 127]], np.int8)),
    ("UINT64", "uint64_contents", [2**64 - 1, 0], np.array([[2**64 - 1, 0]], np.uint64)),
    ("BOOL", "bool_contents", [True, False], np.array([[True, False]])),
    ("FP64", "fp64_contents", [0.5, 1e300], np.array([[0.5, 1e300]])),
    ("BYTES", "bytes_contents", [b"a", b"\xffbc"], np.array([[b"a", b"\xffbc"]], dtype=object)),
])
def test_typed_contents_of_every_kind_parse_like_http(datatype, field, values, expected):
    from effstack.serve.protocol import TensorMeta

    request = pb.ModelInferRequest(model_name="m", id="7")
    request.parameters["priority"].uint64_param = 2
    request.parameters["timeout"].int64_param = 5000
    t = request.inputs.add(name="x", datatype=datatype, shape=[1, 2])
    getattr(t.contents, field).extend(values)
    request.outputs.add(name="output")
    req = _parse_grpc(request, TensorMeta("x", datatype, [-1, 2]))
    assert req.inputs["x"].dtype == expected.dtype and req.inputs["x"].tolist() == expected.tolist()
    assert (req.id, req.priority, req.timeout_s, req.outputs) == ("7", 2, 0.005, [("output", False)])


def test_contents_that_do_not_fit_are_protocol_errors():
    from effstack.serve.errors import ProtocolError
    from effstack.serve.protocol import TensorMeta

    def request(datatype, field=None, values=(), raw=()):
        r = pb.ModelInferRequest(model_name="m", raw_input_contents=list(raw))
        t = r.inputs.add(name="x", datatype=datatype, shape=[1, 2])
        if field:
            getattr(t.contents, field).extend(values)
        return r

    fp16 = TensorMeta("x", "FP16", [-1, 2])
    half = np.array([[1.5, -2]], np.float16)
    assert _parse_grpc(request("FP16", raw=[half.tobytes()]), fp16).inputs["x"].tolist() == half.tolist()
    for r, meta, match in [
        (request("INT8", "int_contents", [128, 0]), TensorMeta("x", "INT8", [-1, 2]), "outside the range of INT8"),
        (request("FP16", "fp32_contents", [1, 2]), fp16, "no typed contents; send it in raw_input_contents"),
        (request("FP32", "fp32_contents", [1, 2], raw=[b"\0" * 8]), TensorMeta("x", "FP32", [-1, 2]),
         "both contents and raw_input_contents"),
        (request("FP9", "fp32_contents", [1, 2]), TensorMeta("x", "FP32", [-1, 2]), "must have datatype FP32"),
    ]:
        with pytest.raises(ProtocolError, match=match):
            _parse_grpc(r, meta)


def test_module_examples():
    import doctest

    from effstack.serve import grpc_server

    assert doctest.testmod(grpc_server).failed == 0
