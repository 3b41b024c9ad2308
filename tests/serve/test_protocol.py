"""The Open Inference Protocol codec, without HTTP: JSON and binary tensors, validation, error mapping."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from effstack.serve.protocol import (
    ProtocolError,
    TensorMeta,
    datatype_of,
    encode_infer_response,
    error_response_parts,
    parse_infer_request,
)

IN = [TensorMeta("input", "FP32", [-1, 2, 3])]
OUT = [TensorMeta("output", "FP32", [-1, 4])]


def _json_body(**overrides):
    doc = {"inputs": [{"name": "input", "shape": [2, 2, 3], "datatype": "FP32", "data": list(range(12))}]}
    doc["inputs"][0].update(overrides)
    return json.dumps(doc).encode()


def _binary_body(x: np.ndarray, size: int | None = None, extra: bytes = b"", **params):
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(x.tobytes()) if size is None else size}}],
                       "parameters": params}).encode()
    return head + x.tobytes() + extra, len(head)


def parse(body, header=None, inputs=IN, max_batch=8):
    return parse_infer_request(body, header, inputs, OUT, max_batch)


def test_json_tensor_flat_and_nested():
    flat = parse(_json_body())
    nested = parse(_json_body(data=np.arange(12).reshape(2, 2, 3).tolist()))
    assert flat.inputs["input"].dtype == np.float32 and flat.inputs["input"].shape == (2, 2, 3)
    assert np.array_equal(flat.inputs["input"], nested.inputs["input"])
    assert flat.outputs == [("output", False)] and flat.batch == 2


def test_binary_tensor_and_request_parameters():
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    body, n = _binary_body(x, timeout=5000, priority=1, binary_data_output=True)
    req = parse(bytearray(body), n)
    assert np.array_equal(req.inputs["input"], x) and req.inputs["input"].flags.aligned
    assert req.timeout_s == pytest.approx(0.005) and req.priority == 1
    assert req.outputs == [("output", True)]


@pytest.mark.parametrize("body, header, match", [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b"{}", None, "'inputs'"),
    (_json_body(name="x"), None, "unknown input 'x'"),
    (_json_body(datatype="INT64"), None, "datatype FP32"),
    (_json_body(shape=[2, 3, 2]), None, r"shape \[N, 2, 3\]"),
    (_json_body(shape=[9, 2, 3], data=[0] * 54), None, "1..8 samples"),
    (_json_body(data=list(range(11))), None, "needs 12 values"),
    (_json_body(data=["a"] * 12), None, "FP32 values"),
    (_json_body(data=[None] * 12), None, "FP32 values"),
    (_json_body(data=[[1, 2], [3]]), None, "FP32 values"),
    (_json_body(data=None), None, "must be a list"),
    (_json_body(shape="2,2,3"), None, "list of integers"),
    (b'{"inputs": ' + b"[" * 100_000, None, "nests JSON too deeply"),
    (_json_body(data=[[[[[[[1]]]]]]]), None, "needs 12 values"),
])
def test_malformed_requests_name_the_problem(body, header, match):
    with pytest.raises(ProtocolError, match=match):
        parse(body, header)


def test_binary_section_truncated_long_or_without_header():
    x = np.zeros((1, 2, 3), np.float32)
    body, n = _binary_body(x)
    with pytest.raises(ProtocolError, match="truncated"):
        parse(body[:-4], n)
    with pytest.raises(ProtocolError, match="no input claims"):
        parse(body + b"\0\0\0\0", n)
    with pytest.raises(ProtocolError, match="needs 24 bytes"):
        parse(*_binary_body(x, size=20, extra=b""), )
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
        parse(body, None)
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length is"):
        parse(body, len(body) + 1)


def test_integer_ranges_and_other_datatypes():
    meta = [TensorMeta("ids", "INT8", [-1, 2])]
    ok = parse(json.dumps({"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT8", "data": [1, -2]}]}).encode(),
               inputs=meta)
    assert ok.inputs["ids"].dtype == np.int8
    for data, match in (([300, 1], "outside the range"), ([1.5, 2], "INT8 values")):
        with pytest.raises(ProtocolError, match=match):
            parse(json.dumps({"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT8", "data": data}]}).encode(),
                  inputs=meta)


def test_bytes_tensors_json_and_binary():
    meta = [TensorMeta("text", "BYTES", [-1])]
    j = parse(json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "bc"]}]})
              .encode(), inputs=meta)
    assert j.inputs["text"].tolist() == [b"a", b"bc"]
    blob = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    head = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    assert parse(head + blob, len(head), inputs=meta).inputs["text"].tolist() == [b"a", b"bc"]
    with pytest.raises(ProtocolError, match="truncated"):
        bad = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                      "parameters": {"binary_data_size": len(blob) - 1}}]}).encode()
        parse(bad + blob[:-1], len(bad), inputs=meta)


def test_encode_json_and_binary_outputs():
    y = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, n = encode_infer_response("m", "1", "req-7", [("output", y, False)])
    doc = json.loads(body)
    assert n is None and doc["id"] == "req-7" and doc["outputs"][0]["data"] == list(range(8))
    body, n = encode_infer_response("m", "1", None, [("output", y, True)])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 32
    assert np.array_equal(np.frombuffer(body[n:], np.float32).reshape(2, 4), y)


def test_datatypes_and_error_statuses():
    from effstack.errors import EngineError, UnknownModelError
    from effstack.serve.batcher import QueueFull, RequestTimeout
    from effstack.serve.protocol import PayloadTooLarge

    assert datatype_of(np.float32) == "FP32" and datatype_of("int64") == "INT64" and datatype_of(bool) == "BOOL"
    assert error_response_parts(ProtocolError("bad"))[0] == 400
    assert error_response_parts(UnknownModelError("no"))[0] == 404
    assert error_response_parts(PayloadTooLarge("big"))[0] == 413
    assert error_response_parts(QueueFull("busy", 0.2))[:2] == (503, {"Retry-After": "1"})
    assert error_response_parts(RequestTimeout("late"))[0] == 504
    status, _, body = error_response_parts(EngineError("boom"))
    assert status == 500 and json.loads(body) == {"error": "boom"}
    status, _, body = error_response_parts(KeyError("x"))
    assert status == 500 and json.loads(body)["error"].startswith("internal error")


def test_openapi_document_matches_its_reviewed_golden_file():
    """Regenerate after a reviewed change: EFFSTACK_UPDATE_GOLDEN=1 pytest tests/serve/test_protocol.py"""
    import os
    from pathlib import Path

    from effstack.serve.openapi import document

    golden = Path(__file__).with_name("openapi.golden.json")
    text = json.dumps(document(version="golden"), indent=1, sort_keys=True) + "\n"
    if os.environ.get("EFFSTACK_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "the OpenAPI document changed; review it and regenerate the golden file"
