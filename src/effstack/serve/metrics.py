"""Prometheus metrics of the server, on a registry of its own (two servers in one process do not collide).

Named after Triton's, so the same dashboards' arithmetic works:

* ``effstack_inference_request_success_total`` / ``..._failure_total{reason}``: requests answered.
* ``effstack_inference_count_total``: samples computed; ``effstack_inference_exec_count_total``: batches
  executed. Average batch size = ``inference_count / exec_count`` (what Triton users compute).
* ``effstack_request_duration_seconds``, ``effstack_queue_duration_seconds``,
  ``effstack_compute_duration_seconds``: histograms (request: from the body's arrival to the reply).
* ``effstack_request_stage_duration_seconds{stage}``: where each answered request's time went, a histogram per
  stage of :data:`STAGES` but the last (read the body, parse it, wait in the batcher's queue, the hand-off to
  the instance's thread, the engine's compute of its batch, the return of its rows to the event loop, encode
  the response); their sum, ``total``, is ``effstack_request_duration_seconds``. The same figures leave with
  each response as a ``Server-Timing`` header (milliseconds), so a client can split its own latency without
  scraping.
* ``effstack_refusal_duration_seconds{reason}``: how fast a request the server cannot take is refused (503):
  from its arrival (:data:`ARRIVAL_KEY`: the HTTP parser met its first bytes) to the refusal handed to the
  transport; ``reason`` is ``overload`` (the queue is at its limit) or ``unloading``. A client that would retry
  elsewhere is owed this answer fast, whatever the engine is doing.
* ``effstack_batch_size``: histogram of executed batch sizes in samples.
* ``effstack_tokens_total{kind}`` (text models): token slots of the executed batches, ``kind="real"`` (the texts'
  own tokens) or ``kind="padded"`` (padding up to the batch's longest text). The padding fraction, what
  length grouping saves, is ``padded / (real + padded)``; ``effstack_texts_truncated_total`` counts texts cut
  at the model's max length (silently, as sentence-transformers does).
* ``effstack_inference_request_expired_total``: requests dropped at their deadline, never computed.
* ``effstack_queue_samples``, ``effstack_batches_in_flight``, ``effstack_model_ready``: gauges read at scrape;
  ``effstack_queue_limit_samples`` (the admission limit now: beyond it, 503) and ``effstack_compute_pace``
  (observed batch time over the latency curve's p99, a moving average; above 1 the engine runs slower than
  it did at load and the limit shrinks).

>>> m = ServerMetrics()
>>> m.model("tiny", "1").success()
>>> b"effstack_inference_request_success_total" in m.render()[0]
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ARRIVAL_KEY", "REFUSAL_REASONS", "STAGES", "ModelMetrics", "RequestTrace", "ServerMetrics"]

if TYPE_CHECKING:
    from .repository import ModelState

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# stages are often tens of microseconds: finer buckets below a millisecond than the request's
_STAGE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
                  1.0, 2.0, 5.0, 10.0)
# refusals are judged at a few milliseconds (issue 17: p99 <= 5 ms at 3x overload): buckets on both sides of 5 ms
_REFUSAL_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05,
                    0.1, 0.2, 0.5, 1.0, 5.0)
STAGES = ("read", "parse", "queue", "handoff", "compute", "return", "encode", "total")
REFUSAL_REASONS = ("overload", "unloading")
# the ASGI scope key of a request's arrival (time.perf_counter_ns when the HTTP parser met its first bytes; set by
# the server's protocol, effstack.serve.server; absent under other servers, where the handler's own stamp stands in)
ARRIVAL_KEY = "effstack.arrival_ns"


class RequestTrace:
    """Clock stamps of one inference request on its way through the server (``time.perf_counter_ns``).

    The handler stamps ``start``, ``read`` (body read), ``parse`` (tensors decoded; the request is handed to the
    batcher right after), ``done`` (its rows of the batch output are back on the event loop) and ``encode``
    (response built); the batcher's shell stamps ``launch`` (its batch left the queue), ``started`` (the engine
    began the batch, on the instance's thread) and ``compute_ns`` (the engine's own time for the batch). Slots
    and integers only: a few hundred nanoseconds per request.

    Example:
        >>> t = RequestTrace(0)
        >>> t.read, t.parse, t.launch, t.started, t.compute_ns, t.done, t.encode = 10, 20, 20, 25, 60, 90, 95
        >>> t.stages_ns()
        (10, 10, 0, 5, 60, 5, 5, 95)
    """

    __slots__ = ("start", "read", "parse", "launch", "started", "compute_ns", "done", "encode")

    def __init__(self, start: int):
        self.start = start
        self.read = self.parse = self.launch = self.started = self.done = self.encode = start
        self.compute_ns = 0

    def stages_ns(self) -> tuple[int, ...]:
        """Nanoseconds per stage, in the order of :data:`STAGES`: ``handoff`` from the launch to the engine's start
        (waking the instance's thread, joining the batch), ``return`` from the engine's end to the rows back on
        the event loop (copying and splitting the output, waking the loop, resuming the handler)."""
        ended = self.started + self.compute_ns
        return (self.read - self.start, self.parse - self.read, self.launch - self.parse,
                max(0, self.started - self.launch), self.compute_ns, max(0, self.done - ended),
                self.encode - self.done, self.encode - self.start)

    def server_timing(self) -> str:
        """The ``Server-Timing`` header value: ``read;dur=0.041, parse;dur=0.012, ...`` in milliseconds."""
        r, p, q, h, c, b, e, t = self.stages_ns()
        return (f"read;dur={r / 1e6:.3f}, parse;dur={p / 1e6:.3f}, queue;dur={q / 1e6:.3f}, "
                f"handoff;dur={h / 1e6:.3f}, compute;dur={c / 1e6:.3f}, return;dur={b / 1e6:.3f}, "
                f"encode;dur={e / 1e6:.3f}, total;dur={t / 1e6:.3f}")


class ServerMetrics:
    """All of the server's metrics. ``state`` is a callable giving ``{(model, version): ModelState}`` at scrape
    time (the repository provides it)."""

    def __init__(self, state: Callable[[], dict[tuple[str, str], ModelState]] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version"]
        r = self.registry
        self.success = Counter("effstack_inference_request_success", "Requests answered with a result", labels,
                               registry=r)
        self.failure = Counter("effstack_inference_request_failure", "Requests answered with an error",
                               [*labels, "reason"], registry=r)
        self.count = Counter("effstack_inference_count", "Samples computed", labels, registry=r)
        self.exec_count = Counter("effstack_inference_exec_count", "Batches executed", labels, registry=r)
        self.expired = Counter("effstack_inference_request_expired",
                               "Requests dropped at their deadline without being computed", labels, registry=r)
        self.request_s = Histogram("effstack_request_duration_seconds", "Time from a request's body to its reply",
                                   labels, buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_s = Histogram("effstack_queue_duration_seconds", "Time a request waited for its batch",
                                 labels, buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_s = Histogram("effstack_compute_duration_seconds", "Engine time of a batch", labels,
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_s = Histogram("effstack_request_stage_duration_seconds",
                                 "Where an answered request's time went, by stage (their sum: request duration)",
                                 [*labels, "stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.refusal_s = Histogram("effstack_refusal_duration_seconds",
                                   "Time from a refused request's arrival to its 503 handed to the transport",
                                   [*labels, "reason"], buckets=_REFUSAL_BUCKETS, registry=r)
        self.batch_size = Histogram("effstack_batch_size", "Executed batch size in samples", labels,
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.tokens = Counter("effstack_tokens", "Token slots of executed text batches: real tokens or padding",
                              [*labels, "kind"], registry=r)
        self.truncated = Counter("effstack_texts_truncated", "Texts cut at the model's max length", labels,
                                 registry=r)
        if state is not None:
            r.register(_StateCollector(state))
        self._models: dict[tuple[str, str], ModelMetrics] = {}

    def model(self, name: str, version: str) -> ModelMetrics:
        """The label-bound metrics of one model version (cached: binding labels costs a lock and a lookup)."""
        key = (name, version)
        if key not in self._models:
            self._models[key] = ModelMetrics(self, name, version)
        return self._models[key]

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ModelMetrics:
    """One model version's metrics; also the batcher's observer (``on_batch``, ``on_expired``)."""

    def __init__(self, m: ServerMetrics, name: str, version: str):
        lv = (name, version)
        self._m = m
        self._lv = lv
        self._success = m.success.labels(*lv)
        self._count = m.count.labels(*lv)
        self._exec = m.exec_count.labels(*lv)
        self._expired = m.expired.labels(*lv)
        self._request = m.request_s.labels(*lv)
        self._queue = m.queue_s.labels(*lv)
        self._compute = m.compute_s.labels(*lv)
        self._batch = m.batch_size.labels(*lv)
        self._tokens: tuple[Any, Any, Any] | None = None  # text models only: bound at their first batch
        # every stage but the total, which effstack_request_duration_seconds already holds
        self._stages = tuple(m.stage_s.labels(*lv, stage).observe for stage in STAGES[:-1])
        # bound up front: a refusal under overload should not take a lock to find its series (and every reason
        # shows at 0 before the first refusal, so a rate over it is defined)
        self._refusal = {reason: m.refusal_s.labels(*lv, reason).observe for reason in REFUSAL_REASONS}
        self._failures: dict[str, Any] = {}

    def success(self, seconds: float | None = None) -> None:
        self._success.inc()
        if seconds is not None:
            self._request.observe(seconds)

    def stages(self, stages_ns: Sequence[int]) -> None:
        """Observe an answered request's stages: nanoseconds in the order of :data:`STAGES`
        (:meth:`RequestTrace.stages_ns`); the total is left to :meth:`success`."""
        for observe, ns in zip(self._stages, stages_ns):
            observe(ns / 1e9)

    def refusal(self, reason: str) -> Callable[[float], None]:
        """The observer of one kind of refusal (:data:`REFUSAL_REASONS`): call it with the seconds from the request's
        arrival to its 503 handed to the transport."""
        return self._refusal[reason]

    def failure(self, reason: str, seconds: float | None = None) -> None:
        counter = self._failures.get(reason)
        if counter is None:  # bound once per reason: under overload every 503 passes here
            counter = self._failures[reason] = self._m.failure.labels(*self._lv, reason)
        counter.inc()
        if seconds is not None:
            self._request.observe(seconds)

    # the batcher's observer interface
    def on_batch(self, record: Any) -> None:
        self._count.inc(record.samples)
        self._exec.inc()
        self._batch.observe(record.samples)
        self._compute.observe(record.compute_s)
        for q in record.queue_s:
            self._queue.observe(q)
        if record.tokens:
            real, padded, _ = self._text()
            real.inc(record.tokens)
            padded.inc(record.padded)

    def on_truncated(self, n: int) -> None:
        """``n`` texts of a request were cut at the model's max length."""
        self._text()[2].inc(n)

    def _text(self) -> tuple[Any, Any, Any]:
        if self._tokens is None:
            m, lv = self._m, self._lv
            self._tokens = (m.tokens.labels(*lv, "real"), m.tokens.labels(*lv, "padded"), m.truncated.labels(*lv))
        return self._tokens

    def on_expired(self, n: int) -> None:
        self._expired.inc(n)


class _StateCollector:
    def __init__(self, state: Callable[[], dict[tuple[str, str], ModelState]]):
        self._state = state

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        labels = ["model", "version"]
        gauges = [
            (GaugeMetricFamily("effstack_queue_samples", "Samples waiting in the batcher's queue", labels=labels),
             lambda m: m.queued),
            (GaugeMetricFamily("effstack_batches_in_flight", "Batches being computed", labels=labels),
             lambda m: m.in_flight),
            (GaugeMetricFamily("effstack_queue_limit_samples", "Samples that may wait before requests get 503",
                               labels=labels), lambda m: m.limit),
            (GaugeMetricFamily("effstack_compute_pace", "Observed batch time over the latency curve's p99 "
                               "(moving average)", labels=labels), lambda m: m.pace),
            (GaugeMetricFamily("effstack_model_ready", "1 when the model answers requests", labels=labels),
             lambda m: 1.0 if m.ready else 0.0),
        ]
        for (name, version), m in sorted(self._state().items()):
            for family, value in gauges:
                family.add_metric([name, version], value(m))
        return [family for family, _ in gauges]
