#!/usr/bin/env python
"""Semantic text search measured: index build rate, query latency, and a retrieval score that needs no labels.

    nice -n 5 python benchmarks/text_search.py --json results/text_search.json
    # smaller and quicker: 600 texts, 200 halves, fp32 only
    python benchmarks/text_search.py --limit 600 --pairs 200 --precisions fp32 --json /tmp/ts.json

For each precision (fp32, then int8 where the engine's INT8 path runs the text model):

* **build**: the built-in corpus (``effstack.text.corpus.builtin_corpus``, or its first ``--limit`` texts)
  embedded and added through the same code ``effstack index build --texts`` runs (length-sorted batches,
  a window acknowledged at a time, then the checkpoint): seconds and texts/s, and the share of tokens run
  that were padding.
* **padding**: the first ``--padding-texts`` texts embedded in length-sorted batches and in corpus order
  (each batch padded to its longest text either way): seconds of each (median of ``--rounds``) and their
  padding shares. What grouping by length saves.
* **halves**: every corpus paragraph of at least ``--min-words`` words is cut at its middle word; the second
  halves are indexed, and each of ``--pairs`` first halves (drawn with a fixed seed) is a query whose right
  answer is its own second half among all of them. recall@1 and recall@10 of finding it. Real text, no labels.
* **latency**: ``--queries`` single first-half queries end to end (tokenize + embed + search, one at a time),
  ``--rounds`` rounds; p50 and p99 of each round, reported as the median over rounds with min..max.

INT8 is also compared with fp32 on the halves' queries: the mean cosine between the two embeddings of each
query, and the overlap of their top-10 neighbours. Speed is from whatever the machine was doing meanwhile:
``machine`` and ``load_avg`` go into the JSON; quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from effstack.hardware import library_versions, machine_info
from effstack.measure.stats import percentile, spread
from effstack.report.jsonio import atomic_write_text


def halves(texts: tuple[str, ...], min_words: int) -> list[tuple[str, str]]:
    """(first half, second half) of each text of at least ``min_words`` words, cut at its middle word."""
    out = []
    for t in texts:
        words = t.split()
        if len(words) >= min_words:
            mid = len(words) // 2
            out.append((" ".join(words[:mid]), " ".join(words[mid:])))
    return out


def _fmt(s: Any, unit: str = "", digits: int = 2) -> str:
    return f"{s.median:.{digits}f}{unit} (min {s.min:.{digits}f}, max {s.max:.{digits}f}, n={s.n})"


def measure_build(emb: Any, corpus: Any, tmp: Path, name: str) -> tuple[dict[str, Any], Any]:
    from effstack.cli.index import index_texts
    from effstack.search import Index

    ids = [str(i) for i in range(len(corpus))]
    emb.padded_tokens = emb.real_tokens = 0
    t0 = time.perf_counter()
    ix = Index.create(tmp / f"corpus-{name}", emb.describe(), emb.dim, data=corpus.describe())
    added = index_texts(ix, emb, ids, list(corpus.texts))
    ix.checkpoint()
    seconds = time.perf_counter() - t0
    out = {"texts": added, "seconds": seconds, "texts_per_s": added / seconds, "kind": ix.kind,
           "padding_share": emb.padding_share, "tokens": emb.real_tokens}
    print(f"  build: {added} texts in {seconds:.1f} s = {added / seconds:.1f} texts/s ({ix.kind}; "
          f"{emb.padding_share:.1%} of tokens run were padding)", flush=True)
    return out, ix


def measure_padding(emb: Any, texts: list[str], rounds: int) -> dict[str, Any]:
    """Length-sorted batches against corpus-order batches over the same texts (same batch size), the two
    alternating round by round so a change in the machine's load falls on both."""
    from effstack.text.tokenize import pad

    rows = emb.tokenizer.ids(texts)

    def corpus_order() -> None:
        for s in range(0, len(rows), emb.batch):
            x = pad(rows[s : s + emb.batch], emb.tokenizer.pad_id)
            emb.padded_tokens += x.size
            emb.real_tokens += sum(len(r) for r in rows[s : s + emb.batch])
            emb.session.infer(x)

    ways = {"sorted": lambda: emb.embed_ids(rows), "corpus_order": corpus_order}
    times: dict[str, list[float]] = {how: [] for how in ways}
    shares: dict[str, float] = {}
    for _ in range(rounds):
        for how, run in ways.items():
            emb.padded_tokens = emb.real_tokens = 0
            t0 = time.perf_counter()
            run()
            times[how].append(time.perf_counter() - t0)
            shares[how] = emb.padding_share
    out: dict[str, Any] = {"texts": len(texts), "batch": emb.batch}
    for how in ways:
        out[how] = {"seconds": spread(times[how]).to_dict(), "padding_share": shares[how]}
        print(f"  padding, {how}: {_fmt(spread(times[how]), ' s')}, {shares[how]:.1%} pads", flush=True)
    out["speedup"] = out["corpus_order"]["seconds"]["median"] / out["sorted"]["seconds"]["median"]
    return out


def measure_halves(emb: Any, pairs: list[tuple[str, str]], picked: np.ndarray, tmp: Path, name: str,
                   k: int = 10) -> tuple[dict[str, Any], np.ndarray, list[list[str]]]:
    from effstack.cli.index import index_texts
    from effstack.search import Index

    ix = Index.create(tmp / f"halves-{name}", emb.describe(), emb.dim, data={"source": "second halves"})
    ids = [str(i) for i in range(len(pairs))]
    index_texts(ix, emb, ids, [b for _, b in pairs])
    ix.checkpoint()
    q = emb.embed_texts([pairs[i][0] for i in picked])
    found = [[h.id for h in row] for row in ix.search(q, k)]
    want = [str(i) for i in picked]
    r1 = float(np.mean([f[:1] == [w] for f, w in zip(found, want)]))
    r10 = float(np.mean([w in f[:10] for f, w in zip(found, want)]))
    ix.close()
    print(f"  halves: {len(picked)} first halves among {len(pairs)} second halves: recall@1 {r1:.3f}, "
          f"recall@10 {r10:.3f}", flush=True)
    return {"indexed": len(pairs), "queries": len(picked), "recall_at_1": r1, "recall_at_10": r10}, q, found


def measure_latency(emb: Any, ix: Any, queries: list[str], rounds: int, k: int = 10) -> dict[str, Any]:
    p50s, p99s = [], []
    for _ in range(rounds):
        lat = []
        for text in queries:
            t0 = time.perf_counter_ns()
            ix.search(emb.embed_texts([text]), k)
            lat.append((time.perf_counter_ns() - t0) / 1e6)
        p50s.append(percentile(lat, 50))
        p99s.append(percentile(lat, 99))
    print(f"  query latency (tokenize + embed + search, one at a time): p50 {_fmt(spread(p50s), ' ms')}; "
          f"p99 {_fmt(spread(p99s), ' ms')}", flush=True)
    return {"queries": len(queries), "rounds": rounds, "p50_ms": spread(p50s).to_dict(),
            "p99_ms": spread(p99s).to_dict()}


def _readme(r: dict) -> list[dict]:
    """The README's figures, one line per precision, and INT8's agreement with fp32."""
    out = []
    for precision, run in r["runs"].items():
        b, h, lat, pad = run["build"], run["halves"], run["latency"]["p50_ms"], run["padding"]
        out.append({"what": f"{r['model']} {r['engine']} {precision}: index build, query p50, halves recall@1/@10 "
                            f"({h['queries']} first halves among {h['indexed']} second halves)",
                    "figure": f"{b['texts_per_s']:.0f} texts/s, {lat['median']:.1f} ms, "
                              f"{h['recall_at_1']:.3f}/{h['recall_at_10']:.3f}",
                    "spread": f"query p50 {lat['min']:.1f}-{lat['max']:.1f} ms; length-sorted batches "
                              f"{pad['speedup']:.2f}x corpus order ({100 * pad['sorted']['padding_share']:.0f}% vs "
                              f"{100 * pad['corpus_order']['padding_share']:.0f}% padding)"})
        if "vs_fp32" in run:
            v = run["vs_fp32"]
            out.append({"what": f"{precision} vs fp32 on the queries: mean (min) cosine, top-10 overlap",
                        "figure": f"{v['mean_cosine']:.4f} ({v['min_cosine']:.4f}), {v['top10_overlap']:.3f}"})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all-minilm-l6-v2", help="text encoder (default all-minilm-l6-v2)")
    p.add_argument("--engine", default="auto", help="engine (default auto: openvino, else onnxruntime)")
    p.add_argument("--precisions", default="fp32,int8", help="comma-separated (default fp32,int8)")
    p.add_argument("--threads", type=int, help="compute threads (default: all cores)")
    p.add_argument("--batch", type=int, default=32, help="texts per engine call (default 32)")
    p.add_argument("--limit", type=int, help="index only the first N texts of the built-in corpus")
    p.add_argument("--padding-texts", type=int, default=512, help="texts for the padding comparison (default 512)")
    p.add_argument("--min-words", type=int, default=16, help="shortest paragraph cut into halves (default 16)")
    p.add_argument("--pairs", type=int, default=500, help="first halves queried (default 500)")
    p.add_argument("--queries", type=int, default=50, help="single queries timed per round (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the timed parts (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args(argv)

    from effstack.models import load_model
    from effstack.search.text import load_text_embedder
    from effstack.engines import auto_engine
    from effstack.text.corpus import builtin_corpus

    engine = auto_engine(args.engine)
    corpus = builtin_corpus(limit=args.limit)
    pairs = halves(builtin_corpus().texts, args.min_words)
    picked = np.sort(np.random.default_rng(args.seed).permutation(len(pairs))[: min(args.pairs, len(pairs))])
    machine = machine_info()
    print(f"{args.model} on {engine}; corpus {corpus.describe()}; {len(pairs)} paragraphs of >= {args.min_words} "
          f"words cut in halves; CPU {machine['cpu']} ({machine['kind']}, {machine['cores']} cores), load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    model = load_model(args.model)
    result: dict[str, Any] = {"model": args.model, "engine": engine, "batch": args.batch, "threads": args.threads,
                              "corpus": corpus.describe(), "halves_pool": len(pairs), "min_words": args.min_words,
                              "machine": machine, "libraries": library_versions(), "runs": {}, "skipped": {}}
    queries_fp32 = found_fp32 = None
    with tempfile.TemporaryDirectory(prefix="effstack-text-search-") as tmp:
        for precision in [s.strip() for s in args.precisions.split(",") if s.strip()]:
            print(f"{precision}:", flush=True)
            t0 = time.perf_counter()
            try:
                emb = load_text_embedder(model, engine, precision, args.threads, args.batch)
            except Exception as exc:  # an engine whose INT8 path cannot run the text model yet: say so, go on
                why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                result["skipped"][precision] = why
                print(f"  skipped: {why}", flush=True)
                if os.environ.get("EFFSTACK_DEBUG"):
                    traceback.print_exc()
                continue
            run: dict[str, Any] = {"session_s": time.perf_counter() - t0, "dim": emb.dim}
            print(f"  session ready in {run['session_s']:.1f} s ({emb.dim} values)", flush=True)
            try:
                run["build"], ix = measure_build(emb, corpus, Path(tmp), precision)
                run["padding"] = measure_padding(emb, list(corpus.texts[: args.padding_texts]), args.rounds)
                run["halves"], q, found = measure_halves(emb, pairs, picked, Path(tmp), precision)
                timed = [pairs[i][0] for i in picked[: args.queries]]
                run["latency"] = measure_latency(emb, ix, timed, args.rounds)
                ix.close()
                if precision == "fp32":
                    queries_fp32, found_fp32 = q, found
                elif queries_fp32 is not None:
                    cos = np.sum(q * queries_fp32, axis=1)
                    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, found_fp32)]))
                    run["vs_fp32"] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                                      "top10_overlap": overlap}
                    print(f"  vs fp32: cosine mean {cos.mean():.4f} (min {cos.min():.4f}), top-10 overlap "
                          f"{overlap:.3f}", flush=True)
            finally:
                emb.close()
            result["runs"][precision] = run
    result["load_avg_end"] = os.getloadavg()[0]
    result["readme"] = _readme(result)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if result["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
