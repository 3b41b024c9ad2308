"""The real MLPerf LoadGen (``mlcommons-loadgen``) driving an engine session or an Open Inference Protocol URL.

LoadGen owns the schedule, the clock and the verdict; effstack only answers its queries. Its logs
(``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``, ...) are kept in ``log_dir`` and the summary's
``key : value`` lines are returned parsed. Performance mode only: responses carry no data.

>>> r = run_loadgen(SessionSUT(session, x), "server", target_qps=50, latency_ms=50,   # doctest: +SKIP
...                 duration_s=10, log_dir="results/loadgen")
>>> r.valid, r.summary["99.00 percentile latency (ns)"]                               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingDependencyError

__all__ = ["SCENARIOS", "LoadGenResult", "SessionSUT", "UrlSUT", "run_loadgen"]

SCENARIOS = ("server", "offline")


def _lg() -> Any:
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise MissingDependencyError("mlcommons-loadgen", "dev", "MLPerf LoadGen runs") from exc
    return mlperf_loadgen


class SessionSUT:
    """Answers queries with ``session.run`` on worker threads (Offline: in batches of ``batch``)."""

    def __init__(self, session: Any, sample: np.ndarray, batch: int = 1, workers: int = 1):
        self.session, self.batch = session, max(1, batch)
        self.x = np.ascontiguousarray(np.repeat(sample[:1], self.batch, axis=0))
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="effstack-loadgen")
        self.errors = 0

    def issue(self, lg: Any, samples: list[Any]) -> None:
        for i in range(0, len(samples), self.batch):
            self.pool.submit(self._run, lg, samples[i : i + self.batch])

    def _run(self, lg: Any, chunk: list[Any]) -> None:
        try:
            self.session.run(self.x[: len(chunk)])
        except Exception:  # LoadGen has no error channel: count it, answer the query
            self.errors += len(chunk)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in chunk])

    def close(self) -> None:
        self.pool.shutdown(wait=True)


REQUEST_TIMEOUT_S = 30.0  # one request's longest wait before it counts as an error
RETRY_PAUSE_S = 0.01  # a refused Offline request is sent again this much later


class UrlSUT:
    """Answers queries by sending the prepared :class:`~effstack.serve.loadtest.Target` request, one per sample.

    For Offline, whose queries all arrive at once, a latency-budget server refuses (503) what its budget
    cannot hold, and a refusal would count as a fast answer. So a batch client keeps at most ``max_in_flight``
    requests out (the rest wait here: a window the size of what the server computes and queues at once), and
    with ``retry_refused`` sends a refused request again after a short pause (its Retry-After is in whole
    seconds, far longer than a batch) until the request's deadline; ``refused`` counts those refusals. Off
    (the default: Server), every query is sent when LoadGen issues it and a 503 is an error.
    """

    def __init__(self, target: Any, connections: int = 256, retry_refused: bool = False,
                 max_in_flight: int | None = None):
        from .loadtest import _Pool

        self.retry_refused = retry_refused
        self.refused = 0
        self.window = None if max_in_flight is None else asyncio.Semaphore(max_in_flight)
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="effstack-loadgen-http", daemon=True)
        self.thread.start()
        self.pool = asyncio.run_coroutine_threadsafe(self._make_pool(_Pool, connections), self.loop).result()
        self.errors = 0

    async def _make_pool(self, cls: Any, connections: int) -> Any:
        return cls(self.target.host, self.target.port, connections)

    def issue(self, lg: Any, samples: list[Any]) -> None:
        for s in samples:
            asyncio.run_coroutine_threadsafe(self._one(lg, s.id), self.loop)

    async def _one(self, lg: Any, sample_id: int) -> None:
        # Every query must be answered, whatever happens to its request: LoadGen waits for each one
        # forever, so a request that raised anything or stalled would hang the whole test.
        try:
            status, _, _ = await asyncio.wait_for(self._send(), REQUEST_TIMEOUT_S)
            self.errors += status != 200
        except Exception:  # noqa: BLE001 - counted as an error, and the query is still completed
            self.errors += 1
        finally:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    async def _send(self) -> tuple[int, dict[str, str], bytes]:
        if self.window is None:
            return await self._send_retrying()
        async with self.window:
            return await self._send_retrying()

    async def _send_retrying(self) -> tuple[int, dict[str, str], bytes]:
        while True:
            status, headers, body = await self.pool.send(self.target.request)
            if status != 503 or not self.retry_refused:
                return status, headers, body
            self.refused += 1
            await asyncio.sleep(RETRY_PAUSE_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.pool.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class LoadGenResult:
    scenario: str
    valid: bool | None
    log_dir: str
    errors: int
    summary: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_loadgen(sut: SessionSUT | UrlSUT, scenario: str, target_qps: float, latency_ms: float, duration_s: float,
                log_dir: str | Path, min_queries: int = 64) -> LoadGenResult:
    """Run LoadGen's ``server`` or ``offline`` scenario against ``sut`` (performance mode) and keep its logs.

    Args:
        target_qps: Server: the Poisson arrival rate; Offline: the expected rate (sizes the query).
        latency_ms: Server: the p99 latency bound LoadGen judges against.
        duration_s: the minimum duration (LoadGen also stops at ``4 * duration_s`` at most here).
        min_queries: the minimum query count (LoadGen's own defaults are sized for hour-long runs).

    Raises:
        ConfigError: an unknown scenario or non-positive rates. MissingDependencyError: no LoadGen.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"LoadGen scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if not target_qps > 0 or not latency_ms > 0 or not duration_s > 0:
        raise ConfigError("LoadGen needs a positive rate, latency bound and duration")
    lg = _lg()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = lg.TestSettings()
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(duration_s * 1000)
    settings.max_duration_ms = int(4 * duration_s * 1000)
    settings.min_query_count = min_queries
    if scenario == "server":
        settings.scenario = lg.TestScenario.Server
        settings.server_target_qps = float(target_qps)
        settings.server_target_latency_ns = int(latency_ms * 1e6)
    else:
        settings.scenario = lg.TestScenario.Offline
        settings.offline_expected_qps = float(target_qps)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    count = max(min_queries, 1024)
    qsl = lg.ConstructQSL(count, count, lambda idx: None, lambda idx: None)
    handle = lg.ConstructSUT(lambda samples: sut.issue(lg, list(samples)), lambda: None)
    try:
        lg.StartTestWithLogSettings(handle, qsl, settings, log)
    finally:
        lg.DestroySUT(handle)
        lg.DestroyQSL(qsl)
        sut.close()
    summary = _parse_summary(log_dir / "mlperf_log_summary.txt")
    verdict = summary.get("Result is")
    return LoadGenResult(scenario, None if verdict is None else verdict == "VALID", str(log_dir), sut.errors, summary)


def _parse_summary(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and value.strip():
            out[key.strip()] = value.strip()
    return out
