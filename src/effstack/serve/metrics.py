"""Prometheus metrics of the server, on a registry of its own (two servers in one process do not collide).

Named after Triton's, so the same dashboards' arithmetic works:

* ``effstack_inference_request_success_total`` / ``..._failure_total{reason}``: requests answered.
* ``effstack_inference_count_total``: samples computed; ``effstack_inference_exec_count_total``: batches
  executed. Average batch size = ``inference_count / exec_count`` (what Triton users compute).
* ``effstack_request_duration_seconds``, ``effstack_queue_duration_seconds``,
  ``effstack_compute_duration_seconds``: histograms (request: from the body's arrival to the reply).
* ``effstack_batch_size``: histogram of executed batch sizes in samples.
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

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ModelMetrics", "ServerMetrics"]

if TYPE_CHECKING:
    from .repository import ModelState

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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
        self.batch_size = Histogram("effstack_batch_size", "Executed batch size in samples", labels,
                                    buckets=_BATCH_BUCKETS, registry=r)
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

    def success(self, seconds: float | None = None) -> None:
        self._success.inc()
        if seconds is not None:
            self._request.observe(seconds)

    def failure(self, reason: str, seconds: float | None = None) -> None:
        self._m.failure.labels(*self._lv, reason).inc()
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
