"""HTTP for the generation engine: the Open Inference Protocol's generate extension, streamed as server-sent events.

Routes (``NAME`` is the served model's name)::

    POST /v2/models/NAME/generate          {"text_input": "...", "parameters": {"max_tokens": 32}}
                                           -> {"model_name", "text_output", "tokens", "finish_reason", "ttft_ms", "tpot_ms"}
    POST /v2/models/NAME/generate_stream   same body -> text/event-stream; one ``data: {"text_output": ...}`` event per
                                           step, then a last event with "finish_reason", "ttft_ms", "tpot_ms"
    GET  /v2/models/NAME                   metadata (budget, context, step cost)
    GET  /v2/models/NAME/stats             the engine's counters and fitted step cost
    GET  /v2/health/live, /v2/health/ready
    GET  /metrics                          Prometheus: TTFT and TPOT histograms, requests by outcome, running batch

Parameters: ``max_tokens`` (1..context), ``ignore_eos`` (bool). Admission answers before any token:
429 ``{"error", "reason", "estimate": {...}}`` with ``Retry-After`` when the request would break the TTFT or TPOT
budget (or the batch is full), 503 when the engine is not running, 400 for a bad body or a prompt too long for the
budget or the context. A client that disconnects mid-stream has its request cancelled.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from ..errors import EffstackError, InputError, UnknownModelError
from ..serve.errors import error_response_parts
from .admission import PromptTooLong, Refused
from .engine import GenerationEngine, Stream

__all__ = ["create_generate_app"]

_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
MAX_BODY = 1 << 20


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(obj, separators=(",", ":")).encode(), status, headers, "application/json")


def _error(exc: BaseException) -> Any:
    if isinstance(exc, Refused):
        body: dict[str, Any] = {"error": str(exc)}
        if exc.decision is not None:
            body["reason"] = exc.decision.reason
            body["estimate"] = exc.decision.as_dict()
        return _json(body, exc.status, {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
    if isinstance(exc, PromptTooLong):
        body = {"error": str(exc), "reason": "prompt_too_long"}
        if exc.decision is not None:
            body["estimate"] = exc.decision.as_dict()
        return _json(body, 400)
    status, headers, raw = error_response_parts(exc)
    return _json(json.loads(raw), status, headers)


class _Metrics:
    def __init__(self, engine: GenerationEngine):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.ttft = Histogram("effstack_generate_ttft_seconds", "time to first token", registry=self.registry,
                              buckets=_BUCKETS_S)
        self.tpot = Histogram("effstack_generate_tpot_seconds", "mean time per output token", registry=self.registry,
                              buckets=_BUCKETS_S)
        self.requests = Counter("effstack_generate_requests", "requests by outcome", ["outcome"],
                                registry=self.registry)
        self.tokens = Counter("effstack_generate_output_tokens", "output tokens", registry=self.registry)
        self.running = Gauge("effstack_generate_running", "requests in the running batch", registry=self.registry)
        self.running.set_function(lambda: engine.load().running)
        self.met = Counter("effstack_generate_within_budget", "finished requests that met both budgets",
                           registry=self.registry)
        self.budget = engine.budget

    def finished(self, s: Stream) -> None:
        self.requests.labels(s.status).inc()
        self.tokens.inc(len(s.tokens))
        if s.ttft_s is not None:
            self.ttft.observe(s.ttft_s)
        if s.tpot_s is not None:
            self.tpot.observe(s.tpot_s)
        if s.status == "finished" and self.budget is not None and self.budget.met(s.ttft_s, s.tpot_s):
            self.met.inc()


def _parse(raw: bytes, engine: GenerationEngine, chat: bool) -> tuple[list[int], int, bool]:
    if len(raw) > MAX_BODY:
        raise InputError(f"the body is {len(raw)} bytes, over {MAX_BODY}; send a shorter text_input")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise InputError('the body is not JSON; send {"text_input": "...", "parameters": {"max_tokens": 32}}') from None
    if not isinstance(body, dict) or not isinstance(body.get("text_input"), str):
        raise InputError('the body needs "text_input" (a string), e.g. {"text_input": "Hello", '
                         '"parameters": {"max_tokens": 32}}')
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError('"parameters" must be an object, e.g. {"max_tokens": 32}')
    max_tokens = params.get("max_tokens", 32)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= engine.max_context:
        raise InputError(f"parameters.max_tokens must be an integer in 1..{engine.max_context}, got {max_tokens!r}")
    ignore_eos = params.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InputError(f"parameters.ignore_eos must be true or false, got {ignore_eos!r}")
    ids = engine.lm.encode(body["text_input"], chat=chat)
    return ids, max_tokens, ignore_eos


def _final(name: str, s: Stream) -> dict[str, Any]:
    return {"model_name": name, "tokens": len(s.tokens), "finish_reason": s.finish_reason,
            "ttft_ms": None if s.ttft_s is None else round(s.ttft_s * 1e3, 3),
            "tpot_ms": None if s.tpot_s is None else round(s.tpot_s * 1e3, 3)}


def create_generate_app(engine: GenerationEngine, name: str | None = None, chat: bool = False,
                        stop_engine_on_shutdown: bool = False) -> Any:
    """The Starlette app serving ``engine`` as model ``name`` (the engine must be started, or start at lifespan)."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    name = name or engine.lm.name
    metrics = _Metrics(engine)
    previous = engine.on_finish

    def on_finish(s: Stream) -> None:
        metrics.finished(s)
        if previous is not None:
            previous(s)

    engine.on_finish = on_finish

    def model(request: Request) -> None:
        if request.path_params["model"] != name:
            raise UnknownModelError(f"no model {request.path_params['model']!r} here; this server has {name!r}")

    async def start(request: Request) -> Stream:
        model(request)
        ids, max_tokens, ignore_eos = _parse(await request.body(), engine, chat)
        s = engine.submit(ids, max_tokens, ignore_eos=ignore_eos, loop=asyncio.get_running_loop())
        return s

    def detok(s: Stream, upto: int, prev: str) -> tuple[str, str]:
        text = engine.lm.decode(s.tokens[:upto])
        if text.endswith("\ufffd"):  # an incomplete character: wait for the next token
            return "", prev
        return (text[len(prev):] if text.startswith(prev) else text), text

    async def generate(request: Request) -> Response:
        try:
            s = await start(request)
        except EffstackError as exc:
            metrics.requests.labels(getattr(getattr(exc, "decision", None), "reason", None) or "rejected").inc()
            return _error(exc)
        try:
            async for ev in s.aiter():
                if ev.finished and ev.error:
                    return _json({"error": f"generation failed: {ev.error}"}, 500)
        except asyncio.CancelledError:
            engine.cancel(s)
            raise
        return _json({**_final(name, s), "text_output": engine.lm.decode(s.tokens)})

    async def generate_stream(request: Request) -> Response:
        try:
            s = await start(request)
        except EffstackError as exc:
            metrics.requests.labels(getattr(getattr(exc, "decision", None), "reason", None) or "rejected").inc()
            return _error(exc)

        async def events():
            prev = ""
            try:
                async for ev in s.aiter():
                    if ev.tokens:
                        delta, prev = detok(s, ev.index + len(ev.tokens), prev)
                        yield "data: " + json.dumps({"model_name": name, "text_output": delta, "index": ev.index,
                                                     "token_ids": ev.tokens}) + "\n\n"
                    if ev.finished:
                        last = {**_final(name, s), "text_output": ""}
                        if ev.error:
                            yield "event: error\ndata: " + json.dumps({"error": ev.error, **last}) + "\n\n"
                        else:
                            yield "data: " + json.dumps(last) + "\n\n"
            finally:  # the client went away (or the response ended): free the slot
                if not s.done:
                    engine.cancel(s)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def metadata(request: Request) -> Response:
        try:
            model(request)
        except EffstackError as exc:
            return _error(exc)
        st = engine.stats()
        return _json({"name": name, "platform": "transformers-continuous-batching", "versions": ["1"],
                      "extensions": ["generate", "generate_stream"], "budget": st["budget"],
                      "max_context": engine.max_context, "max_running": engine.max_running,
                      "source": engine.lm.meta.get("weights") or engine.lm.meta.get("source")})

    async def stats(request: Request) -> Response:
        try:
            model(request)
        except EffstackError as exc:
            return _error(exc)
        return _json(engine.stats())

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        ok = engine.running
        return _json({"ready": ok}, 200 if ok else 503)

    async def prom(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Any):
        if not engine.running:
            await asyncio.get_running_loop().run_in_executor(None, engine.start)
        yield
        if stop_engine_on_shutdown:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    routes = [
        Route("/v2/models/{model}/generate", generate, methods=["POST"]),
        Route("/v2/models/{model}/generate_stream", generate_stream, methods=["POST"]),
        Route("/v2/models/{model}", metadata, methods=["GET"]),
        Route("/v2/models/{model}/stats", stats, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/metrics", prom, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
