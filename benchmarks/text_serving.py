#!/usr/bin/env python
"""Serving texts: length-grouped batching against one FIFO queue padded to its longest text, on the real model.

    nice -n 5 python benchmarks/text_serving.py --json results/text_serving.json
    # shorter: 1 round of 15 s per mode
    python benchmarks/text_serving.py --rounds 1 --duration 15 --json /tmp/text_serving.json

Two ``effstack serve all-minilm-l6-v2`` processes on 127.0.0.1 (same engine, max batch, threads), one with
``--length-buckets auto`` (requests batched only with others of their length bucket: 16, 32, 64, 128, 256
tokens) and one with ``--length-buckets off`` (one FIFO queue: a batch is padded to its longest text). Both
are started first and stay up; the rounds alternate between them, so a change in the machine's load falls on
both. A round is a closed loop: ``--concurrency`` clients each send one text per request (JSON ``BYTES``), the
next text of the built-in corpus (``effstack.text.corpus.builtin_corpus``, shuffled with a fixed seed, the same
sequence for both modes) as soon as their previous answer is back; it ends after ``--requests`` requests or
``--duration`` seconds, whichever comes first. Per round: texts/s answered, p50 and p99 of the request latency
(client side), and from the server's ``/metrics`` the padding fraction of the batches it ran
(``effstack_tokens_total{kind="padded"}`` over all token slots) and the mean batch size. Reported: the median
over rounds and the min..max. The client runs on the same cores as the server: its cost lands on both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_json  # noqa: E402
from _servers import HOST, LOGS, run, start, stop  # noqa: E402

from effstack.measure.stats import percentile, spread  # noqa: E402
from effstack.serve.server import free_port  # noqa: E402

MODES = {"grouped": "auto", "fifo": "off"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--engine", default="auto")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--threads", type=int, help="compute threads per server (default: all cores)")
    p.add_argument("--concurrency", type=int, default=32, help="clients in the closed loop (default 32)")
    p.add_argument("--requests", type=int, default=600, help="at most this many requests per round")
    p.add_argument("--duration", type=float, default=30.0, help="at most this many seconds per round")
    p.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating (default 2)")
    p.add_argument("--texts", type=int, default=2000, help="corpus texts to draw from (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    return p.parse_args(argv)


def metric_totals(port: int, name: str) -> dict[str, float]:
    """The server's counters that a round's figures are differences of."""
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = {
        "real": r'effstack_tokens_total\{kind="real",model="%s"' % re.escape(name),
        "padded": r'effstack_tokens_total\{kind="padded",model="%s"' % re.escape(name),
        "samples": r'effstack_inference_count_total\{model="%s"' % re.escape(name),
        "batches": r'effstack_inference_exec_count_total\{model="%s"' % re.escape(name),
        "truncated": r'effstack_texts_truncated_total\{model="%s"' % re.escape(name),
    }
    out = {k: 0.0 for k in want}
    for line in text.splitlines():
        for key, pattern in want.items():
            if re.match(pattern, line):
                out[key] = float(line.rsplit(" ", 1)[1])
    return out


async def closed_loop(port: int, name: str, texts: list[str], concurrency: int, max_requests: int,
                      duration_s: float) -> dict[str, Any]:
    import httpx

    url = f"http://{HOST}:{port}/v2/models/{name}/infer"
    latencies: list[float] = []
    errors: dict[str, int] = {}
    state = {"next": 0}
    deadline = time.perf_counter() + duration_s

    async def client(http: Any) -> None:
        while time.perf_counter() < deadline:
            i = state["next"]
            if i >= max_requests:
                return
            state["next"] = i + 1
            doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [texts[i % len(texts)]]}]}
            t0 = time.perf_counter()
            try:
                r = await http.post(url, json=doc)
                ok = r.status_code == 200
                key = "" if ok else str(r.status_code)
            except httpx.HTTPError as exc:
                ok, key = False, type(exc).__name__
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[key] = errors.get(key, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        start_t = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start_t
    lat = np.array(latencies) * 1e3
    return {"answered": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "throughput": len(latencies) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": float(percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(percentile(lat, 99)) if len(lat) else None}


def one_round(port: int, name: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    before = metric_totals(port, name)
    r = run(closed_loop(port, name, texts, args.concurrency, args.requests, args.duration))
    after = metric_totals(port, name)
    d = {k: after[k] - before[k] for k in after}
    slots = d["real"] + d["padded"]
    r.update(real_tokens=int(d["real"]), padded_tokens=int(d["padded"]),
             padding_fraction=d["padded"] / slots if slots else None,
             mean_batch=d["samples"] / d["batches"] if d["batches"] else None,
             batches=int(d["batches"]), truncated=int(d["truncated"]))
    return r


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("throughput", "p50_ms", "p99_ms", "padding_fraction", "mean_batch"):
        vals = [r[key] for r in rounds if r.get(key) is not None]
        if vals:
            s = spread(vals)
            out[key] = {"median": s.median, "min": min(vals), "max": max(vals)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from effstack.hardware import cpu_kind
    from effstack.models import load_model
    from effstack.text.corpus import builtin_corpus
    from effstack.text.tokenize import TextTokenizer

    corpus = builtin_corpus(limit=args.texts)
    texts = list(corpus.texts)
    np.random.default_rng(args.seed).shuffle(texts)
    lengths = TextTokenizer.from_model(load_model(args.model)).lengths(texts)
    print(f"{len(texts)} texts ({corpus.describe()}); tokens p10/p50/p90/max "
          f"{np.percentile(lengths, 10):.0f}/{np.percentile(lengths, 50):.0f}/{np.percentile(lengths, 90):.0f}/"
          f"{lengths.max()}; CPU {cpu_kind()}, load avg {os.getloadavg()[0]:.2f}", flush=True)
    result: dict[str, Any] = {
        "benchmark": "text_serving", "model": args.model, "engine": args.engine, "max_batch": args.max_batch,
        "threads": args.threads, "concurrency": args.concurrency, "requests": args.requests,
        "duration_s": args.duration, "rounds_per_mode": args.rounds, "cpu": cpu_kind(),
        "corpus": {"texts": len(texts), "fingerprint": corpus.fingerprint,
                   "tokens_p10": float(np.percentile(lengths, 10)), "tokens_p50": float(np.percentile(lengths, 50)),
                   "tokens_p90": float(np.percentile(lengths, 90)), "tokens_max": int(lengths.max())},
        "load_avg_start": os.getloadavg(), "modes": {}, "notes": [
            "closed loop on the same machine: the client shares the cores with the server",
            "a text past 256 tokens is truncated (as sentence-transformers does)"]}
    procs: dict[str, Any] = {}
    ports: dict[str, int] = {}
    try:
        for mode, buckets in MODES.items():
            port = ports[mode] = free_port()
            argv_ = [sys.executable, "-m", "effstack", "serve", args.model, "--host", HOST, "--port", str(port),
                     "--engine", args.engine, "--max-batch", str(args.max_batch), "--length-buckets", buckets,
                     "--name", "text"]
            if args.threads:
                argv_ += ["--threads", str(args.threads)]
            print(f"starting the {mode} server (--length-buckets {buckets}) on port {port} ...", flush=True)
            procs[mode] = start(argv_, f"http://{HOST}:{port}/v2/health/ready", f"text-{mode}")
        rounds: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for i in range(args.rounds):
            for mode in MODES:
                r = one_round(ports[mode], "text", texts, args)
                rounds[mode].append(r)
                print(f"round {i + 1} {mode:8s} {r['throughput']:7.1f} texts/s  p50 {r['p50_ms']:8.1f} ms  "
                      f"p99 {r['p99_ms']:8.1f} ms  padding {100 * (r['padding_fraction'] or 0):5.1f}%  "
                      f"mean batch {r['mean_batch'] or 0:5.2f}  errors {r['errors'] or 'none'}", flush=True)
        for mode in MODES:
            result["modes"][mode] = {"length_buckets": MODES[mode], "rounds": rounds[mode],
                                     "summary": summary(rounds[mode])}
        g, f = result["modes"]["grouped"]["summary"], result["modes"]["fifo"]["summary"]
        if "throughput" in g and "throughput" in f and f["throughput"]["median"]:
            result["throughput_ratio_grouped_over_fifo"] = g["throughput"]["median"] / f["throughput"]["median"]
            print(f"grouped / fifo throughput: {result['throughput_ratio_grouped_over_fifo']:.2f}x; padding "
                  f"{100 * g['padding_fraction']['median']:.1f}% vs {100 * f['padding_fraction']['median']:.1f}%")
    except Exception:
        traceback.print_exc()
        result["error"] = traceback.format_exc(limit=3)
    finally:
        for proc in procs.values():
            stop(proc)
        result["load_avg_end"] = os.getloadavg()
        result["server_logs"] = str(LOGS)
    if "error" not in result:
        result["readme"] = _readme(result)
    if args.json:
        write_json(args.json, result)
    return 1 if "error" in result else 0


def _readme(r: dict) -> list[dict[str, str]]:
    """The README's figures: each batching mode's throughput, latency and padding, and the ratio."""
    out = []
    for mode, label in (("grouped", "length-bucketed batching"), ("fifo", "one FIFO queue, batches padded to "
                                                                            "their longest")):
        s = r["modes"][mode]["summary"]
        t, p50, p99, pad = s["throughput"], s["p50_ms"], s["p99_ms"], s["padding_fraction"]
        out.append({"what": f"{r['model']} served, {r['concurrency']} closed-loop clients, one text each: {label}",
                    "figure": f"{t['median']:.1f} texts/s, p50 {p50['median']:.0f} ms, p99 {p99['median']:.0f} ms, "
                              f"padding {100 * pad['median']:.1f}% of token slots",
                    "spread": f"rounds {t['min']:.1f}-{t['max']:.1f} texts/s"})
    if r.get("throughput_ratio_grouped_over_fifo"):
        c = r["corpus"]
        out.append({"what": "length-bucketed / FIFO throughput",
                    "figure": f"{r['throughput_ratio_grouped_over_fifo']:.2f}x",
                    "spread": f"texts of {c['tokens_p10']:.0f}/{c['tokens_p50']:.0f}/{c['tokens_p90']:.0f} tokens "
                              "(p10/p50/p90)"})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
