"""The Open Inference Protocol (KServe v2) over HTTP: request parsing, response encoding, error mapping.

Requests are parsed by hand rather than through a schema library: a ResNet-50 batch is 150 000
numbers per sample, and the checks that matter (input names, datatypes, shapes against the model's
metadata, binary section sizes) give better one-line messages written out. The schema clients see is
:mod:`effstack.serve.openapi`.

Binary tensor extension: the ``Inference-Header-Content-Length`` header gives the length of the JSON
header at the start of the body; each input with ``parameters.binary_data_size`` takes that many
bytes, in order, from the rest (little-endian; BYTES elements are a 4-byte length then the bytes).

>>> meta = [TensorMeta("input", "FP32", [-1, 2])]
>>> req = parse_infer_request(b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",'
...                           b' "data": [1, 2]}]}', None, meta, [TensorMeta("output", "FP32", [-1, 1])], 8)
>>> req.inputs["input"].tolist()
[[1.0, 2.0]]
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .errors import (
    ModelNotReady,
    PayloadTooLarge,
    ProtocolError,
    Unauthorized,
    error_response_parts,
)

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "ModelNotReady",
    "PayloadTooLarge",
    "ProtocolError",
    "TensorMeta",
    "Unauthorized",
    "datatype_of",
    "encode_infer_response",
    "error_response_parts",
    "parse_infer_request",
]

HEADER_LENGTH = "inference-header-content-length"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND = {np.dtype(v).newbyteorder("=") if v != np.dtype(object) else v: k for k, v in DATATYPES.items()}


def datatype_of(dtype: Any) -> str:
    """The protocol datatype of a numpy dtype (``float32`` -> ``FP32``).

    Raises:
        ConfigError: no protocol datatype for it.
    """
    cached = _DATATYPE_CACHE.get(dtype)
    if cached is not None:
        return cached
    dt = np.dtype(dtype)
    key = dt if dt == np.dtype(object) else dt.newbyteorder("=")
    if key not in _BY_KIND:
        raise ConfigError(f"numpy dtype {dt} has no Open Inference Protocol datatype")
    _DATATYPE_CACHE[dtype] = _BY_KIND[key]
    return _BY_KIND[key]


_DATATYPE_CACHE: dict[Any, str] = {}
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps builds a new encoder per call for separators


@dataclass(frozen=True)
class TensorMeta:
    """A tensor in the model's metadata; ``-1`` marks the batch axis."""

    name: str
    datatype: str
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class InferRequest:
    """A parsed inference request.

    inputs: name -> array with the batch axis first. outputs: the requested output names with whether
    each is to be returned as binary. parameters: the request-level parameters (``timeout`` in
    microseconds and ``priority``, as tritonclient sends them).
    """

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    @property
    def timeout_s(self) -> float | None:
        t = self.parameters.get("timeout")
        return None if t is None else t / 1e6

    @property
    def priority(self) -> int:
        return int(self.parameters.get("priority") or 0)


def _fail(message: str) -> ProtocolError:
    return ProtocolError(message)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _request_parameters(raw: Any) -> dict[str, Any]:
    params = _obj(raw, "'parameters'") if raw is not None else {}
    out = dict(params)
    if "timeout" in params:
        out["timeout"] = _int(params["timeout"], "parameter 'timeout' (microseconds)", 1)
    if "priority" in params:
        out["priority"] = _int(params["priority"], "parameter 'priority'", 0)
    if "binary_data_output" in params and not isinstance(params["binary_data_output"], bool):
        raise _fail(f"parameter 'binary_data_output' must be true or false, got {params['binary_data_output']!r}")
    return out


def parse_infer_request(
    body: bytes | bytearray,
    header_length: int | None,
    inputs_meta: Sequence[TensorMeta],
    outputs_meta: Sequence[TensorMeta],
    max_batch: int,
) -> InferRequest:
    """Parse and validate an inference request body against the model's metadata.

    Args:
        body: the whole HTTP body.
        header_length: the ``Inference-Header-Content-Length`` value (None: the body is all JSON).
        inputs_meta / outputs_meta: the model's tensors (batch axis ``-1``).
        max_batch: the most samples one request may carry.

    Raises:
        ProtocolError: invalid JSON, a missing or unknown field, a wrong name, datatype or shape, a data
            length that does not match the shape, or a binary section that is truncated or too long.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        raise _fail(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
    head = body if header_length is None else memoryview(body)[:header_length]
    try:
        doc = json.loads(bytes(head) if isinstance(head, memoryview) else head)
    except RecursionError:
        raise _fail("the request body nests JSON too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "; a body with binary tensors needs the Inference-Header-Content-Length header" if (
            header_length is None and "Extra data" in str(exc)) else ""
        raise _fail(f"the request body is not valid JSON: {exc}{hint}") from None
    doc = _obj(doc, "the request")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _fail(f"'id' must be a string, got {type(rid).__name__}")
    params = _request_parameters(doc.get("parameters"))
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _fail("'inputs' must be a non-empty list of tensors")
    by_name = {m.name: m for m in inputs_meta}
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for i, raw in enumerate(raw_inputs):
        t = _obj(raw, f"inputs[{i}]")
        name = t.get("name")
        if not isinstance(name, str):
            raise _fail(f"inputs[{i}] needs a string 'name'")
        if name not in by_name:
            raise _fail(f"unknown input {name!r}; the model takes {', '.join(repr(n) for n in by_name)}")
        if name in inputs:
            raise _fail(f"input {name!r} is given twice")
        meta = by_name[name]
        shape = _check_shape(t.get("shape"), meta, max_batch)
        datatype = t.get("datatype")
        if datatype != meta.datatype:
            raise _fail(f"input {name!r} must have datatype {meta.datatype}, got {datatype!r}")
        tparams = _obj(t.get("parameters") or {}, f"parameters of input {name!r}")
        size = tparams.get("binary_data_size")
        if size is not None:
            size = _int(size, f"binary_data_size of input {name!r}")
            if header_length is None:
                raise _fail(f"input {name!r} has binary_data_size but the request has no "
                            "Inference-Header-Content-Length header")
            if offset + size > len(binary):
                raise _fail(f"the binary section is truncated: input {name!r} needs {size} bytes at offset {offset}, "
                            f"{len(binary) - offset} remain")
            inputs[name] = _from_binary(binary[offset : offset + size], meta, shape)
            offset += size
        else:
            if "data" not in t:
                raise _fail(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            inputs[name] = _from_json(t["data"], meta, shape)
    if offset != len(binary):
        raise _fail(f"the binary section has {len(binary) - offset} bytes that no input claims")
    missing = [m.name for m in inputs_meta if m.name not in inputs]
    if missing:
        raise _fail(f"missing input {', '.join(repr(n) for n in missing)}")
    batches = {a.shape[0] for a in inputs.values()}
    if len(batches) > 1:
        raise _fail(f"all inputs must have the same batch size, got {sorted(batches)}")
    return InferRequest(rid, inputs, _requested_outputs(doc.get("outputs"), outputs_meta, params), params)


def _check_shape(raw: Any, meta: TensorMeta, max_batch: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in raw):
        raise _fail(f"input {meta.name!r} needs 'shape' as a list of integers, got {raw!r}")
    want = meta.shape
    if meta.datatype == "BYTES" and want == [-1] and len(raw) == 2 and raw[1] == 1:
        want = [-1, 1]  # a batch of texts as [n] or, the Triton way, [n, 1]
    if len(raw) != len(want) or any(w != -1 and d != w for d, w in zip(raw, want)):
        shown = "[" + ", ".join("N" if w == -1 else str(w) for w in want) + "]"
        raise _fail(f"input {meta.name!r} must have shape {shown}, got {raw}")
    if raw and want[0] == -1 and not 1 <= raw[0] <= max_batch:
        raise _fail(f"input {meta.name!r} must carry 1..{max_batch} samples (the max batch), got {raw[0]}")
    if any(d < 0 for d in raw):
        raise _fail(f"input {meta.name!r} has a negative dimension: {raw}")
    return tuple(raw)


def _from_binary(raw: memoryview, meta: TensorMeta, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    if meta.datatype == "BYTES":
        return _bytes_from_binary(raw, meta.name, count).reshape(shape)
    dtype = DATATYPES[meta.datatype]
    if len(raw) != count * dtype.itemsize:
        raise _fail(f"input {meta.name!r} of shape {list(shape)} {meta.datatype} needs {count * dtype.itemsize} "
                    f"bytes, binary_data_size says {len(raw)}")
    array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    # the JSON header has any length, so the tensor usually starts unaligned; engines want aligned memory
    return array if array.flags.aligned and array.flags.writeable else array.copy()


def _bytes_from_binary(raw: memoryview, name: str, count: int) -> np.ndarray:
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise _fail(f"BYTES input {name!r} is truncated inside an element's length")
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise _fail(f"BYTES input {name!r} is truncated inside an element")
        items.append(bytes(raw[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    if len(items) != count:
        raise _fail(f"BYTES input {name!r} has {len(items)} elements, its shape needs {count}")
    return np.array(items, dtype=object)


def _from_json(data: Any, meta: TensorMeta, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        raise _fail(f"input {meta.name!r}: 'data' must be a list, got {type(data).__name__}")
    if data and not isinstance(data[0], list) and len(data) != count:  # flat: refuse before converting
        raise _fail(f"input {meta.name!r} of shape {list(shape)} needs {count} values, 'data' has {len(data)}")
    bad = _fail(f"input {meta.name!r}: 'data' must be a (nested) list of {meta.datatype} values")
    try:
        if meta.datatype == "BYTES":
            flat = np.array([_as_bytes(v) for v in _flatten(data)], dtype=object)
        else:
            # convert without a dtype first, so None, strings and floats-for-integers are refused, not coerced
            raw = np.asarray(data)
            if raw.size and raw.dtype.kind not in _JSON_KINDS[meta.datatype[0]]:
                raise bad
            target = DATATYPES[meta.datatype]
            if raw.size and target.kind in "iu":
                info = np.iinfo(target)
                if raw.min() < info.min or raw.max() > info.max:
                    raise _fail(f"input {meta.name!r}: a value lies outside the range of {meta.datatype}")
            if raw.dtype.kind == "f" and target.itemsize < raw.dtype.itemsize:
                with np.errstate(over="ignore"):  # JSON numbers beyond FP32's range become inf, not a warning
                    flat = raw.astype(target).reshape(-1)
            else:
                flat = raw.astype(target, copy=False).reshape(-1)
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise bad from None
    if flat.size != count:
        raise _fail(f"input {meta.name!r} of shape {list(shape)} needs {count} values, 'data' has {flat.size}")
    return flat.reshape(shape)


# the numpy kinds JSON numbers may arrive as, by the first letter of the datatype (BOOL, UINT, INT, FP)
_JSON_KINDS = {"B": "b", "U": "biu", "I": "biu", "F": "biuf"}


def _flatten(data: list) -> list:
    out: list = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    raise TypeError


def _requested_outputs(raw: Any, outputs_meta: Sequence[TensorMeta], params: dict[str, Any]) -> list[tuple[str, bool]]:
    default_binary = bool(params.get("binary_data_output", False))
    if raw is None:
        return [(m.name, default_binary) for m in outputs_meta]
    if not isinstance(raw, list):
        raise _fail("'outputs' must be a list")
    known = {m.name for m in outputs_meta}
    out = []
    for i, o in enumerate(raw):
        o = _obj(o, f"outputs[{i}]")
        name = o.get("name")
        if name not in known:
            raise _fail(f"unknown output {name!r}; the model gives {', '.join(repr(n) for n in sorted(known))}")
        p = _obj(o.get("parameters") or {}, f"parameters of output {name!r}")
        binary = p.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise _fail(f"binary_data of output {name!r} must be true or false")
        if "classification" in p:
            raise _fail("the classification extension is not supported; request the raw output")
        out.append((name, binary))
    return out


def encode_infer_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary (else None).

    Example:
        >>> body, n = encode_infer_response("m", "1", None, [("output", np.zeros((1, 2), np.float32), False)])
        >>> json.loads(body)["outputs"][0]["data"], n
        ([0.0, 0.0], None)
    """
    tensors, blobs = [], []
    for name, y, binary in outputs:
        t: dict[str, Any] = {"name": name, "datatype": datatype_of(y.dtype), "shape": list(y.shape)}
        if binary:
            blob = _to_binary(y)
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            flat = y.reshape(-1)
            t["data"] = [v.decode(errors="replace") for v in flat] if y.dtype == object else flat.tolist()
        tensors.append(t)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request_id is not None:
        doc["id"] = request_id
    head = _ENCODER.encode(doc).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def _to_binary(y: np.ndarray) -> bytes:
    if y.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in (bytes(x) for x in y.reshape(-1)))
    return np.ascontiguousarray(y, dtype=y.dtype.newbyteorder("<")).tobytes()
