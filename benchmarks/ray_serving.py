"""Issue 18's measurements: the same bundle on Ray (Serve and Data) against effstack's own server and bench.

Sections (``--only`` picks some; all by default), each bounded by ``--step-s`` and ``--max-steps``:

* ``overhead``: the null engine (``--engine null`` over the bundle) behind ``effstack serve`` and behind Ray
  Serve (through its proxy, then with direct ingress, each on a cluster of its own), the same low open-loop
  rate, alternating rounds with effstack serve; Ray's per-request overhead is the difference of the p50s.
* ``capacity``: the bundle with its engine at ``--budget-ms``: the highest Poisson rate whose p99 meets the
  budget (``find_max``, the load generator of ``effstack loadtest``) of ``effstack serve`` and of Ray Serve with
  direct ingress (the replica's own server), both up, in ``--capacity-rounds`` alternating rounds (the ratio is
  the median of the rounds'); then Ray Serve through its proxy once. The plan's threads on all. Goal: Ray >= 0.85x.
* ``offline``: ``effstack batch-infer``'s Ray Data pipeline on a warm cluster against ``effstack bench``'s
  offline scenario on one session of the same engine, threads and batch, ``--rounds`` alternating rounds;
  Ray Data's rate once its actor pool runs (from the actors' own clocks) and for the whole pass, which starts
  a pool (model load, warm-up). Goal: Ray Data >= 0.9x.
* ``spread``: a simulated two-node cluster (``ray.cluster_utils.Cluster``, two nodes of 1 CPU on 127.0.0.1),
  two 1-CPU replicas; a load step, then the CPU time each replica process used, by node: requests landed on
  both nodes when both replicas worked.
* ``fault``: a client that retries sends requests one after another; the replica process is SIGKILLed
  mid-load; lost requests (must be 0), the gap until the next answer (must be < 30 s) and the new PID.

Servers bind 127.0.0.1; Ray clusters are local and bound to 127.0.0.1. The load generator is this process.

    python benchmarks/ray_serving.py --bundle bundles/resnet50 --budget-ms 350 --json results/ray_serving.json
    python benchmarks/ray_serving.py --bundle bundles/tiny --only overhead,fault --step-s 3 --max-steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its siblings, by path
from _report import write_json  # noqa: E402
from _servers import run as _run  # noqa: E402
from _servers import start, stop  # noqa: E402

from effstack.deploy.cluster import LOOPBACK, local_ray, loopback_env, require_ray  # noqa: E402
from effstack.deploy.ray_serve import RayServeApp, replica_processes, resolve_one  # noqa: E402
from effstack.serve.loadtest import find_max, prepare, run_load  # noqa: E402
from effstack.serve.server import free_port  # noqa: E402

SECTIONS = ("overhead", "capacity", "offline", "spread", "fault")


@contextlib.contextmanager
def effstack_serve(bundle: str, overrides: list[str]) -> Iterator[str]:
    """``effstack serve BUNDLE`` in a child process on 127.0.0.1; yields its URL once ready."""
    port = free_port()
    argv = [sys.executable, "-m", "effstack", "serve", bundle, "--host", LOOPBACK, "--port", str(port), *overrides]
    url = f"http://{LOOPBACK}:{port}"
    proc = start(argv, f"{url}/v2/health/ready", f"effstack-{port}", timeout_s=300)
    try:
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def ray_serve(bundle: str, overrides: dict[str, Any], direct: bool = False, **options: Any) -> Iterator[str]:
    """Ray Serve on the bundle; yields the proxy's URL, or with ``direct`` the replica's own (direct ingress)."""
    if direct:
        options.update(ingress="direct", direct_port=free_port())
    with RayServeApp.start(bundle, overrides, port=free_port(), **options) as app:
        yield app.direct_urls()[0] if direct else app.url


def _flags(overrides: dict[str, Any]) -> list[str]:
    return [w for k, v in overrides.items() if v is not None for w in (f"--{k.replace('_', '-')}", str(v))]


def _latency(url: str, rate: float, duration: float) -> dict[str, Any]:
    r = _run(_load(url, rate, duration))
    if r.latency is None:
        raise SystemExit(f"no request to {url} succeeded at {rate}/s: {r.errors}")
    return {"p50_ms": r.latency.p50_ms, "p99_ms": r.latency.p99_ms, "ok": r.ok, "errors": r.errors}


async def _load(url: str, rate: float, duration: float) -> Any:
    target = await prepare(url)
    return await run_load(target, rate, duration)


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Null engine: p50/p99 at a low rate behind effstack serve and behind Ray Serve, alternating rounds."""
    over = {"engine": "null", "threads": 1}
    rounds: dict[str, list[dict[str, Any]]] = {"effstack": [], "ray": [], "ray_direct": []}
    with effstack_serve(args.bundle, _flags(over)) as plain:
        with ray_serve(args.bundle, over, num_cpus=2) as ray:
            for _ in range(args.rounds):
                for name, url in (("effstack", plain), ("ray", ray)):
                    rounds[name].append(_latency(url, args.low_rate, args.step_s))
        with ray_serve(args.bundle, over, direct=True, num_cpus=2) as direct:  # a cluster of its own
            for _ in range(args.rounds):
                for name, url in (("effstack", plain), ("ray_direct", direct)):
                    rounds[name].append(_latency(url, args.low_rate, args.step_s))
    med = {n: sorted(r["p50_ms"] for r in rs)[len(rs) // 2] for n, rs in rounds.items()}
    out = {"rounds": rounds, "p50_ms": med, "ray_overhead_ms": med["ray"] - med["effstack"],
           "ray_direct_overhead_ms": med["ray_direct"] - med["effstack"]}
    print(f"overhead: null engine p50 effstack {med['effstack']:.2f} ms, Ray Serve through its proxy "
          f"{med['ray']:.2f} ms (+{out['ray_overhead_ms']:.2f}), direct ingress {med['ray_direct']:.2f} ms "
          f"(+{out['ray_direct_overhead_ms']:.2f})", flush=True)
    return out


def capacity(args: argparse.Namespace) -> dict[str, Any]:
    """The highest rate within the p99 budget, effstack serve against Ray Serve with direct ingress, in
    ``--capacity-rounds`` alternating rounds with both servers up (so both see the same background: Ray's
    daemons run during effstack's rounds too), the order swapped each round; the ratio is the median of the
    rounds' ratios. Each round's search starts just under the previous round's result of that server. Ray
    Serve through its proxy is measured once, after, on a cluster of its own (it is far from the goal)."""
    over = {"latency_budget": f"{args.budget_ms}ms"}
    budget = {"latency_budget_ms": args.budget_ms}
    start = {"effstack": args.start_rate, "ray_direct": args.start_rate}
    rounds: list[dict[str, float | None]] = []
    with effstack_serve(args.bundle, _flags(over)) as plain, ray_serve(args.bundle, budget, direct=True) as direct:
        urls = {"effstack": plain, "ray_direct": direct}
        for i in range(args.capacity_rounds):
            found: dict[str, float | None] = {}
            for name in (("effstack", "ray_direct") if i % 2 == 0 else ("ray_direct", "effstack")):
                found[name] = _find_max(urls[name], args, start[name])
                if found[name]:
                    start[name] = found[name] * 0.8
            found["ratio"] = found["ray_direct"] / found["effstack"] \
                if found["effstack"] and found["ray_direct"] is not None else None
            rounds.append(found)
            print(f"capacity round {i + 1}: effstack {found['effstack']}/s, direct ingress {found['ray_direct']}/s "
                  f"({found['ratio'] and round(found['ratio'], 3)}x)", flush=True)
    with ray_serve(args.bundle, budget) as url:
        proxy = _find_max(url, args, args.start_rate)
    ratios = sorted(r["ratio"] for r in rounds if r["ratio"] is not None)
    best = {n: _median([r[n] for r in rounds if r[n] is not None]) for n in ("effstack", "ray_direct")}
    best["ray"] = proxy
    ratio_direct = _median(ratios)
    ratio_proxy = proxy / best["effstack"] if proxy is not None and best["effstack"] else None
    print(f"capacity at p99 {args.budget_ms} ms: effstack {best['effstack']}/s, direct ingress {best['ray_direct']}/s "
          f"(median ratio {ratio_direct and round(ratio_direct, 3)}x of {len(ratios)} rounds; goal >= 0.85), "
          f"through Serve's proxy {proxy}/s ({ratio_proxy and round(ratio_proxy, 3)}x)", flush=True)
    return {"max_rate_qps": best, "rounds": rounds, "ratio": ratio_proxy, "ratio_direct": ratio_direct,
            "ratio_direct_range": [ratios[0], ratios[-1]] if ratios else None, "budget_ms": args.budget_ms,
            "tolerance": args.tolerance}


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return values[len(values) // 2] if values else None


def _find_max(url: str, args: argparse.Namespace, start_rate: float) -> float | None:
    async def go() -> float | None:
        target = await prepare(url)
        rate, _ = await find_max(target, args.budget_ms, start_rate, args.step_s, max_steps=args.max_steps,
                                 tolerance=args.tolerance)
        return rate

    return _run(go())


def offline(args: argparse.Namespace) -> dict[str, Any]:
    """Ray Data over the plan's actor pool against effstack bench offline, ``--rounds`` alternating rounds."""
    import statistics

    from effstack.deploy.batch import batch_plan, load_inputs, run_batches
    from effstack.engines import SessionOptions, get_engine
    from effstack.measure.scenarios import offline as offline_scenario
    from effstack.models import load_model

    config = resolve_one(args.bundle)
    if config.engine == "auto":
        raise SystemExit("the offline section needs a bundle whose serving.json names its engine")
    plan = batch_plan(config)
    x, _ = load_inputs(args.data, config)
    options = SessionOptions(precision=config.precision, threads=config.total_threads(), batch=plan.batch_size)
    rounds = []
    model = load_model(config.model)
    with local_ray():
        run_batches(x[: plan.batch_size * plan.actors], plan)  # Ray's worker processes and imports, not timed
        for _ in range(args.rounds):
            marks: list[tuple[float, float, int]] = []
            t0 = time.perf_counter()
            run_batches(x, plan, marks)  # each pass starts its actor pool: load and warm-up count in ray_sps
            ray_sps = len(x) / (time.perf_counter() - t0)
            # steady: from the actors' first batch begun to their last one done, the pool's start-up left out
            span = max(m[1] for m in marks) - min(m[0] for m in marks)
            steady_sps = sum(m[2] for m in marks) / span
            # the bench session lives only for its own measurement: none of its threads is there during Ray's pass
            with get_engine(config.engine).load(model, options) as session:
                bench_sps = offline_scenario(session, x[: plan.batch_size], duration_s=args.step_s,
                                             repeats=3).throughput.median
            rounds.append({"ray_data_sps": ray_sps, "steady_sps": steady_sps, "bench_sps": bench_sps,
                           "ratio": ray_sps / bench_sps, "steady_ratio": steady_sps / bench_sps})
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    lo = {k: min(r[k] for r in rounds) for k in ("ratio", "steady_ratio")}
    hi = {k: max(r[k] for r in rounds) for k in ("ratio", "steady_ratio")}
    print(f"offline, {len(x)} samples, {plan.actors} actor(s) x {plan.num_cpus} CPU, batch {plan.batch_size}, "
          f"median of {len(rounds)} alternating rounds: Ray Data {med['steady_sps']:.1f}/s once its pool runs "
          f"({med['steady_ratio']:.3f}x, {lo['steady_ratio']:.3f}-{hi['steady_ratio']:.3f}; goal >= 0.9), "
          f"{med['ray_data_sps']:.1f}/s for the whole pass with the pool's start-up ({med['ratio']:.3f}x); "
          f"effstack bench {med['bench_sps']:.1f}/s", flush=True)
    return {**med, "ratio_range": [lo["ratio"], hi["ratio"]],
            "steady_ratio_range": [lo["steady_ratio"], hi["steady_ratio"]], "rounds": rounds, "samples": len(x),
            "plan": plan.to_dict()}


def spread(args: argparse.Namespace) -> dict[str, Any]:
    """Two simulated 1-CPU nodes, two 1-CPU replicas: which node's replica did the work (CPU seconds)."""
    ray = require_ray("serve", "the spread section")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        cluster.add_node(**{k: v for k, v in node.items() if k != "include_dashboard"})
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        over = {"threads": 1, "instances": 2}
        with ray_serve(args.bundle, over, min_replicas=2, max_replicas=2) as url:
            replicas = replica_processes()
            before = {p.pid: sum(p.cpu_times()[:2]) for p in replicas}
            step = _latency(url, args.low_rate * 4, args.step_s)
            work = {}
            for p in replicas:
                raylet = next((a for a in p.parents() if "raylet" in a.name()), None)
                work[p.pid] = {"node_raylet_pid": raylet.pid if raylet else None,
                               "cpu_s": round(sum(p.cpu_times()[:2]) - before[p.pid], 3)}
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()
    nodes = {w["node_raylet_pid"] for w in work.values() if w["cpu_s"] > 0.05}
    print(f"spread: {len(replicas)} replicas on {len({w['node_raylet_pid'] for w in work.values()})} nodes; "
          f"replicas that worked were on {len(nodes)} node(s): {work}", flush=True)
    return {"replicas": work, "nodes_that_worked": len(nodes), "step": step}


def fault(args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the replica under load; the retrying client must lose nothing and be answered within 30 s."""
    import httpx

    with RayServeApp.start(args.bundle, {"threads": 1}, port=free_port(), num_cpus=2) as app:
        body, path = _infer_body(app.url, app.config.name)
        (victim,) = replica_processes()
        answered: list[float] = []
        attempts_failed = [0]

        def client() -> None:
            with httpx.Client(timeout=5.0) as c:
                for _ in range(args.fault_requests):
                    while True:
                        try:
                            if c.post(app.url + path, content=body).status_code == 200:
                                answered.append(time.monotonic())
                                break
                        except httpx.HTTPError:
                            pass
                        attempts_failed[0] += 1
                        time.sleep(0.05)

        t = threading.Thread(target=client)
        t.start()
        while len(answered) < args.fault_requests // 5 and t.is_alive():
            time.sleep(0.01)
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        t.join(timeout=120)
        after = [a for a in answered if a > killed]
        gap = after[0] - killed if after else None
        pids = [p.pid for p in replica_processes()]
    out = {"requests": args.fault_requests, "answered": len(answered), "lost": args.fault_requests - len(answered),
           "failed_attempts": attempts_failed[0], "gap_s": gap, "old_pid": victim.pid, "new_pids": pids}
    print(f"fault: {out['answered']}/{out['requests']} answered ({out['failed_attempts']} failed attempts retried), "
          f"first answer {gap if gap is None else round(gap, 2)} s after the SIGKILL (goal < 30 s); "
          f"replica {victim.pid} -> {pids}", flush=True)
    return out


def _infer_body(url: str, name: str) -> tuple[bytes, str]:
    """A one-sample JSON inference request for the model's input, from its metadata."""
    import json

    with urllib.request.urlopen(f"{url}/v2/models/{name}", timeout=10) as r:
        meta = json.loads(r.read())["inputs"][0]
    shape = [1, *meta["shape"][1:]]
    count = 1
    for d in shape:
        count *= d
    doc = {"inputs": [{"name": meta["name"], "shape": shape, "datatype": meta["datatype"], "data": [0.5] * count}]}
    return json.dumps(doc).encode(), f"/v2/models/{name}/infer"


def _rate(q: float | None) -> str:
    return "none" if q is None else f"{q:.1f}"


def _readme(r: dict[str, Any]) -> list[dict[str, str]]:
    """The README's figures of the sections that ran."""
    out = []
    if "overhead" in r:
        o = r["overhead"]
        ray_p50 = sorted(x["p50_ms"] for x in o["rounds"]["ray"])
        direct_p50 = sorted(x["p50_ms"] for x in o["rounds"]["ray_direct"])
        out.append({"what": "null engine p50: effstack serve / Ray Serve through its proxy / direct ingress, ms",
                    "figure": f"{o['p50_ms']['effstack']:.2f} / {o['p50_ms']['ray']:.2f} / "
                              f"{o['p50_ms']['ray_direct']:.2f} (Ray adds {o['ray_overhead_ms']:.2f} / "
                              f"{o['ray_direct_overhead_ms']:.2f})",
                    "spread": f"rounds: proxy {ray_p50[0]:.2f}-{ray_p50[-1]:.2f}, "
                              f"direct {direct_p50[0]:.2f}-{direct_p50[-1]:.2f}"})
    if "capacity" in r:
        c = r["capacity"]
        def x(r: float | None) -> str:
            return "none" if r is None else f"{r:.3f}x"

        q = c["max_rate_qps"]
        lo_hi = c.get("ratio_direct_range")
        tol = f", each rate searched to {c['tolerance']:.1%}" if c.get("tolerance") else ""
        out.append({"what": f"highest rate within p99 {c['budget_ms']:g} ms: effstack serve / Ray Serve direct ingress "
                            f"(median of {len(c.get('rounds', []))} alternating rounds, both up{tol}) / through "
                            "its proxy (once), queries/s",
                    "figure": f"{_rate(q['effstack'])} / {_rate(q['ray_direct'])} ({x(c['ratio_direct'])}; goal "
                              f"0.85x) / {_rate(q['ray'])} ({x(c['ratio'])})",
                    "spread": f"rounds {lo_hi[0]:.3f}-{lo_hi[1]:.3f}x" if lo_hi else ""})
    if "offline" in r:
        o = r["offline"]
        a, b = o["steady_ratio_range"]
        c, d = o["ratio_range"]
        out.append({"what": f"offline, {o['samples']} samples: Ray Data batch-infer once its actor pool runs / "
                            "effstack bench, samples/s (median of alternating rounds)",
                    "figure": f"{o['steady_sps']:.1f} / {o['bench_sps']:.1f} ({o['steady_ratio']:.3f}x; goal 0.9)",
                    "spread": f"rounds {a:.3f}-{b:.3f}x"})
        out.append({"what": "the same, the whole pass with the pool's start-up (model load, warm-up)",
                    "figure": f"{o['ray_data_sps']:.1f} / {o['bench_sps']:.1f} ({o['ratio']:.3f}x)",
                    "spread": f"rounds {c:.3f}-{d:.3f}x"})
    if "spread" in r:
        s = r["spread"]
        out.append({"what": "two simulated 1-CPU nodes, two replicas: nodes whose replica worked",
                    "figure": f"{s['nodes_that_worked']} of 2",
                    "spread": ", ".join(f"{w['cpu_s']} CPU-s" for w in s["replicas"].values())})
    if "fault" in r:
        f = r["fault"]
        gap = "none" if f["gap_s"] is None else f"{f['gap_s']:.2f} s"
        out.append({"what": "replica SIGKILLed under load: answered / lost, first answer after the kill",
                    "figure": f"{f['answered']}/{f['requests']} / {f['lost']}, {gap} (goal < 30 s)",
                    "spread": f"{f['failed_attempts']} failed attempts retried"})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="the bundle folder to serve")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated ({', '.join(SECTIONS)})")
    p.add_argument("--budget-ms", type=float, default=350.0, help="p99 budget of the capacity section")
    p.add_argument("--step-s", type=float, default=10.0, help="seconds per load step / offline round")
    p.add_argument("--max-steps", type=int, default=6, help="find_max steps per server")
    p.add_argument("--start-rate", type=float, default=10.0, help="find_max's first rate (queries/s)")
    p.add_argument("--tolerance", type=float, default=0.025,
                   help="find_max stops once its pass/fail bracket is this narrow (0.025: rates within 2.5%%)")
    p.add_argument("--capacity-rounds", type=int, default=3,
                   help="alternating find_max rounds per server in the capacity section (ratio: their median)")
    p.add_argument("--low-rate", type=float, default=20.0, help="the overhead section's rate (queries/s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the overhead and offline sections")
    p.add_argument("--data", default="synth:digits?n=3072&size=224", help="the offline section's data spec")
    p.add_argument("--fault-requests", type=int, default=300, help="requests of the fault drill")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args()
    loopback_env()  # before anything imports ray
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    results: dict[str, Any] = {"bundle": str(Path(args.bundle).resolve()), "args": vars(args)}
    for name in sections:
        results[name] = globals()[name](args)
    results["readme"] = _readme(results)
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
