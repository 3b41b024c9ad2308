"""Clients that misbehave, refusals and request ids, over raw sockets and HTTP on 127.0.0.1.

A client that goes away mid-body or before its response must leave the server answering, with nothing left
queued or in flight and nothing logged as the server's error; a refusal (503) must come before the body is
read and be timed from the request's arrival (``effstack_refusal_duration_seconds``); every response must carry
its own request's id. No timings are asserted: every wait is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading

import numpy as np
import pytest

from .conftest import WAIT_S, gated_runner, wait_until

httpx = pytest.importorskip("httpx")

URL = "/v2/models/gated/infer"


def _doc(value: float = 0.5, rid: str | None = None) -> dict:
    doc: dict = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [value] * 16}]}
    if rid is not None:
        doc["id"] = rid
    return doc


def _binary(value: float, rid: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor request (and binary output) of one sample filled with ``value``."""
    x = np.full((1, 16), value, np.float32)
    doc: dict = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                             "parameters": {"binary_data_size": x.nbytes}}],
                 "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}
    if rid is not None:
        doc["id"] = rid
    head = json.dumps(doc).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}


def _raw_request(srv, body: bytes, headers: dict[str, str]) -> bytes:
    from effstack.serve.loadtest import http_request

    return http_request("POST", srv.host, srv.port, URL, body, headers)


def _connect(srv) -> socket.socket:
    s = socket.create_connection((srv.host, srv.port), timeout=WAIT_S)
    s.settimeout(WAIT_S)  # a server that waits for bytes that never come fails the test, it does not hang it
    return s


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed the connection without a response (got {data[:80]!r})")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _metrics(srv) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(httpx.get(srv.url + "/metrics").text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset({"model": "gated", "version": "1", **labels}.items())), 0.0)


def _failures(srv, reason: str) -> float:
    return _value(_metrics(srv), "effstack_inference_request_failure_total", reason=reason)


@contextlib.contextmanager
def _errors_logged():
    """ERROR records of the server's and uvicorn's loggers meanwhile (attach after the server started: uvicorn's
    logging setup replaces the handlers of its loggers)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.ERROR)
    loggers = [logging.getLogger(name) for name in ("effstack.serve", "uvicorn.error")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield records
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def _assert_serves_again(srv, runner) -> None:
    """Nothing left queued or computing; the probe and a normal inference answer, with this request's rows."""
    wait_until(lambda: runner.batcher.queue.samples == 0 and runner.batcher.in_flight == 0, "the batcher to empty")
    samples = _metrics(srv)
    assert _value(samples, "effstack_queue_samples") == 0 and _value(samples, "effstack_batches_in_flight") == 0
    assert httpx.get(srv.url + "/v2/health/ready").json() == {"ready": True}
    r = httpx.post(srv.url + URL, json=_doc(3.0, rid="after"), timeout=WAIT_S)
    assert r.status_code == 200 and r.json()["id"] == "after" and r.json()["outputs"][0]["data"] == [6.0]


def test_a_client_gone_mid_body_is_counted_not_logged_and_leaks_nothing(server_factory, tiny_mlp_model):
    runner, _ = gated_runner(tiny_mlp_model, max_batch=4)
    srv = server_factory(runners={"gated": runner})
    json_body = json.dumps(_doc(1.0)).encode()
    cases = [(json_body, {"Content-Type": "application/json"}), _binary(1.0)]  # plain read, aligned read
    with _errors_logged() as errors:
        for n, (body, headers) in enumerate(cases, 1):
            request = _raw_request(srv, body, headers)
            with _connect(srv) as s:  # Content-Length says len(body); half of it comes, then the client is gone
                s.sendall(request[: len(request) - len(body) // 2])
            wait_until(lambda n=n: _failures(srv, "disconnected") == n, f"disconnect {n} to be counted")
    assert not errors, [r.getMessage() for r in errors]
    assert _failures(srv, "internal") == 0
    _assert_serves_again(srv, runner)


def test_a_client_gone_before_its_response_leaves_the_server_whole(server_factory, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=1)
    srv = server_factory(runners={"gated": runner})
    gate.gate.clear()
    with _errors_logged() as errors:
        computing, queued = _connect(srv), _connect(srv)
        computing.sendall(_raw_request(srv, *_binary(1.0, rid="gone-1")))
        wait_until(lambda: gate.running == 1, "the first request to be computed")
        queued.sendall(_raw_request(srv, json.dumps(_doc(2.0, rid="gone-2")).encode(),
                                    {"Content-Type": "application/json"}))
        wait_until(lambda: runner.batcher.queue.samples == 1, "the second request to queue")
        computing.close()  # whole requests, their clients gone before any response
        queued.close()
        gate.gate.set()
        _assert_serves_again(srv, runner)
    assert not errors, [r.getMessage() for r in errors]
    assert len(gate.batches) <= 3 and gate.batches.count(1) == len(gate.batches)  # none computed twice
    assert _failures(srv, "internal") == 0


def test_refusals_come_before_the_body_and_are_timed_from_arrival(server_factory, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=1, queue_capacity=1)
    srv = server_factory(runners={"gated": runner})
    before = _metrics(srv)
    assert ("effstack_refusal_duration_seconds_count",
            frozenset({"model": "gated", "version": "1", "reason": "unloading"}.items())) in before  # at 0, bound
    gate.gate.clear()
    results: dict[int, httpx.Response] = {}

    def post(i: int) -> threading.Thread:
        t = threading.Thread(target=lambda: results.setdefault(i, httpx.post(srv.url + URL, json=_doc(), timeout=30)))
        t.start()
        return t

    threads = [post(0)]
    wait_until(lambda: gate.running == 1, "the first request to be computed")
    threads.append(post(1))
    wait_until(lambda: runner.batcher.queue.samples == 1, "the queue to reach its limit")
    body = json.dumps(_doc()).encode()
    request = _raw_request(srv, body, {"Content-Type": "application/json"})
    with _connect(srv) as s:  # the headers promise a body that never comes: the 503 must not wait for it
        s.sendall(request[: len(request) - len(body)])
        status, headers, reply = _read_response(s)
    assert status == 503 and int(headers["retry-after"]) >= 1 and "overloaded" in json.loads(reply)["error"]
    assert httpx.post(srv.url + URL, json=_doc(), timeout=WAIT_S).status_code == 503
    gate.gate.set()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results.values())
    after = _metrics(srv)
    name = "effstack_refusal_duration_seconds"
    delta = {k: _value(after, f"{name}_{k}", reason="overload") - _value(before, f"{name}_{k}", reason="overload")
             for k in ("count", "sum")}
    assert delta["count"] == 2 and delta["sum"] > 0
    assert _value(after, f"{name}_bucket", reason="overload", le="+Inf") == _value(after, f"{name}_count",
                                                                                  reason="overload")
    assert _value(after, f"{name}_count", reason="unloading") == 0
    _assert_serves_again(srv, runner)


def test_each_response_carries_its_own_request_id(server_factory, tiny_mlp_model):
    runner, (gate,) = gated_runner(tiny_mlp_model, max_batch=8)
    srv = server_factory(runners={"gated": runner})
    gate.gate.clear()
    results: dict[int, tuple[int, dict, bytes]] = {}

    def send(i: int) -> threading.Thread:
        # even ids binary, odd ones JSON, all in one batch: ids and rows must not cross
        body, headers = (_binary(float(i), rid=f"req-{i}") if i % 2 == 0 else
                         (json.dumps(_doc(float(i), rid=f"req-{i}")).encode(), {"Content-Type": "application/json"}))

        def go() -> None:
            with _connect(srv) as s:
                s.sendall(_raw_request(srv, body, headers))
                results[i] = _read_response(s)

        t = threading.Thread(target=go)
        t.start()
        return t

    threads = [send(0)]
    wait_until(lambda: gate.running == 1, "the first batch to start")
    threads += [send(i) for i in range(1, 6)]
    wait_until(lambda: runner.batcher.queue.samples == 5, "five requests to queue")
    gate.gate.set()
    for t in threads:
        t.join()
    assert gate.batches == [1, 5]
    for i, (status, headers, body) in sorted(results.items()):
        assert status == 200, body
        if "inference-header-content-length" in headers:
            n = int(headers["inference-header-content-length"])
            doc, rows = json.loads(body[:n]), np.frombuffer(body[n:], np.float32).tolist()
        else:
            doc = json.loads(body)
            rows = doc["outputs"][0]["data"]
        assert doc["id"] == f"req-{i}" and rows == [2.0 * i]
    assert "id" not in httpx.post(srv.url + URL, json=_doc(), timeout=WAIT_S).json()  # no id given, none echoed


def test_requests_carry_their_arrival_stamp_from_the_protocol():
    import time

    from starlette.responses import JSONResponse

    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.metrics import ARRIVAL_KEY
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    class Stamps:
        def routes(self):
            async def stamp(request):
                return JSONResponse({"arrival": request.scope.get(ARRIVAL_KEY), "now": time.perf_counter_ns()})

            return [("/stamp", stamp, ["GET"])]

        def close(self) -> None:
            pass

    with BackgroundServer(create_app(ModelRepository({}), ServerOptions(), extensions=[Stamps()])) as srv:
        with httpx.Client() as client:  # one keep-alive connection: each request gets its own stamp
            first, second = (client.get(srv.url + "/stamp").json() for _ in range(2))
    for r in (first, second):
        assert isinstance(r["arrival"], int) and r["arrival"] <= r["now"]
    assert first["now"] <= second["arrival"]


def test_a_declared_body_takes_memory_only_as_its_bytes_arrive():
    """A client that declares 48 MiB and sends 1 KiB must not make the server commit 48 MiB (a zero-filled
    buffer did: a few header-only clients could exhaust memory); the short body is refused all the same."""
    import asyncio

    psutil = pytest.importorskip("psutil")
    from effstack.serve.app import read_body
    from effstack.serve.errors import ProtocolError

    declared = 48 * 1024 * 1024
    grew: list[int] = []

    class _Request:
        headers = {"content-length": str(declared)}

        async def stream(self):
            yield b"\0" * 1024
            grew.append(psutil.Process().memory_info().rss - rss)  # the buffer exists and holds 1 KiB now

    rss = psutil.Process().memory_info().rss
    with pytest.raises(ProtocolError, match="has 1024 bytes"):
        asyncio.run(read_body(_Request(), 64 * 1024 * 1024, align_at=0))
    assert grew and grew[0] < declared // 4, f"reading 1 KiB of a declared 48 MiB body took {grew[0]} bytes"
