"""The HTTP shell: a Starlette app speaking the Open Inference Protocol (KServe v2) over a ModelRepository.

Plain Starlette rather than FastAPI: the same echo route under uvicorn (httptools, uvloop) on this
2-core machine answered at a p50 of 0.87-1.24 ms as a Starlette route and 1.02-1.59 ms as a FastAPI one
(three alternating rounds each, closed loop); the protocol's checks are written out in
:mod:`~effstack.serve.protocol` anyway, and the OpenAPI document is :mod:`~effstack.serve.openapi`.

Every error leaves as ``{"error": "one line"}``: client mistakes 400 (401, 404, 413), overload and
loading 503 with ``Retry-After`` (overload is refused before the body is read, and the time from the request's
arrival to its 503 is ``effstack_refusal_duration_seconds``), timeouts 504, anything else is logged and answered
500 — a bad request never takes the server down. A client that goes away mid-body is counted (``reason="disconnected"``), not
logged as the server's error; one that goes away before its response leaves the request to finish and its
response to fall on the closed connection.

>>> app = create_app(ModelRepository({}), ServerOptions())   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import ConfigError, UserError
from .config import RELOADABLE
from .errors import (
    NotAccepting,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
    RequestTimeout,
    Unauthorized,
    error_response_parts,
)
from .metrics import ARRIVAL_KEY, RequestTrace, ServerMetrics
from .openapi import document
from .protocol import HEADER_LENGTH, encode_infer_response, parse_infer_request
from .repository import ModelRepository

__all__ = ["ServerOptions", "create_app", "read_body"]

log = logging.getLogger("effstack.serve")

JSON = "application/json"
# JSON larger than this is parsed on a worker thread, not on the event loop. Binary tensors are not parsed at all
# (numpy views of the body), so a binary request parses on the loop whatever its size: a 600 KB ResNet-50
# request takes ~20-45 us there, against ~160-190 us for the round trip to a worker thread.
PARSE_OFF_LOOP_BYTES = 256 * 1024
ALIGN_BYTES = 64  # binary tensors in a request body are placed on this boundary (a cache line; SIMD loads)
SMALL_BODY_BYTES = 64 * 1024  # limit for repository requests
PUBLIC_PATHS = ("/v2/health/live", "/v2/health/ready")  # probes work without the token


@dataclass(frozen=True)
class ServerOptions:
    """Server-wide settings (per-model ones live in :class:`~effstack.serve.config.ServingConfig`).

    host: the address to bind (127.0.0.1 unless told otherwise). port: the TCP port.
    token: a bearer token every request but the health probes must carry (None: no auth).
    max_request_bytes: larger bodies get 413 (decompressed size, for gzip/deflate bodies).
    server_timing: answer each inference with a ``Server-Timing`` header, the request's time by stage in ms
        (about 2 us to build; the same figures are in ``/metrics`` either way).

    Raises:
        ConfigError: a port or limit out of range.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_request_bytes: int = 64 * 1024 * 1024
    server_timing: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be within 0..65535, got {self.port}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"the request-size limit must be at least 1024 bytes, got {self.max_request_bytes}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the bearer token is empty; give a token or none")


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODER.encode(obj).encode(), status, headers, JSON)


def _error(exc: BaseException) -> Response:
    if isinstance(exc, ClientDisconnect):  # nobody to answer, and not the server's fault: no 500, no log
        return _json_response({"error": "the client disconnected before its request body was complete"}, 400)
    status, headers, body = error_response_parts(exc)
    if status >= 500 and status not in (503, 504):
        log.error("internal error answering a request", exc_info=exc)
    return Response(body, status, headers, JSON)


class _Refusal(Response):
    """A 503 that observes, once it is handed to the transport, the time since its request's arrival.

    ``arrival_ns`` is the protocol's stamp (:data:`~effstack.serve.metrics.ARRIVAL_KEY`), so the figure holds the
    wait for the handler's task on a busy loop, the routing and the refusal itself, up to the last byte written
    (uvicorn's ``send`` writes to the transport before it returns).
    """

    def __init__(self, exc: BaseException, observe: Callable[[float], None], arrival_ns: int):
        status, headers, body = error_response_parts(exc)
        super().__init__(body, status, headers, JSON)
        self._observe = observe
        self._arrival_ns = arrival_ns

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await super().__call__(scope, receive, send)
        self._observe((time.perf_counter_ns() - self._arrival_ns) / 1e9)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(fn: Handler) -> Handler:
    """Turn any exception into the structured error response (logged when it is ours to fix)."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:  # every failure becomes a response; nothing escapes to uvicorn
            return _error(exc)

    wrapper.__name__ = fn.__name__
    return wrapper


async def read_body(request: Request, limit: int, align_at: int | None = None) -> bytearray | memoryview:
    """The request body, refused with :class:`PayloadTooLarge` past ``limit`` bytes (also once decompressed).

    With ``align_at`` (the binary section's offset: the ``Inference-Header-Content-Length``) and a declared,
    uncompressed length, the body is read into one buffer allocated up front, placed so that byte ``align_at``
    sits on a 64-byte boundary, and returned as a memoryview: the tensors after the JSON header can then be
    used where they lie (an unaligned float32 tensor had to be copied, 600 KB per ResNet-50 request, on top of
    the copies of a growing buffer).

    Raises:
        PayloadTooLarge: the body (or its decompressed form) is larger than ``limit``.
        ProtocolError: a bad Content-Length or Content-Encoding, a body longer or shorter than its
            Content-Length, or a corrupt compressed body.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError(f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the request body has {declared} bytes, over this server's limit of {limit}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    identity = encoding in ("", "identity")
    if align_at is not None and declared is not None and identity:
        return await _read_aligned(request, int(declared), align_at)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body is larger than this server's limit of {limit} bytes")
    if identity:
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding must be gzip, deflate or identity, got {encoding!r}")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(bytes(body), limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {encoding} body is corrupt: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed request body is larger than this server's limit of {limit} bytes")
    return bytearray(out)


async def _read_aligned(request: Request, n: int, align_at: int) -> memoryview:
    # np.empty, not bytearray(n): a bytearray is zero-filled, which commits all n bytes the moment a client
    # declares them (64 MiB per header-only request); an uninitialised buffer of that size is mapped lazily by
    # the OS, so memory is taken only as the body's bytes arrive and are written
    buf = np.empty(n + ALIGN_BYTES, np.uint8)
    address = buf.ctypes.data
    start = (-(address + align_at)) % ALIGN_BYTES
    view = memoryview(buf)[start : start + n]
    pos = 0
    async for chunk in request.stream():
        end = pos + len(chunk)
        if end > n:
            raise ProtocolError(f"the request body is longer than its Content-Length of {n} bytes")
        view[pos:end] = chunk
        pos = end
    if pos != n:
        raise ProtocolError(f"the request body has {pos} bytes, its Content-Length says {n}")
    return view


def _header_length(request: Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise ProtocolError(f"Inference-Header-Content-Length must be a number of bytes, got {raw!r}")
    return int(raw)


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, (QueueFull, NotAccepting)):
        return "overload"
    if isinstance(exc, ClientDisconnect):
        return "disconnected"
    if isinstance(exc, RequestTimeout):
        return "timeout"
    if isinstance(exc, (UserError, PayloadTooLarge)):
        return "invalid"
    return "internal"


class _Auth:
    """ASGI wrapper: requests without ``Authorization: Bearer <token>`` get 401 (health probes excepted)."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await _error(Unauthorized("a valid 'Authorization: Bearer <token>' header is required"))(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(repository: ModelRepository, options: ServerOptions, metrics: ServerMetrics | None = None,
               extensions: Sequence[Any] = ()) -> Any:
    """The ASGI app: the v2 endpoints, ``/metrics`` and ``/openapi.json`` over ``repository``.

    The app's lifespan loads the repository's models at start-up and drains them at shutdown.
    ``metrics`` defaults to a fresh :class:`ServerMetrics` reading the repository's state.
    ``extensions`` add routes outside the protocol (e.g. :class:`~effstack.search.service.SearchService`):
    each has ``routes()`` -> ``[(path, handler, methods)]`` (errors answered like the protocol's) and
    ``close()``, called at shutdown.
    """
    metrics = metrics or ServerMetrics(repository.state)
    repository.observer = repository.observer or metrics.model  # the batchers report to these metrics
    limit = options.max_request_bytes
    server_timing = options.server_timing
    openapi = json.dumps(document(version=__version__)).encode()

    async def live(request: Request) -> Response:
        return _json_response({"live": True})

    async def ready(request: Request) -> Response:
        ok = repository.ready()
        return _json_response({"ready": ok}, 200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return _json_response({"name": "effstack", "version": __version__,
                               "extensions": ["binary_tensor_data", "model_repository"]})

    def _runner(request: Request):
        return repository.get(request.path_params["name"], request.path_params.get("version"))

    async def model_ready(request: Request) -> Response:
        ok = repository.is_ready(request.path_params["name"], request.path_params.get("version"))
        return _json_response({"ready": ok}, 200 if ok else 503)

    async def model_metadata(request: Request) -> Response:
        return _json_response(_runner(request).metadata())

    async def model_config(request: Request) -> Response:
        return _json_response(_runner(request).model_config())

    async def infer(request: Request) -> Response:
        clock = time.perf_counter_ns
        trace = RequestTrace(clock())
        runner = _runner(request)
        m = metrics.model(runner.name, runner.version)
        try:
            runner.batcher.check_capacity()  # overload is answered before the body is even read
            header_length = _header_length(request)
            body = await read_body(request, limit, align_at=header_length)
            trace.read = clock()
            args = (body, header_length, runner.inputs, runner.outputs, runner.config.max_batch)
            json_bytes = len(body) if header_length is None else header_length
            req = (await asyncio.to_thread(parse_infer_request, *args) if json_bytes > PARSE_OFF_LOOP_BYTES
                   else parse_infer_request(*args))
            trace.parse = trace.launch = clock()
            y = await runner.infer(req.inputs[runner.inputs[0].name], req.timeout_s, req.priority, trace)
            trace.done = clock()
            outputs = [(name, y, binary) for name, binary in req.outputs]
            payload, head = encode_infer_response(runner.name, runner.version, req.id, outputs)
            headers = {} if head is None else {"Inference-Header-Content-Length": str(head)}
            trace.encode = clock()
            if server_timing:
                headers["Server-Timing"] = trace.server_timing()
        except (QueueFull, NotAccepting) as exc:  # (from admission too: a request of several samples may not fit)
            m.failure("overload", (clock() - trace.start) / 1e9)
            observe = m.refusal("overload" if isinstance(exc, QueueFull) else "unloading")
            return _Refusal(exc, observe, request.scope.get(ARRIVAL_KEY, trace.start))
        except Exception as exc:
            m.failure(_failure_reason(exc), (clock() - trace.start) / 1e9)
            raise
        stages = trace.stages_ns()
        m.success(stages[-1] / 1e9)
        m.stages(stages)
        return Response(payload, 200, headers, JSON if head is None else "application/octet-stream")

    async def repo_index(request: Request) -> Response:
        await read_body(request, SMALL_BODY_BYTES)
        return _json_response(repository.index())

    async def repo_load(request: Request) -> Response:
        body = await read_body(request, SMALL_BODY_BYTES)
        await repository.load(request.path_params["name"], _load_overrides(body))
        return _json_response({})

    async def repo_unload(request: Request) -> Response:
        await read_body(request, SMALL_BODY_BYTES)
        await repository.unload(request.path_params["name"])
        return _json_response({})

    async def prometheus(request: Request) -> Response:
        text, content_type = metrics.render()
        return Response(text, 200, None, content_type)

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, 200, None, JSON)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = (f"no endpoint {request.method} {request.url.path}; see /openapi.json" if status == 404
                   else f"method {request.method} is not allowed on {request.url.path}")
        return _json_response({"error": message}, status, getattr(exc, "headers", None))

    g = _guarded
    # inference first: Starlette tries routes in order, and inference is nearly all of the traffic
    routes = [Route(p + "/infer", g(infer), methods=["POST"])
              for p in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")]
    routes += [
        Route("/v2/health/live", g(live), methods=["GET"]),
        Route("/v2/health/ready", g(ready), methods=["GET"]),
        Route("/v2", g(server_metadata), methods=["GET"]),
        Route("/v2/repository/index", g(repo_index), methods=["POST"]),
        Route("/v2/repository/models/{name}/load", g(repo_load), methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", g(repo_unload), methods=["POST"]),
        Route("/metrics", g(prometheus), methods=["GET"]),
        Route("/openapi.json", g(openapi_json), methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, g(model_metadata), methods=["GET"]),
            Route(prefix + "/ready", g(model_ready), methods=["GET"]),
            Route(prefix + "/config", g(model_config), methods=["GET"]),
        ]
    for ext in extensions:
        routes += [Route(path, g(fn), methods=methods) for path, fn, methods in ext.routes()]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await repository.start()
        try:
            yield
        finally:
            await repository.close()
            for ext in extensions:
                await asyncio.to_thread(ext.close)

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.repository = repository
    app.state.metrics = metrics
    return _Auth(app, options.token) if options.token else app


def _load_overrides(body: bytes | bytearray) -> dict[str, Any] | None:
    """The serving settings a load request may change (``{"parameters": {"config": "{...}"}}``).

    Raises:
        ProtocolError: malformed JSON, or a setting clients may not change (models, engines, files).
    """
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the load request is not valid JSON: {exc}") from None
    params = doc.get("parameters") if isinstance(doc, dict) else None
    if params is None:
        return None
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be a JSON object")
    config = params.get("config")
    if config is None:
        return None
    try:
        overrides = json.loads(config) if isinstance(config, str) else config
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"parameters.config is not valid JSON: {exc}") from None
    if not isinstance(overrides, dict):
        raise ProtocolError("parameters.config must be a JSON object of serving settings")
    refused = sorted(set(overrides) - set(RELOADABLE))
    if refused:
        raise ProtocolError(f"a load request may change only {', '.join(RELOADABLE)}; not {', '.join(refused)}")
    return overrides

