"""Issue 6's serving acceptance measurements, each section bounded in time, all results in one JSON file.

Sections (``--only`` picks some; all of them by default). Times are for the project's 2-core AVX2 machine with
ResNet-50 INT8 on OpenVINO (~30 images/s offline) and ``--budget-ms 350``:

* ``overhead`` (~2 min): the null engine behind ``effstack serve`` against a bare echo endpoint on the same HTTP
  stack (Starlette + uvicorn, same request and response bytes), low open-loop load, alternating rounds; p50 ratio.
* ``capacity`` (~5 min): ``effstack serve MODEL --latency-budget B`` — the highest Poisson rate whose p99 meets
  the budget (``loadtest --find-max``), as a fraction of the offline throughput of the same engine, precision
  and batch (the batch cap the server derived from its curve); next to it, the ceiling of the same run.
* ``ceiling`` (~4 min; ``spread`` is an old name for it): no server. The layout the capacity section's server
  chose (or ``--instances``; ``auto`` picks it as the server would) is built, and with every instance busy
  each instance cycles through the batch sizes 1..max_batch ``--ceiling-runs`` times (instances start at
  different sizes, so slow drift of the machine hits every size alike): per size the median, p10/p90/p99, CV
  and the spread of the log of batch time. That measured curve, with its per-size spread, goes through
  :mod:`effstack.serve.simulate` (the batcher's own ``decide()`` under Poisson load, the policy seeing the
  measured p99): the highest rate within the budget over the offline rate (the capacity section's, else
  measured here) is the ceiling the capacity fraction is read against. Written as ``ceiling`` in the JSON,
  which ``benchmarks/batcher_sim.py --curve-json`` reads.
* ``auto`` (~12 min): is ``--instances auto`` right? ``--auto-runs`` times (5), each layout auto would try (1
  and 2 instances on 2 cores) is served for real (``effstack serve --instances N``, alternating which goes
  first): auto's prediction for it is computed from that server's own measured curve exactly as auto computes
  it, and its real sustainable rate is searched with the load generator (``--auto-steps`` steps of
  ``--auto-step-s``, from the same start for every layout: half the single-stream rate, not the prediction). Reports how often the predicted ranking matches the measured one ("ranking right in 4/5
  runs"; layouts measured within 5% of each other are a tie and say nothing) and how often auto's pick was
  the measured best. To fit the time it serves ``--auto-model`` (default ResNet-18, not ResNet-50) at
  ``--auto-budget-ms`` (default 10x the model's batch-1 time on one instance with every thread, measured
  first: the budget-to-latency ratio of ResNet-50 at 350 ms).
* ``litserve`` (~6 min): LitServe with its own batching serving the same exported ONNX model with onnxruntime,
  and effstack serving that model with onnxruntime (one session with every thread on each side, threads that
  do not spin between runs, LitServe's batch capped at effstack's), each searched for its highest rate within
  the budget. Issue 17 judges it on a model batching can pay on (a small CNN: ``--model efficientnet_lite0``).
* ``overload`` (~2 min): 3x the sustainable rate: 503s and how fast they come, admitted requests' p99, server
  memory.

Servers run as separate processes on 127.0.0.1; the load generator is this process.

    python benchmarks/serving.py --budget-ms 350 --json results/serving.json             # all, ~30 min
    python benchmarks/serving.py --only capacity,ceiling --budget-ms 350 --json results/serving_ceiling.json
    python benchmarks/serving.py --only auto --json results/serving_auto.json
    python benchmarks/serving.py --only overhead --duration 3 --json results/serving.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its siblings, by path

from _servers import (HOST, LOGS, batch1_ms, effstack_server, get_json, model_name, offline_throughput,  # noqa: E402
                      run, server_info, start, stop)

from effstack.report.jsonio import atomic_write_text  # noqa: E402
from effstack.serve.loadtest import Target, find_max, http_request, prepare, run_load  # noqa: E402
from effstack.serve.server import free_port  # noqa: E402

SECTIONS = ("overhead", "capacity", "ceiling", "auto", "litserve", "overload")
CLIENT_MAX_QPS = 2000.0  # where --find-max starts at most: one Python client process cannot send much more
CEILING_GOAL = 0.9  # issue 17: the highest Poisson rate within the budget over the ceiling simulated from the curve
LITSERVE_GOAL = 1.3  # issue 17: effstack over LitServe at the same p99 budget, on a model batching pays on
MEASURED_TIE = 0.05  # auto: layouts measured within this of each other are a tie (find-max resolves ~5%)


# --- the bare echo endpoint (a child process) -------------------------------------------------------


def echo_main(port: int, response_file: str) -> None:
    """Serve POST /v2/models/{name}/infer: read the body, answer the canned response. Same stack as effstack."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    canned = json.loads(Path(response_file).read_text())
    body, headers = bytes.fromhex(canned["body"]), canned["headers"]

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(body, 200, headers, canned["content_type"])

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', 200, None, "application/json")

    app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"]),
                            Route("/v2/health/ready", ready, methods=["GET"])])
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def canned_response(target: Target) -> dict[str, Any]:
    from effstack.serve.loadtest import _Pool

    async def one() -> tuple[int, dict, bytes]:
        pool = _Pool(target.host, target.port, 1)
        try:
            return await pool.send(target.request)
        finally:
            pool.close()

    status, headers, body = run(one())
    assert status == 200, status
    keep = {k: v for k, v in headers.items() if k == "inference-header-content-length"}
    return {"body": body.hex(), "headers": keep, "content_type": headers.get("content-type", "application/json")}


# --- sections --------------------------------------------------------------------------------------


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Null engine vs bare echo: p50 at low load, alternating rounds."""
    port_null, port_echo = free_port(), free_port()
    null = effstack_server(args, port_null, engine="null", precision="fp32", instances=1)
    echo = None
    try:
        target = run(prepare(f"http://{HOST}:{port_null}", batch=1))
        canned = LOGS / "canned.json"
        canned.write_text(json.dumps(canned_response(target)))
        echo = start([sys.executable, __file__, "--_echo", str(port_echo), str(canned)],
                     f"http://{HOST}:{port_echo}/v2/health/ready", "echo")
        echo_target = Target(HOST, port_echo, target.model, 1, target.request)
        rounds: dict[str, list[dict]] = {"effstack_null": [], "echo": []}
        for i in range(args.rounds):
            for name, t in (("effstack_null", target), ("echo", echo_target)):
                r = run(run_load(t, args.low_rate, args.duration, seed=i, max_queries=args.max_queries))
                rounds[name].append(r.to_dict())
                print(f"  overhead round {i} {name:14s} p50 {r.latency.p50_ms:.3f} ms  p99 {r.latency.p99_ms:.3f} ms"
                      f"  errors {r.errors}", flush=True)
        p50 = {k: statistics.median(r["latency"]["p50_ms"] for r in v) for k, v in rounds.items()}
        ratio = p50["effstack_null"] / p50["echo"]
        print(f"overhead: p50 null engine {p50['effstack_null']:.3f} ms vs echo {p50['echo']:.3f} ms -> "
              f"{ratio:.2f}x (goal <= 1.3x)", flush=True)
        return {"rate_qps": args.low_rate, "request_bytes": len(target.request), "p50_ms": p50, "ratio": ratio,
                "pass": ratio <= 1.3, "rounds": rounds}
    finally:
        stop(null)
        if echo:
            stop(echo)


def _step(label: str, r: Any, ok: bool) -> None:
    p99 = f"{r.latency.p99_ms:.1f} ms" if r.latency else "-"
    print(f"  {label}: {r.target_qps:.1f}/s p99 {p99} errors {r.errors} sends late p99 {r.late_p99_ms:.1f} ms "
          f"{'pass' if ok else 'fail'}", flush=True)


def capacity(args: argparse.Namespace, engine: str | None = None, precision: str | None = None,
             label: str = "capacity", instances: int | None = None) -> dict[str, Any]:
    engine, precision = engine or args.engine, precision or args.precision
    port = free_port()
    server = effstack_server(args, port, "--latency-budget", f"{args.budget_ms}ms", engine=engine,
                             precision=precision, instances=instances)
    try:
        info = server_info(port, model_name(args.model))
        cap = int(info["batch_cap"])
        # the denominator is the engine's best offline rate, not the server's layout's: a batch of at least 8
        # with the engine's default settings for it (OpenVINO: THROUGHPUT hint, all streams busy)
        offline_sps = offline_throughput(args, engine, precision, max(cap, 8))  # the server is idle meanwhile
        target = run(prepare(f"http://{HOST}:{port}", batch=1))
        start_qps = min(CLIENT_MAX_QPS, max(1.0, 0.5 * offline_sps))
        best, steps = run(find_max(target, args.budget_ms, start_qps, args.step_s,
                                   max_steps=args.max_steps, max_queries=args.max_queries,
                                   on_step=lambda r, ok: _step(label, r, ok)))
        fraction = (best or 0.0) / offline_sps
        print(f"{label}: {engine}/{precision} batch cap {cap}: highest rate {best or 0:.1f}/s within p99 "
              f"{args.budget_ms} ms; offline {offline_sps:.1f}/s -> {fraction:.2f}x (goal >= 0.8x)", flush=True)
        return {"engine": engine, "precision": precision, "instances": info["serving"]["instances"],
                "layouts_tried": info.get("layouts_tried", {}),
                "batch_cap": cap, "curve_ms": info["latency_curve_ms"],
                "offline_samples_per_s": offline_sps, "max_rate_qps": best, "fraction": fraction,
                "pass": fraction >= 0.8, "steps": [s.to_dict() for s in steps]}
    finally:
        stop(server)


def litserve_main(port: int, onnx_path: str, max_batch: int, batch_timeout: float) -> None:
    """LitServe + onnxruntime on the exported model, with LitServe's own batching (a child process)."""
    import litserve as ls

    api = OnnxAPI(onnx_path, max_batch_size=max_batch, batch_timeout=batch_timeout)
    ls.LitServer(api, accelerator="cpu", devices=1).run(host=HOST, port=port, generate_client_file=False,
                                                         log_level="warning")


try:  # LitServe's workers are spawned processes: the API class must live at module level to be pickled
    import litserve as _ls
except ImportError:  # pragma: no cover - the litserve section then reports itself skipped
    _ls = None

if _ls is not None:

    class OnnxAPI(_ls.LitAPI):
        """onnxruntime behind LitServe: base64 float32 in, base64 float32 out, batched by LitServe."""

        def __init__(self, onnx_path: str, **kwargs: Any):
            super().__init__(**kwargs)
            self.onnx_path = onnx_path

        def setup(self, device: Any) -> None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = len(os.sched_getaffinity(0))
            # as effstack serves onnxruntime (OnnxRuntimeEngine.serving_knobs): threads that spin between runs
            # starve the server's own threads of the cores, so the comparison is of the servers, not this setting
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sess = ort.InferenceSession(self.onnx_path, so, providers=["CPUExecutionProvider"])
            self.inp = self.sess.get_inputs()[0]
            self.shape = list(self.inp.shape[1:])

        # no annotation on ``request``: LitServe builds its request model from it, and with this file's
        # ``from __future__ import annotations`` it would see the string "Any" and answer 422 to every request
        def decode_request(self, request) -> Any:  # noqa: ANN001
            import base64

            import numpy as np

            return np.frombuffer(base64.b64decode(request["x"]), np.float32).reshape(self.shape)

        def batch(self, inputs: Any) -> Any:
            import numpy as np

            return np.stack(inputs)

        def predict(self, x: Any) -> Any:
            single = x.ndim == len(self.shape)  # with max_batch_size 1 LitServe does not batch: one sample
            y = self.sess.run(None, {self.inp.name: x[None] if single else x})[0]
            return y[0] if single else y

        def unbatch(self, output: Any) -> Any:
            return list(output)

        def encode_response(self, output: Any) -> Any:
            import base64

            import numpy as np

            return {"y": base64.b64encode(np.ascontiguousarray(output).tobytes()).decode()}


def litserve(args: argparse.Namespace, effstack_result: dict[str, Any] | None) -> dict[str, Any]:
    import base64

    if _ls is None:
        return {"skipped": "litserve is not installed (pip install litserve)"}
    from effstack.export.onnx import export_onnx
    from effstack.models import load_model

    model = load_model(args.model)
    onnx = export_onnx(model)
    # like LitServe's one worker: one ONNX Runtime session with both threads (two one-thread sessions doubled
    # each request's time for the same throughput)
    ours = capacity(args, engine="onnxruntime", precision="fp32", label="effstack-ort", instances=1)
    port = free_port()
    cap = ours["batch_cap"]
    server = start([sys.executable, __file__, "--_litserve", str(port), str(onnx), str(cap),
                    str(args.litserve_timeout_ms / 1e3)], f"http://{HOST}:{port}/health", "litserve")
    try:
        x = model.input.example(1)[0]
        body = json.dumps({"x": base64.b64encode(x.tobytes()).decode()}).encode()
        target = Target(HOST, port, "litserve", 1, http_request("POST", HOST, port, "/predict", body,
                                                                {"Content-Type": "application/json"}))
        start_qps = min(CLIENT_MAX_QPS, max(1.0, 0.5 * ours["offline_samples_per_s"]))
        best, steps = run(find_max(target, args.budget_ms, start_qps, args.step_s, max_steps=args.max_steps,
                                   max_queries=args.max_queries))
        mine = ours["max_rate_qps"]
        ratio = mine / best if mine and best else (float("inf") if mine else None)
        print(f"litserve: highest rate {best or 0:.1f}/s within p99 {args.budget_ms} ms; effstack (same ONNX, "
              f"onnxruntime) {mine or 0:.1f}/s -> {ratio if ratio is None else round(ratio, 2)}x (goal >= "
              f"{LITSERVE_GOAL}x)", flush=True)
        return {"model": args.model, "effstack": ours, "litserve_max_rate_qps": best, "ratio": ratio,
                "goal": LITSERVE_GOAL, "pass": bool(ratio and ratio >= LITSERVE_GOAL),
                "litserve_batch_timeout_ms": args.litserve_timeout_ms, "steps": [s.to_dict() for s in steps]}
    finally:
        stop(server)


def overload(args: argparse.Namespace, sustainable_qps: float | None) -> dict[str, Any]:
    import psutil

    if not sustainable_qps:
        return {"skipped": "no sustainable rate (run capacity first or pass --sustainable-qps)"}
    port = free_port()
    server = effstack_server(args, port, "--latency-budget", f"{args.budget_ms}ms")
    rss: list[int] = []
    done = threading.Event()

    def sample() -> None:
        p = psutil.Process(server.pid)
        while not done.wait(0.5):
            try:
                rss.append(p.memory_info().rss)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        target = run(prepare(f"http://{HOST}:{port}", batch=1))
        sampler.start()
        r = run(run_load(target, 3 * sustainable_qps, args.overload_s, max_queries=args.max_queries * 10))
        alive = server.poll() is None and get_json(f"http://{HOST}:{port}/v2/health/ready")["ready"]
    finally:
        done.set()
        stop(server)
    admitted_p99 = r.latency.p99_ms if r.latency else None
    fast_503 = r.error_latency.p99_ms if r.error_latency else None
    # the same replies timed from when each request really left: the client shares the saturated cores and is
    # itself late by a few ms at p99 (late_p99_ms); the verdict keeps the stricter figure above
    fast_503_sent = r.error_latency_sent.p99_ms if r.error_latency_sent else None
    print(f"overload at {3 * sustainable_qps:.1f}/s for {args.overload_s:.0f} s: ok {r.ok}, errors {r.errors}, "
          f"admitted p99 {admitted_p99} ms (goal <= {1.2 * args.budget_ms:g}), error replies p99 {fast_503} ms "
          f"from the scheduled send, {fast_503_sent} ms from the real send, sends late p99 {r.late_p99_ms:.1f} ms "
          f"(goal <= 5), RSS {min(rss or [0]) / 2**20:.0f}..{max(rss or [0]) / 2**20:.0f} MiB, alive {alive}",
          flush=True)
    return {"rate_qps": 3 * sustainable_qps, "result": r.to_dict(), "alive": alive, "rss_bytes": rss,
            "admitted_p99_ms": admitted_p99, "error_p99_ms": fast_503, "error_p99_from_send_ms": fast_503_sent,
            "pass": bool(alive and admitted_p99 is not None and admitted_p99 <= 1.2 * args.budget_ms
                         and fast_503 is not None and fast_503 <= 5.0)}


def busy_curve(sessions: list[Any], spec: Any, max_batch: int, runs: int) -> dict[int, list[float]]:
    """Seconds per batch at every size 1..max_batch with every session busy: each session cycles through the sizes
    ``runs`` times, starting at a different size, and keeps running (untimed) until the others are done too."""
    from effstack.serve.instances import run_on_each

    sizes = list(range(1, max_batch + 1))
    examples = {b: spec.example(b, seed=b) for b in sizes}
    laps: dict[int, list[float]] = {b: [] for b in sizes}
    lock, done, finished = threading.Lock(), threading.Event(), [0]

    def loop(i: int, session: Any) -> None:
        start = i * len(sizes) // len(sessions)
        mine: dict[int, list[float]] = {b: [] for b in sizes}
        try:
            for _ in range(runs):
                for b in sizes[start:] + sizes[:start]:
                    if done.is_set():  # another session failed
                        return
                    t0 = time.perf_counter()
                    session.run(examples[b])
                    mine[b].append(time.perf_counter() - t0)
        except BaseException:
            done.set()
            raise
        with lock:
            for b in sizes:
                laps[b] += mine[b]
            finished[0] += 1
            if finished[0] == len(sessions):
                done.set()
        while not done.is_set():  # the others' last batches still run with every instance busy
            session.run(examples[1])

    run_on_each(sessions, loop, "effstack-ceiling")
    return laps


def ceiling(args: argparse.Namespace, served: dict[str, Any] | None = None) -> dict[str, Any]:
    """The capacity ceiling from curves measured at every batch size with their spread, simulated.

    ``served``: the capacity section's result (its server's layout and its offline rate are used); without it
    the layout is ``--instances`` (``auto``: chosen as the server chooses) and the offline rate is measured here.
    """
    from dataclasses import replace

    from effstack.serve.config import ServingConfig
    from effstack.serve.repository import ModelRunner
    from effstack.serve.simulate import curve_stats, max_rate, measured_curve, peak_rate, queueing_bound

    t_start = time.perf_counter()
    instances: int | str = served["instances"] if served else args.instances
    config = ServingConfig(args.model, engine=args.engine, precision=args.precision, max_batch=args.max_batch,
                           instances=instances if instances == "auto" else int(instances),
                           latency_budget_ms=args.budget_ms)
    runner = ModelRunner.build(config)  # loads, warms every size up and measures the server's own (5-run) curve
    n = len(runner.sessions)
    try:
        laps = busy_curve(runner.sessions, runner.model.input, args.max_batch, args.ceiling_runs)
    finally:
        runner.close()
    stats = curve_stats(laps)
    median, p99, jitter = measured_curve(stats)
    layout = replace(config, instances=n)
    policy = layout.policy(p99)  # the server's rules on the well-measured p99 curve
    rate = max_rate(policy, median, n, jitter=jitter)
    rate_server = max_rate(runner.policy, median, n, jitter=jitter)  # ... and on the curve the server measured
    if served:
        offline_sps, offline_from = served["offline_samples_per_s"], "capacity section"
    else:
        offline_sps = offline_throughput(args, args.engine, args.precision, max(policy.batch_cap, 8))
        offline_from = "measured here"
    layout_peak = peak_rate(median, n, args.max_batch)  # the served layout, every instance busy at its best batch
    if layout_peak > offline_sps:  # the served layout beats one session with every thread: that is the offline rate
        offline_sps, offline_from = layout_peak, f"the measured curve: {n} instance(s) busy at their best batch"
    fraction = rate / offline_sps
    bound = queueing_bound(offline_sps, args.budget_ms / 1e3)  # what no server of this engine could beat
    for b, st in stats.items():
        print(f"  ceiling curve b{b:<3d} median {st['median_ms']:8.1f} ms  p10-p90 {st['p10_ms']:.1f}-"
              f"{st['p90_ms']:.1f}  p99 {st['p99_ms']:.1f}  CV {st['cv']:.3f}  ({st['runs']} runs)", flush=True)
    print(f"ceiling: {n} instance(s), batch cap {policy.batch_cap}: simulated max {rate:.1f}/s within p99 "
          f"{args.budget_ms:g} ms (with the server's own curve as policy: {rate_server:.1f}/s); offline "
          f"{offline_sps:.1f}/s ({offline_from}) -> ceiling {fraction:.2f}x; any server's queueing bound (M/D/1 at "
          f"the offline time per sample): {bound:.1f}/s, {bound / offline_sps:.2f}x", flush=True)
    return {"instances": n, "threads_per_instance": layout.threads_per_instance(), "max_batch": args.max_batch,
            "budget_ms": args.budget_ms, "runs_per_size": args.ceiling_runs,
            "curve": {str(b): st for b, st in stats.items()},
            "server_curve_ms": {str(b): v * 1e3 for b, v in runner.curve_s.items()},
            "batch_cap": policy.batch_cap, "admission_limit": policy.admission_limit,
            "server_batch_cap": runner.policy.batch_cap, "simulated_max_rate_qps": rate,
            "simulated_max_rate_server_curve_qps": rate_server, "offline_samples_per_s": offline_sps,
            "offline_from": offline_from, "fraction": fraction, "queueing_bound_qps": bound,
            "queueing_bound_fraction": bound / offline_sps, "seconds": time.perf_counter() - t_start}


def auto_instances(args: argparse.Namespace) -> dict[str, Any]:
    """``--instances auto`` checked: per run, each layout served for real, its prediction against its measured rate."""
    from effstack.serve.config import ServingConfig
    from effstack.serve.instances import MIN_SIGMA, pick_layout
    from effstack.serve.simulate import ranking_agreement, sustainable_rate

    t_start = time.perf_counter()
    model = args.auto_model
    budget = args.auto_budget_ms
    budget_from = "--auto-budget-ms"
    t1 = batch1_ms(args, model)  # one instance's batch-1 time with every thread (also builds the INT8 artifact)
    if budget is None:  # 10x that, rounded up to 10 ms
        budget = 10.0 * math.ceil(t1)
        budget_from = f"10 x batch-1 p50 {t1:.1f} ms (one instance, every thread), rounded up"
    # every layout's search starts from the same rate, half the single-stream rate: a search anchored on each
    # layout's own prediction would find exactly that prediction whenever it passes there, and agree with it
    start_qps = min(CLIENT_MAX_QPS, max(1.0, 0.5 * 1e3 / t1))
    layouts = ServingConfig(instances="auto").instance_layouts()
    name = model_name(model)
    print(f"auto: {model} {args.engine}/{args.precision}, layouts {layouts}, p99 budget {budget:g} ms ({budget_from})",
          flush=True)
    runs = []
    for i in range(args.auto_runs):
        predicted, measured, caps, curves, steps = {}, {}, {}, {}, {}
        order = layouts if i % 2 == 0 else layouts[::-1]
        for n in order:
            port = free_port()
            server = effstack_server(args, port, "--latency-budget", f"{budget}ms", instances=n, model=model)
            try:
                info = server_info(port, name)
                curve = {int(b): ms / 1e3 for b, ms in info["latency_curve_ms"].items()}
                # what auto computes for this layout: the batcher (budgeting with the p99 curve) simulated on the
                # medians and spread the server's warm-up measured (ModelRunner.sustainable_rate)
                policy = ServingConfig.from_dict(info["serving"]).policy(curve)
                if "median_curve_ms" in info:
                    medians = {int(b): ms / 1e3 for b, ms in info["median_curve_ms"].items()}
                    jitter = {int(b): max(v, MIN_SIGMA) for b, v in info["sigma_log"].items()}
                    predicted[n] = sustainable_rate(policy, medians, n, jitter=jitter)
                else:
                    predicted[n] = sustainable_rate(policy, curve, n)
                caps[n], curves[n] = int(info["batch_cap"]), info["latency_curve_ms"]
                target = run(prepare(f"http://{HOST}:{port}", batch=1))
                best, found = run(find_max(target, budget, start_qps, args.auto_step_s,
                                           max_steps=args.auto_steps, max_queries=args.max_queries,
                                           on_step=lambda r, ok, n=n: _step(f"auto run {i} {n} inst", r, ok)))
                measured[n], steps[n] = best, [s.to_dict() for s in found]
            finally:
                stop(server)
        right = ranking_agreement(predicted, measured, tie=MEASURED_TIE)
        pick = pick_layout(predicted, caps)
        top = max((m or 0.0) for m in measured.values())
        pick_right = (measured[pick] or 0.0) >= (1 - MEASURED_TIE) * top  # within a tie of the measured best
        runs.append({"order": order, "predicted_qps": predicted, "measured_qps": measured, "batch_cap": caps,
                     "curve_ms": curves, "ranking_right": right, "auto_pick": pick, "auto_pick_right": pick_right,
                     "steps": steps})
        figures = ", ".join(f"{n} inst predicted {predicted[n]:.1f}/s measured {measured[n] or 0:.1f}/s"
                            for n in layouts)
        print(f"auto run {i}: {figures}: ranking {'tie' if right is None else 'right' if right else 'WRONG'}, "
              f"auto picks {pick} ({'right' if pick_right else 'WRONG'})", flush=True)
    n_right = sum(r["ranking_right"] is True for r in runs)
    ties = sum(r["ranking_right"] is None for r in runs)
    picks = sum(r["auto_pick_right"] for r in runs)
    summary = (f"ranking right in {n_right}/{len(runs)} runs ({ties} measured ties); auto's pick the measured best "
               f"in {picks}/{len(runs)}")
    print(f"auto: {summary}", flush=True)
    return {"model": model, "engine": args.engine, "precision": args.precision, "budget_ms": budget,
            "budget_from": budget_from, "batch1_ms": t1, "search_start_qps": start_qps, "layouts": layouts, "max_batch": args.max_batch, "step_s": args.auto_step_s,
            "runs": runs, "ranking_right": n_right, "ties": ties, "auto_pick_right": picks, "of": len(runs),
            "summary": summary, "seconds": time.perf_counter() - t_start}


def readme_lines(results: dict[str, Any], budget_ms: float) -> list[dict[str, str]]:
    """The sections' headline figures as ``{"what", "figure", "spread"}`` lines (``effstack.report.results``)."""
    out = []
    if "overhead" in results:
        o = results["overhead"]
        out.append({"what": f"null engine / bare echo, p50 at {o['rate_qps']:g}/s, goal <= 1.3x",
                    "figure": f"{o['ratio']:.2f}x", "spread": f"{o['p50_ms']['effstack_null']:.2f} vs "
                                                              f"{o['p50_ms']['echo']:.2f} ms"})
    c, ceil = results.get("capacity"), results.get("ceiling")
    if c:
        out.append({"what": f"highest Poisson rate within p99 {budget_ms:g} ms / offline ({c['engine']} "
                            f"{c['precision']}, {c['instances']} instance(s)), goal >= 0.8x",
                    "figure": f"{c['fraction']:.2f}x",
                    "spread": f"{c['max_rate_qps'] or 0:.1f} vs {c['offline_samples_per_s']:.1f}/s"})
    if c and ceil and c.get("max_rate_qps") and ceil.get("simulated_max_rate_qps"):
        out.append({"what": f"highest Poisson rate / the ceiling simulated from the measured curve, goal >= "
                            f"{CEILING_GOAL}x",
                    "figure": f"{c['max_rate_qps'] / ceil['simulated_max_rate_qps']:.2f}x",
                    "spread": f"{c['max_rate_qps']:.1f} vs {ceil['simulated_max_rate_qps']:.1f}/s"})
    if ceil:
        cv = ceil["curve"].get(str(ceil["batch_cap"]), {}).get("cv")
        out.append({"what": f"ceiling: the batcher simulated on the curve measured at b1..b{ceil['max_batch']} with "
                            f"every instance busy ({ceil['runs_per_size']} cycles), / offline",
                    "figure": f"{ceil['fraction']:.2f}x",
                    "spread": f"{ceil['simulated_max_rate_qps']:.1f}/s"
                              + (f"; CV at the batch cap {ceil['batch_cap']}: {cv:.3f}" if cv is not None else "")})
        if "queueing_bound_qps" in ceil:
            out.append({"what": f"any server's bound: Poisson arrivals into one queue served at the offline time per "
                                f"sample, no overhead (M/D/1), p99 within {budget_ms:g} ms, / offline",
                        "figure": f"{ceil['queueing_bound_fraction']:.2f}x",
                        "spread": f"{ceil['queueing_bound_qps']:.1f}/s"})
    if "auto" in results:
        a = results["auto"]
        out.append({"what": f"--instances auto, predicted vs measured ranking of layouts {a['layouts']} "
                            f"({a['model']}, p99 {a['budget_ms']:g} ms)",
                    "figure": f"right in {a['ranking_right']}/{a['of']} runs",
                    "spread": f"{a['ties']} measured ties; auto's pick the measured best in "
                              f"{a['auto_pick_right']}/{a['of']}"})
    lit = results.get("litserve")
    if lit and "ratio" in lit:
        out.append({"what": f"effstack / LitServe, highest rate within the budget, same ONNX model "
                            f"({lit.get('model', '?')}, onnxruntime fp32), goal >= {lit.get('goal', 1.5)}x",
                    "figure": "-" if lit["ratio"] is None else f"{lit['ratio']:.2f}x",
                    "spread": f"{lit['effstack'].get('max_rate_qps') or 0:.1f} vs "
                              f"{lit.get('litserve_max_rate_qps') or 0:.1f}/s"})
    over = results.get("overload")
    if over and "admitted_p99_ms" in over:
        out.append({"what": "overload at 3x: admitted p99 / 503 p99 from the scheduled send",
                    "figure": f"{over['admitted_p99_ms'] or 0:.0f} ms / {over['error_p99_ms'] or 0:.1f} ms",
                    "spread": f"alive {over['alive']}"})
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_echo":
        echo_main(int(sys.argv[2]), sys.argv[3])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--_litserve":
        litserve_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--engine", default="openvino")
    p.add_argument("--precision", default="int8")
    p.add_argument("--budget-ms", type=float, default=50.0)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--instances", default="auto",
                   help="effstack's instances for the capacity and overload sections (default auto: the server "
                   "tries 1, 2, ... and keeps the layout its simulation favours; 2 OpenVINO streams served best here)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per overhead round and offline measurement")
    p.add_argument("--step-s", type=float, default=30.0,
                   help="seconds per find-max step (30 s: ~700 requests at 23/s, so p99 is the 7th slowest, not the 2nd)")
    p.add_argument("--rounds", type=int, default=3, help="overhead: alternating rounds per side")
    p.add_argument("--low-rate", type=float, default=50.0, help="overhead: queries/s")
    p.add_argument("--max-steps", type=int, default=7, help="find-max steps per server")
    p.add_argument("--max-queries", type=int, default=20_000, help="requests per step at most")
    p.add_argument("--overload-s", type=float, default=60.0)
    p.add_argument("--sustainable-qps", type=float, help="overload: skip capacity and use this rate")
    p.add_argument("--litserve-timeout-ms", type=float, default=5.0, help="LitServe's batch_timeout")
    p.add_argument("--ceiling-runs", type=int, default=20,
                   help="ceiling: cycles through batch sizes 1..max-batch per instance (20: ~3 min for ResNet-50 INT8 "
                   "at max-batch 16; the time grows with max-batch squared)")
    p.add_argument("--auto-model", default="resnet18", help="auto: the model served (smaller than ResNet-50 to fit)")
    p.add_argument("--auto-budget-ms", type=float, help="auto: p99 budget (default: 10x the batch-1 time, measured)")
    p.add_argument("--auto-runs", type=int, default=5, help="auto: runs, each serving every layout")
    p.add_argument("--auto-step-s", type=float, default=6.0, help="auto: seconds per find-max step")
    p.add_argument("--auto-steps", type=int, default=7, help="auto: find-max steps per layout and run (to ~5%%)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    sections = {"ceiling" if s == "spread" else s for s in args.only.split(",")}
    unknown = sections - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    results: dict[str, Any] = {"args": vars(args), "logs": str(LOGS)}
    if "overhead" in sections:
        results["overhead"] = overhead(args)
    if "capacity" in sections:
        results["capacity"] = capacity(args)
    if "ceiling" in sections:
        results["ceiling"] = ceiling(args, results.get("capacity"))
        if "capacity" in results:  # the measured fraction next to the ceiling from the same run
            cap, ceil = results["capacity"], results["ceiling"]
            if ceil["offline_samples_per_s"] != cap["offline_samples_per_s"]:  # the ceiling found a faster layout
                cap.update(offline_samples_per_s=ceil["offline_samples_per_s"], offline_from=ceil["offline_from"],
                           fraction=(cap["max_rate_qps"] or 0.0) / ceil["offline_samples_per_s"])
                cap["pass"] = cap["fraction"] >= 0.8
            cap.update(ceiling_fraction=ceil["fraction"], ceiling_max_rate_qps=ceil["simulated_max_rate_qps"],
                       of_ceiling=cap["fraction"] / ceil["fraction"] if ceil["fraction"] else None)
            print(f"capacity: {cap['fraction']:.2f}x of offline measured, against a simulated ceiling of "
                  f"{ceil['fraction']:.2f}x ({cap['max_rate_qps'] or 0:.1f}/s vs "
                  f"{ceil['simulated_max_rate_qps']:.1f}/s)", flush=True)
    if "auto" in sections:
        results["auto"] = auto_instances(args)
    if "litserve" in sections:
        results["litserve"] = litserve(args, results.get("capacity"))
    if "overload" in sections:
        cap = results.get("capacity", {})
        results["overload"] = overload(args, args.sustainable_qps or cap.get("max_rate_qps"))
    if args.json:
        from effstack.hardware import library_versions, machine_info

        results.update(readme=readme_lines(results, args.budget_ms), machine=machine_info(),
                       versions=library_versions())
        atomic_write_text(args.json, json.dumps(results, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
