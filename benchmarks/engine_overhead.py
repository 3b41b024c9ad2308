#!/usr/bin/env python
"""What effstack costs, and how close its best cells come to this CPU's ceiling: each engine/precision cell
measured through effstack and through the engine's own API directly, in one run, rounds interleaved
(A B A B ...) so drift on a shared machine hits both.

Rounds alternate which side goes first (A B B A ...), with a short idle pause before each; a pair
during which other processes took CPU (measured from /proc/stat) is dropped and measured again.

Through effstack = the same path `effstack bench` takes: `effstack.measure.scenarios.offline` driving a
`Session`. Directly = a plain loop over the engine's own API on the *same* artifact (the ONNX/IR/quantized
file the effstack session built) with the same settings (threads, hint, streams, precision).

    python benchmarks/engine_overhead.py --json results/engine_overhead.json        # ResNet-50, batch 1 and 8

Expected run time: about 10 minutes on the project's 2-core AVX2 machine (ResNet-50, 5 engine/precision
cells x 2 batches, 6 rounds of 1 s per side each, plus 5 s of batch-1 latency per batch-1 cell; the machine's
peak matrix rates are measured once, ~20 s, and cached). The previous default, 12 rounds, took 19 minutes.
``--rounds 3 --seconds 0.5`` halves it; ``--model effstack.testing:tiny_cnn --rounds 2 --seconds 0.2`` is a
smoke test of a few seconds per cell.

It prints, and writes in its JSON:

* ``rows``: one row per cell as ``effstack bench`` writes them (engine, precision asked and the precision the
  kernels actually ran, batch, threads, samples/s = the median effstack round with min/max and ``spread_pct``,
  p50/p99 ms at batch 1, % of the measured peak), printed as ``effstack bench``'s table (and what
  ``effstack.report.results``' ``rows`` view renders);
* ``verdicts``, the goals of the engine cell, each with its figure, its spread and ``pass``:
  ``int8_ceiling`` (this machine's measured INT8 matrix peak, and the path that gave it, over 2 x the model's
  counted MACs: the images/s an INT8 engine could reach), ``best_int8_vs_ceiling`` (the best INT8 cell's
  samples/s / that ceiling, goal >= 0.9), ``best_int8_vs_fp32`` (the best INT8 cell / the same engine's best
  FP32 cell, goal >= 1.8x, >= 3x on a CPU with an INT8 dot product (VNNI)), ``null_cost_us`` (the null
  engine's cost per call through the harness, goal <= 10 us), ``best_int8_vs_openvino`` (the best INT8 cell
  through effstack over OpenVINO's fastest INT8 cell used directly, goal >= 0.97: the median of the paired
  rounds when they are one cell) and ``effstack_vs_direct`` (the median of every
  paired effstack/direct round ratio pooled over all cells, goal >= 0.97, with p10/p90 and the per-cell
  medians' range);
* ``readme``: the verdicts as ``{"what", "figure", "spread"}`` lines (the ``figures`` view);
* ``cells``: each cell's rounds, both sides, paired ratios and settings; ``pass``: every cell ran and every
  verdict with a figure was met.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from effstack.engines import SessionOptions, get_engine, summarize_precision
from effstack.errors import one_line
from effstack.hardware import has_int8_dot_product, library_versions, machine_info
from effstack.measure.cpu import OtherCpu
from effstack.measure.peak import OBSERVED, peak_for, peak_rates
from effstack.measure.row import ResultRow
from effstack.measure.runner import settle_peak
from effstack.measure.scenarios import ScenarioResult, offline, single_stream
from effstack.measure.stats import percentile, spread
from effstack.models import load_model
from effstack.report.jsonio import atomic_write_text
from effstack.report.table import format_text

DEFAULT_ENGINES = ("torch", "onnxruntime", "openvino")
MAX_TRIES = 3  # a cell measures at most rounds x MAX_TRIES pairs while dropping disturbed ones


def default_cells() -> str:
    """Every precision each default engine runs on this CPU (bf16 only where it is native)."""
    from effstack.engines import ENGINES

    return ",".join(f"{e}:{p}" for e in DEFAULT_ENGINES if ENGINES.is_available(e) for p in get_engine(e).precisions)


def direct_runner(ref: Any, x: np.ndarray) -> Callable[[int], int]:
    """A loop over the engine's own API, built from the effstack session's artifact and settings.

    Returns ``run(n)``: run batch ``x`` n times, return samples done.
    """
    engine = ref.engine
    if engine in ("torch", "torch_compile"):
        import torch

        module, bf16 = ref.module, ref.precision == "bf16"

        def run(n: int) -> int:
            for _ in range(n):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    module(torch.from_numpy(x)).float().numpy()
            return n * x.shape[0]

        return run
    if engine == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = ref.n_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(ref.path), so, providers=["CPUExecutionProvider"])
        feed_name = sess.get_inputs()[0].name

        def run(n: int) -> int:
            for _ in range(n):
                sess.run(None, {feed_name: x})
            return n * x.shape[0]

        return run
    if engine == "openvino":
        import openvino as ov

        s = ref.settings
        # what a user of OpenVINO writes: the hint, the threads and the precision; the plugin picks the
        # streams from the hint (the effstack session's resolved streams are checked to agree below)
        config = {
            "PERFORMANCE_HINT": s["hint"].upper(),
            "INFERENCE_NUM_THREADS": s["threads"],
            "INFERENCE_PRECISION_HINT": s["inference_precision"],
        }
        from effstack.engines.openvino import _core  # one ov.Core per process, as OpenVINO advises: a second
        # Core in the same process starts a second CPU plugin with its own thread pools competing for the cores
        compiled = _core().compile_model(str(ref.xml), "CPU", config)
        streams = int(compiled.get_property("NUM_STREAMS"))
        if streams != s["streams"]:
            raise RuntimeError(f"direct OpenVINO resolved {streams} streams, effstack {s['streams']}: not comparable")
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


def measure_direct(run: Callable[[int], int], seconds: float, inflight: int) -> float:
    """Time a round of ``run`` sized like effstack's offline rounds (at least 4 calls per request in flight)."""
    run(inflight)  # warm-up
    t0 = time.perf_counter()
    run(3 * inflight)
    per_call = (time.perf_counter() - t0) / (3 * inflight)
    n = max(1 if inflight == 1 else 4 * inflight, round(seconds / per_call))
    t0 = time.perf_counter()
    samples = run(n)
    return samples / (time.perf_counter() - t0)


def measure_cell(model: Any, engine: str, precision: str, batch: int, seconds: float, rounds: int,
                 pause: float = 0.5, noise_pct: float = 10.0, latency_s: float = 0.0) -> dict:
    """Rounds of (effstack, direct) in alternating order; each side builds its session for the round.

    Only one runtime session exists while a side is timed: two OpenVINO compiled models in one
    process reserve and pin cores against each other, and the one compiled second ran 15-25% slower
    here, whichever side it was. At batch 1, ``latency_s`` seconds of single-stream queries through
    effstack afterwards give the cell's p50/p99 (``single_stream``).
    """
    options = SessionOptions(precision=precision, batch=batch)
    engine_obj = get_engine(engine)
    x = model.input.example(batch)
    t0 = time.perf_counter()
    session = engine_obj.load(model, options)  # builds and caches the artifact both sides use
    load_s = time.perf_counter() - t0
    session.run(x)  # a real run first: the PyTorch engines observe the precision their layers ran in it
    executed, settings = session.executed_precision(), session.settings()
    reference = SimpleNamespace(  # what the direct side needs from the session, without the session
        engine=session.engine, precision=precision, n_threads=options.n_threads, settings=settings,
        module=getattr(session, "module", None), path=getattr(session, "path", None),
        xml=getattr(session, "xml", None),
    )
    inflight = session.concurrency()
    session.close()
    session = None
    ours, theirs, dropped = [], [], 0
    r = 0
    while len(ours) < rounds and r < rounds * MAX_TRIES:
        pair: dict[str, float] = {}
        noisy = False
        for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            if side == "ours":
                session = engine_obj.load(model, options)
            else:
                run = direct_runner(reference, x)
            time.sleep(pause)
            with OtherCpu() as meter:
                if side == "ours":
                    pair[side] = offline(session, x, duration_s=seconds, repeats=1).throughput.median
                else:
                    pair[side] = measure_direct(run, seconds, inflight)
            noisy = noisy or meter.usage.noisy(noise_pct)
            if side == "ours":
                session.close()
                session = None
            else:
                del run
            gc.collect()
        r += 1
        if noisy:  # another process took CPU during this pair: drop both sides, measure again
            dropped += 1
            continue
        ours.append(pair["ours"])
        theirs.append(pair["theirs"])
    if not ours:
        raise RuntimeError(f"every round was disturbed by other processes (> {noise_pct}% of a core); rerun on a quiet machine")
    paired = [a / b for a, b in zip(ours, theirs)]
    # The figure is the median of the paired ratios: each pair is measured back to back, so slow drift of
    # the shared machine (clock, a neighbour on the host) cancels within a pair and the median drops outliers.
    ratio = statistics.median(paired)
    latency = None
    if batch == 1 and latency_s > 0:
        with engine_obj.load(model, options) as session:
            latency = single_stream(session, x, duration_s=latency_s, repeats=3).latency.to_dict()
    return {
        "engine": engine, "precision": precision, "batch": batch, "load_s": round(load_s, 2),
        "effstack_median": statistics.median(ours), "direct_median": statistics.median(theirs),
        "effstack_rounds": ours, "direct_rounds": theirs, "ratio": ratio,
        "paired_ratio_min": min(paired), "paired_ratio_max": max(paired),
        "rounds_dropped_noisy": dropped, "threads": options.n_threads, "latency": latency,
        "executed_precision": executed, "settings": settings, "status": "ok",
    }


def throughput_row(model: Any, cell: dict, peak: dict | None) -> ResultRow:
    """A cell's effstack rounds as an ``effstack bench`` row: samples/s (median round, min, max), p50/p99 at
    batch 1, the precision the kernels ran and the fraction of the machine's measured peak for it."""
    from effstack.measure.stats import LatencyStats

    rounds = cell["effstack_rounds"]
    latency = LatencyStats(**cell["latency"]) if cell.get("latency") else None
    result = ScenarioResult(scenario="offline", batch=cell["batch"], queries=len(rounds), samples=0,
                            duration_s=0.0, throughput=spread(rounds), latency=latency, cpu=None)
    row = ResultRow(model=model.name, macs_per_sample=model.macs, params=model.params, engine=cell["engine"],
                    precision=cell["precision"], executed_counts=dict(cell["executed_precision"]),
                    executed_precision=summarize_precision(cell["executed_precision"]), threads=cell["threads"],
                    settings=cell["settings"])
    return row.fill(result, peak)


def verdicts(model: Any, cells: list[dict], harness: Any, peak: dict | None, vnni: bool,
             threshold: float = 0.97) -> dict[str, Any]:
    """The engine cell's goals on this CPU, each with its figure, its spread and ``pass`` (None: no figure).

    ``cells`` are :func:`measure_cell` rows (status ok); ``harness`` the null engine's single-stream result.
    """
    out: dict[str, Any] = {}
    peak_gops, path = peak_for("int8", peak)
    best_gops = ((peak or {}).get("rates", {}).get("int8") or {}).get("best")
    gop = 2.0 * model.macs / 1e9 if model.macs else None
    ceiling = peak_gops / gop if peak_gops and gop else None
    out["int8_ceiling"] = {
        "samples_per_s": ceiling, "from_best_peak_round": best_gops / gop if best_gops and gop else None,
        "peak_int8_gops": peak_gops, "peak_path": path, "gop_per_sample": gop, "macs_per_sample": model.macs,
        "how": "measured int8 matrix peak (effstack.measure.peak.peak_rates) / (2 x MACs counted from the model)"}
    int8 = [c for c in cells if c["precision"] == "int8"]
    best = max(int8, key=lambda c: c["effstack_median"], default=None)
    if best is None or ceiling is None:
        out["best_int8_vs_ceiling"] = {"value": None, "goal": 0.9, "pass": None,
                                       "why": "no INT8 cell ran" if best is None else "no INT8 peak or MAC count"}
    else:
        r = spread([t / ceiling for t in best["effstack_rounds"]])  # each round's fraction of the ceiling
        out["best_int8_vs_ceiling"] = {"value": r.median, "spread": r.to_dict(), "goal": 0.9, "pass": r.median >= 0.9,
                                       "cell": _cell_name(best), "samples_per_s": best["effstack_median"]}
        if (path or "").startswith(OBSERVED) and r.median >= 0.999:
            # no micro-benchmark path reached this cell: it is its own ceiling, and 1.0 says nothing of the goal
            out["best_int8_vs_ceiling"].update({"pass": None, "why": "the ceiling is this cell itself: no "
                                                "matrix-product path of any installed engine reached its rate"})
    goal = 3.0 if vnni else 1.8
    fp32 = [c for c in cells if best and c["engine"] == best["engine"] and c["precision"] == "fp32"]
    base = max(fp32, key=lambda c: c["effstack_median"], default=None)
    if best is None or base is None:
        out["best_int8_vs_fp32"] = {"value": None, "goal": goal, "vnni": vnni, "pass": None,
                                    "why": "no INT8 cell" if best is None else f"no fp32 cell on {best['engine']}"}
    else:
        value = best["effstack_median"] / base["effstack_median"]
        out["best_int8_vs_fp32"] = {
            "value": value, "goal": goal, "vnni": vnni, "pass": value >= goal,
            "spread": {"min": min(best["effstack_rounds"]) / max(base["effstack_rounds"]),
                       "max": max(best["effstack_rounds"]) / min(base["effstack_rounds"])},
            "int8_cell": _cell_name(best), "fp32_cell": _cell_name(base)}
    out["best_int8_vs_openvino"] = _vs_openvino(best, int8, threshold)
    tp = harness.throughput  # calls/s of consecutive chunks of batch-1 calls
    per_call = {"min": 1e6 / tp.max, "max": 1e6 / tp.min, "chunks": tp.n}
    out["null_cost_us"] = {"value": 1e6 / tp.median, "spread": per_call, "goal": 10.0,
                           "pass": 1e6 / tp.median <= 10.0, "p50_us": harness.latency.p50_ms * 1e3,
                           "p99_us": harness.latency.p99_ms * 1e3}
    paired = [a / b for c in cells for a, b in zip(c["effstack_rounds"], c["direct_rounds"])]
    if paired:
        pooled = statistics.median(paired)
        out["effstack_vs_direct"] = {
            "value": pooled, "goal": threshold, "pass": pooled >= threshold, "pairs": len(paired),
            "cells": len(cells), "p10": percentile(paired, 10), "p90": percentile(paired, 90),
            "min": min(paired), "max": max(paired),
            "cell_medians": {"min": min(c["ratio"] for c in cells), "max": max(c["ratio"] for c in cells)}}
    else:
        out["effstack_vs_direct"] = {"value": None, "goal": threshold, "pass": None, "why": "no cell ran"}
    return out


def _vs_openvino(best: dict | None, int8: list[dict], goal: float) -> dict[str, Any]:
    """effstack's best INT8 cell over OpenVINO used directly at its best INT8 cell (the fastest INT8 path on
    Intel CPUs, AMX included): the median of the paired rounds where both are one cell, else the ratio of the
    medians with the worst and best round pairs as its spread."""
    ov = [c for c in int8 if c["engine"] == "openvino"]
    if best is None or not ov:
        return {"value": None, "goal": goal, "pass": None,
                "why": "no INT8 cell ran" if best is None else "no OpenVINO INT8 cell ran"}
    ref = max(ov, key=lambda c: c["direct_median"])
    ours, theirs = best["effstack_rounds"], ref["direct_rounds"]
    if ref is best:
        r = spread([a / b for a, b in zip(ours, theirs)])
        value, lo, hi = r.median, r.min, r.max
    else:
        value, lo, hi = best["effstack_median"] / ref["direct_median"], min(ours) / max(theirs), max(ours) / min(theirs)
    return {"value": value, "goal": goal, "pass": value >= goal, "spread": {"min": lo, "max": hi},
            "paired": ref is best, "cell": _cell_name(best), "openvino_cell": _cell_name(ref),
            "samples_per_s": best["effstack_median"], "openvino_direct_per_s": ref["direct_median"]}


def _cell_name(cell: dict) -> str:
    return f"{cell['engine']} {cell['precision']} b{cell['batch']}"


def readme_lines(v: dict[str, Any]) -> list[dict[str, str]]:
    """The verdicts as ``{"what", "figure", "spread"}`` lines (``effstack.report.results``' figures view)."""
    def mark(d: dict) -> str:
        return {True: "met", False: "not met", None: "no figure"}[d.get("pass")]

    out = []
    c = v["int8_ceiling"]
    if c["samples_per_s"]:
        out.append({"what": f"INT8 ceiling: measured int8 peak {c['peak_int8_gops']:.0f} GOP/s ({c['peak_path']}) / "
                            f"{c['gop_per_sample']:.3g} GOP per sample", "figure": f"{c['samples_per_s']:.1f}/s",
                    "spread": f"{c['from_best_peak_round']:.1f}/s from the best peak round"})
    b = v["best_int8_vs_ceiling"]
    if b["value"] is not None:
        out.append({"what": f"best INT8 cell ({b['cell']}, {b['samples_per_s']:.1f}/s) / ceiling, goal >= 0.9",
                    "figure": f"{b['value']:.2f} ({'not judged: ' + b['why'] if b.get('why') else mark(b)})",
                    "spread": f"{b['spread']['min']:.2f}-{b['spread']['max']:.2f} over rounds"})
    f = v["best_int8_vs_fp32"]
    if f["value"] is not None:
        out.append({"what": f"{f['int8_cell']} / {f['fp32_cell']}, goal >= {f['goal']:g}x"
                            f"{' (VNNI CPU)' if f['vnni'] else ' (no VNNI)'}",
                    "figure": f"{f['value']:.2f}x ({mark(f)})",
                    "spread": f"{f['spread']['min']:.2f}-{f['spread']['max']:.2f} (worst to best rounds)"})
    o = v.get("best_int8_vs_openvino") or {"value": None}  # files recorded before it have none
    if o["value"] is not None:
        out.append({"what": f"best INT8 cell through effstack ({o['cell']}, {o['samples_per_s']:.1f}/s) / OpenVINO "
                            f"used directly ({o['openvino_cell']}, {o['openvino_direct_per_s']:.1f}/s), goal >= "
                            f"{o['goal']:g}", "figure": f"{o['value']:.3f} ({mark(o)})",
                    "spread": f"{o['spread']['min']:.3f}-{o['spread']['max']:.3f} "
                              f"({'paired rounds' if o['paired'] else 'worst to best rounds'})"})
    n = v["null_cost_us"]
    out.append({"what": "null engine, cost per call through effstack, goal <= 10 us",
                "figure": f"{n['value']:.2f} us ({mark(n)})",
                "spread": f"{n['spread']['min']:.2f}-{n['spread']['max']:.2f} over chunks; p50 {n['p50_us']:.2f}"})
    e = v["effstack_vs_direct"]
    if e["value"] is not None:
        out.append({"what": f"effstack/direct, median of {e['pairs']} paired rounds over {e['cells']} cells, "
                            f"goal >= {e['goal']:g}", "figure": f"{e['value']:.3f} ({mark(e)})",
                    "spread": f"p10-p90 {e['p10']:.3f}-{e['p90']:.3f}; cell medians {e['cell_medians']['min']:.3f}-"
                              f"{e['cell_medians']['max']:.3f}"})
    return out


def print_verdicts(lines: list[dict[str, str]]) -> None:
    for line in lines:
        print(f"{line['what']}: {line['figure']}; spread {line['spread']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--cells", help="engine:precision pairs, comma-separated (default: all this CPU runs)")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per round per side")
    p.add_argument("--rounds", type=int, default=6, help="rounds per side, alternating which goes first")
    p.add_argument("--pause", type=float, default=0.5, help="idle seconds before each timed side")
    p.add_argument("--latency-s", type=float, default=5.0,
                   help="seconds of batch-1 single-stream queries per batch-1 cell, for its p50/p99 (0: none)")
    p.add_argument("--threshold", type=float, default=0.97, help="goal for the pooled effstack/direct median")
    p.add_argument("--noise", type=float, default=10.0,
                   help="drop a round pair when other processes took more than this %% of one core")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)

    model = load_model(args.model)
    peak = peak_rates()  # measured once per machine and library versions, then cached
    rows = []
    null = get_engine("null").load(model, SessionOptions(batch=1))
    harness = single_stream(null, model.input.example(1), duration_s=1.0, repeats=3)
    print(f"harness: null engine p50 {harness.latency.p50_ms * 1000:.1f} us per call through effstack", flush=True)
    for cell in (args.cells or default_cells()).split(","):
        engine, _, precision = cell.partition(":")
        for batch in (int(b) for b in args.batch.split(",")):
            try:
                row = measure_cell(model, engine, precision, batch, args.seconds, args.rounds, args.pause, args.noise,
                                   args.latency_s)
            except Exception as exc:  # one broken cell costs one row
                row = {"engine": engine, "precision": precision, "batch": batch, "status": "error",
                       "error": one_line(exc)}
            rows.append(row)
            if row["status"] == "ok":
                print(f"{engine:12s} {precision:5s} b{batch:<3d} effstack {row['effstack_median']:9.1f}/s  "
                      f"direct {row['direct_median']:9.1f}/s  ratio {row['ratio']:.3f} "
                      f"(paired {row['paired_ratio_min']:.3f}-{row['paired_ratio_max']:.3f}, "
                      f"{len(row['effstack_rounds'])} rounds, {row['rounds_dropped_noisy']} dropped as noisy)", flush=True)
            else:
                print(f"{engine:12s} {precision:5s} b{batch:<3d} ERROR {row['error']}", flush=True)
    ok = [r for r in rows if r["status"] == "ok"]
    table = [throughput_row(model, r, peak) for r in ok]
    settle_peak(table, peak)  # every row, and the INT8 ceiling, against the fastest path seen: fractions <= 1
    print(format_text(table))
    v = verdicts(model, ok, harness, peak, has_int8_dot_product(), args.threshold)
    lines = readme_lines(v)
    print_verdicts(lines)
    worst = min((r["ratio"] for r in ok), default=float("nan"))
    verdict = bool(ok) and len(ok) == len(rows) and all(d.get("pass") is not False for d in v.values())
    print(f"{len(ok)} of {len(rows)} cells ran; worst cell ratio {worst:.3f}: {'PASS' if verdict else 'FAIL'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(
            {"model": args.model, "args": vars(args), "verdicts": v, "readme": lines,
             "rows": [r.to_dict() for r in table], "cells": rows, "worst_ratio": worst, "pass": verdict,
             "harness_null_p50_us": harness.latency.p50_ms * 1000, "peak": peak,
             "machine": machine_info(), "versions": library_versions()}, indent=2, default=str))
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
