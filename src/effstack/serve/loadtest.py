"""An open-loop load generator for Open Inference Protocol servers that does not lie.

Arrivals follow :func:`effstack.measure.scenarios.poisson_schedule` (seeded, drawn in advance); each request
is sent at its scheduled time whatever happened to earlier ones, and its latency counts from that
*scheduled* time, so a server that stalls cannot hide the queue forming behind it. Requests still
unanswered when the drain time runs out count as ``incomplete`` and make a step fail. Errors (503, 504,
connection failures) are counted by kind and kept out of the latency percentiles, which describe the
answers that carried a result — and a step with more than ``max_error_rate`` errors fails, so shedding
load cannot pass for speed.

It runs on asyncio with a small HTTP/1.1 client of its own (keep-alive connections, one request per
connection at a time): :func:`effstack.measure.scenarios.server`'s thread pool caps the requests in flight
at its worker count and cannot tell a 503 from a result, so only its schedule and statistics are reused.

>>> r = asyncio.run(run_load(target, rate_qps=50, duration_s=5))   # doctest: +SKIP
>>> r.latency.p99_ms, r.errors                                       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..measure.scenarios import poisson_schedule
from ..measure.stats import LatencyStats, latency_stats
from ..errors import ConfigError, EngineError
from .protocol import DATATYPES

__all__ = ["LoadResult", "Target", "find_max", "http_request", "passes", "prepare", "run_load"]

LATE_MS = 1.0
MAX_IDLE_S = 2.0  # idle keep-alive connections older than this are closed, not reused


@dataclass
class Target:
    """One prepared request: where to send it and its bytes (built once from the model's metadata)."""

    host: str
    port: int
    model: str
    batch: int
    request: bytes  # the whole HTTP request, headers and body
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v2/models/{self.model}"


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += (await self.reader.readexactly(size + 2))[:-2]
                if size == 0:
                    break
            body = bytes(body)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(parts[1]), headers, body

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """Keep-alive connections to one host, at most ``limit`` open; a request waits for a free one.

    Servers close keep-alive connections that sat idle for a while (uvicorn after 5 s), so an idle connection
    older than ``max_idle_s``, or one the server already closed, is not reused; and a request that fails on a
    reused connection is retried once on a new one. Without that, a burst after a quiet spell picked up closed
    connections and the server was blamed for the client's stale sockets.
    """

    def __init__(self, host: str, port: int, limit: int, max_idle_s: float = MAX_IDLE_S):
        self.host, self.port = host, port
        self.max_idle_s = max_idle_s
        self.idle: list[tuple[_Conn, float]] = []  # (connection, when it became idle), newest last
        self.sem = asyncio.Semaphore(limit)

    def _reusable(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn, since = self.idle.pop()
            if now - since < self.max_idle_s and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def send(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        async with self.sem:
            conn = self._reusable()
            for attempt in (0, 1):
                reused = conn is not None
                if conn is None:
                    conn = _Conn(*await asyncio.open_connection(self.host, self.port))
                try:
                    status, headers, body = await conn.exchange(request)
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    conn.close()
                    conn = None
                    if reused and attempt == 0:  # the server closed it meanwhile: once more, on a new connection
                        continue
                    raise
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                else:
                    self.idle.append((conn, time.monotonic()))
                return status, headers, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        for c, _ in self.idle:
            c.close()
        self.idle.clear()


def http_request(method: str, host: str, port: int, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request (for :class:`Target` objects aimed at other endpoints)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _split_url(url: str, model: str | None) -> tuple[str, int, str | None]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"the URL must look like http://HOST:PORT[/v2/models/NAME], got {url!r}")
    path = parts.path.rstrip("/")
    if "/v2/models/" in path:
        model = model or path.split("/v2/models/", 1)[1].split("/")[0]
    return parts.hostname, parts.port or 80, model


async def prepare(url: str, model: str | None = None, batch: int = 1, binary: bool = True, token: str | None = None,
                  seed: int = 0) -> Target:
    """Read the model's metadata from the server and build one inference request for it.

    ``url`` is ``http://HOST:PORT`` (with ``model``, or the server's only model) or
    ``http://HOST:PORT/v2/models/NAME``. The request carries ``batch`` random samples, as binary tensors
    (``binary``) or JSON.

    Raises:
        ConfigError: a bad URL, no model named when the server has several, or an input of unknown size.
        EngineError: the server cannot be reached or refuses the metadata request.
    """
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    host, port, model = _split_url(url, model)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    pool = _Pool(host, port, 1)
    try:
        if model is None:
            status, _, body = await pool.send(http_request("POST", host, port, "/v2/repository/index", headers=auth))
            names = [m["name"] for m in json.loads(body)] if status == 200 else []
            if len(names) != 1:
                raise ConfigError(f"name the model to load-test (--model); the server has {names or 'none listed'}")
            model = names[0]
        status, _, body = await pool.send(http_request("GET", host, port, f"/v2/models/{model}", headers=auth))
    except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
        raise EngineError(f"cannot reach {host}:{port}: {exc}; is the server running?") from None
    finally:
        pool.close()
    if status != 200:
        raise EngineError(f"GET /v2/models/{model} answered {status}: {body[:200].decode(errors='replace')}")
    meta = json.loads(body)
    rng = np.random.default_rng(seed)
    tensors, blobs = [], []
    for t in meta["inputs"]:
        shape = [batch if d == -1 else d for d in t["shape"]]
        if any(d < 0 for d in shape) or t["datatype"] not in DATATYPES or t["datatype"] == "BYTES":
            raise ConfigError(f"cannot generate input {t['name']!r} ({t['datatype']} {t['shape']}); unsupported")
        x = rng.standard_normal(shape).astype(DATATYPES[t["datatype"]])
        entry: dict[str, Any] = {"name": t["name"], "shape": shape, "datatype": t["datatype"]}
        if binary:
            blob = x.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = x.reshape(-1).tolist()
        tensors.append(entry)
    doc = {"inputs": tensors, "outputs": [{"name": o["name"], "parameters": {"binary_data": binary}}
                                          for o in meta["outputs"]]}
    head = json.dumps(doc).encode()
    headers = {"Content-Type": "application/octet-stream" if binary else "application/json", **auth}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(head))
    request = http_request("POST", host, port, f"/v2/models/{model}/infer", head + b"".join(blobs), headers)
    return Target(host, port, model, batch, request, headers)


@dataclass
class LoadResult:
    """One open-loop step. ``latency`` covers the requests answered 200 (None when none were)."""

    target_qps: float
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    incomplete: int
    late: int  # sends more than LATE_MS after their scheduled time (the client could not keep up)
    achieved_qps: float
    throughput: float  # samples/s of successful requests
    latency: LatencyStats | None
    error_latency: LatencyStats | None  # how fast errors (e.g. 503) were answered, from the scheduled time
    batch: int = 1
    late_p99_ms: float = 0.0  # how late the sends were (p99 over all sends): counted in every latency above
    error_latency_sent: LatencyStats | None = None  # errors' latency from when each request really left

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["latency"] = self.latency.to_dict() if self.latency else None
        d["error_latency"] = self.error_latency.to_dict() if self.error_latency else None
        d["error_latency_sent"] = self.error_latency_sent.to_dict() if self.error_latency_sent else None
        return d


async def run_load(target: Target, rate_qps: float, duration_s: float, seed: int = 0, max_queries: int = 100_000,
                   connections: int = 256, timeout_s: float = 10.0, drain_s: float = 2.0) -> LoadResult:
    """Send ``target``'s request at Poisson arrivals of ``rate_qps`` for ``duration_s`` (bounded by
    ``max_queries``), then wait up to ``drain_s`` for the last answers.

    Raises:
        ConfigError: non-positive rate, duration or connections.
    """
    if not rate_qps > 0 or not duration_s > 0 or connections < 1:
        raise ConfigError(
            f"rate, duration and connections must be positive, got {rate_qps}, {duration_s}, {connections}")
    offsets = poisson_schedule(rate_qps, duration_s, seed, max_queries)
    n = len(offsets)
    pool = _Pool(target.host, target.port, connections)
    end = np.full(n, -1, dtype=np.int64)
    sent_late = np.zeros(n, dtype=np.int64)  # ns after the scheduled time each request left
    outcome: list[str | None] = [None] * n

    async def one(i: int) -> None:
        try:
            status, _, _ = await asyncio.wait_for(pool.send(target.request), timeout_s)
            outcome[i] = "ok" if status == 200 else str(status)
        except asyncio.TimeoutError:
            outcome[i] = "client-timeout"
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            outcome[i] = "connection"
        end[i] = time.perf_counter_ns()

    t0 = time.perf_counter_ns() + 2_000_000
    scheduled = t0 + offsets
    tasks = []
    try:
        for i in range(n):
            # the loop's timers may fire up to a clock tick early: never send before the scheduled time
            while (delay := (int(scheduled[i]) - time.perf_counter_ns()) / 1e9) > 0:
                await asyncio.sleep(delay)
            sent_late[i] = time.perf_counter_ns() - int(scheduled[i])
            tasks.append(asyncio.create_task(one(i)))
        if tasks:
            last = int(scheduled[-1]) if n else t0
            await asyncio.wait(tasks, timeout=max((last - time.perf_counter_ns()) / 1e9, 0.0) + drain_s)
        t_stop = time.perf_counter_ns()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool.close()
    done = end >= 0
    lat = end - scheduled
    ok_mask = np.array([o == "ok" for o in outcome], dtype=bool)
    err_mask = done & ~ok_mask
    ok = int(ok_mask.sum())
    errors = dict(Counter(o for o in outcome if o not in (None, "ok")))
    span_s = (int(end[done].max()) - t0) / 1e9 if done.any() else 0.0
    qps = ok / span_s if span_s > 0 else 0.0
    return LoadResult(
        target_qps=float(rate_qps), duration_s=(t_stop - t0) / 1e9, sent=n, ok=ok, errors=errors,
        incomplete=int(n - done.sum()), late=int((sent_late > LATE_MS * 1e6).sum()), achieved_qps=qps,
        throughput=qps * target.batch,
        latency=latency_stats(lat[ok_mask].tolist()) if ok else None,
        error_latency=latency_stats(lat[err_mask].tolist()) if err_mask.any() else None, batch=target.batch,
        late_p99_ms=float(np.percentile(sent_late[:len(tasks)], 99) / 1e6) if tasks else 0.0,
        error_latency_sent=latency_stats((lat - sent_late)[err_mask].tolist()) if err_mask.any() else None,
    )


def passes(r: LoadResult, budget_ms: float, max_error_rate: float = 0.01) -> bool:
    """True when the step kept p99 within ``budget_ms`` with at most ``max_error_rate`` errors, none unfinished."""
    if r.latency is None or r.incomplete:
        return False
    return r.latency.p99_ms <= budget_ms and sum(r.errors.values()) <= max_error_rate * max(r.sent, 1)


async def find_max(target: Target, budget_ms: float, start_qps: float, duration_s: float, max_steps: int = 8,
                   tolerance: float = 0.05, max_error_rate: float = 0.01, on_step: Any = None,
                   **load: Any) -> tuple[float | None, list[LoadResult]]:
    """The highest rate whose p99 stays within ``budget_ms``: double until a step fails, then bisect.

    At most ``max_steps`` steps of ``duration_s``; stops once the bracket is within ``tolerance``.
    Returns the best passing rate (None if even the lowest tried failed) and every step.
    """
    lo: float | None = None
    hi: float | None = None
    rate = start_qps
    steps = []
    for i in range(max_steps):
        r = await run_load(target, rate, duration_s, seed=i, **load)
        steps.append(r)
        ok = passes(r, budget_ms, max_error_rate)
        if on_step:
            on_step(r, ok)
        if ok:
            lo = rate
        else:
            hi = rate
        if lo is not None and hi is not None:
            if (hi - lo) / lo <= tolerance:
                break
            rate = (lo + hi) / 2
        else:
            rate = rate * 2 if ok else rate / 2
    return lo, steps
