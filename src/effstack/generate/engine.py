"""Generation engine: transformers' continuous batching (paged KV cache, iteration-level scheduling) plus what a
latency-budgeted service needs on top.

**What transformers does** (``model.init_continuous_batching()``, checked on CPU in fp32 with ``LlamaForCausalLM``
and SDPA attention, transformers 5.25): a background thread runs one forward per step over every scheduled request,
packing the prompt tokens of requests being prefilled (chunked to ``max_batch_tokens``) and one decode token for each
of the rest into a single variable-length batch over a paged KV cache. Requests join at the next step after
``add_request`` and leave the step after their last token (``max_new_tokens`` or EOS), so the batch changes at every
iteration; with ``streaming=True`` every new token is delivered as it is made.

**What effstack adds here**

- per-request timing seen at delivery: arrival, first token, every token -> TTFT and TPOT (mean inter-token time);
- measured step costs: every step of the loop is timed with its size (requests, query tokens) and fed to a
  :class:`~effstack.generate.admission.StepCostModel`; a calibration at start gives it a first fit;
- budget-aware admission (:func:`~effstack.generate.admission.decide`, pure) in front of ``add_request``: a request
  that would push the running batch past the TPOT budget, or could not get its first token within TTFT, is refused
  (:class:`~effstack.generate.admission.Refused`, 429) instead of queued;
- streams that work from threads (iterate) and from asyncio (``aiter``), cancellation, and counters for metrics.

The step timing and delivery use two hooks on the manager instance (``_generation_loop_body`` and the output
router's ``deliver``/``deliver_batch``); :func:`_check_hooks` fails with one line if a transformers version lacks
them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InputError, MissingDependencyError
from .admission import Budget, Decision, Load, PromptTooLong, Refused, StepCost, StepCostModel, decide, explain
from .model import LanguageModel

__all__ = ["GenerationEngine", "Stream", "TokenEvent"]

_ids = itertools.count()


@dataclass(frozen=True)
class TokenEvent:
    """New tokens of a stream (one per engine step) or its end (``finished``; ``error`` when it failed)."""

    tokens: list[int]
    index: int  # position of the first of ``tokens`` in the output
    at: float
    finished: bool = False
    error: str | None = None


class Stream:
    """One request's output as it is made; times are ``time.perf_counter()`` seconds."""

    def __init__(self, request_id: str, prompt_ids: list[int], max_tokens: int, eos_id: int | None,
                 arrived_at: float, loop: asyncio.AbstractEventLoop | None = None):
        self.id = request_id
        self.prompt_ids = prompt_ids
        self.max_tokens = max_tokens
        self.eos_id = eos_id
        self.arrived_at = arrived_at
        self.submitted_at = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.finished_at: float | None = None
        self.tokens: list[int] = []
        self.status = "running"  # running, finished, failed, cancelled
        self.error: str | None = None
        self.decision: Decision | None = None
        self._loop = loop
        self._events: queue.Queue[TokenEvent] | asyncio.Queue[TokenEvent] = (
            asyncio.Queue() if loop is not None else queue.Queue())
        self._done = threading.Event()

    # ---- engine side (generation thread) ----
    def _put(self, event: TokenEvent) -> None:
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._events.put_nowait, event)  # type: ignore[arg-type]
            except Exception:  # the loop is closed (the client is gone): never let it stop the engine's thread
                pass
        else:
            self._events.put_nowait(event)  # type: ignore[call-arg]

    def _tokens(self, all_tokens: list[int], now: float) -> None:
        new = all_tokens[len(self.tokens):]
        if not new:
            return
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        index = len(self.tokens)
        self.tokens.extend(new)
        self._put(TokenEvent(list(new), index, now))

    def _finish(self, now: float, status: str = "finished", error: str | None = None) -> None:
        if self._done.is_set():
            return
        self.status, self.error, self.finished_at = status, error, now
        self._done.set()
        self._put(TokenEvent([], len(self.tokens), now, finished=True, error=error))

    # ---- client side ----
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def finish_reason(self) -> str | None:
        if self.status != "finished":
            return self.status if self.done else None
        return "stop" if self.tokens and self.eos_id is not None and self.tokens[-1] == self.eos_id else "length"

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_at is None else self.first_at - self.arrived_at

    @property
    def tpot_s(self) -> float | None:
        if self.first_at is None or self.last_at is None or len(self.tokens) < 2:
            return None
        return (self.last_at - self.first_at) / (len(self.tokens) - 1)

    def wait(self, timeout: float | None = None) -> Stream:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout}s")
        return self

    def __iter__(self) -> Iterator[TokenEvent]:
        """Events until the end (thread consumers; a stream made with ``loop`` is consumed with :meth:`aiter`)."""
        if self._loop is not None:
            raise RuntimeError("this stream delivers to an event loop; use 'async for ev in stream.aiter()'")
        while True:
            ev = self._events.get()  # type: ignore[call-arg]
            yield ev
            if ev.finished:
                return

    async def aiter(self) -> AsyncIterator[TokenEvent]:
        if self._loop is None:
            raise RuntimeError("this stream was made without an event loop; iterate it from a thread")
        while True:
            ev = await self._events.get()  # type: ignore[misc]
            yield ev
            if ev.finished:
                return

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "prompt_tokens": len(self.prompt_ids), "tokens": len(self.tokens),
                "status": self.status, "finish_reason": self.finish_reason,
                "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1e3, 3),
                "tpot_ms": None if self.tpot_s is None else round(self.tpot_s * 1e3, 3)}


def _check_hooks(manager: Any) -> None:
    missing = [n for n in ("_generation_loop_body", "output_router", "add_request", "cancel_request")
               if not hasattr(manager, n)]
    router = getattr(manager, "output_router", None)
    missing += [f"output_router.{n}" for n in ("deliver", "deliver_batch") if router is not None
                and not hasattr(router, n)]
    if missing:
        import transformers

        raise MissingDependencyError(
            f"transformers with a continuous-batching manager that has {', '.join(missing)} "
            f"(found {transformers.__version__})", "lm", "the generation engine")


class GenerationEngine:
    """Continuous batching over one causal LM, with TTFT/TPOT budgets and admission.

    Example::

        with GenerationEngine(load_lm("tiny"), Budget(ttft_ms=500, tpot_ms=100)) as engine:
            s = engine.submit(ids, max_tokens=16).wait(30)
            print(s.tokens, s.ttft_s, s.tpot_s)
    """

    def __init__(self, lm: LanguageModel, budget: Budget | None = None, *, max_running: int = 16,
                 max_context: int = 512, max_batch_tokens: int = 256, page_size: int = 32,
                 cost_prior: StepCost | None = None, on_finish: Callable[[Stream], None] | None = None):
        if max_running < 1 or max_batch_tokens < 1 or page_size < 1:
            raise ConfigError("max_running, max_batch_tokens and page_size must be positive")
        if max_context > lm.max_positions:
            max_context = lm.max_positions
        self.lm = lm
        self.budget = budget
        self.max_running = int(max_running)
        self.max_context = int(max_context)
        self.max_batch_tokens = int(max_batch_tokens)
        self.page_size = int(page_size)
        self.costs = StepCostModel(prior=cost_prior)
        self.on_finish = on_finish
        self.counts: Counter[str] = Counter()
        self.steps = 0
        self._lock = threading.RLock()
        self._streams: dict[str, Stream] = {}
        self._manager: Any = None
        self._step_listeners: list[Callable[[int, int, float], None]] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._manager is not None and self._manager.is_running()

    def start(self, calibrate: bool = True) -> GenerationEngine:
        if self._manager is not None:
            return self
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        model = self.lm.model
        blocks = self.max_running * math.ceil(self.max_context / self.page_size) + 2
        cb = ContinuousBatchingConfig(page_size=self.page_size, num_blocks=blocks,
                                      max_batch_tokens=self.max_batch_tokens,
                                      max_requests_per_batch=self.max_running, allow_block_sharing=False)
        gen = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=-1, pad_token_id=0)
        manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        _check_hooks(manager)
        self._hook(manager)
        manager.start()
        self._manager = manager
        if calibrate:
            self.calibrate()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        manager, self._manager = self._manager, None
        if manager is None:
            return
        try:
            manager.stop(block=True, timeout=timeout)
        finally:
            now = time.perf_counter()
            with self._lock:
                left = list(self._streams.values())
                self._streams.clear()
            for s in left:
                s._finish(now, "failed", "the engine stopped")

    def __enter__(self) -> GenerationEngine:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _hook(self, manager: Any) -> None:
        body = manager._generation_loop_body

        def timed_body(batch_processor: Any, bootstrapping: bool = False) -> bool:
            before = getattr(manager, "current_batch", 0)
            t0 = time.perf_counter()
            more = body(batch_processor, bootstrapping)
            if getattr(manager, "current_batch", 0) != before:  # a step ran (not an idle wait)
                dt = time.perf_counter() - t0
                io = batch_processor.inputs_and_outputs
                n = len(getattr(io, "requests_in_batch", ()) or ())
                q = int(getattr(io, "num_q_tokens", n) or n)
                self.steps += 1
                self.costs.add(n, q, dt)
                for fn in self._step_listeners:
                    fn(n, q, dt)
            return more

        manager._generation_loop_body = timed_body
        router = manager.output_router
        deliver, deliver_batch = router.deliver, router.deliver_batch

        def on_output(out: Any, now: float) -> bool:
            stream = self._streams.get(out.request_id)
            if stream is None:
                return False
            stream._tokens(list(out.generated_tokens), now)
            if out.is_finished():
                failed = out.error is not None or int(out.status) == 4  # RequestStatus.FAILED
                self._close(stream, now, "failed" if failed else "finished", out.error)
            return True

        def my_deliver(out: Any) -> None:
            if not on_output(out, time.perf_counter()):
                deliver(out)

        def my_deliver_batch(outs: list[Any]) -> None:
            now = time.perf_counter()
            rest = [o for o in outs if not on_output(o, now)]
            if rest:
                deliver_batch(rest)

        router.deliver, router.deliver_batch = my_deliver, my_deliver_batch

    def _close(self, stream: Stream, now: float, status: str, error: str | None = None) -> None:
        with self._lock:
            if self._streams.pop(stream.id, None) is None:
                return
            self.counts[status] += 1
        stream._finish(now, status, error)
        if self.on_finish is not None:
            try:
                self.on_finish(stream)
            except Exception:  # metrics must never break generation
                pass

    def calibrate(self, prompt_tokens: int = 24, tokens: int = 4, timeout: float = 120.0) -> StepCost:
        """Run a lone request then a batch (not counted in stats) so the step-cost model has a first fit."""
        vocab = int(self.lm.model.config.vocab_size)
        eos = self.lm.eos_token_id
        base = [t for t in range(3, min(vocab, 3 + 200)) if t != eos] or [0]

        def prompt(i: int, n: int) -> list[int]:
            return [base[(7 * i + 3 * j) % len(base)] for j in range(n)]

        for batch in (1, max(2, min(8, self.max_running))):
            streams = [self.submit(prompt(i, prompt_tokens + 4 * i), tokens, ignore_eos=True, admit=False,
                                   count=False) for i in range(batch)]
            for s in streams:
                s.wait(timeout)
        self.counts.clear()
        return self.costs.cost()

    # ------------------------------------------------------------------ admission
    def load(self) -> Load:
        with self._lock:
            streams = list(self._streams.values())
        return Load(running=len(streams),
                    pending_prefill=sum(len(s.prompt_ids) for s in streams if s.first_at is None),
                    remaining_tokens=tuple(max(s.max_tokens - len(s.tokens), 0) for s in streams))

    def check(self, prompt_tokens: int, max_tokens: int) -> Decision:
        """Validate sizes and decide admission now (raises PromptTooLong for a request that can never fit)."""
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if prompt_tokens < 1:
            raise InputError("the prompt has no tokens; send some text")
        if prompt_tokens + max_tokens > self.max_context:
            raise PromptTooLong(f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds this engine's "
                                f"context of {self.max_context} tokens; shorten the prompt or lower max_tokens")
        d = decide(self.load(), prompt_tokens, self.budget, self.costs.cost(), self.max_running,
                   self.max_batch_tokens)
        if d.reason == "prompt_too_long":
            raise PromptTooLong(explain(d, self.budget), d)
        return d

    def submit(self, prompt_ids: list[int], max_tokens: int = 32, *, ignore_eos: bool = False, admit: bool = True,
               arrived_at: float | None = None, loop: asyncio.AbstractEventLoop | None = None,
               request_id: str | None = None, count: bool = True) -> Stream:
        """Start generating (greedy) after ``prompt_ids``; returns the :class:`Stream` at once.

        With ``admit`` the budget admission runs first and raises :class:`Refused` (429) instead of queueing; without
        it the request joins whatever the load (baselines, calibration). ``arrived_at`` backdates the arrival (a
        request that waited in a client-side queue) so TTFT counts the wait.
        """
        manager = self._manager
        if manager is None or not manager.is_running():
            raise Refused("the generation engine is not running; retry when it is ready", status=503)
        prompt_ids = [int(t) for t in prompt_ids]
        vocab = int(self.lm.model.config.vocab_size)
        if any(t < 0 or t >= vocab for t in prompt_ids):
            raise InputError(f"prompt token ids must be in [0, {vocab})")
        eos = self.lm.eos_token_id
        rid = request_id or f"gen-{next(_ids)}"
        with self._lock:
            if admit:
                d = self.check(len(prompt_ids), max_tokens)
                if not d.admit:
                    self.counts[f"refused_{d.reason}"] += 1
                    raise Refused(explain(d, self.budget), d)
            elif prompt_ids and len(prompt_ids) + max_tokens > self.max_context:
                raise PromptTooLong(f"prompt + max_tokens exceeds the engine's context of {self.max_context} tokens")
            elif not prompt_ids:
                raise InputError("the prompt has no tokens; send some text")
            stream = Stream(rid, prompt_ids, int(max_tokens), eos,
                            time.perf_counter() if arrived_at is None else arrived_at, loop)
            if admit:
                stream.decision = d
            if rid in self._streams:
                raise InputError(f"request id {rid!r} is already running")
            self._streams[rid] = stream
            if count:
                self.counts["admitted"] += 1
        stop_ids = -1 if (ignore_eos or eos is None) else eos
        if manager.add_request(prompt_ids, request_id=rid, max_new_tokens=int(max_tokens), streaming=True,
                               eos_token_id=stop_ids) is None:
            self._close(stream, time.perf_counter(), "failed", "the engine is stopping")
            raise Refused("the generation engine is stopping; retry later", status=503)
        return stream

    def cancel(self, stream: Stream) -> None:
        """Stop generating for ``stream`` (the client went away); its KV blocks are freed at the next step."""
        if self._manager is not None and not stream.done:
            self._manager.cancel_request(stream.id)
        self._close(stream, time.perf_counter(), "cancelled")

    def stats(self) -> dict[str, Any]:
        c = self.costs.cost()
        load = self.load()
        return {"running": load.running, "pending_prefill_tokens": load.pending_prefill, "steps": self.steps,
                "counts": dict(self.counts),
                "step_cost_ms": {"base": round(c.a * 1e3, 3), "per_request": round(c.b * 1e3, 4),
                                 "per_prefill_token": round(c.c * 1e3, 5), "samples": c.samples},
                "budget": None if self.budget is None else {"ttft_ms": self.budget.ttft_ms,
                                                            "tpot_ms": self.budget.tpot_ms},
                "max_running": self.max_running, "max_context": self.max_context}
