"""Serving a text model: BYTES texts in, embeddings out, batches grouped by length, padding counted."""

from __future__ import annotations

import json
import shutil
import struct
import threading

import numpy as np
import pytest

from .conftest import wait_until

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")

from effstack.errors import ConfigError  # noqa: E402
from effstack.models import load_model  # noqa: E402
from effstack.serve.batcher import BatchingPolicy, Pending, decide  # noqa: E402
from effstack.serve.config import ServingConfig  # noqa: E402
from effstack.serve.text import default_buckets, resolve_buckets  # noqa: E402
from effstack.serve.workers import pad_collate  # noqa: E402
from effstack.testing.text import tiny_text_folder  # noqa: E402
from effstack.text.tokenize import TextTokenizer  # noqa: E402

SHORT, MEDIUM = "cat", "the quick brown fox jumps over the lazy dog"  # 3 and 11 tokens with [CLS] [SEP]
LONG = " ".join(["the red car runs on the road"] * 3)  # 21 words: 23 tokens, past the first bucket (16)
TOO_LONG = " ".join(["the quick brown fox"] * 20)  # 80 words: past max_length (32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tiny_text_folder(tmp_path_factory.mktemp("tiny_text"))
    return load_model(str(folder))


def _reference(model, texts):
    """Each text embedded alone by the PyTorch module (no padding at all)."""
    tok = TextTokenizer.from_model(model)
    with torch.inference_mode():
        return np.concatenate([model.module(torch.from_numpy(tok.encode([t]))).numpy() for t in texts])


def _runner(model, name="tiny", sessions=None, **settings):
    from effstack.serve.repository import ModelRunner

    settings = {"engine": "onnxruntime", "max_batch": 8, "threads": 1, **settings}
    config = ServingConfig(model=model.meta["text"]["folder"], name=name, **settings)
    return ModelRunner.build(config, name, sessions=sessions, model=model)


@pytest.fixture(scope="module")
def text_server(tiny):
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    repo = ModelRepository({}, runners={"tiny": _runner(tiny)})
    with BackgroundServer(create_app(repo, ServerOptions(max_request_bytes=64 * 1024))) as srv:
        yield srv


def _doc(data, shape=None, datatype="BYTES", name="text"):
    return {"inputs": [{"name": name, "datatype": datatype, "data": data,
                        "shape": shape if shape is not None else [len(data)]}]}


def _post(srv, doc, model="tiny"):
    return httpx.post(f"{srv.url}/v2/models/{model}/infer", json=doc, timeout=30)


def _embeddings(response):
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["name"] == "embedding" and out["datatype"] == "FP32"
    return np.array(out["data"], np.float32).reshape(out["shape"])


def _metric(srv, name, **labels):
    text = httpx.get(srv.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


# --- the protocol ----------------------------------------------------------------------------------------


def test_metadata_shows_a_bytes_input_and_an_embedding_output(text_server):
    meta = httpx.get(text_server.url + "/v2/models/tiny").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 32]}]
    config = httpx.get(text_server.url + "/v2/models/tiny/config").json()
    effstack = json.loads(config["parameters"]["effstack"]["string_value"])
    assert effstack["text"]["length_buckets"] == [16, 32] and effstack["text"]["max_length"] == 32


@pytest.mark.parametrize("shape", ["flat", "column"])
def test_texts_in_embeddings_out_as_pytorch_gives_them(text_server, tiny, shape):
    texts = [SHORT, LONG, MEDIUM, ""]
    dims = [len(texts)] if shape == "flat" else [len(texts), 1]
    data = texts if shape == "flat" else [[t] for t in texts]
    y = _embeddings(_post(text_server, _doc(data, dims)))
    assert y.shape == (4, 32)
    np.testing.assert_allclose(y, _reference(tiny, texts), atol=1e-4)
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_sends_bytes(text_server, tiny, binary):
    import tritonclient.http as tc

    client = tc.InferenceServerClient(text_server.url.removeprefix("http://"))
    texts = np.array([[MEDIUM.encode()], ["naïve café".encode()], [SHORT.encode()]], dtype=object)
    inp = tc.InferInput("text", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts, binary_data=binary)
    result = client.infer("tiny", [inp], outputs=[tc.InferRequestedOutput("embedding", binary_data=binary)])
    expected = _reference(tiny, [MEDIUM, "naïve café", SHORT])
    np.testing.assert_allclose(result.as_numpy("embedding"), expected, atol=1e-4)


def test_long_texts_are_truncated_silently_and_counted(text_server, tiny):
    before = _metric(text_server, "effstack_texts_truncated_total", model="tiny")
    y = _embeddings(_post(text_server, _doc([TOO_LONG, SHORT])))
    tok = TextTokenizer.from_model(tiny)
    ids = tok.encode([TOO_LONG])
    assert ids.shape == (1, 32)  # cut at max_length, as sentence-transformers cuts at max_seq_length
    with torch.inference_mode():
        expected = tiny.module(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(y[:1], expected, atol=1e-4)
    assert _metric(text_server, "effstack_texts_truncated_total", model="tiny") == before + 1


def _binary_request(elements: list[bytes], shape, declared: int | None = None):
    blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    head = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape,
                                   "parameters": {"binary_data_size": declared or len(blob)}}]}).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


BAD_JSON = {
    "non-string element": (_doc([SHORT, 7]), "BYTES values"),
    "nested non-string": (_doc([[SHORT], [None]], [2, 1]), "BYTES values"),
    "empty list": (_doc([], [0]), "1..8 samples"),
    "data shorter than shape": (_doc([], [1]), "needs 1 values"),
    "wrong datatype": (_doc([1.0, 2.0], datatype="FP32"), "datatype BYTES"),
    "wrong shape": (_doc([SHORT] * 4, [2, 2]), "must have shape"),
    "too many texts": (_doc([SHORT] * 9), "1..8 samples"),
    "wrong input name": (_doc([SHORT], name="input_ids"), "unknown input"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_requests_are_400_and_the_server_keeps_serving(text_server, tiny, case):
    doc, match = BAD_JSON[case]
    r = _post(text_server, doc)
    assert r.status_code == 400, r.text
    assert match in r.json()["error"]
    np.testing.assert_allclose(_embeddings(_post(text_server, _doc([SHORT]))), _reference(tiny, [SHORT]), atol=1e-4)


@pytest.mark.parametrize("case", ["invalid utf-8", "truncated element", "count off"])
def test_bad_binary_texts_are_400_and_the_server_keeps_serving(text_server, tiny, case):
    if case == "invalid utf-8":
        body, headers = _binary_request([SHORT.encode(), b"\xff\xfe bad"], [2])
        match = "not valid UTF-8"
    elif case == "truncated element":
        body, headers = _binary_request([b"cat"], [1])
        head_len = int(headers["Inference-Header-Content-Length"])
        body = body[:head_len] + struct.pack("<I", 20) + b"cat"  # says 20 bytes, carries 3
        match = "truncated inside an element"
    else:
        body, headers = _binary_request([SHORT.encode(), SHORT.encode()], [1])
        match = "has 2 elements"
    r = httpx.post(f"{text_server.url}/v2/models/tiny/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert match in r.json()["error"]
    np.testing.assert_allclose(_embeddings(_post(text_server, _doc([SHORT]))), _reference(tiny, [SHORT]), atol=1e-4)


# --- length grouping and padding, end to end -------------------------------------------------------------


class GatedSession:
    """A real engine session that holds each batch until the test opens the gate; records batch shapes."""

    def __init__(self, inner):
        self.inner = inner
        self.engine = inner.engine
        self.gate = threading.Event()
        self.gate.set()
        self.shapes: list[tuple[int, ...]] = []
        self.running = 0

    def run(self, x):
        self.shapes.append(tuple(x.shape))
        self.running += 1
        try:
            assert self.gate.wait(10), "the test never opened the gate"
            return self.inner.run(x)
        finally:
            self.running -= 1

    def settings(self):
        return self.inner.settings()

    def close(self):
        self.gate.set()
        self.inner.close()


@pytest.mark.parametrize("buckets", ["auto", "off"])
def test_batches_group_by_length_and_metrics_count_padding(tiny, server_factory, buckets):
    from effstack.engines import SessionOptions, get_engine

    session = GatedSession(get_engine("onnxruntime").load(tiny, SessionOptions(threads=1, batch=8)))
    runner = _runner(tiny, sessions=[session], length_buckets=buckets, inline_below_ms=0)
    session.shapes.clear()
    srv = server_factory(runners={"tiny": runner})
    session.gate.clear()
    results: dict[str, np.ndarray] = {}

    def send(text):
        results[text] = _embeddings(_post(srv, _doc([text])))

    first = threading.Thread(target=send, args=("dog",))
    first.start()
    wait_until(lambda: session.running == 1, "the first batch to start")
    later = [threading.Thread(target=send, args=(t,)) for t in (SHORT, LONG, MEDIUM)]
    for t in later:
        t.start()
    wait_until(lambda: runner.batcher.queue.samples == 3, "three requests to queue behind it")
    session.gate.set()
    for t in [first, *later]:
        t.join(30)
    assert set(results) == {"dog", SHORT, LONG, MEDIUM}
    for text, y in results.items():
        np.testing.assert_allclose(y, _reference(tiny, [text]), atol=1e-4)
    real = 3 + 3 + 23 + 11
    if buckets == "auto":  # SHORT and MEDIUM (bucket 16) together, LONG (bucket 32) alone
        assert session.shapes[0] == (1, 3) and sorted(session.shapes[1:]) == [(1, 23), (2, 11)]
        padded = 11 - 3
    else:  # one FIFO batch padded to LONG
        assert session.shapes == [(1, 3), (3, 23)]
        padded = 3 * 23 - (3 + 23 + 11)
    wait_until(lambda: _metric(srv, "effstack_tokens_total", kind="real") == real, "the token counts")
    assert _metric(srv, "effstack_tokens_total", kind="padded") == padded


def test_a_bundle_serves_texts_without_the_original_folder(tmp_path, tiny, server_factory):
    from effstack.serve.repository import ModelRunner, resolve_target
    from effstack.testing.bundles import write_test_bundle

    folder = shutil.copytree(tiny.meta["text"]["folder"], tmp_path / "model")
    bundle = write_test_bundle(tmp_path / "tinytext", source=str(folder))
    shutil.rmtree(folder)
    assert (bundle / "tokenizer.json").is_file()
    assert json.loads((bundle / "manifest.json").read_text())["text"]["max_length"] == 32
    (name, config), = resolve_target(str(bundle), {}).items()
    srv = server_factory(runners={name: ModelRunner.build(config, name)})
    y = _embeddings(_post(srv, _doc([SHORT, LONG]), model=name))
    np.testing.assert_allclose(y, _reference(tiny, [SHORT, LONG]), atol=1e-4)


def test_a_text_config_without_its_tokenizer_is_refused(tiny, tmp_path):
    from effstack.errors import ArtifactError

    with pytest.raises(ArtifactError, match="tokenizer.json"):
        _runner(tiny, text={"tokenizer": str(tmp_path), "max_length": 32})
    with pytest.raises(ConfigError, match="max_length"):
        _runner(tiny, text={"tokenizer": str(tmp_path)})


# --- the pure policy ---------------------------------------------------------------------------------------


def _p(i, length, arrival=0.0, n=1, deadline=None):
    return Pending(id=i, n=n, arrival=arrival, length=length, deadline=deadline)


def test_requests_batch_only_with_their_length_bucket():
    policy = BatchingPolicy(max_batch=4, length_buckets=(16, 32, 64))
    queue = [_p(0, 10), _p(1, 60), _p(2, 14), _p(3, 33), _p(4, 5), _p(5, 64)]
    d = decide(queue, 0.0, policy)
    assert [p.id for p in d.launch] == [0, 2, 4]  # the oldest request's bucket, all of it
    fifo = decide(queue, 0.0, BatchingPolicy(max_batch=4))
    assert [p.id for p in fifo.launch] == [0, 1, 2, 3]  # without buckets: the head of the queue, any length


def test_a_full_bucket_launches_while_an_older_one_waits_but_never_overtakes_a_due_one():
    policy = BatchingPolicy(max_batch=2, max_queue_delay_s=0.010, length_buckets=(16, 64))
    queue = [_p(0, 10, arrival=0.0), _p(1, 50, arrival=0.001), _p(2, 40, arrival=0.002)]
    d = decide(queue, 0.003, policy)
    assert [p.id for p in d.launch] == [1, 2]  # full; the short one still has company time left
    d = decide(queue, 0.010, policy)
    assert [p.id for p in d.launch] == [0]  # due: it goes first although the long bucket is full
    d = decide(queue[:1] + [_p(3, 30, arrival=0.004)], 0.005, policy)
    assert d.launch == () and d.wake_at == pytest.approx(0.010)  # the earliest bucket's launch time


def test_grouped_decisions_drop_expired_and_cancelled_requests():
    policy = BatchingPolicy(max_batch=4, length_buckets=(16, 64))
    gone = _p(1, 10)
    gone.cancelled = True
    queue = [_p(0, 50, deadline=1.0), gone, _p(2, 12), _p(3, 60)]
    d = decide(queue, 2.0, policy)
    assert {p.id for p in d.expired} == {0, 1}
    assert [p.id for p in d.launch] == [2]


def test_bucket_edges_and_their_settings():
    policy = BatchingPolicy(length_buckets=(16, 32, 64, 128, 256))
    assert [policy.bucket(n) for n in (1, 16, 17, 100, 256, 999)] == [0, 0, 1, 3, 4, 4]
    assert default_buckets(256) == (16, 32, 64, 128, 256) and default_buckets(8) == (8,)
    assert resolve_buckets("auto", 32) == (16, 32) and resolve_buckets("off", 32) == ()
    assert resolve_buckets([64, 8, 8], 32) == (8, 32)
    with pytest.raises(ConfigError, match="increasing"):
        BatchingPolicy(length_buckets=(32, 16))
    with pytest.raises(ConfigError, match="length buckets"):
        ServingConfig(length_buckets="sometimes")
    with pytest.raises(ConfigError, match="length buckets"):
        ServingConfig(length_buckets=[0, 16])
    assert ServingConfig(length_buckets=[64, 16]).length_buckets == [16, 64]


def test_pad_collate_pads_to_the_longest_request():
    x = pad_collate(0)([np.array([[5, 6]], np.int64), np.array([[7, 8, 9, 1], [2, 0, 0, 0]], np.int64)])
    assert x.tolist() == [[5, 6, 0, 0], [7, 8, 9, 1], [2, 0, 0, 0]] and x.dtype == np.int64


def test_the_serve_command_takes_length_buckets():
    import argparse

    from effstack.cli.serve import add_parsers, serving_overrides

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(["serve", "m", "--length-buckets", "16,64"])
    assert serving_overrides(args)["length_buckets"] == [16, 64]
    assert serving_overrides(parser.parse_args(["serve", "m", "--length-buckets", "off"]))["length_buckets"] == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "m", "--length-buckets", "16,x"])


def test_grpc_takes_texts_too(tiny):
    pytest.importorskip("grpc")
    tcg = pytest.importorskip("tritonclient.grpc")
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.grpc_server import GrpcServer
    from effstack.serve.metrics import ServerMetrics
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    repo = ModelRepository({}, runners={"tiny": _runner(tiny)})
    metrics = ServerMetrics(repo.state)
    opts = ServerOptions()
    with BackgroundServer(create_app(repo, opts, metrics), grpc=GrpcServer(repo, metrics, opts, port=0)) as srv:
        client = tcg.InferenceServerClient(srv.grpc.address)
        texts = np.array([LONG.encode(), SHORT.encode()], dtype=object)
        inp = tcg.InferInput("text", [2], "BYTES")
        inp.set_data_from_numpy(texts)
        y = client.infer("tiny", [inp]).as_numpy("embedding")
        np.testing.assert_allclose(y, _reference(tiny, [LONG, SHORT]), atol=1e-4)
        bad = tcg.InferInput("text", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"\xff"], dtype=object))
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="UTF-8"):
            client.infer("tiny", [bad])
