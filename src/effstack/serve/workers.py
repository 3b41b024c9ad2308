"""The batcher's asyncio shell: it feeds :func:`~effstack.serve.batcher.decide` and runs batches on instances.

Each instance (one engine session) owns one thread and computes one batch at a time. The shell calls
the pure decision whenever something changes — an arrival, a finished batch, a timer it armed — so
there is no polling loop; the event loop only queues, wakes and hands out results.

>>> async def demo(session, x):                                   # doctest: +SKIP
...     batcher = Batcher(BatchingPolicy(max_batch=8), [session.run])
...     return await batcher.submit(x)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, EffstackError, EngineError
from .batcher import BatchingPolicy, BatchQueue, Pending, decide, expired_head
from .errors import NotAccepting, QueueFull, RequestTimeout

__all__ = ["BatchRecord", "Batcher", "CollateFn", "RunFn", "pad_collate"]


RunFn = Callable[[np.ndarray], np.ndarray]
CollateFn = Callable[[Sequence[np.ndarray]], np.ndarray]  # the requests' inputs -> one batch input
COMPUTE_NICE = 5  # how much lower the engines' threads run than the event loop (Linux: nice is per thread)


@dataclass
class BatchRecord:
    """What the shell reports to its observer for each executed batch."""

    instance: int
    samples: int
    requests: int
    queue_s: list[float]
    compute_s: float
    tokens: int = 0  # text: real tokens in the batch
    padded: int = 0  # text: padding slots in the batch input (its rows x its width, less the real tokens)


class Batcher:
    """The asyncio shell around :func:`decide`: queue, timers, and one thread per instance.

    Args:
        policy: the :class:`BatchingPolicy`.
        instances: one ``run(x) -> y`` callable per engine session; each runs on its own thread, one
            batch at a time. ``y`` must have the batch axis first.
        observer: optional object with ``on_batch(BatchRecord)`` and ``on_expired(n)`` (metrics).
        inline_below_s: batches whose predicted p99 compute (from the policy's curve) is at most this run on
            the event loop's thread instead of the instance's: handing a batch to a thread and its result
            back costs 0.1-1 ms on a busy machine, more than a tiny model's whole batch. 0 turns it off.
        collate: joins the requests' inputs into the batch's (default: concatenated on the batch axis);
            text models pad token ids to the batch's longest row (:func:`pad_collate`).

    Must be created and used on one running event loop.

    Example:
        >>> async def demo():                                       # doctest: +SKIP
        ...     b = Batcher(BatchingPolicy(max_batch=8), [session.run])
        ...     return await b.submit(x)
    """

    def __init__(self, policy: BatchingPolicy, instances: Sequence[RunFn], observer: Any = None,
                 inline_below_s: float = 0.0, collate: CollateFn | None = None):
        if not instances:
            raise ConfigError("the batcher needs at least one instance")
        self.policy = policy
        self.queue = BatchQueue(policy)
        self.observer = observer
        self.inline_below_s = inline_below_s
        self.collate = collate or _concatenate
        self._run = list(instances)
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix=f"effstack-instance{i}", initializer=lower_priority)
                       for i in range(len(instances))]
        self._idle = list(range(len(instances)))
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._next_id = 0
        self._in_flight = 0
        self._accepting = True
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def in_flight(self) -> int:
        """Batches being computed now."""
        return self._in_flight

    def check_capacity(self) -> None:
        """Raise :class:`QueueFull` (or :class:`NotAccepting`) now, before a request body is even parsed."""
        if not self._accepting:
            raise NotAccepting("the model is being unloaded; retry once it is loaded again")
        if self.queue.full():
            raise QueueFull(f"the server is overloaded ({self.queue.samples} samples queued); retry later",
                            retry_after_s=self.queue.retry_after_s())

    async def submit(self, x: np.ndarray, timeout_s: float | None = None, priority: int | None = None,
                     trace: Any = None, length: int = 0, tokens: int = 0) -> np.ndarray:
        """Queue one request (``x.shape[0]`` samples) and return its rows of the batch output.

        ``trace`` (a :class:`~effstack.serve.metrics.RequestTrace`, optional) gets the launch stamp of the
        request's batch and the engine's compute time for it. Text requests give ``length`` (their padded width
        in tokens: the policy's length bucket) and ``tokens`` (their real tokens: the padding metrics).

        Raises:
            QueueFull: the queue is at its limit (answer 503 with Retry-After).
            NotAccepting: the batcher is draining for an unload.
            RequestTimeout: ``timeout_s`` passed before the request was launched.
            InputError: too many samples or a bad priority.
            EngineError: the engine failed on the batch.
        """
        if not self._accepting:
            raise NotAccepting("the model is being unloaded; retry once it is loaded again")
        now = self._loop.time()
        deadline = now + timeout_s if timeout_s is not None else None
        p = Pending(self._next_id, int(x.shape[0]), now, deadline, self.policy.level(priority), x,
                    self._loop.create_future(), trace, length=length, tokens=tokens)
        self._next_id += 1
        self.queue.admit(p)
        self._drained.clear()
        self._schedule()
        try:
            if deadline is None:
                return await p.future
            done, _ = await asyncio.wait({p.future}, timeout=max(deadline - self._loop.time(), 0.0))
            if not done and not p.launched:
                self.queue.cancel(p)
                self._schedule()
                raise RequestTimeout(f"the request waited {timeout_s * 1000:.0f} ms in the queue; its timeout")
            return await p.future  # launched in time: the compute is bounded, wait for it
        except asyncio.CancelledError:  # the client went away
            self.queue.cancel(p)
            self._schedule()
            raise

    async def drain(self, stop_accepting: bool = True) -> None:
        """Wait until nothing is queued or computing; with ``stop_accepting``, refuse new requests first."""
        if stop_accepting:
            self._accepting = False
        self._check_drained()
        await self._drained.wait()

    def close(self) -> None:
        """Stop the instance threads (after :meth:`drain`)."""
        self._accepting = False
        if self._timer:
            self._timer.cancel()
        for pool in self._pools:
            pool.shutdown(wait=False)

    # --- the shell's event handling ---------------------------------------------------------------

    def _schedule(self) -> None:
        while True:
            now = self._loop.time()
            d = (decide(self.queue, now, self.policy, self.queue.arrival_rate(now)) if self._idle
                 else expired_head(self.queue, now))
            waiter_gone = [p.cancelled for p in d.expired]  # the client's coroutine already answered
            if d.launch or d.expired:
                self.queue.apply(d)
            for p, gone in zip(d.expired, waiter_gone):
                if p.future.done():
                    continue
                if gone:
                    p.future.cancel()  # nobody awaits it: cancel rather than leave an unretrieved exception
                else:
                    p.future.set_exception(RequestTimeout("the request's timeout passed while it was queued"))
            if d.expired and self.observer:
                self.observer.on_expired(len(d.expired))
            if d.launch:
                self._dispatch(d.launch, now)
                continue
            if d.wake_at is not None:
                self._arm(d.wake_at)
            self._check_drained()
            return

    def _arm(self, when: float) -> None:
        if self._timer_at is not None and self._timer_at <= when and self._timer is not None:
            return
        if self._timer:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._schedule()

    def _dispatch(self, batch: tuple[Pending, ...], now: float) -> None:
        inst = self._idle.pop(0)
        self._in_flight += 1
        queue_s = [now - p.arrival for p in batch]
        stamp = time.perf_counter_ns()
        for p in batch:
            if p.trace is not None:
                p.trace.launch = stamp
        if self._inline(batch):
            # a batch predicted faster than a thread hop runs here, on the loop; _schedule's loop continues
            try:
                result = _compute(self._run[inst], batch, self.collate)
            except Exception as exc:  # the engine failed; _complete hands the error to the batch's requests
                self._complete(inst, batch, queue_s, None, exc)
            else:
                self._complete(inst, batch, queue_s, result, None)
            return
        self._pools[inst].submit(self._work, inst, batch, queue_s)

    def _inline(self, batch: tuple[Pending, ...]) -> bool:
        if self.inline_below_s <= 0 or not self.policy.latency_curve:
            return False
        return self.policy.latency(sum(p.n for p in batch)) <= self.inline_below_s

    def _work(self, inst: int, batch: tuple[Pending, ...], queue_s: list[float]) -> None:
        """On the instance's thread: compute, then hand the result to the loop in one call. (``run_in_executor``
        took two loop iterations more: its future is chained to an asyncio future, whose done callback is
        scheduled in turn.)"""
        result: tuple[list[np.ndarray], float, int] | None = None
        exc: BaseException | None = None
        try:
            result = _compute(self._run[inst], batch, self.collate)
        except BaseException as e:  # the engine failed; _complete hands the error to the batch's requests
            exc = e
        try:
            self._loop.call_soon_threadsafe(self._finished, inst, batch, queue_s, result, exc)
        except RuntimeError:  # the loop is closed: the server is gone, nobody waits for these requests
            pass

    def _finished(self, inst: int, batch: tuple[Pending, ...], queue_s: list[float],
                  result: tuple[list[np.ndarray], float, int] | None, exc: BaseException | None) -> None:
        self._complete(inst, batch, queue_s, result, exc)
        self._schedule()

    def _complete(self, inst: int, batch: tuple[Pending, ...], queue_s: list[float],
                  result: tuple[list[np.ndarray], float, int] | None, exc: BaseException | None) -> None:
        self._idle.append(inst)
        self._in_flight -= 1
        if exc is not None or result is None:  # the engine failed: every request of the batch gets the error
            err = exc if isinstance(exc, EffstackError) else EngineError(f"the engine failed on a batch: {exc}")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        outputs, compute_s, slots = result
        samples = sum(p.n for p in batch)
        self.queue.observe(samples, compute_s)  # admission follows the pace batches really run at
        for p, y in zip(batch, outputs):
            if not p.future.done():
                p.future.set_result(y)
        if self.observer:
            tokens = sum(p.tokens for p in batch)
            padded = max(0, slots - tokens) if tokens else 0
            self.observer.on_batch(BatchRecord(inst, samples, len(batch), queue_s, compute_s, tokens, padded))

    def _check_drained(self) -> None:
        if self._in_flight == 0 and self.queue.samples == 0:
            self._drained.set()


def _concatenate(xs: Sequence[np.ndarray]) -> np.ndarray:
    return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)


def pad_collate(pad_id: int) -> CollateFn:
    """A collate for ``(n, L)`` token-id requests of different ``L``: one ``(sum n, max L)`` batch padded with
    ``pad_id`` (the model masks pads, so no text's output changes).

    Example:
        >>> pad_collate(0)([np.array([[5, 6, 7]]), np.array([[8]])]).tolist()
        [[5, 6, 7], [8, 0, 0]]
    """

    def collate(xs: Sequence[np.ndarray]) -> np.ndarray:
        width = max(x.shape[1] for x in xs)
        if len(xs) == 1 or all(x.shape[1] == width for x in xs):
            return _concatenate(xs)
        out = np.full((sum(x.shape[0] for x in xs), width), pad_id, dtype=xs[0].dtype)
        row = 0
        for x in xs:
            out[row : row + x.shape[0], : x.shape[1]] = x
            row += x.shape[0]
        return out

    return collate


def _compute(run: RunFn, batch: tuple[Pending, ...],
             collate: CollateFn = _concatenate) -> tuple[list[np.ndarray], float, int]:
    """On an instance thread: join the requests, run the batch, split the output per request. Returns the outputs,
    the engine's seconds and the batch input's size in elements (token slots, for text)."""
    x = collate([p.payload for p in batch])
    t0 = time.perf_counter_ns()
    y = run(x)
    t1 = time.perf_counter_ns()
    compute_s = (t1 - t0) / 1e9
    for p in batch:  # the requests' coroutines wait meanwhile: nothing else touches their traces
        if p.trace is not None:
            p.trace.started, p.trace.compute_ns = t0, t1 - t0
    # copy: some runtimes hand out views of buffers they overwrite on the next call
    y = np.array(y, copy=True)
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise EngineError(
            f"the engine returned shape {y.shape} for a batch of {x.shape[0]}; the batch axis must be first")
    outs, start = [], 0
    for p in batch:
        outs.append(y[start : start + p.n])
        start += p.n
    return outs, compute_s, int(x.size)


def lower_priority(tids: Iterable[int] | None = None, by: int = COMPUTE_NICE) -> None:
    """Run these threads (default: the calling one) ``by`` nice levels below where they are.

    The engines' threads saturate the cores under load; at the same priority as the event loop they starve
    it, and then even a 503 waits behind inference (19 ms at p99 at 3x overload here). Lower-priority
    compute lets the loop answer at once and only costs compute the CPU time the loop really uses. Linux
    only (nice applies per thread there); elsewhere, or without permission, nothing changes.
    """
    if by <= 0 or not hasattr(os, "setpriority"):
        return
    for tid in (tids if tids is not None else [0]):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
        except OSError:  # the thread ended meanwhile, or no permission
            continue


def thread_ids() -> set[int]:
    """This process's thread ids (empty where /proc is missing)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()
