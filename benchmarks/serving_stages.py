"""Where a request's time goes at low load: the server's stages next to the engine's own batch-1 latency.

Issue 17's first goal, measured: at low load a batch-1 request's server-side p50 within 2 ms of the engine's
own batch-1 p50, and its end-to-end p99 through the real ``tritonclient`` (HTTP, binary tensors) within 1.5x
of the engine's own batch-1 p99.

``effstack serve MODEL`` runs as a separate process on 127.0.0.1. This process holds the engine alone too: a
session of the same engine, precision and threads built for batch 1, as ``effstack bench --batch 1`` runs it
(the reference of the goals), and one built as a server instance's is built for ``--max-batch`` (``as_served``;
with OpenVINO the THROUGHPUT hint, a stream per thread), to tell what the session's setup costs from what the
server costs. The engine alone and the server take turns, one call each, ``--gap-ms`` apart, so a neighbour's
load hits both alike and neither runs back to back warm while the other runs cold.

Each server response carries its stages in a ``Server-Timing`` header: read (the body), parse, queue (the
batcher's wait), handoff (to the instance's thread), compute (the engine), return (the rows back on the event
loop), encode, total. ``server total - compute`` is each request's server time the engine did not spend: what
the server adds, and the figure a neighbour's load moves least. ``outside`` is the client's end-to-end time
minus the server's total: the client's encoding and decoding, the socket, uvicorn's own HTTP work.

Bounded: ``--requests`` (200) rounds plus a warm-up, each about three gaps (two engine-alone calls and one
request), and the measurement stops at ``--time-limit-s`` (90). Ratios are what to read on a shared machine,
not absolute milliseconds; other processes' CPU during the run is printed with them.

    python benchmarks/serving_stages.py                                   # ResNet-18 fp32, ~90 s
    python benchmarks/serving_stages.py --model resnet50 --precision int8 --latency-budget 50ms --json r.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its sibling, by path

from _servers import HOST, get_json, server_info, start, stop  # noqa: E402

from effstack.serve.metrics import STAGES  # noqa: E402
from effstack.serve.server import free_port  # noqa: E402

GOAL_SERVER_P50_MS = 2.0  # server-side p50 - engine p50
GOAL_CLIENT_P99_RATIO = 1.5  # client end-to-end p99 / engine p99
WARMUP = 10  # calls per side before measuring


def parse_server_timing(value: str | None) -> dict[str, float]:
    """``"read;dur=0.041, parse;dur=0.012"`` -> ``{"read": 0.041, "parse": 0.012}`` (milliseconds)."""
    out: dict[str, float] = {}
    for part in (value or "").split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


def triton_client(url: str) -> Any:
    """A ``tritonclient.http`` client that keeps each inference response's ``Server-Timing`` header.

    tritonclient's result does not keep the response headers; ``_post`` is where the response passes by.
    """
    import tritonclient.http as httpclient

    class Client(httpclient.InferenceServerClient):
        last_timing: str | None = None

        def _post(self, *args: Any, **kwargs: Any) -> Any:
            response = super()._post(*args, **kwargs)
            self.last_timing = response.get("Server-Timing")
            return response

    return Client(url=url, connection_timeout=30.0, network_timeout=30.0)


def pcts(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean())}


class ProcessCpu:
    """CPU seconds of one process (all threads) from /proc/PID/stat; 0 where /proc is missing."""

    def __init__(self, pid: int):
        self.path = Path(f"/proc/{pid}/stat")
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def seconds(self) -> float:
        try:
            fields = self.path.read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.ticks  # utime, stime


def engine_sessions(args: argparse.Namespace, engine: str) -> tuple[Any, dict[str, Any]]:
    """The model and the engine alone: batch 1 as ``effstack bench`` builds it, and as the server builds it."""
    from effstack.engines import SessionOptions, get_engine
    from effstack.models import load_model

    model = load_model(args.model)
    eng = get_engine(engine)
    threads = args.threads
    sessions = {"batch1": eng.load(model, SessionOptions(precision=args.precision, threads=threads, batch=1))}
    if args.max_batch > 1 and args.instances == "1":
        sessions["as_served"] = eng.load(model, SessionOptions(precision=args.precision, threads=threads,
                                                               batch=args.max_batch))
    return model, sessions


def server_argv(args: argparse.Namespace, port: int, engine: str) -> list[str]:
    argv = [sys.executable, "-m", "effstack", "serve", args.model, "--host", HOST, "--port", str(port),
            "--engine", engine, "--precision", args.precision, "--max-batch", str(args.max_batch),
            "--instances", args.instances]
    if args.latency_budget:
        argv += ["--latency-budget", args.latency_budget]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv + list(args.serve_arg or [])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import tritonclient.http as httpclient

    from effstack.measure.cpu import read_proc_stat
    from effstack.engines import auto_engine

    engine = auto_engine(args.engine)
    port = free_port(HOST)
    proc = start(server_argv(args, port, engine), f"http://{HOST}:{port}/v2/health/ready", f"stages-{port}",
                 timeout_s=args.start_timeout_s)
    sessions: dict[str, Any] = {}
    try:
        index = get_json_post(f"http://{HOST}:{port}/v2/repository/index")
        name = index[0]["name"]
        info = server_info(port, name)
        meta = get_json(f"http://{HOST}:{port}/v2/models/{name}")
        model, sessions = engine_sessions(args, engine)
        settings = {k: s.settings() for k, s in sessions.items()}
        x = model.input.example(1, seed=7)
        client = triton_client(f"{HOST}:{port}")
        tensor = meta["inputs"][0]
        inp = httpclient.InferInput(tensor["name"], list(x.shape), tensor["datatype"])
        inp.set_data_from_numpy(x, binary_data=True)
        outs = [httpclient.InferRequestedOutput(t["name"], binary_data=True) for t in meta["outputs"]]
        gap = args.gap_ms / 1e3
        engine_ms: dict[str, list[float]] = {k: [] for k in sessions}
        client_ms: list[float] = []
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        cpu = ProcessCpu(proc.pid)
        deadline = time.monotonic() + args.time_limit_s  # the measurement's bound; loading is not in it
        stat0, self0, server0, t0 = read_proc_stat(), time.process_time(), cpu.seconds(), time.perf_counter()
        # one call of each side per round, ``gap`` apart: engine alone (each session), then the server
        for i in range(WARMUP + args.requests):
            if time.monotonic() > deadline:
                print(f"  stopped after {i} rounds: --time-limit-s {args.time_limit_s:.0f} s passed", flush=True)
                break
            for key, session in sessions.items():
                time.sleep(gap)
                t = time.perf_counter_ns()
                session.run(x)
                if i >= WARMUP:
                    engine_ms[key].append((time.perf_counter_ns() - t) / 1e6)
            time.sleep(gap)
            t = time.perf_counter_ns()
            result = client.infer(name, [inp], outputs=outs)
            took = (time.perf_counter_ns() - t) / 1e6
            result.as_numpy(meta["outputs"][0]["name"])
            if i >= WARMUP:
                client_ms.append(took)
                timing = parse_server_timing(client.last_timing)
                for s in STAGES:
                    stages[s].append(timing.get(s, float("nan")))
        wall = time.perf_counter() - t0
        stat1 = read_proc_stat()
        mine = (time.process_time() - self0) + (cpu.seconds() - server0)
        other = None if stat0 is None or stat1 is None else max(0.0, stat1[0] - stat0[0] - mine) / wall * 100
        client.close()
    finally:
        stop(proc)
        for s in sessions.values():
            s.close()
    if not client_ms:
        raise SystemExit("no request was measured; raise --time-limit-s")
    outside = [c - t for c, t in zip(client_ms, stages["total"])]
    overhead = [t - c for t, c in zip(stages["total"], stages["compute"])]
    out: dict[str, Any] = {
        "model": args.model, "engine": engine, "precision": args.precision, "requests": len(client_ms),
        "gap_ms": args.gap_ms, "latency_budget": args.latency_budget, "max_batch": args.max_batch,
        "instances": args.instances, "server": info, "stages": {s: pcts(v) for s, v in stages.items()},
        "server_minus_compute": pcts(overhead), "outside": pcts(outside), "client": pcts(client_ms),
        "engine_alone": {k: pcts(v) for k, v in engine_ms.items()},
        "engine_settings": settings,
        "other_pct_core": other, "wall_s": wall,
    }
    ref = out["engine_alone"]["batch1"]
    out["goals"] = {
        "server_p50_minus_engine_p50_ms": out["stages"]["total"]["p50_ms"] - ref["p50_ms"],
        "client_p99_over_engine_p99": out["client"]["p99_ms"] / ref["p99_ms"],
    }
    out["goals"]["pass"] = (out["goals"]["server_p50_minus_engine_p50_ms"] <= GOAL_SERVER_P50_MS
                            and out["goals"]["client_p99_over_engine_p99"] <= GOAL_CLIENT_P99_RATIO)
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose server-minus-engine p50 is the median one, with every run's goal figures beside it, their
    medians judged against the goals, and the README's lines."""
    import statistics

    key = "server_p50_minus_engine_p50_ms"
    r = dict(sorted(runs, key=lambda x: x["goals"][key])[len(runs) // 2])
    diffs = [x["goals"][key] for x in runs]
    ratios = [x["goals"]["client_p99_over_engine_p99"] for x in runs]
    diff, ratio = statistics.median(diffs), statistics.median(ratios)
    r["runs"] = [x["goals"] for x in runs]
    r["median_goals"] = {key: diff, "client_p99_over_engine_p99": ratio,
                         "pass": diff <= GOAL_SERVER_P50_MS and ratio <= GOAL_CLIENT_P99_RATIO}
    span = lambda v, f: ", ".join(format(x, f) for x in v)  # noqa: E731
    ref, st = r["engine_alone"]["batch1"], r["stages"]
    r["readme"] = [
        {"what": f"engine alone, batch 1 ({r['model']} {r['precision']} on {r['engine']}), p50 / p99 ms",
         "figure": f"{ref['p50_ms']:.2f} / {ref['p99_ms']:.2f}", "spread": "the median run"},
        {"what": f"server-side p50 - engine p50, ms (goal <= {GOAL_SERVER_P50_MS:g})", "figure": f"{diff:+.2f}",
         "spread": f"{len(runs)} runs: {span(diffs, '+.2f')}"},
        {"what": f"tritonclient (HTTP, binary) end-to-end p99 / engine p99 (goal <= {GOAL_CLIENT_P99_RATIO:g}x)",
         "figure": f"{ratio:.2f}x", "spread": f"{len(runs)} runs: {span(ratios, '.2f')}"},
        {"what": "server stages p50 ms: read, parse, queue, handoff, compute, return, encode",
         "figure": ", ".join(f"{st[s]['p50_ms']:.2f}" for s in STAGES if s != "total"), "spread": "the median run"},
    ]
    return r


def get_json_post(url: str) -> Any:
    import json
    import urllib.request

    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _brief(settings: Any) -> str:
    keys = ("hint", "streams", "threads", "batch1")
    one = lambda d: ", ".join(f"{k} {d[k]}" for k in keys if k in d) if isinstance(d, dict) else str(d)  # noqa: E731
    return " | ".join(one(d) for d in settings) if isinstance(settings, list) else one(settings)


def print_table(r: dict[str, Any]) -> None:
    total = r["stages"]["total"]["p50_ms"]
    print(f"\n{r['model']} {r['precision']} on {r['engine']}, max batch {r['max_batch']}, instances {r['instances']}, "
          f"budget {r['latency_budget'] or '-'}; {r['requests']} sequential requests {r['gap_ms']:.0f} ms apart "
          f"(tritonclient HTTP, binary); batch cap {r['server'].get('batch_cap')}")
    for who, settings in [("server", r["server"].get("sessions")), *r["engine_settings"].items()]:
        print(f"  {who}: {_brief(settings)}")
    print(f"  {'':28s} {'p50 ms':>9s} {'p99 ms':>9s} {'mean ms':>9s} {'of p50 total':>13s}")
    for s in STAGES:
        v = r["stages"][s]
        label = "server total" if s == "total" else f"  {s}"
        share = f"{100 * v['p50_ms'] / total:12.1f}%" if s != "total" and total > 0 else ""
        print(f"  {label:28s} {v['p50_ms']:9.3f} {v['p99_ms']:9.3f} {v['mean_ms']:9.3f} {share:>13s}")
    rows = [("server total - compute", r["server_minus_compute"]), ("outside the server", r["outside"]),
            ("client end-to-end", r["client"])]
    for label, v in rows + [(f"engine alone ({k})", v) for k, v in r["engine_alone"].items()]:
        print(f"  {label:28s} {v['p50_ms']:9.3f} {v['p99_ms']:9.3f} {v['mean_ms']:9.3f}")
    diff, ratio = r["goals"]["server_p50_minus_engine_p50_ms"], r["goals"]["client_p99_over_engine_p99"]
    print(f"  goal: server p50 - engine p50 = {diff:+.2f} ms "
          f"(<= {GOAL_SERVER_P50_MS} ms: {'pass' if diff <= GOAL_SERVER_P50_MS else 'FAIL'})")
    print(f"  goal: client p99 / engine p99 = {ratio:.2f}x "
          f"(<= {GOAL_CLIENT_P99_RATIO}x: {'pass' if ratio <= GOAL_CLIENT_P99_RATIO else 'FAIL'})")
    other = "?" if r["other_pct_core"] is None else f"{r['other_pct_core']:.0f}%"
    print(f"  other processes took {other} of a core meanwhile; {r['wall_s']:.0f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", help="model spec (default resnet18; random weights, offline)")
    p.add_argument("--engine", default="auto", help="engine (default auto: as effstack serve picks)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--latency-budget", metavar="DURATION", help="the server's --latency-budget, e.g. 50ms")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--instances", default="1")
    p.add_argument("--threads", type=int, help="compute threads (default: all cores), for the server and alone")
    p.add_argument("--requests", type=int, default=200, help="measured calls per side (default 200)")
    p.add_argument("--gap-ms", type=float, default=100.0, help="pause before each call (default 100)")
    p.add_argument("--time-limit-s", type=float, default=90.0, help="stop measuring after this long (default 90)")
    p.add_argument("--start-timeout-s", type=float, default=300.0, help="how long the server may take to load")
    p.add_argument("--serve-arg", action="append", help="extra flag for effstack serve (repeatable), e.g. "
                   "--serve-arg=--inline-below=0")
    p.add_argument("--runs", type=int, default=1,
                   help="measurements, each with a server of its own; the goals are judged on their median")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    args = p.parse_args()
    if args.requests < 1 or args.gap_ms < 0 or args.runs < 1:
        p.error("--requests and --runs must be at least 1 and --gap-ms not negative")
    runs = []
    for i in range(args.runs):
        if args.runs > 1:
            print(f"run {i + 1}/{args.runs}", flush=True)
        runs.append(measure(args))
        print_table(runs[-1])
    r = summarise(runs)
    if args.json:
        from _report import write_json

        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
