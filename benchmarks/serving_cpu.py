"""Where the CPU goes while `effstack serve` carries a fixed Poisson rate: the engine, the event loop, the client.

The capacity ceiling of ``benchmarks/serving.py`` is simulated from batch times measured with nothing else
running; a real server also parses HTTP, batches and answers on its event loop, and on a small machine the load
generator shares the cores too. This benchmark measures both apart. ``effstack serve`` runs as a separate
process on 127.0.0.1; this process sends ``--rate`` requests/s (open-loop Poisson, binary tensors, bounded by
``--duration`` and ``--max-queries``) and reads, before and after, the CPU time of every server thread from
``/proc`` (the main thread is the event loop; the others are the instances' and the engine's threads) and its
own CPU time. Per request and as a share of the machine's cores. Linux only (``/proc``).

    python benchmarks/serving_cpu.py --model efficientnet_lite0 --engine onnxruntime --precision fp32 \\
        --budget-ms 130 --rate 140 --json r.json                                                # ~1.5 min
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its sibling, by path

from _servers import HOST, effstack_server, model_name, run, server_info, stop  # noqa: E402

from effstack.serve.loadtest import prepare, run_load  # noqa: E402
from effstack.serve.server import free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid`` now, by thread id (threads gone are not listed)."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)
    return out


def split(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu_s` readings: the main thread's, and all the others'."""
    main = after.get(pid, 0.0) - before.get(pid, 0.0)
    rest = sum(s - before.get(tid, 0.0) for tid, s in after.items() if tid != pid)
    return {"event_loop": main, "engine_and_other_threads": rest}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    extra = ["--latency-budget", f"{args.budget_ms}ms"] if args.budget_ms else []
    proc = effstack_server(args, port, *extra)
    try:
        name = model_name(args.model)
        info = server_info(port, name)
        target = run(prepare(f"http://{HOST}:{port}", batch=1))
        run(run_load(target, min(args.rate, 20.0), 3.0))  # warm the connections and the server's paths
        before, mine0, t0 = thread_cpu_s(proc.pid), time.process_time(), time.perf_counter()
        r = run(run_load(target, args.rate, args.duration, max_queries=args.max_queries))
        after, mine1, wall = thread_cpu_s(proc.pid), time.process_time(), time.perf_counter() - t0
    finally:
        stop(proc)
    answered = max(1, r.ok)
    server = split(proc.pid, before, after)
    cpu = {**server, "client": mine1 - mine0}
    cores = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {
        "model": args.model, "engine": args.engine, "precision": args.precision, "budget_ms": args.budget_ms,
        "instances": len(info["sessions"]), "batch_cap": info["batch_cap"], "rate_qps": args.rate,
        "wall_s": wall, "answered": r.ok, "errors": r.errors, "p50_ms": r.latency.p50_ms if r.latency else None,
        "p99_ms": r.latency.p99_ms if r.latency else None, "cores": cores, "cpu_s": cpu,
        "cpu_ms_per_request": {k: 1e3 * v / answered for k, v in cpu.items()},
        "share_of_machine": {k: v / (wall * cores) for k, v in cpu.items()},
    }
    per, share = out["cpu_ms_per_request"], out["share_of_machine"]
    out["readme"] = [
        {"what": f"{args.model} {args.precision} on {args.engine}, {out['instances']} instance(s), {args.rate:g} "
                 f"requests/s for {wall:.0f} s: answered, p50 / p99 ms",
         "figure": f"{r.ok}", "spread": f"{out['p50_ms'] or 0:.1f} / {out['p99_ms'] or 0:.1f}; errors {r.errors or 0}"},
    ] + [
        {"what": f"CPU per request: {label}, ms (share of the {cores} cores)", "figure": f"{per[key]:.3f}",
         "spread": f"{100 * share[key]:.1f}%"}
        for key, label in (("engine_and_other_threads", "the server's engine and other threads"),
                           ("event_loop", "the server's event loop (HTTP, parsing, batching, answers)"),
                           ("client", "the load generator"))
    ]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--instances", default="auto")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--budget-ms", type=float, default=130.0, help="the server's latency budget (0: none)")
    p.add_argument("--rate", type=float, default=140.0, help="requests/s, Poisson (default 140)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--max-queries", type=int, default=20_000, help="requests at most (default 20000)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    args = p.parse_args()
    if not (args.rate > 0 and 0 < args.duration <= 600 and args.max_queries >= 1 and args.budget_ms >= 0):
        p.error("--rate must be positive, --duration within (0, 600], --max-queries at least 1, --budget-ms >= 0")
    if not Path("/proc/self/task").is_dir():
        p.error("this benchmark reads per-thread CPU time from /proc (Linux only)")
    r = measure(args)
    for line in r["readme"]:
        print(f"  {line['what']}: {line['figure']} ({line['spread']})")
    if args.json:
        from _report import write_json

        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
