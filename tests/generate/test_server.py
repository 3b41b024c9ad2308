"""The generation HTTP app on 127.0.0.1 with the tiny model: generate, SSE stream, refusals, errors, metrics."""

from __future__ import annotations

import json
import threading

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from effstack.generate.admission import Budget  # noqa: E402

from .conftest import greedy_alone  # noqa: E402


@pytest.fixture
def serve(engine_factory):
    from effstack.generate.server import create_generate_app
    from effstack.serve.server import BackgroundServer

    servers = []

    def start(budget=None, **kw):
        engine = engine_factory(budget, **kw)
        srv = BackgroundServer(create_generate_app(engine, "tiny")).start()
        servers.append(srv)
        return srv, engine

    yield start
    for s in servers:
        s.stop()


def sse(lines):
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def test_generate_and_stream_agree_with_greedy(tiny_lm, serve):
    srv, _ = serve()
    text = "the quick brown fox"
    ref = greedy_alone(tiny_lm, tiny_lm.encode(text), 9)
    body = {"text_input": text, "parameters": {"max_tokens": 9, "ignore_eos": True}}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v2/models/tiny/generate", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["tokens"] == 9 and out["finish_reason"] == "length" and out["ttft_ms"] > 0
        assert out["text_output"] == tiny_lm.decode(ref)
        with c.stream("POST", "/v2/models/tiny/generate_stream", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse(r.iter_lines())
    assert sum((e["token_ids"] for e in events[:-1]), []) == ref
    assert "".join(e["text_output"] for e in events).strip() == tiny_lm.decode(ref)
    assert events[-1]["finish_reason"] == "length" and events[-1]["tokens"] == 9 and events[-1]["tpot_ms"] > 0
    m = httpx.get(srv.url + "/metrics").text
    assert "effstack_generate_ttft_seconds_count 2.0" in m and 'effstack_generate_requests_total{outcome="finished"} 2.0' in m


def test_refusal_is_429_with_the_estimate(tiny_lm, serve):
    srv, engine = serve(Budget(ttft_ms=1e6, tpot_ms=1e-6), max_context=256)
    long = {"text_input": "a cat", "parameters": {"max_tokens": 200, "ignore_eos": True}}
    started = threading.Event()
    with httpx.Client(base_url=srv.url, timeout=30) as c, c.stream("POST", "/v2/models/tiny/generate_stream",
                                                                   json=long) as r1:
        lines = r1.iter_lines()
        next(x for x in lines if x.startswith("data: "))  # the long request is decoding
        started.set()
        r = c.post("/v2/models/tiny/generate", json={"text_input": "a dog", "parameters": {"max_tokens": 4}})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        body = r.json()
        assert body["reason"] == "tpot_budget" and "TPOT" in body["error"]
        assert body["estimate"]["running"] == 1 and body["estimate"]["tpot_ms"] > 0
    # leaving the stream early cancels its request
    for _ in range(200):
        if engine.load().running == 0:
            break
        threading.Event().wait(0.05)
    assert engine.load().running == 0 and engine.counts["cancelled"] == 1


@pytest.mark.parametrize("path, body, status, match", [
    ("/v2/models/tiny/generate", b"not json", 400, "not JSON"),
    ("/v2/models/tiny/generate", b'{"text": "x"}', 400, "text_input"),
    ("/v2/models/tiny/generate", b'{"text_input": "a", "parameters": {"max_tokens": 0}}', 400, "max_tokens"),
    ("/v2/models/tiny/generate_stream", b'{"text_input": "a", "parameters": {"ignore_eos": 1}}', 400, "ignore_eos"),
    ("/v2/models/tiny/generate", b'{"text_input": ""}', 400, "non-empty"),
    ("/v2/models/tiny/generate", b'{"text_input": "a", "parameters": {"max_tokens": 128}}', 400, "context"),
    ("/v2/models/other/generate", b'{"text_input": "a"}', 404, "other"),
])
def test_bad_requests(serve, path, body, status, match):
    srv, _ = serve()
    r = httpx.post(srv.url + path, content=body, timeout=30)
    assert r.status_code == status and match in r.json()["error"]


def test_health_metadata_stats(serve):
    srv, engine = serve(Budget(ttft_ms=500, tpot_ms=100))
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        meta = c.get("/v2/models/tiny").json()
        assert meta["budget"] == {"ttft_ms": 500, "tpot_ms": 100} and "generate_stream" in meta["extensions"]
        assert c.get("/v2/models/tiny/stats").json()["step_cost_ms"]["samples"] > 0
        engine.stop()
        assert c.get("/v2/health/ready").status_code == 503
        r = c.post("/v2/models/tiny/generate", json={"text_input": "a cat"})
        assert r.status_code == 503 and "not running" in r.json()["error"]
