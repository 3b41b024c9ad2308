"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) beside the HTTP app.

One process, one event loop, one repository: the gRPC server runs on uvicorn's loop, and ModelInfer goes
through the same runner and batcher as HTTP, so gRPC and HTTP requests batch together. A request is
turned into the HTTP binary-tensor form (a JSON header and the tensors' bytes) and parsed by
:func:`~effstack.serve.protocol.parse_infer_request`: one set of checks and messages for both transports.
Errors keep their meaning: the HTTP status of :func:`~effstack.serve.errors.error_response_parts` maps to a
gRPC status (404 NOT_FOUND, 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 503 UNAVAILABLE with a
``retry-after`` trailer, 504 DEADLINE_EXCEEDED, the rest INTERNAL), with the same one-line message.

The message and stub classes are the ones tritonclient ships (Triton's proto is a superset of KServe v2's,
in the same ``inference`` package), so Triton and KServe clients both talk to it. Outputs come back in
``raw_output_contents``, as Triton answers by default.

>>> grpc_server = GrpcServer(repository, metrics, ServerOptions(), port=8001)     # doctest: +SKIP
>>> BackgroundServer(create_app(repository, options, metrics), grpc=grpc_server)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import uvicorn
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from effstack import __version__
from effstack.errors import ConfigError
from effstack.serve.app import PARSE_OFF_LOOP_BYTES, ServerOptions, _failure_reason
from effstack.serve.errors import ProtocolError, Unauthorized, error_response_parts
from effstack.serve.metrics import ServerMetrics
from effstack.serve.protocol import DATATYPES, InferRequest, _to_binary, datatype_of, parse_infer_request
from effstack.serve.repository import ModelRepository, ModelRunner

__all__ = ["GrpcServer", "InferenceService", "uvicorn_with_grpc"]

log = logging.getLogger("effstack.serve")

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
          504: grpc.StatusCode.DEADLINE_EXCEEDED}

# the typed-contents field that carries each datatype's values (FP16 and BF16 only travel raw)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}
# the numpy type each field's values arrive as (the proto's own: int32 for int_contents, ...)
_FIELD_DTYPES = {"bool_contents": np.bool_, "int_contents": np.int32, "int64_contents": np.int64,
                 "uint_contents": np.uint32, "uint64_contents": np.uint64, "fp32_contents": np.float32,
                 "fp64_contents": np.float64}


async def _abort(context: Any, exc: BaseException) -> None:
    """End the call with the gRPC status matching the exception's HTTP status, and its one-line message."""
    status, headers, body = error_response_parts(exc)
    if status >= 500 and status not in (503, 504):
        log.error("internal error answering a gRPC request", exc_info=exc)
    trailing = (("retry-after", headers["Retry-After"]),) if "Retry-After" in headers else ()
    await context.abort(_CODES.get(status, grpc.StatusCode.INTERNAL), json.loads(body)["error"], trailing)


Method = Callable[[Any, Any, Any], Awaitable[Any]]


def _rpc(public: bool = False) -> Callable[[Method], Method]:
    """Check the bearer token (unless ``public``: the health probes) and turn any failure into a status."""

    def wrap(fn: Method) -> Method:
        @functools.wraps(fn)
        async def method(self: InferenceService, request: Any, context: Any) -> Any:
            try:
                if not public:
                    self.authorize(context)
                return await fn(self, request, context)
            except Exception as exc:  # every failure becomes a status; the server keeps serving
                await _abort(context, exc)

        return method

    return wrap


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over a :class:`ModelRepository`; methods it lacks answer UNIMPLEMENTED.

    Args:
        repository: the models (shared with the HTTP app).
        metrics: the server's metrics (shared with the HTTP app, so both transports count in one place).
        token: the bearer token calls must carry in ``authorization`` metadata (None: no auth).
    """

    def __init__(self, repository: ModelRepository, metrics: ServerMetrics, token: str | None = None):
        self.repository = repository
        self.metrics = metrics
        self._expected = f"Bearer {token}".encode() if token else None

    def authorize(self, context: Any) -> None:
        """Raise :class:`Unauthorized` unless the call carries ``authorization: Bearer <token>``."""
        if self._expected is None:
            return
        given = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), "")
        if not hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            raise Unauthorized("a valid 'authorization: Bearer <token>' metadata entry is required")

    def _runner(self, name: str, version: str) -> ModelRunner:
        return self.repository.get(name, version or None)

    @_rpc(public=True)
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    @_rpc(public=True)
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.repository.ready())

    @_rpc()
    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.repository.is_ready(request.name, request.version or None))

    @_rpc()
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="effstack", version=__version__,
                                         extensions=["binary_tensor_data", "model_repository"])

    @_rpc()
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self._runner(request.name, request.version).metadata(),
                                     pb.ModelMetadataResponse())

    @_rpc()
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = self._runner(request.name, request.version).model_config()
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse(), ignore_unknown_fields=True)

    @_rpc()
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        models = [m for m in self.repository.index() if not request.ready or m["state"] == "READY"]
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in models])

    @_rpc()
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        t0 = time.perf_counter()
        runner = self._runner(request.model_name, request.model_version)
        m = self.metrics.model(runner.name, runner.version)
        try:
            runner.batcher.check_capacity()  # overload is answered before the tensors are even converted
            req = (await asyncio.to_thread(_parse, request, runner) if request.ByteSize() > PARSE_OFF_LOOP_BYTES
                   else _parse(request, runner))
            y = await runner.infer(req.inputs[runner.inputs[0].name], req.timeout_s, req.priority)
            response = _infer_response(runner, req, y)
        except Exception as exc:
            m.failure(_failure_reason(exc), time.perf_counter() - t0)
            raise
        m.success(time.perf_counter() - t0)
        return response


def _parameters(params: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain values."""
    out = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(p, which)
    return out


def _typed_bytes(t: Any) -> bytes:
    """The little-endian bytes of an input given in ``contents`` (BYTES: each element 4-byte length-prefixed).

    Raises:
        ProtocolError: no values, values in the wrong field for the datatype, a wrong count, or out of range.
    """
    given = [f.name for f, _ in t.contents.ListFields()]
    if not given:
        raise ProtocolError(f"input {t.name!r} has no values: fill its contents or raw_input_contents")
    want = _CONTENTS.get(t.datatype)
    if want is None:
        if t.datatype in DATATYPES:
            raise ProtocolError(f"input {t.name!r}: {t.datatype} has no typed contents; send it in raw_input_contents")
        return b""  # an unknown datatype: the parser names the one the model takes
    if given != [want]:
        raise ProtocolError(f"input {t.name!r} of datatype {t.datatype} takes its values in contents.{want}, "
                            f"got {', '.join('contents.' + g for g in given)}")
    values = getattr(t.contents, want)
    count = math.prod(t.shape)
    if len(values) != count:
        raise ProtocolError(f"input {t.name!r} of shape {list(t.shape)} needs {count} values, "
                            f"contents.{want} has {len(values)}")
    if t.datatype == "BYTES":
        return _to_binary(np.array(list(values), dtype=object))
    target = DATATYPES[t.datatype]
    array = np.fromiter(values, dtype=_FIELD_DTYPES[want], count=count)
    if target.kind in "iu" and array.size and not (np.iinfo(target).min <= array.min()
                                                   and array.max() <= np.iinfo(target).max):
        raise ProtocolError(f"input {t.name!r}: a value lies outside the range of {t.datatype}")
    return _to_binary(array.astype(target))


def _check_raw_size(t: Any, raw: bytes, i: int) -> None:
    dtype = DATATYPES.get(t.datatype)
    if dtype is None or t.datatype == "BYTES" or any(d < 0 for d in t.shape):
        return  # the parser explains what is wrong with the tensor itself
    need = math.prod(t.shape) * dtype.itemsize
    if len(raw) != need:
        raise ProtocolError(f"input {t.name!r} of shape {list(t.shape)} {t.datatype} needs {need} bytes, "
                            f"raw_input_contents[{i}] has {len(raw)}")


def as_http_body(request: Any) -> tuple[bytes, int]:
    """A ``ModelInferRequest`` as the HTTP binary-tensor body and its JSON header's length.

    Every input travels as binary data: ``raw_input_contents`` (one entry per input, in order) or its typed
    ``contents`` converted to bytes. Validation against the model is left to ``parse_infer_request``.

    Raises:
        ProtocolError: raw contents not given for every input, or typed contents that do not fit the input.

    Example:
        >>> r = pb.ModelInferRequest(model_name="m")
        >>> t = r.inputs.add(name="input", datatype="FP32", shape=[1, 2])
        >>> t.contents.fp32_contents.extend([1.0, 2.0])
        >>> body, n = as_http_body(r)
        >>> json.loads(body[:n])["inputs"][0]["parameters"], len(body) - n
        ({'binary_data_size': 8}, 8)
    """
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; give one "
                            "per input, or typed contents for all")
    tensors, blobs = [], []
    for i, t in enumerate(request.inputs):
        if raw:
            if t.contents.ListFields():
                raise ProtocolError(f"input {t.name!r} has both contents and raw_input_contents; give one")
            _check_raw_size(t, raw[i], i)
        blob = raw[i] if raw else _typed_bytes(t)
        tensors.append({"name": t.name, "shape": list(t.shape), "datatype": t.datatype,
                        "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    doc: dict[str, Any] = {"inputs": tensors, "parameters": _parameters(request.parameters)}
    if request.id:
        doc["id"] = request.id
    if request.outputs:
        doc["outputs"] = [{"name": o.name, "parameters": _parameters(o.parameters)} for o in request.outputs]
    head = json.dumps(doc, separators=(",", ":")).encode()
    return b"".join([head, *blobs]), len(head)


def _parse(request: Any, runner: ModelRunner) -> InferRequest:
    body, header_length = as_http_body(request)
    return parse_infer_request(body, header_length, runner.inputs, runner.outputs, runner.config.max_batch)


def _infer_response(runner: ModelRunner, req: InferRequest, y: np.ndarray) -> Any:
    response = pb.ModelInferResponse(model_name=runner.name, model_version=runner.version, id=req.id or "")
    for name, _ in req.outputs:  # the runner's model has one output: y
        response.outputs.add(name=name, datatype=datatype_of(y.dtype), shape=y.shape)
        response.raw_output_contents.append(_to_binary(y))
    return response


class GrpcServer:
    """The gRPC endpoint: ``await start()`` on the serving loop (after the models are loaded), ``await stop()``.

    Args:
        repository, metrics: shared with the HTTP app (pass the same ``metrics`` to ``create_app``).
        options: the HTTP server's options: its host, token and request-size limit apply here too.
        port: the gRPC port (0 picks a free one; :attr:`port` holds the bound one once started).

    Raises:
        ConfigError: a port out of range; at :meth:`start`, a port that cannot be bound.
    """

    def __init__(self, repository: ModelRepository, metrics: ServerMetrics, options: ServerOptions, port: int = 8001):
        if not 0 <= port <= 65535:
            raise ConfigError(f"the gRPC port must be within 0..65535, got {port}")
        self.repository = repository
        self.metrics = metrics
        self.options = options
        self.host = options.host
        self.port = port
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> None:
        limit = self.options.max_request_bytes
        # so_reuseport off: a port another server holds is an error, not a silently shared port
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)])
        service = InferenceService(self.repository, self.metrics, self.options.token)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError:  # grpc says only "Failed to bind"
            raise ConfigError(f"cannot listen for gRPC on {self.address}: the port is in use or the address is not "
                              "this machine's; pick another --grpc-port") from None
        await server.start()
        self._server = server

    async def stop(self, grace_s: float | None = 10.0) -> None:
        """Refuse new calls, give running ones ``grace_s`` seconds to finish, then cancel them."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace_s)


class _UvicornWithGrpc(uvicorn.Server):
    """uvicorn's server that also serves gRPC on its loop: started after the app's lifespan has loaded the
    models, stopped before the lifespan drains them. :attr:`serving` turns true once both listen."""

    def __init__(self, config: Any, grpc_server: GrpcServer):
        super().__init__(config)
        self.grpc = grpc_server
        self.serving = False
        self.error: BaseException | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        try:
            await self.grpc.start()
        except ConfigError as exc:  # uvicorn then shuts the app down; run_server raises it
            self.error = exc
            self.should_exit = True
            return
        self.serving = True

    async def shutdown(self, sockets: Any = None) -> None:
        await self.grpc.stop(self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets)


def uvicorn_with_grpc(config: Any, grpc_server: GrpcServer) -> Any:
    """A ``uvicorn.Server`` for ``config`` that serves ``grpc_server`` on the same event loop."""
    return _UvicornWithGrpc(config, grpc_server)
