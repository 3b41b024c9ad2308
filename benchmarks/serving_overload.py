"""503s under overload (issue 17, item 4): how fast the server refuses what it cannot take, seen by it and by clients.

``effstack serve MODEL --latency-budget B`` runs as a separate process on 127.0.0.1 (started and stopped with
``benchmarks/serving.py``'s helpers). Its capacity is ``--capacity``, or found briefly: the highest Poisson rate
whose p99 stays within ``B`` with at most 1% errors (the project's load generator, ``find_max``, in
``--find-steps`` steps of ``--find-step-s``). Then real HTTP clients (aiohttp, keep-alive, at most
``--connections`` connections) drive it open-loop at ``--factor`` (3) x capacity for ``--seconds`` (20), at most
``--max-requests``: Poisson arrivals drawn in advance, each request sent at its time whatever happened to earlier
ones, binary tensors.

Reported, next to the goal (p99 <= 5 ms):

* the share of requests refused (503), and other errors;
* the 503s' latency from the client's real send (aiohttp's request-headers-sent signal: the request left, its
  connection in hand; a client late on a busy machine is not blamed on the server) and from the scheduled send;
* the server's own figure, ``effstack_refusal_duration_seconds`` (from the request's first bytes parsed to its
  503 handed to the transport), scraped before and after so only this run counts: p99 interpolated within the
  histogram's buckets as Prometheus' ``histogram_quantile`` does, and the share within 5 ms read exactly off its
  5 ms bucket (the verdict uses that share: p99 <= 5 ms is 99% within 5 ms);
* the admitted requests' latency, and whether the server still answers its readiness probe afterwards.

The clients share the machine with the server: other processes' CPU during the run is printed with the figures.
The clients need aiohttp (not among the ``serve`` extra's packages).

    python benchmarks/serving_overload.py                                        # ResNet-50 INT8, 50 ms budget
    python benchmarks/serving_overload.py --model resnet18 --precision fp32 --budget-ms 100 --seconds 5
    python benchmarks/serving_overload.py --capacity 25 --json results/serving_overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its siblings, by path

from _servers import HOST, get_json, run, server_info, start, stop  # noqa: E402
from serving_stages import ProcessCpu  # noqa: E402

from effstack.measure.scenarios import poisson_schedule  # noqa: E402
from effstack.serve.loadtest import Target, find_max, prepare  # noqa: E402
from effstack.serve.server import free_port  # noqa: E402

GOAL_MS = 5.0  # p99 of a 503, from the server's accept and from the client's send
KEEPALIVE_S = 2.0  # the clients drop idle connections before uvicorn does (5 s), so none is reused as it closes
REFUSAL = "effstack_refusal_duration_seconds"


# --- the server ------------------------------------------------------------------------------------


def add_server_args(p: argparse.ArgumentParser, model: str = "resnet50", precision: str = "int8",
                    budget_ms: float = 50.0) -> None:
    """The flags of the served model and of the capacity search (shared with ``serving_soak.py``)."""
    p.add_argument("--model", default=model, help=f"model spec (default {model})")
    p.add_argument("--engine", default="auto", help="engine (default auto: as effstack serve picks)")
    p.add_argument("--precision", default=precision, help=f"precision (default {precision})")
    p.add_argument("--budget-ms", type=float, default=budget_ms,
                   help=f"the server's --latency-budget and the capacity's p99 bound (default {budget_ms:g})")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--instances", default="1", help="the server's --instances (default 1; auto tries layouts)")
    p.add_argument("--serve-arg", action="append", help="extra flag for effstack serve (repeatable)")
    p.add_argument("--capacity", type=float, help="requests/s the server sustains within the budget (skip the search)")
    p.add_argument("--find-step-s", type=float, default=4.0, help="capacity search: seconds per step (default 4)")
    p.add_argument("--find-steps", type=int, default=6, help="capacity search: steps at most (default 6)")
    p.add_argument("--connections", type=int, default=256, help="client connections at most (default 256)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="client timeout per request (default 30)")
    p.add_argument("--start-timeout-s", type=float, default=600.0, help="how long the server may take to load")


def server_argv(args: argparse.Namespace, port: int) -> list[str]:
    argv = [sys.executable, "-m", "effstack", "serve", args.model, "--host", HOST, "--port", str(port),
            "--precision", args.precision, "--max-batch", str(args.max_batch), "--instances", args.instances,
            "--latency-budget", f"{args.budget_ms:g}ms"]
    if args.engine != "auto":
        argv += ["--engine", args.engine]
    return argv + list(args.serve_arg or [])


def start_server(args: argparse.Namespace, label: str) -> tuple[Any, Target]:
    """Start ``effstack serve`` on a free port of 127.0.0.1 and prepare a batch-1 binary request for its model."""
    port = free_port(HOST)
    proc = start(server_argv(args, port), f"http://{HOST}:{port}/v2/health/ready", f"{label}-{port}",
                 timeout_s=args.start_timeout_s)
    try:
        target = run(prepare(f"http://{HOST}:{port}", batch=1))
    except BaseException:
        stop(proc)
        raise
    return proc, target


def alive(port: int) -> bool:
    try:
        return bool(get_json(f"http://{HOST}:{port}/v2/health/ready")["ready"])
    except OSError:
        return False


def predicted_qps(info: Mapping[str, Any]) -> float:
    """Requests/s the server's own curve predicts at its batch cap (a starting point for the search, no more)."""
    cap = int(info["batch_cap"])
    curve = {int(b): float(ms) for b, ms in info["latency_curve_ms"].items()}
    at_cap = curve.get(cap) or curve[max(curve)]
    instances = info["serving"].get("instances")
    return (instances if isinstance(instances, int) else 1) * cap / max(at_cap / 1e3, 1e-6)


def find_capacity(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    """``--capacity``, or the highest Poisson rate within the budget found in a few short steps."""
    if args.capacity:
        return {"qps": float(args.capacity), "given": True}
    info = server_info(target.port, target.model)
    start_qps = max(1.0, 0.5 * predicted_qps(info))

    def step(r: Any, ok: bool) -> None:
        p99 = f"{r.latency.p99_ms:.1f} ms" if r.latency else "-"
        print(f"  capacity step {r.target_qps:.1f}/s: p99 {p99}, errors {sum(r.errors.values())}, "
              f"{'pass' if ok else 'fail'}", flush=True)

    best, steps = run(find_max(target, args.budget_ms, start_qps, args.find_step_s, max_steps=args.find_steps,
                               max_queries=20_000, on_step=step))
    if not best:
        raise SystemExit(f"no rate from {steps[-1].target_qps:.1f}/s up met p99 {args.budget_ms:g} ms; "
                         "raise --budget-ms or pass --capacity")
    print(f"capacity: {best:.1f}/s within p99 {args.budget_ms:g} ms ({len(steps)} steps of {args.find_step_s:g} s)",
          flush=True)
    return {"qps": best, "given": False, "batch_cap": info["batch_cap"], "curve_ms": info["latency_curve_ms"],
            "steps": [s.to_dict() for s in steps]}


# --- the clients -----------------------------------------------------------------------------------


@dataclass
class InferRequest:
    """One model's inference request, split so each copy can carry its own ``id``: the JSON header's document,
    the binary tensors after it, and the HTTP headers but the header length."""

    url: str
    doc: dict[str, Any]
    blob: bytes
    headers: dict[str, str]
    _plain: tuple[bytes, dict[str, str]] | None = field(default=None, repr=False)

    @classmethod
    def from_target(cls, target: Target) -> InferRequest:
        """From :func:`effstack.serve.loadtest.prepare`'s whole HTTP request (binary tensors)."""
        body = target.request.partition(b"\r\n\r\n")[2]
        n = int(target.headers["Inference-Header-Content-Length"])
        headers = {k: v for k, v in target.headers.items() if k != "Inference-Header-Content-Length"}
        return cls(target.url + "/infer", json.loads(body[:n]), body[n:], headers)

    def body(self, rid: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and HTTP headers, with ``rid`` as the OIP request ``id`` (None: none, built once)."""
        if rid is None and self._plain is not None:
            return self._plain
        head = json.dumps(self.doc if rid is None else {**self.doc, "id": rid}).encode()
        out = head + self.blob, {**self.headers, "Inference-Header-Content-Length": str(len(head))}
        if rid is None:
            self._plain = out
        return out


@dataclass
class Outcomes:
    """Per request of an open-loop run: clock stamps (``time.perf_counter_ns``; -1 where none) and the outcome
    (``"200"``, ``"503"``, ..., ``"client-timeout"``, ``"connection: <error>"``, ``"incomplete"``)."""

    scheduled: np.ndarray
    sent: np.ndarray  # when its headers went out (its connection in hand)
    end: np.ndarray  # when its whole response was read
    status: list[str]
    wall_s: float

    def latency_ms(self, status: str, since: str) -> np.ndarray:
        """Milliseconds to the end of each response with ``status``, from ``since`` ("sent" or "scheduled")."""
        mask = np.array([s == status for s in self.status], dtype=bool) & (self.end >= 0)
        start = self.sent if since == "sent" else self.scheduled
        mask &= start >= 0
        return (self.end[mask] - start[mask]) / 1e6

    def late_ms(self) -> np.ndarray:
        """How late each send left after its scheduled time (the client's own lateness, connection wait included)."""
        ok = self.sent >= 0
        return (self.sent[ok] - self.scheduled[ok]) / 1e6


async def drive(request: InferRequest, rate_qps: float, duration_s: float, *, max_requests: int, connections: int,
                timeout_s: float, seed: int = 0, drain_s: float = 5.0, ids: str | None = None,
                inspect: Callable[[int, int, Mapping[str, str], bytes], None] | None = None) -> Outcomes:
    """Send ``request`` at Poisson arrivals of ``rate_qps`` for ``duration_s`` (at most ``max_requests``) with
    aiohttp, then wait up to ``drain_s`` for the last answers.

    ``ids``: a prefix; request ``i`` then carries the OIP ``id`` ``f"{ids}{i}"``. ``inspect(i, status, headers,
    body)`` sees every response read.
    """
    import aiohttp

    offsets = poisson_schedule(rate_qps, duration_s, seed, max_requests)
    n = len(offsets)
    sent = np.full(n, -1, dtype=np.int64)
    end = np.full(n, -1, dtype=np.int64)
    status = ["incomplete"] * n
    trace = aiohttp.TraceConfig()

    async def on_headers_sent(session: Any, ctx: Any, params: Any) -> None:
        ctx.trace_request_ctx["sent"] = time.perf_counter_ns()

    trace.on_request_headers_sent.append(on_headers_sent)
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=KEEPALIVE_S)
    session = aiohttp.ClientSession(connector=connector, trace_configs=[trace],
                                    timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def one(i: int) -> None:
        ctx: dict[str, int] = {}
        body, headers = request.body(None if ids is None else f"{ids}{i}")
        try:
            async with session.post(request.url, data=body, headers=headers, trace_request_ctx=ctx) as r:
                payload = await r.read()
            end[i] = time.perf_counter_ns()
            status[i] = str(r.status)
            if inspect is not None:
                inspect(i, r.status, r.headers, payload)
        except asyncio.TimeoutError:
            status[i] = "client-timeout"
        except aiohttp.ClientError as exc:
            status[i] = f"connection: {type(exc).__name__}"
        sent[i] = ctx.get("sent", -1)

    t0 = time.perf_counter_ns() + 5_000_000
    scheduled = t0 + offsets
    tasks = []
    try:
        for i in range(n):
            # never send before the scheduled time (the loop's timers may fire a tick early)
            while (delay := (int(scheduled[i]) - time.perf_counter_ns()) / 1e9) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        if tasks:
            await asyncio.wait(tasks, timeout=drain_s)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    return Outcomes(scheduled, sent, end, status, (time.perf_counter_ns() - t0) / 1e9)


def pcts(ms: np.ndarray) -> dict[str, float | int | None]:
    if not len(ms):
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(len(ms)), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}


# --- the server's metrics --------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """``/metrics`` as ``{(sample name, labels): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples: Mapping[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def refusal_buckets(before: Mapping, after: Mapping, model: str) -> list[tuple[float, float]]:
    """``[(upper bound s, cumulative count)]`` of ``effstack_refusal_duration_seconds`` added between two scrapes
    (every reason of ``model``), ending with ``(inf, total)``."""
    counts: dict[float, float] = {}
    for (name, ls), value in after.items():
        labels = dict(ls)
        if name == f"{REFUSAL}_bucket" and labels.get("model") == model:
            le = float(labels["le"])  # "+Inf" too
            counts[le] = counts.get(le, 0.0) + value - before.get((name, ls), 0.0)
    return sorted(counts.items())


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding the quantile (None without counts;
    the largest finite bound when it falls in the last, unbounded bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cum - below, 1e-12)
        lower, below = le, cum
    return lower


def server_refusals(before: Mapping, after: Mapping, model: str) -> dict[str, Any]:
    buckets = refusal_buckets(before, after, model)
    total = buckets[-1][1] if buckets else 0.0
    within = next((cum for le, cum in buckets if abs(le - GOAL_MS / 1e3) < 1e-12), None)
    p99 = histogram_quantile(0.99, buckets)
    p50 = histogram_quantile(0.50, buckets)
    return {"count": int(total), "p50_ms": None if p50 is None else p50 * 1e3,
            "p99_ms": None if p99 is None else p99 * 1e3,
            "within_goal_share": None if not total or within is None else within / total,
            "buckets": [(le, c) for le, c in buckets if le != float("inf")] + [("+Inf", total)]}


def settle(port: int, model: str, timeout_s: float = 60.0) -> dict[tuple[str, frozenset], float]:
    """Wait until nothing is queued or computing (the capacity search's last requests), then scrape ``/metrics``:
    counts taken before a run must not move with the requests of the one before it."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        busy = (metric(samples, "effstack_queue_samples", model=model)
                + metric(samples, "effstack_batches_in_flight", model=model))
        if not busy:
            return samples
        if time.monotonic() > deadline:
            raise SystemExit(f"the server still had work {timeout_s:.0f} s after the capacity search; see its log")
        time.sleep(0.2)


def other_cpu(stat0: Any, stat1: Any, mine_s: float, wall_s: float) -> float | None:
    """Percent of a core other processes used meanwhile (None where /proc/stat is missing)."""
    if stat0 is None or stat1 is None or wall_s <= 0:
        return None
    return max(0.0, stat1[0] - stat0[0] - mine_s) / wall_s * 100


# --- the benchmark ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from effstack.measure.cpu import read_proc_stat

    proc, target = start_server(args, "overload")
    try:
        capacity = find_capacity(args, target)
        rate = args.factor * capacity["qps"]
        request = InferRequest.from_target(target)
        before = settle(target.port, target.model)
        cpu = ProcessCpu(proc.pid)
        stat0, self0, server0 = read_proc_stat(), time.process_time(), cpu.seconds()
        print(f"overload: {args.factor:g} x {capacity['qps']:.1f}/s = {rate:.1f}/s for {args.seconds:g} s "
              f"(at most {args.max_requests} requests, aiohttp, {args.connections} connections)", flush=True)
        out = run(drive(request, rate, args.seconds, max_requests=args.max_requests, connections=args.connections,
                        timeout_s=args.timeout_s, seed=args.seed))
        stat1 = read_proc_stat()
        mine = (time.process_time() - self0) + (cpu.seconds() - server0)
        after = scrape(target.port)
        up = alive(target.port) and proc.poll() is None
    finally:
        stop(proc)
    kinds = Counter(out.status)
    n = len(out.status)
    refused = kinds.get("503", 0)
    server = server_refusals(before, after, target.model)
    client_sent = pcts(out.latency_ms("503", "sent"))
    r: dict[str, Any] = {
        "model": args.model, "precision": args.precision, "engine": args.engine, "budget_ms": args.budget_ms,
        "capacity": capacity, "factor": args.factor, "rate_qps": rate, "seconds": args.seconds, "sent": n,
        "outcomes": dict(kinds), "refused_share": refused / n if n else 0.0,
        "refused_from_sent": client_sent, "refused_from_scheduled": pcts(out.latency_ms("503", "scheduled")),
        "admitted_from_sent": pcts(out.latency_ms("200", "sent")),
        "admitted_from_scheduled": pcts(out.latency_ms("200", "scheduled")),
        "client_late": pcts(out.late_ms()), "server_refusals": server, "alive_after": up, "wall_s": out.wall_s,
        "other_pct_core": other_cpu(stat0, stat1, mine, out.wall_s),
        "server_failures": {dict(ls)["reason"]: after[(nm, ls)] - before.get((nm, ls), 0.0)
                            for (nm, ls) in after if nm == "effstack_inference_request_failure_total"},
    }
    checks = {
        "refusals happened": refused > 0,
        f"server p99 <= {GOAL_MS:g} ms": (server["within_goal_share"] or 0.0) >= 0.99,
        f"client (real send) p99 <= {GOAL_MS:g} ms": client_sent["p99_ms"] is not None
        and client_sent["p99_ms"] <= GOAL_MS,
        "server alive after": up,
    }
    r["checks"] = checks
    r["pass"] = all(checks.values())
    return r


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_report(r: dict[str, Any]) -> None:
    others = {k: v for k, v in r["outcomes"].items() if k not in ("200", "503")}
    print(f"\n{r['model']} {r['precision']}, budget {r['budget_ms']:g} ms; capacity {r['capacity']['qps']:.1f}/s "
          f"({'given' if r['capacity']['given'] else 'measured'}); offered {r['rate_qps']:.1f}/s "
          f"({r['factor']:g}x) for {r['seconds']:g} s: {r['sent']} sent, {r['outcomes'].get('200', 0)} answered, "
          f"{r['outcomes'].get('503', 0)} refused ({100 * r['refused_share']:.1f}%), other {others or 'none'}")
    print(f"  {'':42s} {'n':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    rows = [("503, client: from the real send", r["refused_from_sent"]),
            ("503, client: from the scheduled send", r["refused_from_scheduled"]),
            ("200, client: from the real send", r["admitted_from_sent"]),
            ("200, client: from the scheduled send", r["admitted_from_scheduled"]),
            ("client lateness (real - scheduled send)", r["client_late"])]
    for label, v in rows:
        print(f"  {label:42s} {v['n']:6d} {_ms(v['p50_ms']):>8s} {_ms(v['p99_ms']):>8s} {_ms(v['max_ms']):>8s}")
    s = r["server_refusals"]
    share = "-" if s["within_goal_share"] is None else f"{100 * s['within_goal_share']:.2f}%"
    print(f"  {'503, server: accept to transport':42s} {s['count']:6d} {_ms(s['p50_ms']):>8s} {_ms(s['p99_ms']):>8s}"
          f" {'':>8s}  (interpolated in buckets; {share} within {GOAL_MS:g} ms)")
    other = "?" if r["other_pct_core"] is None else f"{r['other_pct_core']:.0f}%"
    print(f"  server failures by reason: {r['server_failures']}; other processes took {other} of a core")
    for name, ok in r["checks"].items():
        print(f"  {'pass' if ok else 'FAIL'}: {name}")
    print(f"  {'PASS' if r['pass'] else 'FAIL'}")


def require_aiohttp(p: argparse.ArgumentParser) -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        p.error("the clients are aiohttp's: pip install aiohttp")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_args(p)
    p.add_argument("--factor", type=float, default=3.0, help="offered load over capacity (default 3)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of overload (default 20)")
    p.add_argument("--max-requests", type=int, default=20_000, help="requests at most (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="arrival schedule seed")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    args = p.parse_args()
    require_aiohttp(p)
    if not args.factor > 0 or not 0 < args.seconds <= 600 or args.max_requests < 1:
        p.error("--factor must be positive, --seconds within (0, 600] and --max-requests at least 1")
    r = measure(args)
    print_report(r)
    if args.json:
        from _report import write_json

        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
