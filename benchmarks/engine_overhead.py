#!/usr/bin/env python
"""What effstack costs: each engine/precision cell measured through effstack and through the engine's
own API directly, in one run, rounds interleaved (A B A B ...) so drift on a shared machine hits both.

Through effstack = the same path `effstack bench` takes: `effstack.bench.scenarios.offline` driving a
`Session`. Directly = a plain loop over the engine's own API on the *same* artifact (the ONNX/IR/quantized
file the effstack session built) with the same settings (threads, hint, streams, precision).

    python benchmarks/engine_overhead.py --model resnet50 --batch 1,8 --json results/engine_overhead.json

Acceptance: effstack's throughput is at least 0.97 of direct use in every cell (ratio of the medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from effstack.bench.scenarios import offline
from effstack.engines import SessionOptions, get_engine
from effstack.errors import one_line
from effstack.hardware import library_versions, machine_info
from effstack.models import load_model
from effstack.report.jsonio import atomic_write_text

DEFAULT_CELLS = "torch:fp32,torch:bf16,onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:bf16,openvino:int8"


def direct_runner(session: Any, x: np.ndarray) -> Callable[[int], int]:
    """A loop over the engine's own API, built from the effstack session's artifact and settings.

    Returns ``run(n)``: run batch ``x`` n times, return samples done.
    """
    engine = session.engine
    if engine in ("torch", "torch_compile"):
        import torch

        module, bf16 = session.module, session.precision == "bf16"

        def run(n: int) -> int:
            for _ in range(n):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    module(torch.from_numpy(x)).float().numpy()
            return n * x.shape[0]

        return run
    if engine == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = session.options.n_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(session.path), so, providers=["CPUExecutionProvider"])
        feed_name = sess.get_inputs()[0].name

        def run(n: int) -> int:
            for _ in range(n):
                sess.run(None, {feed_name: x})
            return n * x.shape[0]

        return run
    if engine == "openvino":
        import openvino as ov

        s = session.settings()
        config = {
            "PERFORMANCE_HINT": s["hint"].upper(),
            "NUM_STREAMS": s["streams"],
            "INFERENCE_NUM_THREADS": s["threads"],
            "INFERENCE_PRECISION_HINT": s["inference_precision"],
        }
        compiled = ov.Core().compile_model(str(session.xml), "CPU", config)
        if s["hint"] == "latency":
            request = compiled.create_infer_request()

            def run(n: int) -> int:
                for _ in range(n):
                    request.infer({0: x}, share_inputs=True)
                return n * x.shape[0]

            return run
        queue = ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

        def run(n: int) -> int:
            for _ in range(n):
                queue.start_async({0: x}, share_inputs=True)
            queue.wait_all()
            return n * x.shape[0]

        return run
    raise SystemExit(f"no direct runner for engine {engine!r}")


def measure_direct(run: Callable[[int], int], seconds: float, per_call_s: float) -> float:
    n = max(1, round(seconds / per_call_s))
    t0 = time.perf_counter()
    samples = run(n)
    return samples / (time.perf_counter() - t0)


def measure_cell(model: Any, engine: str, precision: str, batch: int, seconds: float, rounds: int) -> dict:
    options = SessionOptions(precision=precision, batch=batch)
    t0 = time.perf_counter()
    session = get_engine(engine).load(model, options)
    load_s = time.perf_counter() - t0
    x = model.input.example(batch)
    run = direct_runner(session, x)
    run(3)  # warm the direct path (the effstack path warms inside offline())
    t0 = time.perf_counter()
    run(3)
    per_call = (time.perf_counter() - t0) / 3
    ours, theirs = [], []
    for _ in range(rounds):  # interleaved, so machine drift lands on both sides alike
        ours.append(offline(session, x, duration_s=seconds, repeats=1).throughput.median)
        theirs.append(measure_direct(run, seconds, per_call))
    ratio = statistics.median(ours) / statistics.median(theirs)
    paired = [a / b for a, b in zip(ours, theirs)]
    row = {
        "engine": engine, "precision": precision, "batch": batch, "load_s": round(load_s, 2),
        "effstack_median": statistics.median(ours), "direct_median": statistics.median(theirs),
        "effstack_rounds": ours, "direct_rounds": theirs, "ratio": ratio,
        "paired_ratio_min": min(paired), "paired_ratio_max": max(paired),
        "executed_precision": session.executed_precision(), "settings": session.settings(), "status": "ok",
    }
    session.close()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--cells", default=DEFAULT_CELLS, help="engine:precision pairs, comma-separated")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per round per side")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.97)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)

    model = load_model(args.model)
    rows = []
    for cell in args.cells.split(","):
        engine, _, precision = cell.partition(":")
        for batch in (int(b) for b in args.batch.split(",")):
            try:
                row = measure_cell(model, engine, precision, batch, args.seconds, args.rounds)
            except Exception as exc:  # one broken cell costs one row
                row = {"engine": engine, "precision": precision, "batch": batch, "status": "error",
                       "error": one_line(exc)}
            rows.append(row)
            if row["status"] == "ok":
                print(f"{engine:12s} {precision:5s} b{batch:<3d} effstack {row['effstack_median']:9.1f}/s  "
                      f"direct {row['direct_median']:9.1f}/s  ratio {row['ratio']:.3f} "
                      f"(paired {row['paired_ratio_min']:.3f}-{row['paired_ratio_max']:.3f})", flush=True)
            else:
                print(f"{engine:12s} {precision:5s} b{batch:<3d} ERROR {row['error']}", flush=True)
    ok = [r for r in rows if r["status"] == "ok"]
    worst = min((r["ratio"] for r in ok), default=float("nan"))
    verdict = bool(ok) and worst >= args.threshold and len(ok) == len(rows)
    print(f"worst ratio {worst:.3f} over {len(ok)} cells: {'PASS' if verdict else 'FAIL'} (>= {args.threshold})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(
            {"model": args.model, "rows": rows, "worst_ratio": worst, "pass": verdict,
             "machine": machine_info(), "versions": library_versions()}, indent=2))
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
